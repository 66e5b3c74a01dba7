"""The values the ledger hands out: grants, reservations, audit records and reports.

All are frozen dataclasses built from database rows; amounts of budget are floats
converted from the exact integer units stored in the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lab.ledger.db import DELTA_SCALE, EPS_SCALE, from_units

MODES = ("dp", "masked")

# Reservation states: outstanding, paid (counts against the budget), refunded (does not).
RESERVED = "reserved"
SPENT = "spent"
REFUNDED = "refunded"

# Outcomes of a reservation, as written to the reservation row and its audit record.
RELEASED = "released"  # the result went to the caller: charged
FAILED_AFTER_NOISE = "failed-after-noise"  # noise was drawn, no result delivered: charged
FAILED_BEFORE_NOISE = "failed-before-noise"  # nothing computed from the data: refunded
ABANDONED = "abandoned"  # never settled (e.g. the process died): charged
REFUSED = "refused"  # no reservation made (no grant, expired, budget exhausted)


class Kind:
    """Well-known kinds of audit record. Others are allowed (lowercase words and hyphens)."""

    LOGIN = "login"
    APPLICATION = "application"
    DECISION = "decision"
    GRANT = "grant"
    REVOKE = "revoke"
    EXTRACT_BUILD = "extract-build"
    DOWNLOAD = "download"
    DP_QUERY = "dp-query"
    EXPORT = "export"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class Grant:
    """Permission for one organisation to receive one dataset, for a purpose, until a date."""

    id: int
    organisation: str
    dataset: str
    purpose: str
    modes: tuple[str, ...]
    epsilon: float
    delta: float
    expires_at: datetime
    approved_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def status(self, at: datetime) -> str:
        """``"active"``, ``"expired"`` or ``"revoked"`` at time ``at``."""
        if self.revoked_at is not None:
            return "revoked"
        if at >= self.expires_at:
            return "expired"
        return "active"

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Grant:
        return cls(
            id=row["id"],
            organisation=row["organisation"],
            dataset=row["dataset"],
            purpose=row["purpose"],
            modes=tuple(m for m in row["modes"].split(",") if m),
            epsilon=from_units(row["epsilon_units"], EPS_SCALE),
            delta=from_units(row["delta_units"], DELTA_SCALE),
            expires_at=row["expires_at"],
            approved_by=row["approved_by"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
            revoked_by=row["revoked_by"],
            revoke_reason=row["revoke_reason"],
        )


@dataclass(frozen=True)
class BudgetStatus:
    """A grant's budget: total, committed (spent), outstanding (reserved) and remaining."""

    grant_id: int
    epsilon_budget: float
    delta_budget: float
    epsilon_spent: float
    delta_spent: float
    epsilon_reserved: float
    delta_reserved: float
    epsilon_remaining: float
    delta_remaining: float


@dataclass(frozen=True)
class Reservation:
    """Budget set aside for one operation, until it is committed or released."""

    id: int
    grant_id: int
    organisation: str
    dataset: str
    actor: str
    kind: str
    query: str | None
    epsilon: float
    delta: float
    state: str
    outcome: str | None
    created_at: datetime
    settled_at: datetime | None
    audit_seq: int | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Reservation:
        return cls(
            id=row["id"],
            grant_id=row["grant_id"],
            organisation=row["organisation"],
            dataset=row["dataset"],
            actor=row["actor"],
            kind=row["kind"],
            query=row["query"],
            epsilon=from_units(row["epsilon_units"], EPS_SCALE),
            delta=from_units(row["delta_units"], DELTA_SCALE),
            state=row["state"],
            outcome=row["outcome"],
            created_at=row["created_at"],
            settled_at=row["settled_at"],
            audit_seq=row["audit_seq"],
        )


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the hash-chained audit log."""

    seq: int
    at: datetime
    actor: str
    organisation: str | None
    kind: str
    dataset: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> AuditRecord:
        return cls(
            seq=row["seq"],
            at=row["at"],
            actor=row["actor"],
            organisation=row["organisation"],
            kind=row["kind"],
            dataset=row["dataset"],
            details=json.loads(row["details"]),
            prev_hash=row["prev_hash"],
            hash=row["hash"],
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""
        out = asdict(self)
        out["at"] = _iso(self.at)
        return out


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :meth:`Ledger.verify`.

    ``first_bad_seq`` names the first record found broken (edited, missing, moved or not
    matching the anchor); ``problem`` says why. ``unanchored`` counts records after the
    anchor (normally 0; more only after a crash between a commit and the anchor write).
    """

    ok: bool
    checked: int
    head_seq: int
    first_bad_seq: int | None = None
    problem: str | None = None
    anchored: bool = False
    unanchored: int = 0

    @property
    def message(self) -> str:
        """One line for a person."""
        if self.ok:
            anchor, anchor_zh = (
                ("anchored", "已锚定") if self.anchored else ("no anchor configured", "未配置锚点")
            )
            return (
                f"审计日志完整：{self.checked} 条记录，链头序号 {self.head_seq}（{anchor_zh}）"
                f" / audit log intact: {self.checked} records, head seq {self.head_seq} ({anchor})"
            )
        return (
            f"审计日志在第 {self.first_bad_seq} 条记录处被破坏，请审查后处理"
            f" / audit log broken at record seq {self.first_bad_seq}: {self.problem}"
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["message"] = self.message
        return out


@dataclass(frozen=True)
class SpendPoint:
    """Budget committed by one organisation on one dataset in one period."""

    period: str
    organisation: str
    dataset: str
    epsilon: float
    delta: float
    operations: int


@dataclass(frozen=True)
class AuditExport:
    """An audit package for an outside reviewer: records, verification, summary."""

    since: datetime | None
    until: datetime | None
    records: list[AuditRecord]
    verification: VerifyResult
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "verification": self.verification.as_dict(),
            "summary": self.summary,
            "records": [r.as_dict() for r in self.records],
        }
