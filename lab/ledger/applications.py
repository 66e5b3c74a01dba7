"""Applications for access: the rows, and the rules an operator's decision must follow.

An analyst applies for one dataset for their organisation: purpose, release modes, term
(days) and privacy budget (ε, δ). An operator approves, possibly with a smaller budget, a
shorter term or fewer modes, or rejects with a reason. The rules, enforced here and
therefore on the server whatever the client sends:

- only a ``pending`` application can be decided, once;
- nobody decides their own application, nor one of their own organisation;
- an approval never grants more than was asked: ε, δ, term and modes are at most the
  requested ones;
- a rejection needs a reason.

The table is created with the ledger's others (``metadata.create_all``, idempotent). The
row functions run inside a transaction opened by :class:`lab.ledger.Ledger`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from lab.errors import AccessDenied, ConfigError, NotFound
from lab.ledger.db import DELTA_SCALE, EPS_SCALE, UTCDateTime, from_units, metadata, to_units
from lab.ledger.grants import normalise_modes

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
WITHDRAWN = "withdrawn"  # by an analyst of the applying organisation, before a decision
STATES = (PENDING, APPROVED, REJECTED, WITHDRAWN)
MAX_TERM_DAYS = 3 * 365
MAX_TEXT = 2000

applications = Table(
    "ledger_applications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("organisation", String(200), nullable=False),
    Column("dataset", String(200), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("modes", String(64), nullable=False),
    Column("epsilon_units", BigInteger, nullable=False),
    Column("delta_units", BigInteger, nullable=False),
    Column("term_seconds", BigInteger, nullable=False),
    Column("applicant", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("grant_id", Integer, ForeignKey("ledger_grants.id"), nullable=True),
    Index("ix_ledger_applications_state", "state"),
    Index("ix_ledger_applications_org", "organisation"),
)

# Grants whose expiry has been noticed (one ``expire`` audit record each).
expiries = Table(
    "ledger_grant_expiries",
    metadata,
    Column("grant_id", Integer, ForeignKey("ledger_grants.id"), primary_key=True, autoincrement=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("audit_seq", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Application:
    """One application for access and, once decided, its decision."""

    id: int
    organisation: str
    dataset: str
    purpose: str
    modes: tuple[str, ...]
    epsilon: float
    delta: float
    term_days: float
    applicant: str
    created_at: datetime
    state: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    grant_id: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Application:
        return cls(
            id=row["id"],
            organisation=row["organisation"],
            dataset=row["dataset"],
            purpose=row["purpose"],
            modes=tuple(m for m in row["modes"].split(",") if m),
            epsilon=from_units(row["epsilon_units"], EPS_SCALE),
            delta=from_units(row["delta_units"], DELTA_SCALE),
            term_days=row["term_seconds"] / 86400,
            applicant=row["applicant"],
            created_at=row["created_at"],
            state=row["state"],
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            decision_reason=row["decision_reason"],
            grant_id=row["grant_id"],
        )

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["modes"] = list(self.modes)
        for key in ("created_at", "decided_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


@dataclass(frozen=True)
class Terms:
    """What an approval grants: at most what was asked."""

    modes: tuple[str, ...]
    epsilon: float
    delta: float
    term_days: float

    def expires_at(self, now: datetime) -> datetime:
        return now + timedelta(days=self.term_days)


# --- pure rules -----------------------------------------------------------------------


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"an application needs a non-empty {name} / 申请需要填写{name}", reason="invalid-value"
        )
    if len(value) > MAX_TEXT:
        raise ConfigError(
            f"the {name} is longer than {MAX_TEXT} characters; shorten it / {name}不能超过 {MAX_TEXT} "
            "个字符，请缩短",
            reason="invalid-value",
        )
    return value.strip()


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(
            f"{name} must be a number, got {value!r} / {name} 必须是数字", reason="invalid-value"
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"{name} must be {'≥' if allow_zero else '>'} 0, got {value!r} / {name} "
            f"必须{'≥' if allow_zero else '>'} 0",
            reason="invalid-value",
        )
    return float(value)


def _term(value: Any) -> float:
    days = _positive(value, "term_days")
    if days > MAX_TERM_DAYS:
        raise ConfigError(
            f"a term is at most {MAX_TERM_DAYS} days, got {days:g} / 期限最长 {MAX_TERM_DAYS} 天，请缩短期限",
            reason="invalid-value",
        )
    if days * 86400 < 1:
        raise ConfigError("a term must be at least one second / 期限至少为一秒", reason="invalid-value")
    return days


def check_request(
    *, purpose: Any, modes: Any, epsilon: Any, delta: Any, term_days: Any
) -> tuple[str, tuple[str, ...], float, float, float]:
    """Validate what an applicant asks for: (purpose, modes, ε, δ, term in days)."""
    chosen = normalise_modes(modes if isinstance(modes, list | tuple | str) else [])
    eps = _positive(epsilon, "epsilon", allow_zero="dp" not in chosen)
    dlt = _positive(delta, "delta", allow_zero=True)
    if dlt >= 1:
        raise ConfigError(f"delta must be below 1, got {dlt!r} / δ 必须小于 1", reason="invalid-value")
    return _text(purpose, "purpose"), chosen, eps, dlt, _term(term_days)


def check_not_pending_twice(conn: Connection, organisation: str, dataset: str, purpose: str) -> None:
    """ConfigError if ``organisation`` already has a pending application for ``dataset`` with the
    same purpose (a second project on the same register is a new purpose, and allowed)."""
    c = applications.c
    found = conn.execute(
        select(c.id)
        .where(c.organisation == organisation, c.dataset == dataset, c.purpose == purpose, c.state == PENDING)
        .limit(1)
    ).first()
    if found is not None:
        raise ConfigError(
            f"application {found[0]} for {dataset!r} with this purpose is still pending; wait for its "
            f"decision or withdraw it before applying again "
            f"/ 相同用途的申请（编号 {found[0]}）尚待审批，请等待审批或先撤回",
            reason="duplicate-application",
        )


def check_withdrawer(application: Application, org: str | None) -> None:
    """AccessDenied unless an analyst of the applying organisation withdraws a pending application."""
    if org != application.organisation:
        raise AccessDenied(
            f"application {application.id} is another organisation's; only its own analysts can withdraw "
            "it / 只能撤回本机构的申请",
            reason="not-yours",
        )
    if application.state != PENDING:
        raise ConfigError(
            f"application {application.id} was already {application.state}; only a pending application "
            "can be withdrawn / 只能撤回待审批的申请",
            reason="already-decided",
        )


def check_decider(application: Application, decider: str, decider_org: str | None) -> None:
    """AccessDenied if ``decider`` may not decide ``application``; ConfigError if it is decided."""
    if application.state != PENDING:
        raise ConfigError(
            f"application {application.id} was already {application.state} by {application.decided_by}; "
            "it cannot be decided again / 该申请已处理",
            reason="already-decided",
        )
    if decider == application.applicant:
        raise AccessDenied(
            f"{decider} applied for application {application.id} and cannot decide it; another operator "
            "must review it / 不能审批自己提交的申请",
            reason="self-approval",
        )
    if decider_org is not None and decider_org == application.organisation:
        raise AccessDenied(
            f"{decider} belongs to {application.organisation}, the applying organisation, and cannot decide "
            f"application {application.id} / 不能审批本机构的申请",
            reason="self-approval",
        )


def approved_terms(
    application: Application,
    *,
    modes: Iterable[str] | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    term_days: float | None = None,
) -> Terms:
    """The terms of an approval: the request's, or smaller ones; never larger."""
    chosen = application.modes if modes is None else normalise_modes(modes)
    extra = sorted(set(chosen) - set(application.modes))
    if extra:
        raise ConfigError(
            f"application {application.id} asked for {', '.join(application.modes)}; "
            f"an approval cannot add {', '.join(extra)} / 批准不能增加申请中没有的发布方式",
            reason="exceeds-request",
        )
    values = {"epsilon": epsilon, "delta": delta, "term_days": term_days}
    asked = {"epsilon": application.epsilon, "delta": application.delta, "term_days": application.term_days}
    granted: dict[str, float] = {}
    for name, value in values.items():
        if value is None:
            granted[name] = asked[name]
            continue
        number = _term(value) if name == "term_days" else _positive(value, name, allow_zero=True)
        if number > asked[name] * (1 + 1e-12):
            raise ConfigError(
                f"application {application.id} asked for {name} = {asked[name]:g}; an approval may give "
                f"less, not {number:g} / 批准额度不能超过申请额度",
                reason="exceeds-request",
            )
        granted[name] = number
    if "dp" in chosen and granted["epsilon"] <= 0:
        raise ConfigError(
            "a grant with the dp mode needs an epsilon budget above 0 / 含差分隐私方式的授权需要大于 0 的 ε "
            "预算",
            reason="invalid-value",
        )
    return Terms(chosen, granted["epsilon"], granted["delta"], granted["term_days"])


