"""``datalab login`` / ``logout``: who runs an operator command is who logged in to Keycloak.

``datalab login [NAME]`` asks Keycloak for tokens with the password grant of the confidential
client ``datalab-cli`` (``lab.iam``; its secret is in the state directory, so only the bureau's
server can use it). The password comes from a prompt or, when stdin is not a terminal, from
the first line of stdin — never from the command line, where other users could read it. The
tokens are cached in ``<state>/logins/<uid>.json``: one login per OS user, the file mode 0600
in a directory of mode 0700.

Before every operator command, :func:`operator` reads the cache and accepts it only if

- the file belongs to this OS user and nobody else can read or write it (else: refused,
  never "fixed" silently: someone else may have read the tokens);
- the access token verifies like any token at the gateway (``lab.gateway.auth``: RS256
  signature against the realm's keys, issuer, audience, expiry, the account enabled in
  Keycloak now), and was issued to ``datalab-cli``. An expired one is renewed once with the
  refresh token (Keycloak checks that one); a forged one is refused, not renewed;
- the person holds the ``operator`` role in the token and in Keycloak now.

``datalab logout`` ends the Keycloak session (best effort) and deletes the file.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lab import validate, vault
from lab.errors import AccessDenied, ConfigError, NotAuthenticated
from lab.iam import CLI_CLIENT_ID
from lab.settings import Settings

OPERATOR = "operator"
LOG_IN = "run 'datalab login NAME' with your own operator account"
LOG_IN_ZH = "请用 datalab login 登录您本人的运营人员账号"


@dataclass(frozen=True)
class Login:
    """The cached login of this OS user."""

    username: str
    access_token: str
    refresh_token: str


def cache_file(settings: Settings) -> Path:
    """This OS user's login cache in the state directory."""
    return settings.home / "logins" / f"{os.getuid()}.json"


def _token_url(settings: Settings) -> str:
    return f"{settings.issuer}/protocol/openid-connect/token"


def _client(settings: Settings) -> dict[str, str]:
    return {"client_id": CLI_CLIENT_ID, "client_secret": vault.secret(settings, "cli-client-secret")}


def _ask_keycloak(settings: Settings, url: str, form: dict[str, str]) -> httpx.Response:
    try:
        return httpx.post(url, data={**_client(settings), **form}, timeout=15)
    except httpx.HTTPError:
        raise NotAuthenticated(
            f"Keycloak could not be reached at {settings.keycloak_url}; start the lab (datalab up) and "
            "try again / 无法连接统一身份认证，请启动实验室后重试",
            reason="keycloak-unreachable",
        ) from None


def _tokens(response: httpx.Response, username: str) -> Login:
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or "access_token" not in body:
        raise NotAuthenticated(
            f"Keycloak refused the login of {username}: wrong username or password, or the account is "
            "disabled or locked for a while after repeated failures; try again or ask an administrator "
            f"/ 统一身份认证拒绝了 {username} 的登录：用户名或密码错误，或账号已停用或因多次失败被暂时锁定",
            detail=f"token endpoint answered {response.status_code} {body.get('error', '')}",
            reason="login-refused",
        )
    return Login(username, str(body["access_token"]), str(body.get("refresh_token") or ""))


def read_password(prompt: str = "Password / 密码: ") -> str:
    """The password from a prompt (a terminal) or the first line of stdin (a pipe)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def login(settings: Settings, username: str, password: str, verifier: Any = None) -> tuple[Login, Any]:
    """Log ``username`` in with the password grant, verify the token, cache it; (login, caller)."""
    username = validate.username(username, "NAME")
    if not password:
        raise NotAuthenticated(
            "no password was given; type it at the prompt or pipe it on stdin "
            "/ 未提供密码，请在提示时输入或通过标准输入提供",
            reason="no-password",
        )
    form = {"grant_type": "password", "username": username, "password": password, "scope": "openid"}
    response = _ask_keycloak(settings, _token_url(settings), form)
    found = _tokens(response, username)
    caller = _verified(settings, found, verifier)
    _save(settings, found)
    return found, caller


def logout(settings: Settings) -> str | None:
    """End the cached login (Keycloak session too, best effort); the name it was, or None."""
    path = cache_file(settings)
    try:
        found = _load(path)
    except NotAuthenticated:
        found = None
    if found is not None and found.refresh_token:
        end_session = f"{settings.issuer}/protocol/openid-connect/logout"
        with contextlib.suppress(NotAuthenticated):  # Keycloak down: the session ends on its own
            _ask_keycloak(settings, end_session, {"refresh_token": found.refresh_token})
    path.unlink(missing_ok=True)
    return found.username if found else None


def operator(settings: Settings, verifier: Any = None) -> str:
    """The logged-in operator's username, verified now; NotAuthenticated / AccessDenied otherwise."""
    found = _load(cache_file(settings))
    if found is None:
        raise NotAuthenticated(
            f"nobody is logged in; {LOG_IN} / 尚未登录，{LOG_IN_ZH}", reason="not-logged-in"
        )
    caller = _verified(settings, found, verifier, refresh=True)
    if OPERATOR not in caller.roles:
        raise AccessDenied(
            f"{caller.username} is logged in but is not an enabled operator; {LOG_IN} (an administrator "
            f"gives it the operator role in Keycloak) / {caller.username} 不是有效的运营人员，{LOG_IN_ZH}",
            reason="not-operator",
        )
    return str(caller.username)


