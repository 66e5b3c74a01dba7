"""Export requests (the airlock): the rows, and the rules of a review.

A file leaves the lab only through a request. Its state says where it is:

==============  ======================================================================
``released``    exactly a DP result the gateway released to the organisation: out at once,
                as bytes regenerated from the kept result (never the uploaded bytes)
``pending``     passed the automated disclosure checks; waits for its reviewers
``held``        failed a check; the reasons are shown; the reviewers may reject it, send
                it back, or approve it each with an explicit override and a reason
``approved``    the required number of distinct reviewers approved it: downloadable
``rejected``    a reviewer refused it
``returned``    a reviewer sent it back for changes; its requester may resubmit it
``superseded``  returned, then resubmitted: the next version holds the request
``withdrawn``   its requester withdrew it before a decision
``revoked``     was downloadable, no longer is
==============  ======================================================================

Nobody reviews their own request; the reviews are in :mod:`lab.ledger.export_reviews`.
Only ``released`` and ``approved`` files can be downloaded by the organisation. The row
functions run inside a transaction opened by the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, insert, select, update
from sqlalchemy.engine import Connection

from lab.errors import AccessDenied, NotFound
from lab.ledger.chain import canonical_json
from lab.ledger.db import UTCDateTime, metadata

RELEASED = "released"
PENDING = "pending"
HELD = "held"
APPROVED = "approved"
REJECTED = "rejected"
REVOKED = "revoked"
RETURNED = "returned"
SUPERSEDED = "superseded"
WITHDRAWN = "withdrawn"
WITHDRAWABLE = ("pending", "held", "returned")
DOWNLOADABLE = (RELEASED, APPROVED)
REVIEWABLE = (PENDING, HELD)

exports = Table(
    "ledger_exports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("organisation", String(200), nullable=False),
    Column("requester", String(200), nullable=False),
    Column("name", String(300), nullable=False),
    Column("kind", String(32), nullable=False),  # dp-result | table | file
    Column("dataset", String(200), nullable=True),
    Column("purpose", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("object_key", String(500), nullable=False),
    Column("checks", Text, nullable=False),  # JSON: the automated checks' findings
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("reviewed_by", String(200), nullable=True),
    Column("reviewed_at", UTCDateTime, nullable=True),
    Column("review_reason", Text, nullable=True),
    Column("revoked_by", String(200), nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoke_reason", Text, nullable=True),
    Index("ix_ledger_exports_org", "organisation"),
    Index("ix_ledger_exports_state", "state"),
)


@dataclass(frozen=True)
class Export:
    """One export request."""

    id: int
    organisation: str
    requester: str
    name: str
    kind: str
    dataset: str | None
    purpose: str
    sha256: str
    size: int
    object_key: str
    state: str
    created_at: datetime
    checks: dict[str, Any] = field(default_factory=dict)
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_reason: str | None = None
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Export:
        values = dict(row)
        values["checks"] = json.loads(values["checks"])
        return cls(**values)

    @property
    def downloadable(self) -> bool:
        return self.state in DOWNLOADABLE

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "object_key"}
        for key in ("created_at", "reviewed_at", "revoked_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["downloadable"] = self.downloadable
        return out


# --- pure rules -----------------------------------------------------------------------


def check_download(export: Export) -> None:
    """AccessDenied unless the export may be downloaded now."""
    if export.state == REVOKED:
        why = f": {export.revoke_reason}" if export.revoke_reason else ""
        raise AccessDenied(
            f"export {export.id} was revoked by {export.revoked_by}{why} / 该导出已被撤销",
            reason="export-revoked",
        )
    if not export.downloadable:
        raise AccessDenied(
            f"export {export.id} is {export.state}, not approved; it can be downloaded once its reviewers "
            f"approve it / 该导出尚未批准（状态：{export.state}），审核通过后才能下载",
            reason=f"export-{export.state}",
        )


def held_reasons(export: Export) -> list[str]:
    return [str(f.get("message")) for f in export.checks.get("findings", []) if f.get("severity") == "fail"]


# --- rows -----------------------------------------------------------------------------


def insert_export(conn: Connection, *, now: datetime, checks: Mapping[str, Any], **values: Any) -> Export:
    row = {**values, "checks": canonical_json(dict(checks)), "created_at": now}
    new_id = conn.execute(insert(exports).values(**row).returning(exports.c.id)).scalar_one()
    return get_export(conn, new_id)


def get_export(conn: Connection, export_id: int, *, lock: bool = False) -> Export:
    query = select(exports).where(exports.c.id == export_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"there is no export {export_id} / 导出申请不存在", reason="no-such-export")
    return Export.from_row(row)


def select_exports(
    conn: Connection, *, organisation: str | None = None, state: str | None = None
) -> list[Export]:
    c = exports.c
    query = select(exports).order_by(c.id.desc())
    if organisation is not None:
        query = query.where(c.organisation == organisation)
    if state is not None:
        query = query.where(c.state == state)
    return [Export.from_row(row) for row in conn.execute(query).mappings()]


def set_state(conn: Connection, export_id: int, **values: Any) -> Export:
    conn.execute(update(exports).where(exports.c.id == export_id).values(**values))
    return get_export(conn, export_id)