def check_reason(reason: Any) -> str:
    """A rejection or revocation needs a reason that says why."""
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError("give a reason / 请填写理由", reason="invalid-value")
    if len(reason) > MAX_TEXT:
        raise ConfigError(
            f"the reason is longer than {MAX_TEXT} characters; shorten it / 理由不能超过 {MAX_TEXT} "
            "个字符，请缩短",
            reason="invalid-value",
        )
    return reason.strip()


# --- rows -----------------------------------------------------------------------------


def insert_application(
    conn: Connection,
    *,
    organisation: str,
    dataset: str,
    purpose: str,
    modes: tuple[str, ...],
    epsilon: float,
    delta: float,
    term_days: float,
    applicant: str,
    now: datetime,
) -> Application:
    values = {
        "organisation": _text(organisation, "organisation"),
        "dataset": _text(dataset, "dataset"),
        "purpose": purpose,
        "modes": ",".join(modes),
        "epsilon_units": to_units(epsilon, EPS_SCALE, name="epsilon", round_up=False),
        "delta_units": to_units(delta, DELTA_SCALE, name="delta", round_up=False),
        "term_seconds": round(term_days * 86400),
        "applicant": _text(applicant, "applicant"),
        "created_at": now,
        "state": PENDING,
    }
    new_id = conn.execute(insert(applications).values(**values).returning(applications.c.id)).scalar_one()
    return get_application(conn, new_id)