def _verifier(settings: Settings) -> Any:
    from lab.directory import Directory
    from lab.gateway.auth import TokenVerifier

    return TokenVerifier(settings, Directory(settings, ttl=0))


def _verified(settings: Settings, found: Login, verifier: Any, *, refresh: bool = False) -> Any:
    """The caller the cached access token names (renewed once if it expired and ``refresh``)."""
    verifier = verifier or _verifier(settings)
    try:
        claims = verifier.claims(found.access_token)
    except NotAuthenticated as exc:
        expired = exc.reason == "token-expired"
        if not (refresh and expired and found.refresh_token):
            raise _stale(exc.reason if not expired else "login-expired") from None
        response = _ask_keycloak(
            settings,
            _token_url(settings),
            {"grant_type": "refresh_token", "refresh_token": found.refresh_token},
        )
        try:
            found = _tokens(response, found.username)
        except NotAuthenticated:
            raise _stale("login-expired") from None
        claims = verifier.claims(found.access_token)
        _save(settings, found)
    if claims.get("azp") != CLI_CLIENT_ID or claims.get("preferred_username") != found.username:
        raise _stale("login-foreign-token")
    try:
        return verifier.caller(found.access_token)
    except NotAuthenticated as exc:
        if exc.reason != "account-disabled":
            raise
        raise NotAuthenticated(
            f"the logged-in account {found.username} is disabled or no longer exists in Keycloak; {LOG_IN} "
            f"/ 已登录的账号 {found.username} 已停用或不存在，{LOG_IN_ZH}",
            reason="account-disabled",
        ) from None


def _stale(reason: str) -> NotAuthenticated:
    return NotAuthenticated(
        f"the cached login is expired, forged or not from datalab login; {LOG_IN} "
        f"/ 缓存的登录已过期、被篡改或并非来自 datalab login，{LOG_IN_ZH}",
        reason=reason,
    )


def _load(path: Path) -> Login | None:
    """The cached login, refusing a file another user owns or could read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        raise _unsafe(path) from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise _unsafe(path)
        try:
            body = json.loads(fh.read(64 * 1024))
            return Login(str(body["username"]), str(body["access_token"]), str(body.get("refresh_token", "")))
        except (ValueError, KeyError, TypeError):
            raise _stale("login-unreadable") from None


def _unsafe(path: Path) -> NotAuthenticated:
    return NotAuthenticated(
        f"the login cache {path} can be read or written by other users (or is not yours), so its tokens "
        f"may be known to others; it is not used. Delete it (datalab logout), then {LOG_IN} "
        f"/ 登录缓存文件可被其他用户读取或修改，已拒绝使用；请先运行 datalab logout 删除，再重新登录",
        reason="login-cache-unsafe",
    )


def _save(settings: Settings, found: Login) -> None:
    """Write the cache atomically: a fresh 0600 file in a 0700 directory, then renamed."""
    try:
        _write(cache_file(settings), found)
    except OSError as exc:
        raise ConfigError(
            f"the login could not be saved in {cache_file(settings).parent} ({exc.strerror}); that directory "
            "must belong to you (set DATALAB_HOME to a state directory you own) / 无法保存登录信息，"
            "请确认状态目录属于您本人",
            reason="login-cache-unwritable",
        ) from None


def _write(path: Path, found: Login) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = os.stat(path.parent)
    if folder.st_uid == os.getuid() and folder.st_mode & 0o077:
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(
            {
                "username": found.username,
                "access_token": found.access_token,
                "refresh_token": found.refresh_token,
            },
            fh,
        )
    os.replace(tmp, path)
