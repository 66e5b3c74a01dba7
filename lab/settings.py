"""Settings: where the lab keeps its state, caches its downloads, listens and is reached.

Every URL the lab uses is a property here (``public_url``, ``console_url``, ``bind_url``, …):
the proxy *listens* on ``127.0.0.1``, but browsers *reach* the hub, the consoles and the
gateway at ``http://<domain>:<hub port>`` and each analyst's server at
``http://<user>.<domain>:<hub port>`` (JupyterHub's ``subdomain_host``), so content an
analyst controls never shares an origin with the hub, the consoles or the gateway.

``load_settings()`` reads the environment once and returns a frozen ``Settings`` that
is handed down to whatever needs it; nothing in ``lab`` reads the environment at
import time. Every setting has a ``DATALAB_*`` variable, documented in
``.env.sample``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from lab.errors import ConfigError

# Where the hub's proxy serves the gateway (its API, consoles and MinIO audit hook), written once.
GATEWAY_PREFIX = "/services/gateway"

REPO = Path(__file__).resolve().parent.parent
DOMAIN = "localhost"  # browsers resolve localhost and every *.localhost to loopback (RFC 6761)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


@dataclass(frozen=True)
class Ports:
    """TCP ports on the loopback interface, one per listening socket."""

    keycloak: int = 8180
    keycloak_management: int = 9180
    minio: int = 9000
    gateway: int = 8010
    hub: int = 8000
    hub_api: int = 8081
    proxy_api: int = 8001

    @staticmethod
    def env_name(port: str) -> str:
        """The variable that moves a port, e.g. ``DATALAB_MINIO_PORT``."""
        return f"DATALAB_{port.upper()}_PORT"


@dataclass(frozen=True)
class Endpoints:
    """Where each service is reached when it is not on this machine's loopback (a cluster).

    Each is None by default, and the one-machine address (``127.0.0.1:<port>``) is used.
    URLs are ``http(s)://host[:port][/path]`` without credentials; ``minio`` is ``host:port``.
    """

    public_url: str | None = None  # DATALAB_PUBLIC_URL: the browsers' origin (hub, consoles, gateway)
    keycloak_url: str | None = None  # DATALAB_KEYCLOAK_URL: Keycloak as servers reach it
    issuer: str | None = None  # DATALAB_KEYCLOAK_ISSUER: the tokens' ``iss`` (the realm's public URL)
    minio: str | None = None  # DATALAB_MINIO_ENDPOINT: the S3 API, host:port
    minio_tls: bool = False  # DATALAB_MINIO_TLS=1: S3 over HTTPS
    hub_api_url: str | None = None  # DATALAB_HUB_API_URL: the hub's REST API, ending in /hub/api
    gateway_url: str | None = None  # DATALAB_GATEWAY_URL: the gateway's listener, as the proxy reaches it


ENDPOINT_VARS = {
    "public_url": "DATALAB_PUBLIC_URL",
    "keycloak_url": "DATALAB_KEYCLOAK_URL",
    "issuer": "DATALAB_KEYCLOAK_ISSUER",
    "hub_api_url": "DATALAB_HUB_API_URL",
    "gateway_url": "DATALAB_GATEWAY_URL",
}


@dataclass(frozen=True)
class Settings:
    """Everything the lab needs to know about this machine, loaded once."""

    home: Path
    cache: Path
    repo: Path = REPO
    host: str = "127.0.0.1"
    domain: str = DOMAIN
    realm: str = "datalab"
    ports: Ports = field(default_factory=Ports)
    db_url: str | None = None
    policies_dir: Path = REPO / "policies"
    # A budget reservation still outstanding after this long belongs to a query whose
    # gateway died: the gateway's sweeper settles it (charged, recorded as abandoned).
    reservation_timeout_s: float = 600.0
    # The PostgreSQL servers the operator console may import from (host names, addresses or
    # unix socket directories): the gateway connects only where the bureau said it may.
    import_pg_hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost", "/run/postgresql")
    # The largest file the operator console accepts as an upload (bytes).
    import_max_bytes: int = 4 << 30
    endpoints: Endpoints = field(default_factory=Endpoints)
    # New audit records wait at most this long (plus a poll) before the gateway seals them.
    seal_interval_s: float = 30.0
    # Where the audit chain's head is kept: "file" (the state directory; one host) or
    # "object" (the object-locked audit archive; every replica on any host shares it).
    audit_anchor: str = "file"
    # Secrets mounted from elsewhere (a Kubernetes Secret): read, never generated or written.
    secrets_path: Path | None = None  # DATALAB_SECRETS_DIR
    secrets_readonly: bool = False  # DATALAB_SECRETS_READONLY=1
    # How many distinct operators must approve an export (at least 2; a dataset policy's
    # ``export_reviewers`` may ask more).
    export_reviewers: int = 2
    # Admission of heavy requests (DP queries, DP extracts) in the gateway: how many run at
    # once, how many may wait in line, and how long one waits before it is told to retry.
    heavy_queries: int = 2
    heavy_queue: int = 8
    heavy_wait_s: float = 60.0

    # Derived locations -------------------------------------------------------
    @property
    def secrets_dir(self) -> Path:
        return self.secrets_path or self.home / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def url(self, port: str, path: str = "") -> str:
        """``http://127.0.0.1:<port>`` plus ``path`` for the named port."""
        return f"http://{self.host}:{getattr(self.ports, port)}{path}"

    @property
    def ledger_url(self) -> str:
        """``DATALAB_DB_URL``, or the SQLite ledger in the state directory."""
        return self.db_url or f"sqlite:///{self.home / 'ledger.sqlite'}"

    @property
    def ledger_anchor(self) -> Path:
        """The audit chain's head, kept outside the database (see ``lab.ledger.chain``).

        One file per database, so two ledgers never share (and break) an anchor.
        """
        if self.db_url is None:
            return self.home / "ledger.anchor"
        return self.home / f"ledger-{hashlib.sha256(self.db_url.encode()).hexdigest()[:12]}.anchor"

    @property
    def work_dir(self) -> Path:
        """Scratch space for builds (inside the restricted state directory)."""
        return self.home / "work"

    @property
    def keycloak_url(self) -> str:
        """Keycloak as the lab's servers reach it (admin API, token endpoint, signing keys)."""
        return self.endpoints.keycloak_url or self.url("keycloak")

    @property
    def issuer(self) -> str:
        """The realm's URL as tokens name it (``iss``) and browsers are sent to it to log in."""
        return self.endpoints.issuer or f"{self.keycloak_url}/realms/{self.realm}"

    @property
    def oidc_public(self) -> str:
        """The realm's OpenID Connect endpoints for browsers (authorise, log out)."""
        return f"{self.issuer}/protocol/openid-connect"

    @property
    def oidc_internal(self) -> str:
        """The same endpoints as servers reach them (token, user info, signing keys)."""
        return f"{self.keycloak_url}/realms/{self.realm}/protocol/openid-connect"

    # Where browsers and clients reach the lab ------------------------------------
    @property
    def public_url(self) -> str:
        """The hub's, the consoles' and the gateway's one origin, ``http://localhost:<hub port>``.

        No analyst's server is ever served here: theirs are ``http://<user>.<domain>:<port>``.
        """
        return self.endpoints.public_url or f"http://{self.domain}:{self.ports.hub}"

    @property
    def hub_url(self) -> str:
        """JupyterHub as browsers reach it (its pages are under ``/hub/``)."""
        return self.public_url

    @property
    def bind_url(self) -> str:
        """Where configurable-http-proxy listens: ``http://127.0.0.1:<hub port>``."""
        return self.url("hub")

    @property
    def subdomain_host(self) -> str:
        """JupyterHub's ``subdomain_host``: users' servers are on subdomains of this host."""
        return self.public_url

    @property
    def gateway_public_url(self) -> str:
        """The gateway through the proxy, on the hub's origin."""
        return f"{self.public_url}{GATEWAY_PREFIX}"

    @property
    def hub_api_url(self) -> str:
        """The hub's REST API (the gateway's token checks, a suspension's server stops)."""
        return self.endpoints.hub_api_url or self.url("hub_api", "/hub/api")

    @property
    def gateway_url(self) -> str:
        """The gateway's own listener (the proxy's target and the notebooks' relay target)."""
        return self.endpoints.gateway_url or self.url("gateway", GATEWAY_PREFIX)

    @property
    def console_url(self) -> str:
        """The operator, auditor and analyst consoles."""
        return f"{self.gateway_public_url}/console"

    @property
    def minio_endpoint(self) -> str:
        """The S3 API as ``host:port`` (``minio_secure`` says whether it speaks HTTPS)."""
        return self.endpoints.minio or f"{self.host}:{self.ports.minio}"

    @property
    def minio_secure(self) -> bool:
        return self.endpoints.minio_tls

    @property
    def minio_url(self) -> str:
        return f"{'https' if self.minio_secure else 'http'}://{self.minio_endpoint}"


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    var = Ports.env_name(name)
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{var}={raw!r} is not a port number; set it to an integer 1024-65535. "
            f"/ {var} 不是端口号，请设为 1024-65535 之间的整数。"
        ) from None
    if not 1024 <= value <= 65535:
        raise ConfigError(
            f"{var}={value} is out of range; choose a port from 1024 to 65535. / {var} 超出范围，请选择 "
            "1024-65535 "
            "之间的端口。"
        )
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    home = Path(env.get("DATALAB_HOME") or REPO / ".datalab").expanduser().resolve()
    cache = Path(env.get("DATALAB_CACHE") or Path.home() / ".cache" / "datalab").expanduser().resolve()
    defaults = Ports()
    ports = Ports(**{f.name: _port(env, f.name, getattr(defaults, f.name)) for f in fields(Ports)})
    taken: dict[int, str] = {}
    for f in fields(Ports):
        value = getattr(ports, f.name)
        if value in taken:
            raise ConfigError(
                f"{Ports.env_name(f.name)} and {Ports.env_name(taken[value])} are both {value}; "
                "give each component its own port. / 两个组件使用了同一端口，请为每个组件指定不同的端口。"
            )
        taken[value] = f.name
    policies = Path(env.get("DATALAB_POLICIES") or REPO / "policies").expanduser().resolve()
    return Settings(
        home=home,
        cache=cache,
        ports=ports,
        domain=_domain(env),
        endpoints=_endpoints(env),
        seal_interval_s=_seconds(env, "DATALAB_SEAL_INTERVAL_S", 30.0),
        audit_anchor=_choice(env, "DATALAB_AUDIT_ANCHOR", ("file", "object")),
        secrets_path=Path(env["DATALAB_SECRETS_DIR"]).resolve() if env.get("DATALAB_SECRETS_DIR") else None,
        secrets_readonly=_flag(env, "DATALAB_SECRETS_READONLY"),
        db_url=env.get("DATALAB_DB_URL") or None,
        policies_dir=policies,
        reservation_timeout_s=_seconds(env, "DATALAB_RESERVATION_TIMEOUT_S", 600.0),
        import_pg_hosts=_hosts(env),
        import_max_bytes=_megabytes(env, "DATALAB_IMPORT_MAX_MB", 4096) << 20,
        export_reviewers=_reviewers(env),
        heavy_queries=_whole(env, "DATALAB_HEAVY_QUERIES", 2, lowest=1),
        heavy_queue=_whole(env, "DATALAB_HEAVY_QUEUE", 8, lowest=0),
        heavy_wait_s=_seconds(env, "DATALAB_HEAVY_WAIT_S", 60.0),
    )


