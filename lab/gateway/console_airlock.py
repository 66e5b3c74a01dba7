"""The airlock's console pages: output checking for operators, the requester's view for analysts.

``/console/operator/exports``            the exports, those waiting for a check first
``/console/operator/exports/{id}``       one export as its reviewers see it: the automatic
                                         checks beside the content (a table rendered, an
                                         image shown, text as text), comments, the decision
                                         form (approve, reject, request changes), versions
``/console/operator/exports/{id}/image`` the bytes of an export that *is* an image, served
                                         with its one image type, ``nosniff`` and a
                                         sandboxing CSP (never HTML, never SVG)
``/console/operator/exports/{id}/file``  the reviewer's download (recorded)
``/console/analyst/exports/{id}``        the requester's view: decisions and comments,
                                         reply, withdraw, resubmit a new version

Operator paths are closed by the role guard (:mod:`lab.gateway.guard`) and the page's
dependency; every form carries the session's CSRF token; the use cases
(:class:`lab.services.airlock.AirlockDesk`) check roles and the four-eyes rules again.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from lab.airlock import MAX_BYTES
from lab.errors import ConfigError
from lab.gateway.console import Analyst, Console, ConsoleDenied, Operator, clip
from lab.gateway.governance_api import attachment
from lab.ledger.exports import HELD, PENDING
from lab.services.governance import Governance

PAGE = "operator/exports"
MINE = "analyst/exports"
LISTED = 300  # rows of the list page (the newest first)
STATES = ("review", "all", "pending", "held", "approved", "released", "returned", "rejected", "withdrawn")
IMAGE_CSP = "default-src 'none'; img-src 'self'; style-src 'none'; sandbox"


def _matches(export: dict[str, Any], q: str) -> bool:
    hay = " ".join(str(export.get(k) or "") for k in ("id", "name", "organisation", "requester", "purpose"))
    return q.lower() in hay.lower()


def router(console: Console, gov: Governance) -> APIRouter:
    pages = APIRouter(prefix="/console")

    # --- operators: the output checkers ------------------------------------------------
    @pages.get(f"/{PAGE}")
    def exports_page(request: Request, session: Operator, state: str = "review", q: str = "") -> Response:
        state = state if state in STATES else "review"
        q = clip(q, 200) if all(c.isprintable() for c in q) else ""
        found = gov.exports(session.caller)
        if state == "review":
            found = [e for e in found if e["state"] in (PENDING, HELD)]
        elif state != "all":
            found = [e for e in found if e["state"] == state]
        if q:
            found = [e for e in found if _matches(e, q)]
        return console.render(
            request,
            "airlock_list.html",
            "export_review",
            session,
            exports=found[:LISTED],
            more=max(0, len(found) - LISTED),
            states=STATES,
            chosen=state,
            q=q,
            me=session.caller.username,
        )

    @pages.get(f"/{PAGE}/{{item}}")
    def review_page(request: Request, session: Operator, item: str) -> Response:
        detail = gov.export_detail(session.caller, item, via="console")
        return console.render(request, "airlock_review.html", "export_check", session, d=detail)

    @pages.get(f"/{PAGE}/{{item}}/image")
    def image(session: Operator, item: str) -> Response:
        mime, data = gov.export_image(session.caller, item, via="console")
        headers = {
            "Content-Security-Policy": IMAGE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline",
            "Cache-Control": "no-store",
        }
        return Response(data, media_type=mime, headers=headers)

    @pages.get(f"/{PAGE}/{{item}}/file")
    def review_file(session: Operator, item: str) -> Response:
        return attachment(*gov.review_download(session.caller, item, via="console"))

    @pages.post(f"/{PAGE}/{{item}}/comment")
    async def comment(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act(
            _at(PAGE, item),
            lambda: gov.comment_export(session.caller, item, form),
            said=lambda e: f"意见已记录。 / The comment on {e['name']} is recorded.",
        )

    @pages.post(f"/{PAGE}/{{item}}/decide")
    async def decide(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act(
            _at(PAGE, item), lambda: gov.review_export(session.caller, item, form), said=_said
        )

    @pages.post(f"/{PAGE}/{{item}}/revoke")
    async def revoke(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act(_at(PAGE, item), lambda: gov.revoke_export(session.caller, item, form))

    # --- analysts: the requester's side ------------------------------------------------
    @pages.get(f"/{MINE}/{{item}}")
    def mine_page(request: Request, session: Analyst, item: str) -> Response:
        detail = gov.export_detail(session.caller, item, via="console")
        return console.render(
            request, "airlock_mine.html", "my_export", session, d=detail, me=session.caller.username
        )

    @pages.post(f"/{MINE}/{{item}}/comment")
    async def reply(request: Request, session: Analyst, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act(_at(MINE, item), lambda: gov.comment_export(session.caller, item, form))

    @pages.post(f"/{MINE}/{{item}}/withdraw")
    async def withdraw(request: Request, session: Analyst, item: str) -> Response:
        await console.form(request, session)
        return await console.act(
            _at(MINE, item),
            lambda: gov.withdraw_export(session.caller, item),
            said=lambda e: f"导出申请 {e['id']} 已撤回。 / Export request {e['id']} is withdrawn.",
        )

    @pages.post(f"/{MINE}/{{item}}/resubmit")
    async def resubmit(request: Request, session: Analyst, item: str) -> Response:
        try:
            body = await _upload(request, session.csrf)
        except ConfigError as exc:
            return console.flash(_at(MINE, item), error=exc.message)
        return await console.act(
            _at(MINE, item),
            lambda: gov.resubmit_export(session.caller, item, body),
            said=lambda e: (
                f"新版本已提交（导出申请 {e['id']}），等待审核。 / The new version is submitted as export "
                f"request {e['id']} and awaits its reviewers."
            ),
        )

    return pages


def _at(page: str, item: str) -> str:
    """The page to go back to: the export's, for an id of digits; the list otherwise."""
    if item.isascii() and item.isdigit() and len(item) < 10:
        return f"{page}/{item}"
    return PAGE if page == PAGE else "analyst"


