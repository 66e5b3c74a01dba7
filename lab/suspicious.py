"""Flags for the auditor: query patterns that deserve a second look.

Differential privacy bounds what any set of queries can reveal, but only up to the
budget; the patterns below are how people try to make the most of a budget against
individuals, and they are cheap to spot in the audit log:

- ``near-duplicate``: the same query shape (same dataset, aggregate, columns and
  filter columns; constants and ε ignored) asked many times in a short window, as in
  averaging attacks that repeat a query to cancel the noise;
- ``narrow``: many queries that single out small groups (several equality filters, or
  filters plus a fine group-by), as in differencing attacks;
- ``burst-before-expiry``: a grant's queries pile up at the end of its term;
- ``singling-out``: queries whose filters and groups define cells of only a few people
  (an equality on an exact birth date, the same grouped by district, a histogram whose
  column is one more dimension, a one-day range, ...), counted across every shape and
  every analyst of one organisation. The estimate is rows × Π(fraction each filter keeps)
  / Π(groups of each grouping or histogram column), from a :class:`DatasetProfile`
  (rows, distinct values and ranges of each column) that the gateway computes.

Rules are pure functions over audit records and grants; :class:`Rules` holds the
thresholds. A flag is a prompt for review, not a verdict.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

NARROW_FILTER_OPS = ("==", "eq", "in")


class RecordLike(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def organisation(self) -> str | None: ...
    @property
    def dataset(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def details(self) -> dict[str, Any]: ...


class GrantLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def organisation(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...


@dataclass(frozen=True)
class Rules:
    window: timedelta = timedelta(hours=24)
    repeat_min: int = 5  # near-duplicates of one shape within the window
    narrow_min: int = 5  # narrow queries within the window
    narrow_dimensions: int = 3  # filters + group-by columns that make a query narrow
    tail_fraction: float = 0.1  # the end of a term that counts as "before expiry"
    tail_max: timedelta = timedelta(days=7)
    burst_min: int = 10  # queries in the tail
    burst_factor: float = 3.0  # tail rate over the rate before it
    singling_people: float = 5.0  # a query whose cells hold fewer people than this singles out
    singling_min: int = 1  # such queries (per organisation and dataset, within the window) to flag


@dataclass(frozen=True)
class DatasetProfile:
    """What the singling-out rule knows of a dataset: rows, distinct values and numeric ranges.

    Ranges are numbers; a date column's range is in days (``date.toordinal()``).
    """

    rows: int
    distinct: Mapping[str, int]
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Flag:
    rule: str
    organisation: str | None
    actor: str | None
    dataset: str | None
    count: int
    first: datetime
    last: datetime
    message: str
    records: tuple[int, ...] = ()  # seq of the audit records behind the flag, when known
    actors: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["first"], out["last"] = self.first.isoformat(), self.last.isoformat()
        return out


def _query(record: RecordLike) -> dict[str, Any] | None:
    text = record.details.get("query")
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def shape(query: dict[str, Any]) -> str:
    """The query with constants, ε, δ and the unit removed: what near-duplicates share."""
    aggregate = dict(query.get("aggregate") or {})
    aggregate = {k: v for k, v in aggregate.items() if k in ("kind", "column")}
    filters = sorted((str(f.get("column")), str(f.get("op"))) for f in query.get("filters") or [])
    group = sorted((query.get("group_by") or {}).get("columns") or [])
    return json.dumps([query.get("dataset"), aggregate, filters, group], sort_keys=True)


def is_narrow(query: dict[str, Any], rules: Rules) -> bool:
    """Several equality filters, or filters and group-by columns adding up to many dimensions."""
    filters = query.get("filters") or []
    equalities = sum(1 for f in filters if str(f.get("op")) in NARROW_FILTER_OPS)
    group = len((query.get("group_by") or {}).get("columns") or [])
    return equalities >= 2 or (len(filters) >= 1 and len(filters) + group >= rules.narrow_dimensions)


def _densest(times: Sequence[datetime], window: timedelta) -> tuple[int, datetime, datetime]:
    """The most events in any window of this length: (count, first, last)."""
    best, start, span = 0, 0, (times[0], times[0])
    for end, at in enumerate(times):
        while at - times[start] > window:
            start += 1
        if end - start + 1 > best:
            best, span = end - start + 1, (times[start], at)
    return best, span[0], span[1]


def _queries(records: Iterable[RecordLike]) -> list[tuple[RecordLike, dict[str, Any]]]:
    out = []
    for record in records:
        if record.kind != "dp-query" or record.details.get("outcome") == "refused":
            continue
        query = _query(record)
        if query is not None:
            out.append((record, query))
    return sorted(out, key=lambda item: item[0].at)


def near_duplicates(records: Iterable[RecordLike], rules: Rules = Rules()) -> list[Flag]:
    groups: dict[tuple[str, str | None, str | None, str], list[RecordLike]] = defaultdict(list)
    for record, query in _queries(records):
        groups[(record.actor, record.organisation, record.dataset, shape(query))].append(record)
    flags = []
    for (actor, org, dataset, _), items in groups.items():
        count, first, last = _densest([r.at for r in items], rules.window)
        if count >= rules.repeat_min:
            flags.append(
                Flag(
                    "near-duplicate",
                    org,
                    actor,
                    dataset,
                    count,
                    first,
                    last,
                    f"{count} queries of the same shape within {_span(rules.window)} / 短时间内重复相似查询",
                )
            )
    return flags


def narrow_queries(records: Iterable[RecordLike], rules: Rules = Rules()) -> list[Flag]:
    groups: dict[tuple[str, str | None, str | None], list[RecordLike]] = defaultdict(list)
    for record, query in _queries(records):
        if is_narrow(query, rules):
            groups[(record.actor, record.organisation, record.dataset)].append(record)
    flags = []
    for (actor, org, dataset), items in groups.items():
        count, first, last = _densest([r.at for r in items], rules.window)
        if count >= rules.narrow_min:
            flags.append(
                Flag(
                    "narrow",
                    org,
                    actor,
                    dataset,
                    count,
                    first,
                    last,
                    f"{count} narrow queries (small groups) within {_span(rules.window)} / 大量窄范围查询",
                )
            )
    return flags


def bursts_before_expiry(
    records: Iterable[RecordLike], grants: Iterable[GrantLike], rules: Rules = Rules()
) -> list[Flag]:
    by_grant: dict[int, list[datetime]] = defaultdict(list)
    for record, _ in _queries(records):
        grant = record.details.get("grant")
        if isinstance(grant, int):
            by_grant[grant].append(record.at)
    flags = []
    for grant in grants:
        times = by_grant.get(grant.id, [])
        term = grant.expires_at - grant.created_at
        tail = min(term * rules.tail_fraction, rules.tail_max)
        if not times or tail <= timedelta(0):
            continue
        tail_start = grant.expires_at - tail
        in_tail = [t for t in times if t >= tail_start]
        before = len(times) - len(in_tail)
        if len(in_tail) < rules.burst_min:
            continue
        rate_tail = len(in_tail) / tail.total_seconds()
        rate_before = before / max((tail_start - grant.created_at).total_seconds(), 1.0)
        if before and rate_tail < rules.burst_factor * rate_before:
            continue
        flags.append(
            Flag(
                "burst-before-expiry",
                grant.organisation,
                None,
                grant.dataset,
                len(in_tail),
                in_tail[0],
                in_tail[-1],
                f"{len(in_tail)} queries in the last {_span(tail)} of grant {grant.id}'s term "
                f"({before} before) / 授权到期前查询激增",
            )
        )
    return flags


def _number(value: Any) -> float | None:
    """A filter constant as a number: numbers as they are, ISO dates in days."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return float(dt.date.fromisoformat(value[:10]).toordinal())
        except ValueError:
            return None
    return None