_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$")


def _endpoints(env: Mapping[str, str]) -> Endpoints:
    values: dict[str, str] = {}
    for name, var in ENDPOINT_VARS.items():
        raw = (env.get(var) or "").strip()
        if not raw:
            continue
        if not _URL.match(raw) or "@" in raw:
            raise ConfigError(
                f"{var} is not a URL like https://id.example.org (http or https, a host, "
                f"an optional port and path, no user or password) / {var} 不是有效的地址，"
                "请写成 https://主机[:端口][/路径]，不要包含用户名或密码"
            )
        values[name] = raw.rstrip("/")
    minio = (env.get("DATALAB_MINIO_ENDPOINT") or "").strip()
    if minio and not _HOST_PORT.match(minio):
        raise ConfigError(
            "DATALAB_MINIO_ENDPOINT must be host:port, e.g. minio.datalab.svc:9000 (the value is not "
            "repeated here: it may hold a password) "
            "/ DATALAB_MINIO_ENDPOINT 须写成 主机:端口"
        )
    return Endpoints(**values, minio=minio or None, minio_tls=_flag(env, "DATALAB_MINIO_TLS"))


def _choice(env: Mapping[str, str], var: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(var) or choices[0]).strip().lower()
    if raw not in choices:
        raise ConfigError(
            f"{var}={raw[:20]!r} must be one of {', '.join(choices)} / {var} 只能是 {'、'.join(choices)} 之一"
        )
    return raw


