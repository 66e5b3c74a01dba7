"""Grants: who may receive which dataset, how, for what purpose, until when.

Functions here run inside a transaction opened by :class:`lab.ledger.Ledger`; they take
the connection and the current time as arguments and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from lab.errors import AccessDenied, ConfigError, NotFound
from lab.ledger.db import DELTA_SCALE, EPS_SCALE, grants, to_units
from lab.ledger.models import MODES, Grant


def show_time(at: datetime) -> str:
    """A date (and time, when not midnight) in UTC for messages."""
    if (at.hour, at.minute, at.second, at.microsecond) == (0, 0, 0, 0):
        return at.strftime("%Y-%m-%d")
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _require_text(value: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"a grant needs a non-empty {name} / 授权需要填写{name}", reason="invalid-value")
    return value.strip()


def normalise_modes(modes: Iterable[str]) -> tuple[str, ...]:
    """Check release modes (``dp``, ``masked``) and return them sorted, without repeats."""
    if isinstance(modes, str):
        modes = [modes]
    chosen = tuple(sorted(set(modes)))
    unknown = [m for m in chosen if m not in MODES]
    if not chosen or unknown:
        raise ConfigError(
            f"release modes must be a non-empty subset of {', '.join(MODES)}; got {list(modes)!r} / "
            "发布方式至少选择一种：dp（差分隐私）或 masked（脱敏数据）",
            reason="invalid-value",
        )
    return chosen


def insert_grant(
    conn: Connection,
    *,
    organisation: str,
    dataset: str,
    purpose: str,
    modes: Iterable[str],
    epsilon: float,
    delta: float,
    expires_at: datetime,
    approved_by: str,
    now: datetime,
) -> Grant:
    """Insert a grant after checking every field."""
    if expires_at.tzinfo is None:
        raise ConfigError("the expiry must carry a time zone / 到期时间必须带时区", reason="invalid-value")
    if expires_at <= now:
        raise ConfigError(
            f"the expiry {show_time(expires_at)} is not in the future; choose a later date / "
            "到期时间必须晚于现在，请选择更晚的日期",
            reason="invalid-value",
        )
    delta_units = to_units(delta, DELTA_SCALE, name="delta budget", round_up=False)
    if delta_units >= DELTA_SCALE:
        raise ConfigError(
            f"the delta budget must be below 1, got {delta!r} / δ 预算必须小于 1", reason="invalid-value"
        )
    values = {
        "organisation": _require_text(organisation, "organisation"),
        "dataset": _require_text(dataset, "dataset"),
        "purpose": _require_text(purpose, "purpose"),
        "modes": ",".join(normalise_modes(modes)),
        "epsilon_units": to_units(epsilon, EPS_SCALE, name="epsilon budget", round_up=False),
        "delta_units": delta_units,
        "expires_at": expires_at,
        "approved_by": _require_text(approved_by, "approver"),
        "created_at": now,
    }
    grant_id = conn.execute(insert(grants).values(**values).returning(grants.c.id)).scalar_one()
    return get_grant(conn, grant_id)


def get_grant(conn: Connection, grant_id: int, *, lock: bool = False) -> Grant:
    """The grant with this id (locking its row for update if asked); NotFound otherwise."""
    query = select(grants).where(grants.c.id == grant_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(
            f"there is no grant {grant_id} / 授权 {grant_id} 不存在；请用 datalab grant list 查看现有授权",
            reason="no-such-grant",
        )
    return Grant.from_row(row)


def select_grants(
    conn: Connection,
    *,
    organisation: str | None = None,
    dataset: str | None = None,
    active_at: datetime | None = None,
) -> list[Grant]:
    """Grants filtered by organisation and dataset; only active ones if ``active_at`` is given."""
    query = select(grants).order_by(grants.c.id)
    if organisation is not None:
        query = query.where(grants.c.organisation == organisation)
    if dataset is not None:
        query = query.where(grants.c.dataset == dataset)
    if active_at is not None:
        query = query.where(grants.c.revoked_at.is_(None), grants.c.expires_at > active_at)
    return [Grant.from_row(row) for row in conn.execute(query).mappings()]


def select_expiring(conn: Connection, *, now: datetime, before: datetime) -> list[Grant]:
    """Active grants whose expiry falls before ``before`` (for reminders)."""
    query = (
        select(grants)
        .where(grants.c.revoked_at.is_(None), grants.c.expires_at > now, grants.c.expires_at <= before)
        .order_by(grants.c.expires_at)
    )
    return [Grant.from_row(row) for row in conn.execute(query).mappings()]


def mark_revoked(conn: Connection, grant_id: int, *, by: str, reason: str, now: datetime) -> Grant:
    """Set the revocation fields of a grant that is not yet revoked."""
    conn.execute(
        update(grants)
        .where(grants.c.id == grant_id, grants.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by=_require_text(by, "revoker"), revoke_reason=reason.strip())
    )
    return get_grant(conn, grant_id)


def ensure_active(grant: Grant, now: datetime, *, mode: str | None = None) -> Grant:
    """Return the grant if it is active (and allows ``mode``); AccessDenied saying why not."""
    if grant.revoked_at is not None:
        why = f": {grant.revoke_reason}" if grant.revoke_reason else ""
        raise AccessDenied(
            f"the grant of dataset {grant.dataset!r} to {grant.organisation!r} (grant {grant.id}) "
            f"was revoked on {show_time(grant.revoked_at)}{why}; apply again for access "
            f"/ 该授权（编号 {grant.id}）已于 {show_time(grant.revoked_at)} 撤销，如需使用请重新申请",
            detail=f"grant {grant.id} revoked at {grant.revoked_at.isoformat()} by {grant.revoked_by}",
            reason="grant-revoked",
        )
    if now >= grant.expires_at:
        raise AccessDenied(
            f"the grant of dataset {grant.dataset!r} to {grant.organisation!r} (grant {grant.id}) "
            f"expired on {show_time(grant.expires_at)}; ask an operator to renew it "
            f"/ 该授权（编号 {grant.id}）已于 {show_time(grant.expires_at)} 到期，请联系运营人员续期",
            detail=f"grant {grant.id} expired at {grant.expires_at.isoformat()}",
            reason="grant-expired",
        )
    if mode is not None and mode not in grant.modes:
        raise AccessDenied(
            f"grant {grant.id} allows {' and '.join(grant.modes)} release of dataset {grant.dataset!r}, "
            f"not {mode}; apply for a grant that includes {mode} / 该授权不包含 {mode} "
            "发布方式，请申请包含该方式的授权",
            reason="mode-not-granted",
        )
    return grant


def find_active(
    conn: Connection, organisation: str, dataset: str, *, now: datetime, mode: str | None = None
) -> Grant:
    """The active grant of ``dataset`` to ``organisation`` allowing ``mode``.

    With several active grants (a renewal overlapping the old one), the one that expires
    last wins. With none, the error explains the most recent grant's state.
    """
    candidates = select_grants(conn, organisation=organisation, dataset=dataset)
    if not candidates:
        raise AccessDenied(
            f"organisation {organisation!r} has no grant for dataset {dataset!r}; "
            "apply for access and wait for an operator's approval "
            f"/ 机构 {organisation!r} 没有数据集 {dataset!r} 的授权，请先申请并等待运营人员批准",
            reason="no-grant",
        )
    active = [g for g in candidates if g.status(now) == "active" and (mode is None or mode in g.modes)]
    if active:
        return max(active, key=lambda g: (g.expires_at, g.id))
    live = [g for g in candidates if g.status(now) == "active"]
    newest = max(live or candidates, key=lambda g: (g.created_at, g.id))
    return ensure_active(newest, now, mode=mode)
