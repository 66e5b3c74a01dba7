"""The airlock half of the ledger: export requests, their reviews, comments and versions.

:class:`ExportFlow` is a base of :class:`lab.ledger.Ledger`. Each method that changes a
row appends its audit record in the same transaction: ``export`` (a request or a new
version), ``export-review`` (one reviewer's decision, with the approvals so far and the
number required), ``export-comment``, ``export-withdraw``, ``export-revoke``,
``export-view`` and ``export-download`` (someone read the bytes). The rules are in
:mod:`lab.ledger.exports` and :mod:`lab.ledger.export_reviews`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lab.errors import AccessDenied, ConfigError
from lab.ledger import export_reviews as rv
from lab.ledger import exports as ex
from lab.ledger.applications import check_reason
from lab.ledger.base import LedgerCore
from lab.ledger.db import read_tx
from lab.ledger.exports import Export
from lab.ledger.models import Kind

EXPORT_REVIEW = "export-review"
EXPORT_REVOKE = "export-revoke"
EXPORT_COMMENT = "export-comment"
EXPORT_WITHDRAW = "export-withdraw"
EXPORT_VIEW = "export-view"
EXPORT_DOWNLOAD = "export-download"


@dataclass(frozen=True)
class Review:
    """An export with its round, every reviewer's decision, the comments and its versions."""

    export: Export
    round: rv.Round
    decisions: list[rv.Decision]
    comments: list[rv.Comment]
    versions: list[tuple[Export, rv.Round, list[rv.Decision], list[rv.Comment]]]

    @property
    def approvals(self) -> list[str]:
        return rv.approvals(self.decisions)


