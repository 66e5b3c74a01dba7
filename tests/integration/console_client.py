"""A console session without a browser: the real OIDC code flow, driven with httpx.

``console_login`` follows the console's redirect to Keycloak, submits Keycloak's own login
form, and follows the callback back to the gateway, so the returned client holds a
genuine session cookie issued by the gateway. Like a browser, the client sends the
console's ``Origin`` with every form it posts to the console (the gateway refuses
state-changing console requests without it).
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import httpx

from lab import vault
from lab.settings import Settings

_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"')


def console_base(settings: Settings) -> str:
    return settings.console_url


def _same_origin_hook(settings: Settings):  # type: ignore[no-untyped-def]
    public = urlsplit(settings.public_url).netloc

    def hook(request: httpx.Request) -> None:
        if request.method not in ("GET", "HEAD") and request.url.netloc.decode() == public:
            request.headers.setdefault("Origin", settings.public_url)

    return hook


def console_session(
    settings: Settings, username: str, next_path: str | None = None
) -> tuple[httpx.Client, httpx.URL]:
    """A logged-in client and the URL the login landed on."""
    client = httpx.Client(
        follow_redirects=True, timeout=60, event_hooks={"request": [_same_origin_hook(settings)]}
    )
    params = {"next": next_path} if next_path is not None else None
    page = client.get(f"{console_base(settings)}/login", params=params)
    match = _ACTION.search(page.text)
    assert match, f"no Keycloak login form (HTTP {page.status_code})"
    for cookie in client.cookies.jar:  # Keycloak marks them Secure; browsers treat loopback as secure too
        cookie.secure = False
    done = client.post(
        html.unescape(match[1]),
        data={"username": username, "password": vault.secret(settings, "demo-password"), "credentialId": ""},
    )
    assert done.status_code in (200, 403), done.status_code
    assert client.cookies.get("datalab_console"), "the gateway set no session cookie"
    return client, done.url


def console_login(settings: Settings, username: str) -> httpx.Client:
    return console_session(settings, username)[0]


def csrf(page_html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page_html)
    assert match, "no CSRF token on the page"
    return match[1]
