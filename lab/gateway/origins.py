"""Origins and page headers: what the gateway says to, and accepts from, a browser.

The hub, the consoles and the gateway share one origin (``Settings.public_url``); every
analyst's server has its own (``http://<user>.<domain>:<port>``, JupyterHub's
``subdomain_host``). :class:`OriginGuard`, an ASGI middleware in front of the whole
gateway, makes that separation hold for the gateway's own requests and pages:

- **State-changing requests** (POST, PUT, PATCH, DELETE) must come from the consoles' own
  origin: an ``Origin`` header equal to it, or ``Sec-Fetch-Site: same-origin``. A request
  that carries neither is accepted only as a bearer-authenticated API call (a notebook's
  ``lab`` client, MinIO's webhook), never on ``/console/``, where the session is a cookie.
  Anything else gets 403 (401 for an API call with no token at all) before the route runs,
  and nothing changes.
- **Every response** carries a strict Content-Security-Policy (no script at all, styles
  only the consoles' own, pinned by hash, ``frame-ancestors 'none'``, forms only to the gateway and
  Keycloak), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``, a
  ``Referrer-Policy``, and cross-origin isolation headers; console pages are not cached.

:func:`console_target` normalises the ``next=`` of the console's login and language links
to a path under the console, so a crafted link cannot send a person anywhere else.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from urllib.parse import quote, unquote, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lab.gateway.auth import bearer_token

log = logging.getLogger(__name__)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SHOWN_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?$")
_PATH_CHARS = "/:@-._~!$&'()*+,;="
NO_TOKEN = (
    "This request changes something but carries neither the console's Origin nor "
    "'Authorization: Bearer <access token>'; send the token. / 该请求既无控制台来源也无访问令牌，"
    "请提供访问令牌。"
)


def content_security_policy(keycloak: str, styles: Sequence[str] = ()) -> str:
    """No script, no plugins, no framing; only the pages' own (hash-pinned) styles; forms to the
    gateway and Keycloak."""
    return "; ".join(
        [
            "default-src 'none'",
            "style-src " + (" ".join(styles) or "'none'"),
            "img-src 'self' data:",
            f"form-action 'self' {keycloak}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def page_headers(keycloak: str, styles: Sequence[str] = ()) -> list[tuple[bytes, bytes]]:
    """The headers every gateway response carries."""
    values = {
        "content-security-policy": content_security_policy(keycloak, styles),
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-resource-policy": "same-origin",
    }
    return [(k.encode(), v.encode()) for k, v in values.items()]


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, as browsers write it in ``Origin``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def console_target(next_path: str | None, base: str) -> str:
    """``next_path`` if it is a plain path under the console ``base``; otherwise the console's home.

    Refused (home instead): a scheme or host, ``//``, a backslash, ``.`` or ``..`` segments,
    control characters — also when percent-encoded, once or several times.
    """
    home = base.rstrip("/") + "/"
    raw = (next_path or "").split("#", 1)[0].split("?", 1)[0]
    decoded = raw
    for _ in range(4):  # %252e%252e → %2e%2e → ..
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    else:
        return home
    if (
        not decoded.startswith("/")
        or "//" in decoded
        or "\\" in decoded
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded)
        or urlsplit(decoded).scheme
        or urlsplit(decoded).netloc
    ):
        return home
    segments = decoded.split("/")
    if any(segment in (".", "..") for segment in segments):
        return home
    if decoded != base.rstrip("/") and not decoded.startswith(home):
        return home
    return quote(decoded, safe=_PATH_CHARS)


class OriginGuard:
    """Refuses cross-origin state changes and puts the page headers on every response."""

    def __init__(
        self, app: ASGIApp, *, origin: str, keycloak: str, console_prefix: str, styles: Sequence[str] = ()
    ) -> None:
        self.app = app
        self.origin = origin_of(origin)
        self.console_prefix = console_prefix.rstrip("/")
        self.headers = page_headers(origin_of(keycloak), styles)

    def refusal(self, method: str, path: str, headers: Headers) -> str | None:
        """Why this request may not change anything, or None if it may."""
        if method not in STATE_CHANGING:
            return None
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if origin is not None and origin.strip().lower() != self.origin:
            return "cross-origin"
        if site is not None and site.strip().lower() != "same-origin":
            return "cross-site"
        if origin is not None or site is not None:
            return None
        on_console = path == self.console_prefix or path.startswith(self.console_prefix + "/")
        if on_console:
            return "origin-missing"
        if bearer_token(headers.get("authorization")) is not None:
            return None  # a bearer-token API call from a program: no browser, no ambient cookie
        return "not-authenticated"  # no Origin is accepted only with a bearer token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        reason = self.refusal(scope["method"], scope.get("path", ""), headers)
        if reason is not None:
            shown = headers.get("origin", "")
            log.warning(
                "refused %s %s: %s (Origin %s)",
                scope["method"],
                "".join(ch if ch.isprintable() else "?" for ch in scope.get("path", "")[:200]),
                reason,
                shown if _SHOWN_ORIGIN.match(shown) else "absent or malformed",
            )
            await self._refuse(scope, send, reason, headers)
            return
        on_console = scope.get("path", "").startswith(self.console_prefix + "/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                if on_console and b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, scope: Scope, send: Send, reason: str, headers: Headers) -> None:
        if reason == "not-authenticated":
            await self._send(
                send,
                401,
                json.dumps({"error": {"reason": reason, "message": NO_TOKEN}}, ensure_ascii=False).encode(),
                b"application/json",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        message = (
            "This request came from another site or page (its Origin is not "
            f"{self.origin}); nothing was changed. Use the console itself, or call the API "
            "with 'Authorization: Bearer <access token>' and no foreign Origin. / "
            "该请求来自其他网站或页面（来源与控制台不一致），未做任何更改。请直接在控制台中操作，"
            "或使用访问令牌调用 API。"
        )
        wants_html = "text/html" in headers.get("accept", "") or scope.get("path", "").startswith(
            self.console_prefix + "/"
        )
        if wants_html:
            body = (
                "<!doctype html><meta charset=utf-8><title>403</title>"
                f"<h1>403 · {reason}</h1><p id=refusal>{_escape(message)}</p>"
            ).encode()
            kind = b"text/html; charset=utf-8"
        else:
            body = json.dumps({"error": {"reason": reason, "message": message}}, ensure_ascii=False).encode()
            kind = b"application/json"
        await self._send(send, 403, body, kind)

    async def _send(
        self, send: Send, status: int, body: bytes, kind: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", kind),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *extra,
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["OriginGuard", "console_target", "content_security_policy", "origin_of"]
