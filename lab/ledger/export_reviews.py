"""Output checking of export requests: versions, each reviewer's decision, comments.

An export that is ``pending`` or ``held`` needs ``required`` distinct approvals (two by
default; a dataset policy or the lab may ask more) before it is released, like
OpenSAFELY's two independent output checkers. The rules (:func:`check_decision`):

- only an operator decides (the service checks the role), never the requester, and each
  reviewer decides a version once: one person cannot give two of the approvals;
- ``reject`` and ``changes`` (sent back to the requester) need a comment saying why; one
  of them ends the version's review at once;
- a ``held`` export (one the automatic checks held) is approved only with an explicit
  override and a reason, by *each* of the required reviewers;
- a reviewer decides only after opening the content (the service checks an
  ``export-view`` or review download record of that reviewer).

A request sent back (``returned``) can be resubmitted by its requester: a new export row
(a new version, its own checks and reviews) whose round names the previous one, which
becomes ``superseded``. Earlier versions, their decisions and comments are kept.

Exports recorded before these tables existed have no round: they count as version 1
needing the lab's default number of approvals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text, insert, select
from sqlalchemy.engine import Connection

from lab.errors import AccessDenied, ConfigError
from lab.ledger.db import UTCDateTime, metadata
from lab.ledger.exports import HELD, REVIEWABLE, Export, held_reasons

APPROVE, REJECT, CHANGES = "approve", "reject", "changes"
DECISIONS = (APPROVE, REJECT, CHANGES)
DEFAULT_REVIEWERS = 2
MAX_COMMENT = 4000

rounds = Table(
    "ledger_export_rounds",
    metadata,
    Column("export_id", Integer, ForeignKey("ledger_exports.id"), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("previous_id", Integer, nullable=True),
    Column("first_id", Integer, nullable=False),
    Column("required", Integer, nullable=False),
    Index("ix_ledger_export_rounds_first", "first_id"),
)

decisions = Table(
    "ledger_export_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("export_id", Integer, ForeignKey("ledger_exports.id"), nullable=False),
    Column("reviewer", String(200), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("override", Integer, nullable=False, default=0),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_ledger_export_decisions_export", "export_id"),
)

comments = Table(
    "ledger_export_comments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("export_id", Integer, ForeignKey("ledger_exports.id"), nullable=False),
    Column("author", String(200), nullable=False),
    Column("file", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_ledger_export_comments_export", "export_id"),
)


@dataclass(frozen=True)
class Round:
    export_id: int
    version: int
    previous_id: int | None
    first_id: int
    required: int


@dataclass(frozen=True)
class Decision:
    reviewer: str
    decision: str
    reason: str | None
    override: bool
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


@dataclass(frozen=True)
class Comment:
    author: str
    file: str
    body: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


def approvals(found: Sequence[Decision]) -> list[str]:
    """The distinct reviewers who approved."""
    return sorted({d.reviewer for d in found if d.decision == APPROVE})


# --- pure rules -----------------------------------------------------------------------


def check_decision(
    export: Export,
    found: Sequence[Decision],
    reviewer: str,
    decision: str,
    reason: str | None,
    override: bool,
) -> None:
    """AccessDenied or ConfigError unless ``reviewer`` may decide ``export`` this way now."""
    if export.state not in REVIEWABLE:
        raise ConfigError(
            f"export {export.id} is {export.state}; only a pending or held export can be reviewed; "
            f"open its newest version / 该导出申请已处理（状态：{export.state}），只能审核待审或暂扣的申请",
            reason="already-decided",
        )
    if reviewer == export.requester:
        raise AccessDenied(
            f"{reviewer} requested export {export.id} and cannot review it; two other operators must "
            f"check it / 不能审核自己提出的导出申请，须由另外两位运营人员审核",
            reason="self-approval",
        )
    earlier = [d for d in found if d.reviewer == reviewer]
    if earlier:
        raise ConfigError(
            f"{reviewer} already decided export {export.id} ({earlier[0].decision}); the next check must "
            "come from another operator / 您已审核过该导出申请，下一次审核须由另一位运营人员完成",
            reason="already-reviewed",
        )
    if decision in (REJECT, CHANGES) and not (reason and reason.strip()):
        raise ConfigError(
            "say why in the comment: the requester reads it / 请填写理由（申请人会看到）",
            reason="invalid-value",
        )
    if decision == APPROVE and export.state == HELD and not (override and reason and reason.strip()):
        raise ConfigError(
            f"export {export.id} failed the automatic disclosure checks "
            f"({'; '.join(held_reasons(export))[:600]}); reject it or request changes, or approve it with "
            "an explicit override and a reason (each reviewer) / 该导出未通过自动披露检查："
            "请驳回或退回修改；如确需越过检查批准，须勾选“越过检查批准”并填写理由（每位审核人都须如此）",
            reason="held",
        )


def check_comment(body: Any) -> str:
    if not isinstance(body, str) or not body.strip():
        raise ConfigError("write the comment first / 请先填写意见", reason="invalid-value")
    if len(body) > MAX_COMMENT:
        raise ConfigError(
            f"a comment is at most {MAX_COMMENT} characters; shorten it / 意见最多 {MAX_COMMENT} 个字符",
            reason="invalid-value",
        )
    return body.strip()


# --- rows -----------------------------------------------------------------------------


def insert_round(conn: Connection, export_id: int, *, required: int, previous: Round | None) -> Round:
    made = Round(
        export_id=export_id,
        version=previous.version + 1 if previous else 1,
        previous_id=previous.export_id if previous else None,
        first_id=previous.first_id if previous else export_id,
        required=required,
    )
    conn.execute(insert(rounds).values(**made.__dict__))
    return made


def get_round(conn: Connection, export_id: int) -> Round:
    row = conn.execute(select(rounds).where(rounds.c.export_id == export_id)).mappings().first()
    if row is None:  # recorded before rounds existed
        return Round(export_id, 1, None, export_id, DEFAULT_REVIEWERS)
    return Round(**dict(row))


def versions(conn: Connection, first_id: int) -> list[Round]:
    query = select(rounds).where(rounds.c.first_id == first_id).order_by(rounds.c.version)
    return [Round(**dict(row)) for row in conn.execute(query).mappings()]


def insert_decision(conn: Connection, export_id: int, made: Decision) -> None:
    values = {**made.__dict__, "override": int(made.override)}
    conn.execute(insert(decisions).values(export_id=export_id, **values))


def select_decisions(conn: Connection, export_id: int) -> list[Decision]:
    c = decisions.c
    query = select(c.reviewer, c.decision, c.reason, c.override, c.at).where(c.export_id == export_id)
    return [
        Decision(r.reviewer, r.decision, r.reason, bool(r.override), r.at)
        for r in conn.execute(query.order_by(c.id)).mappings()
    ]


def insert_comment(conn: Connection, export_id: int, made: Comment) -> None:
    conn.execute(insert(comments).values(export_id=export_id, **made.__dict__))


def select_comments(conn: Connection, export_id: int) -> list[Comment]:
    c = comments.c
    query = select(c.author, c.file, c.body, c.at).where(c.export_id == export_id).order_by(c.id)
    return [Comment(r.author, r.file, r.body, r.at) for r in conn.execute(query).mappings()]


def approvals_by_export(conn: Connection) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {
        r.export_id: {"approvals": [], "required": r.required}
        for r in conn.execute(select(rounds.c.export_id, rounds.c.required)).mappings()
    }
    c = decisions.c
    query = select(c.export_id, c.reviewer).where(c.decision == APPROVE).order_by(c.id)
    for row in conn.execute(query).mappings():
        entry = out.setdefault(row.export_id, {"approvals": [], "required": DEFAULT_REVIEWERS})
        if row.reviewer not in entry["approvals"]:
            entry["approvals"].append(row.reviewer)
    return out
