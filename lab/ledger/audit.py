"""Reading the audit log and the budget history: searches, summaries, spending over time.

Functions here run inside a read transaction opened by :class:`lab.ledger.Ledger`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from lab.errors import ConfigError
from lab.ledger.db import DELTA_SCALE, EPS_SCALE, audit, from_units, grants, reservations
from lab.ledger.models import SPENT, AuditRecord, SpendPoint

PERIODS = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d", "month": "%Y-%m"}


def select_records(
    conn: Connection,
    *,
    organisation: str | None = None,
    actor: str | None = None,
    dataset: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    after_seq: int | None = None,
) -> list[AuditRecord]:
    """Audit records matching every given filter; ``since`` inclusive, ``until`` exclusive."""
    c = audit.c
    query = select(audit)
    if after_seq is not None:
        query = query.where(c.seq > after_seq)
    filters = ((c.organisation, organisation), (c.actor, actor), (c.dataset, dataset), (c.kind, kind))
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(c.at >= since)
    if until is not None:
        query = query.where(c.at < until)
    query = query.order_by(c.seq.desc() if newest_first else c.seq)
    if limit is not None:
        query = query.limit(limit)
    return [AuditRecord.from_row(row) for row in conn.execute(query).mappings()]


def summarise(records: Iterable[AuditRecord]) -> dict[str, Any]:
    """Counts by kind, organisation, dataset, actor and outcome, and the seq range."""
    records = list(records)
    by_kind: Counter[str] = Counter()
    by_org: Counter[str] = Counter()
    by_dataset: Counter[str] = Counter()
    by_actor: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter()
    for record in records:
        by_kind[record.kind] += 1
        by_org[record.organisation or "-"] += 1
        by_dataset[record.dataset or "-"] += 1
        by_actor[record.actor] += 1
        outcome = record.details.get("outcome")
        if isinstance(outcome, str):
            by_outcome[f"{record.kind}:{outcome}"] += 1
    return {
        "records": len(records),
        "first_seq": records[0].seq if records else None,
        "last_seq": records[-1].seq if records else None,
        "by_kind": dict(sorted(by_kind.items())),
        "by_organisation": dict(sorted(by_org.items())),
        "by_dataset": dict(sorted(by_dataset.items())),
        "by_actor": dict(sorted(by_actor.items())),
        "by_outcome": dict(sorted(by_outcome.items())),
    }


def select_spending(
    conn: Connection,
    *,
    organisation: str | None = None,
    dataset: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    period: str = "day",
    zone: tzinfo = UTC,
) -> list[SpendPoint]:
    """Budget spent per (period, organisation, dataset), from settled reservations.

    Grouping by period happens here rather than in SQL so that SQLite and PostgreSQL
    agree exactly (periods are days or hours of ``zone``; stored times are UTC).
    """
    if period not in PERIODS:
        raise ConfigError(
            f"period must be one of {', '.join(PERIODS)}, got {period!r} / 统计周期只能是 "
            f"{', '.join(PERIODS)}",
            reason="invalid-value",
        )
    r, g = reservations.c, grants.c
    query = (
        select(r.settled_at, r.epsilon_units, r.delta_units, g.organisation, g.dataset)
        .join(grants, g.id == r.grant_id)
        .where(r.state == SPENT)
    )
    if organisation is not None:
        query = query.where(g.organisation == organisation)
    if dataset is not None:
        query = query.where(g.dataset == dataset)
    if since is not None:
        query = query.where(r.settled_at >= since)
    if until is not None:
        query = query.where(r.settled_at < until)
    fmt = PERIODS[period] if zone is UTC else PERIODS[period].replace("Z", "%z")  # an hour names its zone
    totals: dict[tuple[str, str, str], list[int]] = {}
    for row in conn.execute(query):
        settled = row.settled_at if row.settled_at.tzinfo else row.settled_at.replace(tzinfo=UTC)
        key = (settled.astimezone(zone).strftime(fmt), row.organisation, row.dataset)
        acc = totals.setdefault(key, [0, 0, 0])
        acc[0] += row.epsilon_units
        acc[1] += row.delta_units
        acc[2] += 1
    return [
        SpendPoint(
            period=key[0],
            organisation=key[1],
            dataset=key[2],
            epsilon=from_units(eps, EPS_SCALE),
            delta=from_units(delta, DELTA_SCALE),
            operations=count,
        )
        for key, (eps, delta, count) in sorted(totals.items())
    ]
