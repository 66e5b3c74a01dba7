from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from lab import vault
from lab.errors import ConfigError
from lab.settings import load_settings

pytestmark = pytest.mark.unit


def test_defaults_put_state_in_repo_and_cache_in_home(tmp_path: Path) -> None:
    settings = load_settings({"HOME": str(tmp_path)})
    assert settings.home.name == ".datalab"
    assert settings.ports.keycloak == 8180 and settings.ports.minio == 9000
    assert settings.issuer == "http://127.0.0.1:8180/realms/datalab"


def test_ports_move_with_their_variable(tmp_path: Path) -> None:
    settings = load_settings({"DATALAB_HOME": str(tmp_path), "DATALAB_MINIO_PORT": "9100"})
    assert settings.ports.minio == 9100
    assert settings.minio_endpoint == "127.0.0.1:9100"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "DATALAB_HUB_PORT='abc' is not a port number"), ("80", "DATALAB_HUB_PORT=80 is out of range")],
)
def test_bad_port_is_named(value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings({"DATALAB_HUB_PORT": value})


def test_two_components_on_one_port_are_refused() -> None:
    with pytest.raises(ConfigError, match="DATALAB_HUB_PORT and DATALAB_GATEWAY_PORT are both 8000"):
        load_settings({"DATALAB_GATEWAY_PORT": "8000"})


def test_secret_is_generated_once_private_and_scrubbed(tmp_path: Path) -> None:
    settings = load_settings({"DATALAB_HOME": str(tmp_path / "home")})
    first = vault.secret(settings, "example")
    assert vault.secret(settings, "example") == first
    path = settings.secrets_dir / "example"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.secrets_dir.stat().st_mode) == 0o700
    assert len(first) == 48
    assert vault.scrub(f"token={first} end", settings) == "token=*** end"
    assert [p.name for p in settings.secrets_dir.iterdir()] == ["example"]


CLUSTER = {
    "DATALAB_PUBLIC_URL": "https://lab.example.org",
    "DATALAB_KEYCLOAK_URL": "http://keycloak.datalab.svc:8080/",
    "DATALAB_KEYCLOAK_ISSUER": "https://id.example.org/realms/datalab",
    "DATALAB_MINIO_ENDPOINT": "minio.minio-datalab.svc:443",
    "DATALAB_MINIO_TLS": "1",
    "DATALAB_HUB_API_URL": "http://hub.datalab.svc:8081/hub/api",
    "DATALAB_GATEWAY_URL": "http://gateway.datalab.svc:8010/services/gateway",
}


def test_every_endpoint_has_a_setting_and_nothing_stays_on_loopback(tmp_path: Path) -> None:
    """Issue 14: in a cluster each service has its own name; one-machine defaults are unchanged."""
    settings = load_settings({"DATALAB_HOME": str(tmp_path), **CLUSTER})
    shown = {
        "public": settings.public_url,
        "console": settings.console_url,
        "gateway (proxy target)": settings.gateway_url,
        "keycloak": settings.keycloak_url,
        "issuer": settings.issuer,
        "browser login": settings.oidc_public,
        "token endpoint": settings.oidc_internal,
        "minio": settings.minio_url,
        "hub api": settings.hub_api_url,
    }
    assert not [name for name, url in shown.items() if "127.0.0.1" in url or "localhost" in url], shown
    assert settings.oidc_public == "https://id.example.org/realms/datalab/protocol/openid-connect"
    assert settings.oidc_internal == "http://keycloak.datalab.svc:8080/realms/datalab/protocol/openid-connect"
    assert settings.minio_url == "https://minio.minio-datalab.svc:443" and settings.minio_secure
    assert settings.console_url == "https://lab.example.org/services/gateway/console"

    local = load_settings({"DATALAB_HOME": str(tmp_path)})
    assert (
        local.oidc_public
        == local.oidc_internal
        == "http://127.0.0.1:8180/realms/datalab/protocol/openid-connect"
    )
    assert local.minio_url == "http://127.0.0.1:9000" and not local.minio_secure
    assert local.gateway_url == "http://127.0.0.1:8010/services/gateway"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DATALAB_KEYCLOAK_URL", "keycloak:8080"),  # no scheme
        ("DATALAB_PUBLIC_URL", "https://admin:secret@lab.example.org"),  # credentials in a URL
        ("DATALAB_HUB_API_URL", "ftp://hub/hub/api"),
        ("DATALAB_MINIO_ENDPOINT", "http://minio:9000"),  # host:port, not a URL
        ("DATALAB_MINIO_ENDPOINT", "admin:secret@minio:9000"),  # credentials where a host belongs
        ("DATALAB_MINIO_TLS", "maybe"),
    ],
)
def test_a_malformed_endpoint_is_named_in_both_languages(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({var: value})
    assert var in caught.value.message and re.search("[\u4e00-\u9fff]", caught.value.message)
    assert "secret" not in caught.value.message  # a password in a URL is never echoed back


def test_read_only_secrets_are_read_and_a_missing_one_is_named_not_generated(tmp_path: Path) -> None:
    """A Kubernetes Secret is mounted read-only: the gateway must not try to write into it."""
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / "gateway-session-key").write_text("ab" * 32 + "\n")
    env = {"DATALAB_HOME": str(tmp_path / "state"), "DATALAB_SECRETS_DIR": str(mounted)}
    settings = load_settings({**env, "DATALAB_SECRETS_READONLY": "1"})
    assert vault.secret(settings, "gateway-session-key") == "ab" * 32  # every replica reads the same key
    with pytest.raises(ConfigError) as caught:
        vault.secret(settings, "minio-audit-token")
    assert "minio-audit-token" in caught.value.message and "缺少" in caught.value.message
    assert sorted(p.name for p in mounted.iterdir()) == ["gateway-session-key"]  # nothing written
    assert not (tmp_path / "state").exists()
    # Without the flag the same directory is a writable store, as on one machine.
    assert len(vault.secret(load_settings(env), "minio-audit-token")) == 48
