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
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from lab import vault
from lab.settings import Settings

_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"')


class _LocalhostResolver(httpcore.SyncBackend):
    """``*.localhost`` is loopback (RFC 6761). Browsers resolve it so by themselves; the system
    resolver here does not, so connections to such names go to 127.0.0.1 (Host stays the name)."""

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        if host.lower().endswith(".localhost"):
            host = "127.0.0.1"
        return super().connect_tcp(host, port, *args, **kwargs)


def _loopback_transport() -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(network_backend=_LocalhostResolver())
    return transport


def browser_like_client(**kwargs: Any) -> httpx.Client:
    """An httpx client that reaches hosts and sends cookies where a browser would.

    User servers sit on ``<label>.localhost`` hosts, which the client connects to on loopback.

    Python's cookie jar files a dotless host such as ``localhost`` as ``localhost.local``, so a
    cookie set with ``Domain=localhost`` (the hub's session id under ``subdomain_host``) never
    goes back to ``localhost`` itself, and the hub's XSRF token, bound to that session id,
    never matches. Browsers send it; a request hook adds it here."""
    hooks = dict(kwargs.pop("event_hooks", None) or {})
    client = httpx.Client(transport=_loopback_transport(), **kwargs)

    def send_domain_cookies(request: httpx.Request) -> None:
        host = request.url.host.lower()
        if "." in host:
            return
        present = request.headers.get("cookie", "")
        names = {part.split("=", 1)[0].strip() for part in present.split(";") if part.strip()}
        extra = [
            f"{c.name}={c.value}"
            for c in client.cookies.jar
            if c.domain.lower() in (host, "." + host)
            and c.name not in names
            and request.url.path.startswith(c.path)
            and not c.is_expired()
        ]
        if extra:
            request.headers["cookie"] = "; ".join(([present] if present else []) + extra)

    client.event_hooks = {**hooks, "request": [send_domain_cookies, *hooks.get("request", [])]}
    return client


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
    client = browser_like_client(
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
