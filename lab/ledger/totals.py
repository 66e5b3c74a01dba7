"""Budget totals across grants: what one organisation may spend on one dataset.

Each grant has its own budget (:mod:`lab.ledger.budget`); the dataset policy also caps
what one grant may carry and what one organisation may receive on the dataset across
*all* its grants, over its lifetime or a rolling window (``budget:`` in the policy, kept
in the table ``ledger_budget_limits`` by :meth:`Ledger.set_budget_limits`).

The organisation's **committed** budget on a dataset at time *t* is

    spent (and still reserved) by its queries since *t − window* (or ever)
    + what its active grants could still spend (their budget − spent − reserved).

An approval (or a new grant) must keep committed + the new grant within the total; a
reservation must keep the spending (without the unspent rest of other grants) within
it, which catches grants created before the limit existed or a limit lowered since.
Both decisions run under the scope lock (:func:`lab.ledger.db.lock_scope`), so two
approvals or two queries of one organisation on one dataset are decided one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.engine import Connection

from lab.errors import BudgetExhausted
from lab.ledger.db import (
    DELTA_SCALE,
    EPS_SCALE,
    budget_agreements,
    budget_limits,
    from_units,
    grants,
    reservations,
    show_units,
)
from lab.ledger.models import RESERVED, SPENT

DEFAULT = "*"


@dataclass(frozen=True)
class Limits:
    """The caps on one organisation x dataset, in exact units (None: no cap / lifetime)."""

    epsilon_units: int | None = None
    delta_units: int | None = None
    window_seconds: int | None = None
    grant_epsilon_units: int | None = None
    grant_delta_units: int | None = None
    source: str = "policy"

    @property
    def window(self) -> str:
        if self.window_seconds is None:
            return "lifetime / 累计"
        days = self.window_seconds / 86400
        return f"rolling {days:g} days / 滚动 {days:g} 天"

    def as_dict(self) -> dict[str, Any]:
        def show(units: int | None, scale: int) -> float | None:
            return None if units is None else from_units(units, scale)

        return {
            "epsilon": show(self.epsilon_units, EPS_SCALE),
            "delta": show(self.delta_units, DELTA_SCALE),
            "window_days": None if self.window_seconds is None else self.window_seconds / 86400,
            "per_grant_epsilon": show(self.grant_epsilon_units, EPS_SCALE),
            "per_grant_delta": show(self.grant_delta_units, DELTA_SCALE),
            "source": self.source,
        }


@dataclass(frozen=True)
class Committed:
    """Exact units an organisation has spent (in the window) and could still spend."""

    eps_spent: int
    delta_spent: int
    eps_open: int  # unspent rest of its active grants
    delta_open: int
    grants: int  # grants counted (active, or with spending in the window)


def _agreement(row: Any) -> Limits:
    return Limits(
        row.epsilon_units,
        row.delta_units,
        row.window_seconds,
        row.grant_epsilon_units,
        row.grant_delta_units,
        f"agreement recorded by {row.set_by} at {row.set_at.isoformat(timespec='seconds')}",
    )


def limits_for(conn: Connection, organisation: str, dataset: str) -> Limits | None:
    """The organisation's limits on the dataset: an agreement an operator recorded, else its own
    limits if the policy names it, else the policy's default."""
    a = budget_agreements.c
    recorded = conn.execute(
        select(budget_agreements).where(a.organisation == organisation, a.dataset == dataset)
    ).first()
    if recorded is not None:
        return _agreement(recorded)
    t = budget_limits.c
    rows = {
        row.organisation: row
        for row in conn.execute(
            select(budget_limits).where(t.dataset == dataset, t.organisation.in_([organisation, DEFAULT]))
        )
    }
    row = rows.get(organisation) or rows.get(DEFAULT)
    if row is None:
        return None
    return Limits(
        row.epsilon_units,
        row.delta_units,
        row.window_seconds,
        row.grant_epsilon_units,
        row.grant_delta_units,
        row.source,
    )