def _flag(env: Mapping[str, str], var: str) -> bool:
    raw = (env.get(var) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{var}={raw[:20]!r} must be 1 or 0 / {var} 只能是 1 或 0")


def _reviewers(env: Mapping[str, str]) -> int:
    raw = env.get("DATALAB_EXPORT_REVIEWERS")
    if raw is None or raw == "":
        return 2
    if not raw.isdigit() or not 2 <= int(raw) <= 9:
        raise ConfigError(
            f"DATALAB_EXPORT_REVIEWERS={raw[:40]!r} must be a whole number from 2 to 9 (the distinct "
            "operators who approve an export) / 须为 2 到 9 的整数（批准导出所需的审核人数）"
        )
    return int(raw)


def _hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("DATALAB_IMPORT_PG_HOSTS")
    if raw is None or not raw.strip():
        return Settings.import_pg_hosts
    return tuple(h.strip() for h in raw.split(",") if h.strip())


def _megabytes(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 0 < int(raw) < 10**7:
        raise ConfigError(
            f"{var}={raw[:40]!r} must be a whole number of megabytes > 0 (e.g. 4096) / 须为正整数（MB）."
        )
    return int(raw)


def _whole(env: Mapping[str, str], var: str, default: int, *, lowest: int) -> int:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lowest <= int(raw) < 10**4:
        raise ConfigError(
            f"{var}={raw[:40]!r} must be a whole number >= {lowest} (e.g. {default}) / 须为 ≥ {lowest} 的整数"
        )
    return int(raw)


def _seconds(env: Mapping[str, str], var: str, default: float) -> float:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 10**7:
        raise ConfigError(f"{var}={raw!r} must be a number of seconds > 0 (e.g. 600) / 须为正的秒数.")
    return value


def _domain(env: Mapping[str, str]) -> str:
    raw = env.get("DATALAB_DOMAIN") or DOMAIN
    value = raw.strip().lower().rstrip(".")
    if not _DOMAIN.match(value) or value.replace(".", "").isdigit() or len(value) > 200:
        raise ConfigError(
            f"DATALAB_DOMAIN={raw[:80]!r} is not a DNS name that can have subdomains (an IP address "
            "cannot); set it to a name such as localhost or lab.example.org. / "
            "DATALAB_DOMAIN 必须是可带子域名的域名（不能是 IP 地址），例如 localhost。"
        )
    return value
