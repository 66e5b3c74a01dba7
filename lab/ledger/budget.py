"""Budget reservations: set aside, then spend or refund, never overspend.

Remaining budget of a grant = budget − spent − reserved, where *spent* sums the
reservations in state ``spent`` and *reserved* those still outstanding. A reservation
is made under the grant's row lock (``SELECT … FOR UPDATE`` on PostgreSQL; the whole
database under ``BEGIN IMMEDIATE`` on SQLite), so concurrent requests are decided one at
a time against an up-to-date total.

Functions here run inside a transaction opened by :class:`lab.ledger.Ledger`.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, case, func, insert, select, update
from sqlalchemy.engine import Connection

from lab.errors import BudgetExhausted, LabError, NotFound
from lab.ledger.db import DELTA_SCALE, EPS_SCALE, from_units, grants, reservations, show_units
from lab.ledger.models import RESERVED, SPENT, BudgetStatus, Grant, Reservation


class Usage(NamedTuple):
    """Integer units spent and outstanding for one grant."""

    eps_spent: int
    delta_spent: int
    eps_reserved: int
    delta_reserved: int


def usage(conn: Connection, grant_id: int) -> Usage:
    """Sum the grant's spent and outstanding reservations, in exact units."""
    r = reservations.c

    def total(column: ColumnElement[int], state: str) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((r.state == state, column), else_=0)), 0)

    row = conn.execute(
        select(
            total(r.epsilon_units, SPENT),
            total(r.delta_units, SPENT),
            total(r.epsilon_units, RESERVED),
            total(r.delta_units, RESERVED),
        ).where(r.grant_id == grant_id)
    ).one()
    return Usage(*(int(v) for v in row))


def status(grant: Grant, used: Usage, eps_budget: int, delta_budget: int) -> BudgetStatus:
    """A grant's budget in floats, from exact units."""
    eps_left = eps_budget - used.eps_spent - used.eps_reserved
    delta_left = delta_budget - used.delta_spent - used.delta_reserved
    return BudgetStatus(
        grant_id=grant.id,
        epsilon_budget=from_units(eps_budget, EPS_SCALE),
        delta_budget=from_units(delta_budget, DELTA_SCALE),
        epsilon_spent=from_units(used.eps_spent, EPS_SCALE),
        delta_spent=from_units(used.delta_spent, DELTA_SCALE),
        epsilon_reserved=from_units(used.eps_reserved, EPS_SCALE),
        delta_reserved=from_units(used.delta_reserved, DELTA_SCALE),
        epsilon_remaining=from_units(max(eps_left, 0), EPS_SCALE),
        delta_remaining=from_units(max(delta_left, 0), DELTA_SCALE),
    )


def budget_units(conn: Connection, grant_id: int) -> tuple[int, int]:
    """The grant's (ε, δ) budget in units."""
    row = conn.execute(
        select(grants.c.epsilon_units, grants.c.delta_units).where(grants.c.id == grant_id)
    ).one()
    return int(row.epsilon_units), int(row.delta_units)


def check_affordable(conn: Connection, grant: Grant, eps_units: int, delta_units: int) -> None:
    """Raise BudgetExhausted, saying what remains, unless the request fits the budget.

    Call with the grant's row locked.
    """
    eps_budget, delta_budget = budget_units(conn, grant.id)
    used = usage(conn, grant.id)
    eps_left = eps_budget - used.eps_spent - used.eps_reserved
    delta_left = delta_budget - used.delta_spent - used.delta_reserved
    if eps_units <= eps_left and delta_units <= delta_left:
        return
    remaining = (
        f"ε={show_units(max(eps_left, 0), EPS_SCALE)}, δ={show_units(max(delta_left, 0), DELTA_SCALE)}"
    )
    outstanding = ""
    if used.eps_reserved or used.delta_reserved:
        outstanding = (
            f" ({show_units(used.eps_reserved, EPS_SCALE)} ε and "
            f"{show_units(used.delta_reserved, DELTA_SCALE)} δ are held by queries still running)"
        )
    raise BudgetExhausted(
        f"the privacy budget of grant {grant.id} (dataset {grant.dataset!r}) cannot pay for this request: "
        f"it needs ε={show_units(eps_units, EPS_SCALE)}, δ={show_units(delta_units, DELTA_SCALE)}; "
        f"remaining {remaining} "
        f"of ε={show_units(eps_budget, EPS_SCALE)}, δ={show_units(delta_budget, DELTA_SCALE)}{outstanding}. "
        "Ask for less accuracy (a smaller ε) or for more budget "
        f"/ 授权 {grant.id} 的隐私预算不足：本次需要 ε={show_units(eps_units, EPS_SCALE)}，"
        f"剩余 {remaining}；请降低精度（减小 ε）或申请更多预算",
        reason="budget-exhausted",
    )


