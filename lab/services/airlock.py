"""The airlock's use cases, by role, independent of HTTP (a base of ``Governance``).

=====================  =================================================================
analyst                request an export; see the organisation's exports, each with its
                       reviewers' decisions and comments; withdraw their own request;
                       resubmit one sent back for changes (a new version); download
                       what was released or approved
operator               the output checkers: see every export and its content (a table,
                       an image, text; recorded as an ``export-view``), download it for
                       review (recorded), comment, decide (approve, reject, request
                       changes), revoke a released file
=====================  =================================================================

A decision is refused before the reviewer has seen the content, to the requester, to a
second decision by the same person, and (for a held export) without an override and a
reason; the export is released only at the required number of distinct approvals
(:mod:`lab.ledger.export_reviews`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from lab import airlock_view, validate
from lab.airlock import Airlock
from lab.errors import AccessDenied, ConfigError, NotFound
from lab.gateway.auth import Caller
from lab.ledger import Ledger
from lab.ledger import export_reviews as rv
from lab.ledger.applications import check_reason
from lab.ledger.export_flow import Review
from lab.ledger.exports import REVIEWABLE, Export


def _columns(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise ConfigError(
            f"{name} must be a list of column names / {name} 必须是列名列表", reason="invalid-value"
        )
    return [validate.column(c, name) for c in value]


def _text(body: Mapping[str, Any], name: str, limit: int = validate.MAX_TEXT) -> str | None:
    value = body.get(name)
    return None if value is None else validate.text(value, name, limit=limit)


def _history(review: Review) -> list[dict[str, Any]]:
    return [
        {
            "export": e.as_dict(),
            "version": r.version,
            "required": r.required,
            "decisions": [d.as_dict() for d in decisions],
            "comments": [c.as_dict() for c in comments],
        }
        for e, r, decisions, comments in review.versions
    ]


class AirlockDesk:
    """Export requests and their review, for analysts and operators."""

    ledger: Ledger
    airlock: Airlock

    def _export_of(self, caller: Caller, export_id: Any) -> Export:
        """The export, if ``caller`` may see it (operators: any; analysts: their organisation's)."""
        caller.require("analyst", "operator")
        export = self.ledger.get_export(validate.ident(export_id, "export id"))
        if "operator" not in caller.roles and export.organisation != caller.org:
            raise NotFound(f"there is no export {export.id} / 导出申请不存在", reason="no-such-export")
        return export

    def _file(self, body: Mapping[str, Any]) -> tuple[str, bytes]:
        name = validate.text(body.get("name") or "export", "name", limit=255, lines=False)
        content = body.get("content_b64") or ""
        try:
            if not isinstance(content, str):
                raise ValueError
            return name, base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                "content_b64 must be the file's bytes in base64 / content_b64 必须是 base64 编码的文件内容",
                reason="invalid-value",
            ) from None

    def request_export(
        self, caller: Caller, body: Mapping[str, Any], *, previous: int | None = None
    ) -> dict[str, Any]:
        caller.require("analyst")
        if not caller.org:
            raise AccessDenied("only analysts of an organisation can export / 仅机构分析人员可以导出")
        name, data = self._file(body)
        purpose = validate.text(body.get("purpose") or "", "purpose")
        dataset = validate.optional(validate.name, body.get("dataset"), "dataset")
        export = self.airlock.request(
            organisation=caller.org,
            requester=caller.username,
            name=name,
            data=data,
            purpose=purpose,
            dataset=dataset,
            counts=_columns(body.get("counts"), "counts"),
            by=_columns(body.get("by"), "by"),
            previous=previous,
        )
        return export.as_dict()

    def resubmit_export(self, caller: Caller, export_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """The requester's next version of a request sent back for changes (its own checks and reviews)."""
        old = self._export_of(caller, export_id)
        caller.require("analyst")
        if old.requester != caller.username:
            raise AccessDenied(
                f"only {old.requester}, who requested export {old.id}, can resubmit it "
                "/ 只有申请人本人可以重新提交",
                reason="not-requester",
            )
        note = body.get("note")
        text = validate.text(note, "note", limit=rv.MAX_COMMENT) if note else None
        merged = {"purpose": old.purpose, "dataset": old.dataset, "name": old.name, **body}
        merged.pop("note", None)
        made = self.request_export(caller, merged, previous=old.id)
        if text:  # what changed, for the reviewers: a comment on the new version
            self.ledger.comment_export(made["id"], by=caller.username, body=text)
        return made

    def withdraw_export(self, caller: Caller, export_id: Any) -> dict[str, Any]:
        export = self._export_of(caller, export_id)
        caller.require("analyst")
        return self.ledger.withdraw_export(export.id, by=caller.username).as_dict()

    def exports(self, caller: Caller, state: str | None = None) -> list[dict[str, Any]]:
        """Every export for operators (with approvals so far), the organisation's for analysts."""
        state = validate.optional(validate.name, state, "state")
        if "operator" in caller.roles:
            found = self.ledger.list_exports(state=state)
        else:
            caller.require("analyst")
            found = self.ledger.list_exports(organisation=caller.org, state=state) if caller.org else []
        counts = self.ledger.export_approvals()
        return [{**e.as_dict(), **counts.get(e.id, {"approvals": [], "required": None})} for e in found]

    def export_detail(self, caller: Caller, export_id: Any, *, via: str) -> dict[str, Any]:
        """An export with its versions, decisions and comments; for operators, also its content.

        An operator's view of the content is recorded (``export-view``) before it is read.
        """
        export = self._export_of(caller, export_id)
        review = self.ledger.export_review(export.id)
        view: dict[str, Any] = {
            "export": export.as_dict(),
            "version": review.round.version,
            "required": review.round.required,
            "approvals": review.approvals,
            "decisions": [d.as_dict() for d in review.decisions],
            "comments": [c.as_dict() for c in review.comments],
            "history": _history(review),
            "preview": None,
        }
        if "operator" in caller.roles:
            data = self.airlock.review_copy(export, actor=caller.username, via=via, shown="page")
            view["preview"] = airlock_view.preview(export.name, data)
            view["may_decide"] = self._may_decide(caller, export, review)
        return view

    @staticmethod
    def _may_decide(caller: Caller, export: Export, review: Review) -> dict[str, str] | None:
        """None if ``caller`` may decide now, else why not (中文 and English)."""
        if export.state not in REVIEWABLE:
            return {
                "zh": "该申请已处理，无需再审核。",
                "en": "this request is decided; there is nothing to review.",
            }
        if caller.username == export.requester:
            return {
                "zh": "这是您自己的申请，不能审核。",
                "en": "you requested this export and cannot review it.",
            }
        if any(d.reviewer == caller.username for d in review.decisions):
            return {
                "zh": "您已审核过此版本；下一次审核须由另一位运营人员完成。",
                "en": "you already decided this version; the next check must come from another operator.",
            }
        return None

    def export_image(self, caller: Caller, export_id: Any, *, via: str) -> tuple[str, bytes]:
        """An export that *is* an image (magic numbers), for a reviewer's page: its type and bytes."""
        caller.require("operator")
        export = self._export_of(caller, export_id)
        data = self.airlock.read(export)
        mime = airlock_view.preview(export.name, data).get("mime")
        if mime is None:
            raise ConfigError(
                f"export {export.id} ({export.name}) is not an image the console shows (PNG, JPEG, GIF, "
                "WebP); download it to inspect it / 该文件不是可显示的图片，请下载后检查",
                reason="not-an-image",
            )
        self.ledger.record_view(export, actor=caller.username, via=via, shown="image")
        return str(mime), data

    def review_download(self, caller: Caller, export_id: Any, *, via: str) -> tuple[str, bytes]:
        """Any export's bytes for an operator, recorded as a review download first."""
        caller.require("operator")
        export = self._export_of(caller, export_id)
        return export.name, self.airlock.review_copy(export, actor=caller.username, via=via)

    def comment_export(self, caller: Caller, export_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """A reviewer's (or the requesting organisation's) comment on the file."""
        export = self._export_of(caller, export_id)
        comment = validate.text(body.get("comment") or "", "comment", limit=rv.MAX_COMMENT)
        return self.ledger.comment_export(export.id, by=caller.username, body=comment).as_dict()

    def review_export(self, caller: Caller, export_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """One reviewer's decision: approve, reject or request changes (``comment`` says why)."""
        caller.require("operator")
        export = self._export_of(caller, export_id)
        decision = validate.choice(body.get("decision"), "decision", rv.DECISIONS)
        override = body.get("override") in (True, "true", "on", "1")
        reason = _text(body, "reason") or _text(body, "comment", rv.MAX_COMMENT)
        unseen = export.state in REVIEWABLE and export.requester != caller.username
        if unseen and not self.ledger.has_seen(export, caller.username):
            raise ConfigError(
                f"open export {export.id}'s content before deciding (its page in the console, or "
                f"GET /api/operator/exports/{export.id}) / 请先查看导出内容（控制台的审核页面）再作决定",
                reason="not-viewed",
            )
        decided = self.ledger.decide_export(
            export.id, by=caller.username, decision=decision, reason=reason, override=override
        )
        return decided.as_dict()

    def revoke_export(self, caller: Caller, export_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        caller.require("operator")
        export = self._export_of(caller, export_id)
        reason = check_reason(_text(body, "reason"))
        return self.ledger.revoke_export(export.id, by=caller.username, reason=reason).as_dict()

    def download_export(self, caller: Caller, export_id: Any, *, via: str) -> tuple[str, bytes]:
        """A released or approved export's name and bytes: its organisation's analysts, operators."""
        export = self._export_of(caller, export_id)
        export, data = self.airlock.download(export.id, actor=caller.username, via=via)
        return export.name, data