def all_limits(conn: Connection, dataset: str) -> dict[str, Limits]:
    """Every stored row of a dataset, by organisation (``*`` for the default)."""
    out = {}
    for row in conn.execute(select(budget_limits).where(budget_limits.c.dataset == dataset)):
        out[row.organisation] = Limits(
            row.epsilon_units,
            row.delta_units,
            row.window_seconds,
            row.grant_epsilon_units,
            row.grant_delta_units,
            row.source,
        )
    return out


def agreements(conn: Connection) -> list[dict[str, Any]]:
    """Every agreement operators recorded: organisation, dataset, caps, who set it and why."""
    rows = conn.execute(
        select(budget_agreements).order_by(budget_agreements.c.organisation, budget_agreements.c.dataset)
    )
    return [
        {
            "organisation": row.organisation,
            "dataset": row.dataset,
            **_agreement(row).as_dict(),
            "set_by": row.set_by,
            "reason": row.reason,
            "set_at": row.set_at.isoformat(),
        }
        for row in rows
    ]


def put_agreement(
    conn: Connection, organisation: str, dataset: str, limits: Limits, *, by: str, reason: str, now: datetime
) -> None:
    """Record (or replace) an organisation's agreement on a dataset."""
    a = budget_agreements.c
    conn.execute(delete(budget_agreements).where(a.organisation == organisation, a.dataset == dataset))
    conn.execute(
        insert(budget_agreements).values(
            organisation=organisation,
            dataset=dataset,
            epsilon_units=limits.epsilon_units,
            delta_units=limits.delta_units,
            window_seconds=limits.window_seconds,
            grant_epsilon_units=limits.grant_epsilon_units,
            grant_delta_units=limits.grant_delta_units,
            set_by=by,
            reason=reason,
            set_at=now,
        )
    )


def drop_agreement(conn: Connection, organisation: str, dataset: str) -> bool:
    """Remove an organisation's agreement on a dataset; True if there was one."""
    a = budget_agreements.c
    gone = conn.execute(delete(budget_agreements).where(a.organisation == organisation, a.dataset == dataset))
    return bool(gone.rowcount)


def replace_limits(conn: Connection, dataset: str, limits: dict[str, Limits], now: datetime) -> None:
    """Store exactly ``limits`` for ``dataset`` (organisation or ``*`` → limits)."""
    conn.execute(delete(budget_limits).where(budget_limits.c.dataset == dataset))
    for organisation, lim in limits.items():
        conn.execute(
            insert(budget_limits).values(
                organisation=organisation,
                dataset=dataset,
                epsilon_units=lim.epsilon_units,
                delta_units=lim.delta_units,
                window_seconds=lim.window_seconds,
                grant_epsilon_units=lim.grant_epsilon_units,
                grant_delta_units=lim.grant_delta_units,
                source=lim.source,
                set_at=now,
            )
        )


def committed(conn: Connection, organisation: str, dataset: str, limits: Limits, now: datetime) -> Committed:
    """What the organisation has spent on the dataset in the window, and could still spend."""
    r, g = reservations.c, grants.c
    counted = r.state.in_([SPENT, RESERVED])
    query = (
        select(
            func.coalesce(func.sum(r.epsilon_units), 0),
            func.coalesce(func.sum(r.delta_units), 0),
            func.count(func.distinct(r.grant_id)),
        )
        .join(grants, g.id == r.grant_id)
        .where(g.organisation == organisation, g.dataset == dataset, counted)
    )
    if limits.window_seconds is not None:
        query = query.where(r.created_at >= now - timedelta(seconds=limits.window_seconds))
    eps_spent, delta_spent, spending_grants = conn.execute(query).one()

    used_eps = func.coalesce(func.sum(case((counted, r.epsilon_units), else_=0)), 0)
    used_delta = func.coalesce(func.sum(case((counted, r.delta_units), else_=0)), 0)
    per_grant = (
        select(g.epsilon_units, g.delta_units, used_eps.label("ue"), used_delta.label("ud"))
        .select_from(grants.outerjoin(reservations, r.grant_id == g.id))
        .where(
            g.organisation == organisation,
            g.dataset == dataset,
            g.revoked_at.is_(None),
            g.expires_at > now,
        )
        .group_by(g.id, g.epsilon_units, g.delta_units)
    )
    eps_open = delta_open = active = 0
    for row in conn.execute(per_grant):
        eps_open += max(int(row.epsilon_units) - int(row.ue), 0)
        delta_open += max(int(row.delta_units) - int(row.ud), 0)
        active += 1
    return Committed(
        int(eps_spent), int(delta_spent), eps_open, delta_open, max(active, int(spending_grants))
    )