def get_application(conn: Connection, application_id: int, *, lock: bool = False) -> Application:
    query = select(applications).where(applications.c.id == application_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(
            f"there is no application {application_id}; see the applications in the operator console or "
            f"with datalab application list / 没有编号为 {application_id} 的申请，请在运营控制台或用 "
            "datalab application list 查看",
            reason="no-such-application",
        )
    return Application.from_row(row)


def select_applications(
    conn: Connection,
    *,
    organisation: str | None = None,
    state: str | None = None,
    applicant: str | None = None,
) -> list[Application]:
    c = applications.c
    query = select(applications).order_by(c.id.desc())
    for column, value in ((c.organisation, organisation), (c.state, state), (c.applicant, applicant)):
        if value is not None:
            query = query.where(column == value)
    return [Application.from_row(row) for row in conn.execute(query).mappings()]


def mark_decided(
    conn: Connection,
    application_id: int,
    *,
    state: str,
    by: str,
    now: datetime,
    reason: str | None,
    grant_id: int | None = None,
) -> Application:
    conn.execute(
        update(applications)
        .where(applications.c.id == application_id, applications.c.state == PENDING)
        .values(state=state, decided_by=by, decided_at=now, decision_reason=reason, grant_id=grant_id)
    )
    return get_application(conn, application_id)