def insert_reservation(
    conn: Connection,
    grant: Grant,
    *,
    eps_units: int,
    delta_units: int,
    actor: str,
    kind: str,
    query: str | None,
    now: datetime,
) -> Reservation:
    """Insert an outstanding reservation (the caller checked the budget under lock)."""
    reservation_id = conn.execute(
        insert(reservations)
        .values(
            grant_id=grant.id,
            actor=actor,
            kind=kind,
            query=query,
            epsilon_units=eps_units,
            delta_units=delta_units,
            state=RESERVED,
            created_at=now,
        )
        .returning(reservations.c.id)
    ).scalar_one()
    return get_reservation(conn, reservation_id)


def get_reservation(conn: Connection, reservation_id: int, *, lock: bool = False) -> Reservation:
    """A reservation with its grant's organisation and dataset; NotFound if absent."""
    query = (
        select(reservations, grants.c.organisation, grants.c.dataset)
        .join(grants, grants.c.id == reservations.c.grant_id)
        .where(reservations.c.id == reservation_id)
    )
    if lock:
        query = query.with_for_update(of=reservations)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(
            f"there is no budget reservation {reservation_id} / 预算预留 {reservation_id} 不存在",
            reason="no-such-reservation",
        )
    return Reservation.from_row(row)


def lock_for_settlement(conn: Connection, reservation_id: int, *, state: str) -> tuple[Reservation, bool]:
    """Lock the reservation (its grant first) and say whether it still needs settling.

    Locks are taken in the ledger's one order, grant → reservation → audit head, so a
    settlement and a reservation on the same grant can never deadlock. Settling again to
    the same state is a no-op (a retry after a lost reply); settling to the other state
    raises, because budget once spent is never refunded.
    """
    grant_id = get_reservation(conn, reservation_id).grant_id
    conn.execute(select(grants.c.id).where(grants.c.id == grant_id).with_for_update())
    current = get_reservation(conn, reservation_id, lock=True)
    if current.state == RESERVED:
        return current, True
    if current.state == state:
        return current, False
    raise LabError(
        f"budget reservation {reservation_id} was already settled as {current.state} "
        f"({current.outcome}); it cannot become {state} / 该预算预留已结算，不能更改（已用预算不退还）",
        reason="already-settled",
    )


def mark_settled(
    conn: Connection, reservation_id: int, *, state: str, outcome: str, now: datetime, audit_seq: int
) -> Reservation:
    """Record the settlement of a reservation locked by :func:`lock_for_settlement`."""
    conn.execute(
        update(reservations)
        .where(reservations.c.id == reservation_id)
        .values(state=state, outcome=outcome, settled_at=now, audit_seq=audit_seq)
    )
    return get_reservation(conn, reservation_id)


def stale_ids(conn: Connection, *, created_before: datetime) -> list[int]:
    """Outstanding reservations made before the given time."""
    query = (
        select(reservations.c.id)
        .where(reservations.c.state == RESERVED, reservations.c.created_at < created_before)
        .order_by(reservations.c.id)
    )
    return list(conn.execute(query).scalars())