def _eps(units: int) -> str:
    return show_units(units, EPS_SCALE)


def _delta(units: int) -> str:
    return show_units(units, DELTA_SCALE)


def preview(
    conn: Connection, organisation: str, dataset: str, eps_units: int, delta_units: int, now: datetime
) -> dict[str, Any] | None:
    """What granting (ε, δ) would bring the organisation's total to; None without limits."""
    limits = limits_for(conn, organisation, dataset)
    if limits is None:
        return None
    used = committed(conn, organisation, dataset, limits, now)
    eps_before = used.eps_spent + used.eps_open
    delta_before = used.delta_spent + used.delta_open
    problems = grant_problems(organisation, dataset, limits, used, eps_units, delta_units)
    return {
        "limits": limits.as_dict(),
        "window": limits.window,
        "epsilon_committed": from_units(eps_before, EPS_SCALE),
        "delta_committed": from_units(delta_before, DELTA_SCALE),
        "epsilon_after": from_units(eps_before + eps_units, EPS_SCALE),
        "delta_after": from_units(delta_before + delta_units, DELTA_SCALE),
        "grants": used.grants,
        "fits": not problems,
        "problems": problems,
        "line": _line(organisation, dataset, limits, eps_before, eps_units),
    }


def spending(conn: Connection, organisation: str, dataset: str, now: datetime) -> dict[str, Any] | None:
    """What the organisation spent on the dataset in the window, against its total; None without caps."""
    limits = limits_for(conn, organisation, dataset)
    if limits is None:
        return None
    used = committed(conn, organisation, dataset, limits, now)

    def left(cap: int | None, spent: int, scale: int) -> float | None:
        return None if cap is None else from_units(max(cap - spent, 0), scale)

    return {
        "window": limits.window,
        "epsilon_total": limits.as_dict()["epsilon"],
        "delta_total": limits.as_dict()["delta"],
        "epsilon_spent": from_units(used.eps_spent, EPS_SCALE),
        "delta_spent": from_units(used.delta_spent, DELTA_SCALE),
        "epsilon_left": left(limits.epsilon_units, used.eps_spent, EPS_SCALE),
        "delta_left": left(limits.delta_units, used.delta_spent, DELTA_SCALE),
    }


def _line(organisation: str, dataset: str, limits: Limits, eps_before: int, eps_units: int) -> dict[str, str]:
    total = "no total" if limits.epsilon_units is None else f"of ε={_eps(limits.epsilon_units)}"
    total_zh = "无总额" if limits.epsilon_units is None else f"总额 ε={_eps(limits.epsilon_units)}"
    return {
        "en": f"This approval brings {organisation}'s ε on {dataset} to {_eps(eps_before + eps_units)} "
        f"{total} ({limits.window.split(' / ')[0]}; {_eps(eps_before)} committed before).",
        "zh": f"批准后 {organisation} 在 {dataset} 上的 ε 将达 {_eps(eps_before + eps_units)}（{total_zh}，"
        f"{limits.window.split(' / ')[1]}；此前已占用 {_eps(eps_before)}）。",
    }


