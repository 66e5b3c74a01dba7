"""Origins without services: the URLs from Settings, the hub's hosts, next= and the Origin rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.datastructures import Headers
from traitlets.config import Config

from lab.errors import ConfigError
from lab.gateway.origins import OriginGuard, console_target, content_security_policy
from lab.hub.config import configure, subdomain_hook, user_url
from lab.settings import load_settings

pytestmark = pytest.mark.unit

BASE = "/services/gateway/console"


def test_every_url_comes_from_settings(tmp_path: Path) -> None:
    s = load_settings({"DATALAB_HOME": str(tmp_path), "DATALAB_HUB_PORT": "8100"})
    assert s.bind_url == "http://127.0.0.1:8100"
    assert s.public_url == s.hub_url == "http://localhost:8100"
    assert s.console_url == "http://localhost:8100/services/gateway/console"
    assert s.gateway_url == "http://127.0.0.1:8010/services/gateway"
    # A dot cannot be in one DNS label: JupyterHub's IDNA hook hashes such names.
    assert re.fullmatch(r"http://[a-z0-9-]+\.localhost:8100/user/zhou\.ting/", user_url(s, "zhou.ting"))
    assert user_url(s, "alice") == "http://alice.localhost:8100/user/alice/"
    other = load_settings({"DATALAB_HOME": str(tmp_path), "DATALAB_DOMAIN": "Lab.Example.org"})
    assert other.public_url == "http://lab.example.org:8000"


@pytest.mark.parametrize("bad", ["127.0.0.1", "-x.localhost", "a..b", "lab_x", "exa mple"])
def test_domain_that_cannot_have_subdomains_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="DATALAB_DOMAIN"):
        load_settings({"DATALAB_DOMAIN": bad})


def test_hub_puts_users_on_subdomains_and_services_on_its_own_host(tmp_path: Path) -> None:
    s = load_settings({"DATALAB_HOME": str(tmp_path)})
    c = Config()
    configure(c, s)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000"
    assert c.JupyterHub.subdomain_host == "http://localhost:8000"
    assert c.LabAuthenticator.oauth_callback_url == "http://localhost:8000/hub/oauth_callback"
    hook = c.JupyterHub.subdomain_hook
    assert hook("gateway", "localhost", "service") == "localhost"
    assert hook("li.na", "localhost", "user") != "localhost"
    assert hook("localhost", "localhost", "user") == "localhost.localhost"
    assert subdomain_hook("gateway--service", "localhost", "user").endswith(".localhost")


@pytest.mark.parametrize(
    ("asked", "landing"),
    [
        (f"{BASE}/auditor", f"{BASE}/auditor"),
        (f"{BASE}/operator?x=1", f"{BASE}/operator"),
        (BASE, BASE),
        ("", f"{BASE}/"),
        ("../", f"{BASE}/"),
        (f"{BASE}/../../hub/admin", f"{BASE}/"),
        (f"{BASE}/%2e%2e/hub", f"{BASE}/"),
        (f"{BASE}/%252e%252e/hub", f"{BASE}/"),
        (f"{BASE}/%25252525252e", f"{BASE}/"),
        ("//evil.example", f"{BASE}/"),
        (f"{BASE}//evil.example", f"{BASE}/"),
        ("http://x/", f"{BASE}/"),
        ("\\\\evil", f"{BASE}/"),
        (f"{BASE}/..\\x", f"{BASE}/"),
        (f"{BASE}/a\r\nSet-Cookie:x", f"{BASE}/"),
        (f"{BASE}x", f"{BASE}/"),
        (f"{BASE}/exports/7/download", f"{BASE}/exports/7/download"),
    ],
)
def test_console_target(asked: str, landing: str) -> None:
    assert console_target(asked, BASE) == landing


GUARD = OriginGuard(
    None,  # type: ignore[arg-type]
    origin="http://localhost:8000",
    keycloak="http://127.0.0.1:8180",
    console_prefix=BASE,
)


@pytest.mark.parametrize(
    ("method", "path", "headers", "reason"),
    [
        ("GET", f"{BASE}/operator", {"origin": "http://evil"}, None),
        ("POST", f"{BASE}/x", {"origin": "http://localhost:8000"}, None),
        ("POST", f"{BASE}/x", {"sec-fetch-site": "same-origin"}, None),
        ("POST", f"{BASE}/x", {"origin": "http://alice.localhost:8000"}, "cross-origin"),
        ("POST", f"{BASE}/x", {"origin": "null"}, "cross-origin"),
        ("POST", f"{BASE}/x", {"sec-fetch-site": "same-site"}, "cross-site"),
        ("POST", f"{BASE}/x", {}, "origin-missing"),
        ("POST", f"{BASE}/x", {"authorization": "Bearer abc"}, "origin-missing"),
        ("POST", "/services/gateway/api/queries", {"authorization": "Bearer abc"}, None),
        (
            "DELETE",
            "/services/gateway/api/x",
            {"authorization": "Bearer abc", "origin": "http://e"},
            "cross-origin",
        ),
        ("PUT", "/services/gateway/api/x", {}, "not-authenticated"),
        ("PATCH", "/services/gateway/api/x", {"authorization": "Basic abc"}, "not-authenticated"),
        ("POST", BASE, {"authorization": "Bearer abc"}, "origin-missing"),
    ],
)
def test_origin_rule(method: str, path: str, headers: dict[str, str], reason: str | None) -> None:
    assert GUARD.refusal(method, path, Headers(headers)) == reason


def test_policy_has_no_inline_script_and_no_framing() -> None:
    policy = content_security_policy("http://127.0.0.1:8180", ["'sha256-x'"])
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe" not in policy and "script-src" not in policy
    assert "form-action 'self' http://127.0.0.1:8180" in policy and "style-src 'sha256-x'" in policy
