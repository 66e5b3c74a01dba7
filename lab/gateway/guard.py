"""The role guard: operator and auditor paths are closed before any route runs.

A small ASGI middleware in front of the whole gateway. For a request whose (decoded)
path starts with an operator or auditor prefix, it authenticates the caller (bearer
token for ``/api/…``, console session for ``/console/…``) and refuses a caller without
the role with 403 — before routing, so neither a malformed body or query, nor a path
that matches no route, nor an older route that checks its role late can answer anything
else. The routes check the role again themselves.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lab.errors import NotAuthenticated
from lab.gateway.auth import ASK_FOR_TOKEN, TokenVerifier, bearer_token
from lab.gateway.sessions import SESSION_COOKIE
from lab.settings import GATEWAY_PREFIX

PREFIX = GATEWAY_PREFIX
RULES = (
    (f"{PREFIX}/api/operator/", "operator"),
    (f"{PREFIX}/api/auditor/", "auditor"),
    (f"{PREFIX}/api/audit/", "auditor"),
    (f"{PREFIX}/console/operator", "operator"),
    (f"{PREFIX}/console/auditor", "auditor"),
)


def required_role(path: str) -> str | None:
    """The role a path needs, or None if the guard leaves it to the route."""
    return next((role for prefix, role in RULES if path.startswith(prefix)), None)


def _refusal(username: str, roles: frozenset[str], role: str) -> str:
    held = ", ".join(sorted(roles)) or "none"
    return f"This needs the role {role}; {username} has {held}. / 需要角色 {role}。"


def _json(status: int, reason: str, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {"error": {"reason": reason, "message": message}}, status_code=status, headers=headers
    )


class RoleGuard:
    def __init__(self, app: ASGIApp, *, verifier: TokenVerifier, console: Any) -> None:
        self.app = app
        self.verifier = verifier
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        role = required_role(scope.get("path", "")) if scope["type"] == "http" else None
        if role is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = (
            self._console(request, role)
            if "/console/" in scope["path"]
            else await self._bearer(request, role)
        )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _bearer(self, request: Request, role: str) -> Response | None:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return _json(401, "not-authenticated", ASK_FOR_TOKEN)
        try:
            caller = await run_in_threadpool(self.verifier.caller, token)
        except NotAuthenticated as exc:
            return _json(401, exc.reason, exc.message)
        if role not in caller.roles:
            return _json(403, "access-denied", _refusal(caller.username, caller.roles, role))
        return None

    def _console(self, request: Request, role: str) -> Response | None:
        session = self.console.sessions.read(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.method == "GET":
                return RedirectResponse(
                    f"{self.console.base}/login?next={quote(request.url.path)}", status_code=303
                )
            return HTMLResponse("401 · log in first / 请先登录", status_code=401)
        if role not in session.caller.roles:
            reason = _refusal(session.caller.username, session.caller.roles, role)
            response: Response = self.console.render(
                request, "forbidden.html", "forbidden", session, reason=reason, status=403
            )
            return response
        return None