def grant_problems(
    organisation: str, dataset: str, limits: Limits, used: Committed, eps_units: int, delta_units: int
) -> list[dict[str, str]]:
    """Why a new grant of (ε, δ) would break the caps (bilingual), or an empty list."""
    problems = []
    for name, units, cap, show in (
        ("ε", eps_units, limits.grant_epsilon_units, _eps),
        ("δ", delta_units, limits.grant_delta_units, _delta),
    ):
        if cap is not None and units > cap:
            problems.append(
                {
                    "en": f"one grant of dataset {dataset!r} may carry at most {name}={show(cap)}, "
                    f"this one asks {name}={show(units)}; approve a smaller budget",
                    "zh": f"数据集 {dataset} 的单项授权 {name} 上限为 {show(cap)}，"
                    f"本次为 {show(units)}；请批准更小的预算",
                }
            )
    for name, units, before, cap, show in (
        ("ε", eps_units, used.eps_spent + used.eps_open, limits.epsilon_units, _eps),
        ("δ", delta_units, used.delta_spent + used.delta_open, limits.delta_units, _delta),
    ):
        if cap is not None and before + units > cap:
            room = max(cap - before, 0)
            problems.append(
                {
                    "en": f"organisation {organisation!r} may receive at most {name}={show(cap)} on dataset "
                    f"{dataset!r} ({limits.window.split(' / ')[0]}); it has {name}={show(before)} committed "
                    f"across {used.grants} grant(s), so this grant of {name}={show(units)} would bring it to "
                    f"{show(before + units)}; at most {name}={show(room)} can still be granted",
                    "zh": f"机构 {organisation} 在数据集 {dataset} 上的 {name} 总额为 {show(cap)}"
                    f"（{limits.window.split(' / ')[1]}），已占用 {show(before)}（{used.grants} 项授权），"
                    f"本次 {show(units)} 将达 {show(before + units)}；最多还可授予 {show(room)}",
                }
            )
    return problems


def check_grant(
    conn: Connection, organisation: str, dataset: str, eps_units: int, delta_units: int, now: datetime
) -> None:
    """Raise BudgetExhausted (with the numbers) unless a new grant fits the caps.

    Call with the scope locked.
    """
    limits = limits_for(conn, organisation, dataset)
    if limits is None:
        return
    used = committed(conn, organisation, dataset, limits, now)
    problems = grant_problems(organisation, dataset, limits, used, eps_units, delta_units)
    if problems:
        raise BudgetExhausted(
            f"{problems[0]['en']}. / {problems[0]['zh']}",
            detail="; ".join(p["en"] for p in problems),
            reason="organisation-budget",
        )


def check_spend(
    conn: Connection, organisation: str, dataset: str, eps_units: int, delta_units: int, now: datetime
) -> None:
    """Raise BudgetExhausted unless spending (ε, δ) keeps the organisation within its total.

    Call with the scope locked.
    """
    limits = limits_for(conn, organisation, dataset)
    if limits is None:
        return
    used = committed(conn, organisation, dataset, limits, now)
    for name, units, spent, cap, show in (
        ("ε", eps_units, used.eps_spent, limits.epsilon_units, _eps),
        ("δ", delta_units, used.delta_spent, limits.delta_units, _delta),
    ):
        if cap is not None and spent + units > cap:
            left = max(cap - spent, 0)
            en_window, zh_window = limits.window.split(" / ")
            raise BudgetExhausted(
                f"organisation {organisation!r} has spent {name}={show(spent)} of its total "
                f"{name}={show(cap)} on dataset {dataset!r} ({en_window}, across all its grants); "
                f"this request needs {name}={show(units)} and only {name}={show(left)} is left. "
                "Ask for less accuracy or wait until earlier spending leaves the window. "
                f"/ 机构 {organisation} 在数据集 {dataset} 上已使用 {name}={show(spent)}"
                f"（总额 {show(cap)}，{zh_window}，含全部授权），本次需要 {show(units)}，仅剩 {show(left)}。",
                reason="organisation-budget",
            )
