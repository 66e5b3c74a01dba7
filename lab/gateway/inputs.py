"""The gateway's input boundary: every request's names, ids and bodies checked before use.

Routes call these before anything is logged, audited or sent to SQL (the rules are in
:mod:`lab.validate`). A refused query or extract request is recorded as a refusal, as
the design records refused grants and budgets, with the field's name and a fingerprint
of the value (length and SHA-256), never the value. The handlers installed by
:func:`install` give FastAPI's own failures (malformed JSON, a wrong type in the query
string, an unknown path or method) the gateway's error shape, in 中文 and English.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lab import validate
from lab.gateway.auth import Caller
from lab.ledger import Ledger
from lab.validate import InvalidInput

log = logging.getLogger(__name__)
REFUSED = "refused"


def error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "message": message}}, status_code=status)


def refuse(ledger: Ledger, caller: Caller, kind: str, exc: InvalidInput) -> None:
    """A refusal record for a request with invalid input: the field and a fingerprint only."""
    ledger.append(
        kind,
        actor=caller.username,
        organisation=caller.org,
        details={
            "outcome": REFUSED,
            "reason": exc.reason,
            "field": exc.field,
            "refused_value": exc.fingerprint,
        },
    )


def query(body: Any) -> dict[str, Any]:
    """A DP query's body: clean JSON with a dataset name."""
    checked = validate.body(body)
    validate.name(checked.get("dataset"), "dataset")
    return checked


def sql(body: Any) -> dict[str, Any]:
    """A SQL query's body: clean JSON with the text (its own gates are in :mod:`lab.dp.sql`)."""
    checked = validate.body(body)
    if not isinstance(checked.get("sql"), str):
        raise InvalidInput(
            "sql", "must be the text of one SELECT", "必须是一条 SELECT 语句的文本", checked.get("sql")
        )
    if not isinstance(checked.get("release", False), bool):
        raise InvalidInput("release", "must be true or false", "必须是 true 或 false", checked.get("release"))
    return checked


def extract(body: Any) -> dict[str, Any]:
    """A DP extract's body: clean JSON with a dataset name and an extract kind."""
    checked = validate.body(body)
    validate.name(checked.get("dataset"), "dataset")
    validate.name(checked.get("kind"), "kind")
    return checked


def checked_or_refused(ledger: Ledger, caller: Caller, kind: str, check: Any, body: Any) -> dict[str, Any]:
    """``check(body)``; on invalid input, a refusal record first, then the 400."""
    try:
        result: dict[str, Any] = check(body)
    except InvalidInput as exc:
        refuse(ledger, caller, kind, exc)
        raise
    return result


def export(body: Any) -> dict[str, Any]:
    """An export request's body; ``content_b64`` is left to the base64 decoder (it is large)."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise InvalidInput("body", "must be a JSON object", "必须是 JSON 对象", body)
    content = body.get("content_b64")
    if content is not None and not isinstance(content, str):
        raise InvalidInput(
            "content_b64", "must be the file's bytes in base64", "必须是 base64 编码的文件内容", content
        )
    checked = validate.body({k: v for k, v in body.items() if k != "content_b64"})
    checked["content_b64"] = content
    return checked


def _where(exc: RequestValidationError) -> str:
    """The place of the first problem (``query.limit``, ``body``), never the value."""
    for problem in exc.errors():
        loc = [str(part) for part in problem.get("loc", ()) if isinstance(part, str | int)]
        return ".".join(part if part.isascii() and len(part) <= 40 else "?" for part in loc) or "request"
    return "request"


def install(app: FastAPI) -> None:
    """Handlers that give FastAPI's own refusals the gateway's error shape."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = _where(exc)
        return error(
            400,
            "invalid-input",
            f"{where}: the request is malformed (not JSON, or a value of the wrong type); "
            f"correct it and send it again. / {where}：请求格式错误（不是 JSON 或类型不对），"
            "请改正后重新提交。",
        )

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = "There is no such page or API route; check the path. / 没有这个页面或接口，请检查路径。"
            reason = "no-such-route"
        elif exc.status_code == 405:
            message = "This route does not take that method; check GET or POST. / 该接口不支持此请求方法。"
            reason = "method-not-allowed"
        else:
            message = f"The request was refused (HTTP {exc.status_code}). / 请求被拒绝。"
            reason = "refused"
        response = error(exc.status_code, reason, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        route = request.scope.get("route")
        log.error("unexpected %s in %s %s", type(exc).__name__, request.method, getattr(route, "path", "?"))
        return error(
            500,
            "internal",
            "The gateway failed unexpectedly; try again, or tell the bureau. "
            "/ 网关发生意外错误，请重试或联系数据局。",
        )