def _kept_by_range(bounds: list[tuple[str, float]], span: tuple[float, float] | None) -> float:
    if span is None:
        return 1.0
    low, high = span
    lower = max([v for op, v in bounds if op in (">", ">=")], default=low)
    upper = min([v for op, v in bounds if op in ("<", "<=")], default=high)
    width = max(upper - lower, 0.0) + (1.0 if any(op in ("<=", ">=") for op, _ in bounds) else 0.0)
    return min(max(width / max(high - low + 1.0, 1.0), 0.0), 1.0)


def isolated(query: dict[str, Any], profile: DatasetProfile) -> float:
    """Expected people in one cell of the query: rows × kept fraction / number of cells."""
    kept = 1.0
    ranges: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for f in query.get("filters") or []:
        column, op, value = str(f.get("column")), str(f.get("op")), f.get("value")
        distinct = max(profile.distinct.get(column, 1), 1)
        if op in ("==", "eq"):
            kept *= 1.0 / distinct
        elif op == "in" and isinstance(value, list):
            kept *= min(len(value) / distinct, 1.0)
        elif op in ("<", "<=", ">", ">="):
            number = _number(value)
            if number is not None:
                ranges[column].append((op, number))
    for column, bounds in ranges.items():
        kept *= _kept_by_range(bounds, profile.ranges.get(column))
    cells = 1.0
    group = query.get("group_by") or {}
    keys = group.get("keys")
    if keys:
        cells *= len(keys)
    else:
        for column in group.get("columns") or []:
            cells *= max(profile.distinct.get(str(column), 1), 1)
    aggregate = query.get("aggregate") or {}
    if aggregate.get("kind") == "histogram":
        column = str(aggregate.get("column"))
        if aggregate.get("bins"):
            cells *= len(aggregate["bins"]) + 1
        elif aggregate.get("categories"):
            cells *= len(aggregate["categories"])
        else:
            cells *= max(profile.distinct.get(column, 1), 1)
    return profile.rows * kept / cells