def _said(export: dict[str, Any]) -> str:
    state = export["state"]
    if state == "approved":
        return f"已批准并放行：{export['name']}。 / Approved and released: {export['name']}."
    if state == "returned":
        return "已退回申请人修改。 / Sent back to the requester for changes."
    if state == "rejected":
        return "已驳回。 / Rejected."
    return (
        "您的审核已记录；还需另一位运营人员审核后才会放行。 / Your check is recorded; the export is released "
        "only after another operator's check."
    )


async def _upload(request: Request, csrf: str) -> dict[str, Any]:
    """The resubmission form: a file (≤ the airlock's limit) and an optional note, CSRF checked."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BYTES + 65536:
        raise ConfigError(
            f"the file is larger than the airlock's limit of {MAX_BYTES >> 20} MB; export a summary "
            f"/ 文件超过导出上限 {MAX_BYTES >> 20} MB，请导出汇总结果",
            reason="too-large",
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ConfigError(
            "post the form from the export's page / 请从导出申请页面提交表单", reason="bad-form"
        )
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception:  # the parser's own refusals: a malformed body
        raise ConfigError(
            "the upload was cut off or malformed; try again / 上传中断或格式有误，请重试"
        ) from None
    if form.get("csrf") != csrf:
        raise ConsoleDenied("The form's security token is missing or stale; reload the page. / 请刷新页面。")
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ConfigError("choose the corrected file to upload / 请选择修改后的文件", reason="bad-form")
    data = await upload.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"the file is larger than the airlock's limit of {MAX_BYTES >> 20} MB / 文件超过导出上限",
            reason="too-large",
        )
    note = form.get("note")
    return {
        "name": upload.filename,
        "content_b64": base64.b64encode(data).decode(),
        **({"note": note} if isinstance(note, str) and note.strip() else {}),
    }
