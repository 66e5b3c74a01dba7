"""Console pages (THREAT-MODEL property 3): strict headers on every page; ``next=`` stays on the console.

An outsider sends an operator a console link whose ``next=`` points elsewhere (another
host, ``../`` out of the console, encoded or with backslashes) to have the lab itself
redirect them; an analyst's page tries to frame the console. Every console page, as every
role, carries a strict Content-Security-Policy with ``frame-ancestors 'none'``, and every
``next=`` lands on a console path.
"""

from __future__ import annotations

import base64
import json
import re
from contextlib import closing
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import pytest

from lab.settings import Settings
from tests.integration.console_client import console_login, console_session

pytestmark = [pytest.mark.integration, pytest.mark.security]

BASE = "/services/gateway/console"
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
NEXT_VARIANTS = [
    "../",
    "../../hub/admin",
    f"{BASE}/../../../hub/admin",
    f"{BASE}/operator/../../../../hub/admin",
    "//evil.example/",
    "///evil.example/",
    f"//evil.example{BASE}/",
    "http://x/",
    f"https://evil.example{BASE}/operator",
    f"{BASE}/%2e%2e/%2e%2e/%2e%2e/hub/admin",
    f"{BASE}/.%2e/.%2E/hub/admin",
    f"{BASE}/%252e%252e/%252e%252e/hub/admin",
    "%2e%2e/%2e%2e/hub",
    f"{BASE}/..%2f..%2f..%2fhub%2fadmin",
    "%2F%2Fevil.example",
    "\\\\evil.example",
    "/\\evil.example/",
    f"{BASE}\\..\\..\\hub",
    f"{BASE}/..\\..\\hub",
    f"{BASE}//evil.example",
    "javascript:alert(1)",
    f"{BASE}/operator\r\nSet-Cookie: x=1",
    f"{BASE}x/../hub",
    f"{BASE}/./operator",
]


def _csp(headers: httpx.Headers) -> dict[str, str]:
    policy = headers.get("content-security-policy", "")
    return {d.strip().split(" ", 1)[0]: d.strip() for d in policy.split(";") if d.strip()}


def _strict(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} → {response.status_code}"
    csp = _csp(response.headers)
    assert csp.get("frame-ancestors") == "frame-ancestors 'none'", (where, csp)
    assert csp.get("default-src") == "default-src 'none'", (where, csp)
    assert "script-src" not in csp or "'unsafe-inline'" not in csp["script-src"], (where, csp)
    assert "'unsafe-inline'" not in csp.get("style-src", ""), (where, csp)
    assert csp.get("base-uri") == "base-uri 'none'", (where, csp)
    assert csp.get("form-action", "").startswith("form-action 'self'"), (where, csp)
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (where, name, response.headers.get(name))


def _console_get_paths(settings: Settings) -> list[str]:
    schema = httpx.get(f"{settings.gateway_public_url}/openapi.json", timeout=30).json()
    paths = [p for p, ops in schema["paths"].items() if p.startswith(BASE) and "get" in ops]
    assert len(paths) >= 8, paths  # login, callback, logout, lang, home, the three consoles, …
    return [re.sub(r"\{[^}]+\}", "1", p) for p in paths if not p.endswith("/logout")]


@pytest.mark.parametrize("username", ["op.wang", "audit.zhao", "zhou.ting", None])
def test_every_console_page_sends_a_strict_policy(lab_stack: Settings, username: str | None) -> None:
    paths = _console_get_paths(lab_stack)
    client = console_login(lab_stack, username) if username else httpx.Client(timeout=60)
    with closing(client):
        seen = set()
        for path in paths:
            response = client.get(f"{lab_stack.public_url}{path}", follow_redirects=False)
            seen.add(response.status_code)
            assert response.status_code < 500, (path, response.status_code)
            _strict(response)
            if response.headers.get("content-type", "").startswith("text/html"):
                assert "<script" not in response.text.lower(), path
        _strict(client.get(f"{lab_stack.gateway_public_url}/api/me", follow_redirects=False))
        assert seen & {200, 303}, seen


def _flow_next(response: httpx.Response) -> str:
    cookie = response.cookies.get("datalab_oidc")
    assert cookie, response.status_code
    payload = cookie.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["next"])


def _lands_on_console(settings: Settings, asked_from: str, location: str) -> None:
    """Where a browser would go: on the console's origin, under the console, no dot segments."""
    assert "\r" not in location and "\n" not in location, location
    resolved = urlsplit(urljoin(asked_from, location))
    assert f"{resolved.scheme}://{resolved.netloc}" == settings.public_url, location
    path = resolved.path
    for _ in range(3):
        path = unquote(path)
    assert "\\" not in path and "//" not in path, location
    assert not {".", ".."} & set(path.lower().replace("%2e", ".").split("/")), location
    assert path == BASE or path.startswith(BASE + "/"), location


@pytest.mark.parametrize("variant", NEXT_VARIANTS)
def test_next_lands_on_a_console_path(lab_stack: Settings, variant: str) -> None:
    console = lab_stack.console_url
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        lang = client.get(f"{console}/lang/en", params={"next": variant})
        assert lang.status_code == 303, lang.status_code
        _lands_on_console(lab_stack, f"{console}/lang/en", lang.headers["location"])
        login = client.get(f"{console}/login", params={"next": variant})
        assert login.status_code == 303, login.status_code
        _lands_on_console(lab_stack, f"{console}/login", _flow_next(login))


def test_next_survives_the_login_when_it_is_a_console_path(lab_stack: Settings) -> None:
    """The normal case still works, and a hostile one lands on the console home after a real login."""
    for asked, landing in [(f"{BASE}/auditor", f"{BASE}/auditor"), (f"{BASE}/../../hub/admin", f"{BASE}/")]:
        client, landed = console_session(lab_stack, "audit.zhao", next_path=asked)
        with closing(client):
            # The console's home sends a person with one role on to their console.
            assert landed.path in (landing, f"{BASE}/auditor"), landed
            _lands_on_console(lab_stack, lab_stack.console_url, str(landed))
