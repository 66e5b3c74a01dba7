"""The bearer-token API of the access workflow, the export airlock and the audit trail.

Routes under ``/api/operator/`` and ``/api/auditor/`` check the role in a dependency,
which FastAPI runs before it parses the path, the query or the body: a caller without
the role gets 403 whatever the request looks like. :class:`Governance` checks again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lab import validate
from lab.gateway import inputs
from lab.gateway.auth import Caller, request_caller
from lab.gateway.minio_audit import PATH as WEBHOOK_PATH
from lab.gateway.minio_audit import AuditSink, entries
from lab.services.governance import Governance

JsonBody = Annotated[dict[str, Any] | None, Body()]


bearer = request_caller


def role(name: str) -> Callable[[Request], Caller]:
    def check(request: Request) -> Caller:
        caller = bearer(request)
        caller.require(name)
        return caller

    return check


Who = Annotated[Caller, Depends(bearer)]
Operator = Annotated[Caller, Depends(role("operator"))]
Auditor = Annotated[Caller, Depends(role("auditor"))]


def attachment(name: str, data: bytes) -> Response:
    disposition = f"attachment; filename*=UTF-8''{quote(name)}"
    return Response(data, media_type="application/octet-stream", headers={"Content-Disposition": disposition})


def checked(body: Any) -> dict[str, Any]:
    """A JSON body whose every key, string and number is clean (:func:`lab.validate.body`)."""
    return validate.body(body)


def router(gov: Governance, sink: AuditSink) -> APIRouter:
    api = APIRouter()

    # --- analysts (and operators where noted) -----------------------------------------
    @api.post("/api/applications")
    def apply(who: Who, body: JsonBody = None) -> dict[str, Any]:
        return gov.apply(who, checked(body))

    @api.get("/api/applications")
    def applications(who: Who, state: str | None = None) -> list[dict[str, Any]]:
        return gov.applications(who, state)

    @api.post("/api/applications/{application_id}/withdraw")
    def withdraw(who: Who, application_id: str) -> dict[str, Any]:
        return gov.withdraw(who, application_id)

    @api.get("/api/grants")
    def grants(who: Who, active: bool = False) -> list[dict[str, Any]]:
        return gov.grants(who, active=active)

    @api.post("/api/exports")
    def request_export(who: Who, body: JsonBody = None) -> dict[str, Any]:
        return gov.request_export(who, inputs.export(body))

    @api.get("/api/exports")
    def exports(who: Who, state: str | None = None) -> list[dict[str, Any]]:
        return gov.exports(who, state)

    @api.get("/api/exports/{export_id}/download")
    def download(who: Who, export_id: str) -> Response:
        return attachment(*gov.download_export(who, export_id, via="api"))

    @api.get("/api/exports/{export_id}")
    def export_detail(who: Who, export_id: str) -> dict[str, Any]:
        """An export with its versions, reviewers' decisions and comments (operators: and content)."""
        return gov.export_detail(who, export_id, via="api")

    @api.post("/api/exports/{export_id}/withdraw")
    def withdraw_export(who: Who, export_id: str) -> dict[str, Any]:
        return gov.withdraw_export(who, export_id)

    @api.post("/api/exports/{export_id}/resubmit")
    def resubmit_export(who: Who, export_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.resubmit_export(who, export_id, inputs.export(body))

    @api.post("/api/exports/{export_id}/comments")
    def reply(who: Who, export_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.comment_export(who, export_id, checked(body))

    # --- operators --------------------------------------------------------------------
    @api.get("/api/operator/applications")
    def queue(who: Operator, state: str | None = None) -> list[dict[str, Any]]:
        return gov.applications(who, state)

    @api.post("/api/operator/applications/{application_id}/approve")
    def approve(who: Operator, application_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.approve(who, application_id, checked(body))

    @api.post("/api/operator/applications/{application_id}/reject")
    def reject(who: Operator, application_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.reject(who, application_id, checked(body))

    @api.get("/api/operator/grants")
    def all_grants(who: Operator, active: bool = False) -> list[dict[str, Any]]:
        return gov.grants(who, active=active)

    @api.post("/api/operator/grants/{grant_id}/revoke")
    def revoke(who: Operator, grant_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.revoke(who, grant_id, checked(body))

    @api.get("/api/operator/catalogue")
    def operator_catalogue(who: Operator, q: str = "") -> list[dict[str, Any]]:
        return gov.catalogue(who, q)

    @api.get("/api/catalogue")
    def catalogue(who: Who, q: str = "") -> list[dict[str, Any]]:
        """The data catalogue (数据目录), for every role; ``q`` searches it."""
        return gov.catalogue(who, q)

    @api.get("/api/catalogue/{name}")
    def catalogue_entry(who: Who, name: str) -> dict[str, Any]:
        return gov.catalogue_entry(who, name)

    @api.get("/api/operator/exports")
    def all_exports(who: Operator, state: str | None = None) -> list[dict[str, Any]]:
        return gov.exports(who, state)

    @api.get("/api/operator/exports/{export_id}")
    def review_detail(who: Operator, export_id: str) -> dict[str, Any]:
        """The export and its content as the reviewer sees it (recorded as an export-view)."""
        return gov.export_detail(who, export_id, via="api")

    @api.get("/api/operator/exports/{export_id}/file")
    def review_file(who: Operator, export_id: str) -> Response:
        """The file for a reviewer, before or after a decision (recorded as a review download)."""
        return attachment(*gov.review_download(who, export_id, via="api"))

    @api.post("/api/operator/exports/{export_id}/comments")
    def comment(who: Operator, export_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.comment_export(who, export_id, checked(body))

    @api.post("/api/operator/exports/{export_id}/review")
    def review(who: Operator, export_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.review_export(who, export_id, checked(body))

    @api.post("/api/operator/exports/{export_id}/revoke")
    def revoke_export(who: Operator, export_id: str, body: JsonBody = None) -> dict[str, Any]:
        return gov.revoke_export(who, export_id, checked(body))

    # --- auditors ---------------------------------------------------------------------
    @api.get("/api/auditor/records")
    def records(
        who: Auditor,
        organisation: str | None = None,
        actor: str | None = None,
        dataset: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        filters = {
            "organisation": organisation,
            "actor": actor,
            "dataset": dataset,
            "kind": kind,
            "since": since,
            "until": until,
        }
        return gov.search(who, filters, limit)

    @api.get("/api/auditor/verify")
    def verify(who: Auditor) -> dict[str, Any]:
        return gov.verify(who)

    @api.get("/api/auditor/spending")
    def spending(who: Auditor, period: str = "day") -> list[dict[str, Any]]:
        return gov.spending(who, period)

    @api.get("/api/auditor/flags")
    def flags(who: Auditor, days: float = 30) -> list[dict[str, Any]]:
        return gov.flags(who, days)

    @api.get("/api/auditor/risk")
    def risk(who: Auditor) -> list[dict[str, Any]]:
        return gov.risk_reports(who)

    @api.get("/api/auditor/package")
    def package(who: Auditor, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
        return gov.package(who, since, until)

    # --- MinIO's audit webhook --------------------------------------------------------
    @api.post(WEBHOOK_PATH, include_in_schema=False)
    async def minio_audit(request: Request) -> dict[str, int]:
        sink.authenticate(request.headers.get("authorization"))
        body = await request.body()
        return {"recorded": await run_in_threadpool(sink.receive, list(entries(body)))}

    return api