Profiles = Callable[[str], DatasetProfile | None]


def singling_out(records: Iterable[RecordLike], profiles: Profiles, rules: Rules = Rules()) -> list[Flag]:
    """Queries whose cells hold fewer than ``rules.singling_people`` people, per organisation."""
    groups: dict[tuple[str | None, str | None], list[tuple[RecordLike, float]]] = defaultdict(list)
    for record, query in _queries(records):
        profile = profiles(str(record.dataset or query.get("dataset")))
        if profile is None:
            continue
        people = isolated(query, profile)
        if people < rules.singling_people:
            groups[(record.organisation, record.dataset)].append((record, people))
    flags = []
    for (org, dataset), items in groups.items():
        count, first, last = _densest([r.at for r, _ in items], rules.window)
        if count < rules.singling_min:
            continue
        actors = tuple(sorted({r.actor for r, _ in items}))
        fewest = min(p for _, p in items)
        seqs = tuple(int(getattr(r, "seq", 0)) for r, _ in items if getattr(r, "seq", None) is not None)
        flags.append(
            Flag(
                "singling-out",
                org,
                actors[0] if len(actors) == 1 else None,
                dataset,
                len(items),
                first,
                last,
                f"{len(items)} queries by {', '.join(actors)} isolate cells of about {fewest:.2g} people "
                f"(under {rules.singling_people:g}) / {len(items)} 个查询可锁定极少数个人",
                seqs,
                actors,
            )
        )
    return flags


def flags(
    records: Sequence[RecordLike],
    grants: Iterable[GrantLike],
    rules: Rules = Rules(),
    profiles: Profiles | None = None,
) -> list[Flag]:
    """Every flag, newest activity first."""
    found = near_duplicates(records, rules) + narrow_queries(records, rules)
    found += bursts_before_expiry(records, grants, rules)
    if profiles is not None:
        found += singling_out(records, profiles, rules)
    return sorted(found, key=lambda f: f.last, reverse=True)


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:g} d" if hours >= 24 else f"{hours:g} h"