class ExportFlow(LedgerCore):
    """Export requests → reviews (two or more distinct approvals) → release, with history."""

    def request_export(
        self,
        *,
        organisation: str,
        requester: str,
        name: str,
        kind: str,
        dataset: str | None,
        purpose: str,
        sha256: str,
        size: int,
        object_key: str,
        state: str,
        checks: Mapping[str, Any],
        required: int = rv.DEFAULT_REVIEWERS,
        previous: int | None = None,
    ) -> Export:
        """Record an export request (already checked and stored) with its ``export`` record.

        With ``previous`` (a ``returned`` request of the same requester) it is the next
        version of that request, which becomes ``superseded``, in the same transaction.
        """
        with self._write() as tx:
            before = None
            if previous is not None:
                old = ex.get_export(tx.conn, previous, lock=True)
                if old.requester != requester or old.organisation != organisation:
                    raise AccessDenied(
                        f"only {old.requester} can resubmit export {old.id} / 只有申请人本人可以重新提交",
                        reason="not-requester",
                    )
                if old.state != ex.RETURNED:
                    raise ConfigError(
                        f"export {old.id} is {old.state}; only a request sent back for changes can be "
                        f"resubmitted / 只有被退回修改的导出申请可以重新提交（当前状态：{old.state}）",
                        reason="not-returned",
                    )
                before = rv.get_round(tx.conn, old.id)
                ex.set_state(tx.conn, old.id, state=ex.SUPERSEDED)
            export = ex.insert_export(
                tx.conn,
                now=tx.at,
                checks=checks,
                organisation=organisation,
                requester=requester,
                name=name,
                kind=kind,
                dataset=dataset,
                purpose=purpose,
                sha256=sha256,
                size=size,
                object_key=object_key,
                state=state,
            )
            made = rv.insert_round(tx.conn, export.id, required=required, previous=before)
            tx.append(
                Kind.EXPORT,
                actor=requester,
                organisation=organisation,
                dataset=dataset,
                details={
                    "export": export.id,
                    "name": name,
                    "kind": kind,
                    "sha256": sha256,
                    "size": size,
                    "state": state,
                    "reasons": ex.held_reasons(export),
                    "version": made.version,
                    "previous": made.previous_id,
                    "reviewers_required": required,
                },
            )
        return export

    def get_export(self, export_id: int) -> Export:
        with read_tx(self._engine) as conn:
            return ex.get_export(conn, export_id)

    def list_exports(self, *, organisation: str | None = None, state: str | None = None) -> list[Export]:
        with read_tx(self._engine) as conn:
            return ex.select_exports(conn, organisation=organisation, state=state)

    def export_approvals(self) -> dict[int, dict[str, Any]]:
        """For every export with a round: the distinct approvers so far and the number required."""
        with read_tx(self._engine) as conn:
            return rv.approvals_by_export(conn)

    def export_review(self, export_id: int) -> Review:
        """An export with its decisions, comments and every version of its request."""
        with read_tx(self._engine) as conn:
            export = ex.get_export(conn, export_id)
            this = rv.get_round(conn, export.id)
            chain = rv.versions(conn, this.first_id) or [this]
            history = [
                (
                    ex.get_export(conn, r.export_id),
                    r,
                    rv.select_decisions(conn, r.export_id),
                    rv.select_comments(conn, r.export_id),
                )
                for r in chain
            ]
            return Review(
                export,
                this,
                rv.select_decisions(conn, export.id),
                rv.select_comments(conn, export.id),
                history,
            )

    def decide_export(
        self, export_id: int, *, by: str, decision: str, reason: str | None = None, override: bool = False
    ) -> Export:
        """One reviewer's decision; the export is released when enough distinct reviewers approved."""
        why = (reason or "").strip() or None
        if why is not None:
            why = check_reason(why)
        with self._write() as tx:
            export = ex.get_export(tx.conn, export_id, lock=True)
            found = rv.select_decisions(tx.conn, export.id)
            rv.check_decision(export, found, by, decision, why, override)
            this = rv.get_round(tx.conn, export.id)
            made = rv.Decision(by, decision, why, override and export.state == ex.HELD, tx.at)
            rv.insert_decision(tx.conn, export.id, made)
            approved = rv.approvals([*found, made])
            if decision == rv.REJECT:
                export = ex.set_state(
                    tx.conn,
                    export.id,
                    state=ex.REJECTED,
                    reviewed_by=by,
                    reviewed_at=tx.at,
                    review_reason=why,
                )
            elif decision == rv.CHANGES:
                export = ex.set_state(
                    tx.conn,
                    export.id,
                    state=ex.RETURNED,
                    reviewed_by=by,
                    reviewed_at=tx.at,
                    review_reason=why,
                )
            elif len(approved) >= this.required:
                reasons = "; ".join(f"{d.reviewer}: {d.reason}" for d in [*found, made] if d.reason)
                export = ex.set_state(
                    tx.conn,
                    export.id,
                    state=ex.APPROVED,
                    reviewed_by=", ".join(approved)[:200],
                    reviewed_at=tx.at,
                    review_reason=reasons or None,
                )
            tx.append(
                EXPORT_REVIEW,
                actor=by,
                organisation=export.organisation,
                dataset=export.dataset,
                details={
                    "export": export.id,
                    "version": this.version,
                    "decision": decision,
                    "reason": why,
                    "override": made.override,
                    "approvals": len(approved),
                    "required": this.required,
                    "state": export.state,
                    "released": export.state == ex.APPROVED,
                },
            )
        return export

    def comment_export(self, export_id: int, *, by: str, body: str) -> Export:
        """A comment on the export's file, kept with the request and in the audit log."""
        text = rv.check_comment(body)
        with self._write() as tx:
            export = ex.get_export(tx.conn, export_id, lock=True)
            rv.insert_comment(tx.conn, export.id, rv.Comment(by, export.name, text, tx.at))
            tx.append(
                EXPORT_COMMENT,
                actor=by,
                organisation=export.organisation,
                dataset=export.dataset,
                details={"export": export.id, "file": export.name, "comment": text},
            )
        return export

    def withdraw_export(self, export_id: int, *, by: str) -> Export:
        """The requester withdraws a request that is not decided yet."""
        with self._write() as tx:
            export = ex.get_export(tx.conn, export_id, lock=True)
            if by != export.requester:
                raise AccessDenied(
                    f"only {export.requester}, who requested export {export.id}, can withdraw it "
                    "/ 只有申请人本人可以撤回导出申请",
                    reason="not-requester",
                )
            if export.state not in ex.WITHDRAWABLE:
                raise ConfigError(
                    f"export {export.id} is {export.state}; only a pending, held or returned request can "
                    f"be withdrawn / 该导出申请已处理（状态：{export.state}），不能撤回",
                    reason="already-decided",
                )
            export = ex.set_state(tx.conn, export.id, state=ex.WITHDRAWN)
            tx.append(
                EXPORT_WITHDRAW,
                actor=by,
                organisation=export.organisation,
                dataset=export.dataset,
                details={"export": export.id},
            )
        return export

    def revoke_export(self, export_id: int, *, by: str, reason: str) -> Export:
        """Withdraw a downloadable export; revoking twice changes nothing."""
        why = check_reason(reason)
        with self._write() as tx:
            export = ex.get_export(tx.conn, export_id, lock=True)
            if export.state == ex.REVOKED:
                return export
            export = ex.set_state(
                tx.conn, export.id, state=ex.REVOKED, revoked_by=by, revoked_at=tx.at, revoke_reason=why
            )
            tx.append(
                EXPORT_REVOKE,
                actor=by,
                organisation=export.organisation,
                dataset=export.dataset,
                details={"export": export.id, "reason": why},
            )
        return export

    def record_download(self, export: Export, *, actor: str, via: str, review: bool = False) -> None:
        """An ``export-download`` record, written before the bytes are sent."""
        details: dict[str, Any] = {"export": export.id, "sha256": export.sha256, "via": via}
        if review:
            details["review"] = True
        self.append(
            EXPORT_DOWNLOAD,
            actor=actor,
            organisation=export.organisation,
            dataset=export.dataset,
            details=details,
        )

    def record_view(self, export: Export, *, actor: str, via: str, shown: str) -> None:
        """An ``export-view`` record: a reviewer saw the content (``shown``: page, image)."""
        self.append(
            EXPORT_VIEW,
            actor=actor,
            organisation=export.organisation,
            dataset=export.dataset,
            details={"export": export.id, "sha256": export.sha256, "via": via, "shown": shown},
        )

    def has_seen(self, export: Export, actor: str) -> bool:
        """True if ``actor`` viewed or downloaded this export's bytes (an audit record says so)."""
        for kind in (EXPORT_VIEW, EXPORT_DOWNLOAD):
            for record in self.records(actor=actor, kind=kind, organisation=export.organisation):
                if (
                    record.details.get("export") == export.id
                    and record.details.get("sha256") == export.sha256
                ):
                    return True
        return False
