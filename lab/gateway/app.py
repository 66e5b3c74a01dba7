"""The gateway's HTTP API (FastAPI), served by the hub's proxy at ``/services/gateway/``.

Every ``/api`` call carries ``Authorization: Bearer <Keycloak access token>``. Errors come
back as ``{"error": {"reason": ..., "message": ...}}`` with a status that says what kind
of failure it was: 400 bad query, 401 not authenticated, 403 not allowed (no grant,
wrong role, budget exhausted), 404 unknown dataset or column, 429 busy (too many heavy
queries at once: ``Retry-After`` says when to try again; nothing was charged).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from lab.dp import sql as dpsql
from lab.errors import (
    AccessDenied,
    BudgetExhausted,
    Busy,
    ConfigError,
    LabError,
    NotAuthenticated,
    NotFound,
)
from lab.extracts import ledger as open_ledger
from lab.gateway import inputs
from lab.gateway.auth import Caller, TokenVerifier, request_caller
from lab.gateway.governance_routes import routes as governance_routes
from lab.gateway.revocation import Sweeper
from lab.ledger import Kind
from lab.registry.datasets import LivePolicies
from lab.services.queries import Gateway
from lab.settings import GATEWAY_PREFIX, Settings, load_settings

PREFIX = GATEWAY_PREFIX
STATUS: list[tuple[type[LabError], int]] = [
    (NotAuthenticated, 401),
    (BudgetExhausted, 403),
    (AccessDenied, 403),
    (NotFound, 404),
    (ConfigError, 400),
    (Busy, 429),
]


def _status(exc: LabError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def error_response(exc: LabError) -> JSONResponse:
    """``{"error": {"reason", "message"}}`` with the status of its kind; busy adds ``Retry-After``."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
    error: dict[str, Any] = {"reason": exc.reason, "message": exc.message}
    if isinstance(exc, Busy):
        headers = {"Retry-After": str(exc.retry_after)}
        error.update(position=exc.position, retry_after=exc.retry_after)
    return JSONResponse({"error": error}, status_code=_status(exc), headers=headers)


Who = Annotated[Caller, Depends(request_caller)]


def create_app(settings: Settings) -> FastAPI:
    """The gateway application for ``settings``."""
    verifier = TokenVerifier(settings)
    sweeper = Sweeper(settings, verifier.directory)  # S3 access follows Keycloak (≤ 30 s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper.start()
        yield
        sweeper.stop()

    app = FastAPI(
        title="Data Lab gateway",
        docs_url=f"{PREFIX}/docs",
        openapi_url=f"{PREFIX}/openapi.json",
        lifespan=lifespan,
    )
    ledger = open_ledger(settings)
    gateway = Gateway(settings, ledger, LivePolicies.of(settings))  # follows accepted imports
    app.state.gateway = gateway
    app.state.verifier = verifier

    @app.exception_handler(LabError)
    async def lab_error(request: Request, exc: LabError) -> JSONResponse:
        return error_response(exc)

    inputs.install(app)
    router = APIRouter(prefix=PREFIX)

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "realm": settings.realm}

    @router.get("/api/me")
    def me(who: Who) -> dict[str, Any]:
        return {"username": who.username, "org": who.org, "roles": sorted(who.roles)}

    @router.get("/api/datasets")
    def list_datasets(who: Who) -> list[dict[str, Any]]:
        return gateway.datasets(who)

    def checked(who: Caller, kind: str, check: Any, body: Any) -> dict[str, Any]:
        return inputs.checked_or_refused(ledger, who, kind, check, body)

    @router.post("/api/queries/preview")
    def preview(who: Who, body: dict[str, Any]) -> dict[str, Any]:
        return gateway.preview(who, checked(who, Kind.DP_QUERY, inputs.query, body))

    @router.post("/api/queries")
    def run(who: Who, body: dict[str, Any]) -> Any:
        released = jsonable_encoder(gateway.run(who, checked(who, Kind.DP_QUERY, inputs.query, body)))
        app.state.governance.airlock.keep(who.org, released)  # what the airlock may release later
        return JSONResponse(released)

    @router.post("/api/sql")
    def sql(who: Who, body: dict[str, Any]) -> Any:
        """One SELECT as a DP query: its preview, or with ``"release": true`` its result (charged)."""
        request = checked(who, Kind.DP_QUERY, inputs.sql, body)
        who.require("analyst")
        query = checked(who, Kind.DP_QUERY, inputs.query, dpsql.request_query(request))
        if not request.get("release"):
            return {"query": query, "preview": gateway.preview(who, query)}
        released = jsonable_encoder(gateway.run(who, query))
        app.state.governance.airlock.keep(who.org, released)
        return JSONResponse({**released, "query": query})

    @router.post("/api/extracts/preview")
    def extract_preview(who: Who, body: dict[str, Any]) -> dict[str, Any]:
        return gateway.extract_preview(who, checked(who, "dp-extract", inputs.extract, body))

    @router.post("/api/extracts")
    def build_extract(who: Who, body: dict[str, Any]) -> dict[str, Any]:
        return gateway.build_extract(who, checked(who, "dp-extract", inputs.extract, body))

    @router.get("/api/queries")
    def history(who: Who) -> list[dict[str, Any]]:
        return gateway.history(who)

    app.include_router(router)
    app.state.settings = settings
    app.include_router(governance_routes(app))  # workflow, airlock, audit trail, consoles
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the environment, read at start."""
    return create_app(load_settings())
