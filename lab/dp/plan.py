"""Resolve a query against what is public about a table, before any data is read.

:func:`resolve` checks the query against a :class:`~lab.dp.query.FrameMeta` (columns,
types, public keys, a row bound) and turns it into a :class:`Plan`: the key columns and
their public keys (or "released" keys), the clamp bounds or quantile candidates, and the
noisy statistics to calibrate. The sensitivities are the Context API's:

=========================  =============================  ==================================
aggregate                  one row changes it by (c)      one unit of ``k`` rows (L1)
=========================  =============================  ==================================
count, histogram           1                              k
sum(lower, upper)          max(|lower|, |upper|)          k · max(|lower|, |upper|)
mean                       sum and count, as above        both; ε split evenly (same ``s``)
quantile (per group)       OpenDP's score map at 1        score map at k, times the groups
                                                          one unit can touch, min(k, #keys)
counts over released keys  1                              (l0, l1, l∞) = (k, k, k)
=========================  =============================  ==================================
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from lab.dp.calibrate import LaplaceStat, QuantileStat, Stat, ThresholdStat
from lab.dp.query import Filter, FrameMeta, Query
from lab.errors import ConfigError, NotFound
from lab.suggest import did_you_mean

MAX_PUBLIC_KEYS = 100_000
MAX_CANDIDATES = 101
RESERVED_NAMES = ("value", "ci", "count", "sum", "suppressed")


@dataclass(frozen=True)
class Plan:
    """A checked query, ready to calibrate (:mod:`lab.dp.calibrate`) and run (:mod:`lab.dp.execute`)."""

    query: Query
    key_columns: tuple[str, ...]
    keys: tuple[tuple[Any, ...], ...] | None  # public keys; None when ungrouped or released
    released: bool  # group keys are taken from the data behind a threshold (spends δ)
    stats: tuple[Stat, ...]
    delta: float  # the δ the query spends (0 unless keys are released)
    integer: bool = True  # the aggregated column holds integers
    bounds: tuple[int, int] | None = None  # clamp bounds of sum / mean
    candidates: tuple[Any, ...] | None = None  # quantile candidates
    bin_edges: tuple[float, ...] | None = None  # histogram bins
    filters: tuple[Filter, ...] = ()  # the query's filters, values converted to the columns' types

    @property
    def grouped(self) -> bool:
        return bool(self.key_columns)


def resolve(query: Query, meta: FrameMeta) -> Plan:
    """Check ``query`` against ``meta`` and plan it; raises NotFound / ConfigError with the fix."""
    filters = _check_columns(query, meta)
    agg = query.aggregate
    if query.group_by is not None and agg.column in query.group_by.columns:
        raise ConfigError(
            f"'{agg.column}' is both the column of {agg.kind} and a group_by column; group by another "
            f"column / '{agg.column}' 不能既是聚合列又是分组列",
            reason="dp-query",
        )
    k = query.unit.max_rows
    key_columns, keys = _keys(query, meta)
    released = bool(key_columns) and keys is None
    if released:
        _check_released(query, key_columns, meta)
    groups = len(keys) if keys is not None else 1
    plan = Plan(
        query=query,
        key_columns=key_columns,
        keys=keys,
        released=released,
        stats=(),
        delta=query.delta if released else 0.0,
        filters=filters,
        bin_edges=tuple(float(b) for b in agg.bins) if agg.bins is not None else None,
    )
    if agg.kind in ("count", "histogram"):
        stat: Stat = ThresholdStat("count", 1, (k, k, k)) if released else LaplaceStat("count", 1, k)
        return _with(plan, stats=(stat,))
    if agg.kind in ("sum", "mean"):
        bounds = _int_bounds(query, meta)
        c = max(abs(bounds[0]), abs(bounds[1]))
        _check_overflow(query, meta, c)
        stats: tuple[Stat, ...] = (LaplaceStat("sum", c, k * c),)
        if agg.kind == "mean":
            stats += (LaplaceStat("len", 1, k),)
        return _with(plan, stats=stats, bounds=bounds)
    integer, candidates = _candidates(query, meta)
    touched = min(k, groups)
    stat = QuantileStat(agg.label, candidates, float(agg.alpha or 0.0), integer, k, touched)
    return _with(plan, stats=(stat,), integer=integer, candidates=candidates)


def _with(plan: Plan, **changes: Any) -> Plan:
    return replace(plan, **changes)


def _unknown(column: str, meta: FrameMeta, role: str, hidden: str | None = None) -> NotFound:
    """An unknown column, with the ones there are; ``hidden`` (the privacy-unit identifier, in
    the frame for contribution bounding only) is neither listed nor suggested."""
    names = [c for c in meta.columns if c != hidden]
    known = ", ".join(names)
    en, zh = did_you_mean(column, names)
    return NotFound(
        f"unknown column '{column[:64]}' ({role}); known columns: {known}.{en} "
        f"/ 未知列 '{column[:64]}'，已知列：{known}。{zh}",
        reason="dp-column",
    )


def _check_columns(query: Query, meta: FrameMeta) -> tuple[Filter, ...]:
    """Every column the query names exists; the filters with values in the columns' types."""
    needed: list[tuple[str, str]] = []
    if query.aggregate.column:
        needed.append((query.aggregate.column, query.aggregate.kind))
    if query.group_by is not None:
        needed += [(c, "group_by") for c in query.group_by.columns]
    needed += [(f.column, "filter") for f in query.filters]
    if query.unit.identifier:
        needed.append((query.unit.identifier, "privacy unit identifier"))
    for column, role in needed:
        if column not in meta.schema:
            raise _unknown(column, meta, role, hidden=query.unit.identifier)
    return tuple(
        replace(f, value=_check_filter_value(f.column, f.value, meta.schema[f.column])) for f in query.filters
    )


def _check_filter_value(column: str, value: Any, dtype: pl.DataType) -> Any:
    """The filter's value converted to the column's type; ConfigError naming what would fit."""
    if isinstance(value, tuple):
        return tuple(_coerce(column, v, dtype) for v in value)
    return _coerce(column, value, dtype)


def _bad_value(column: str, value: Any, dtype: pl.DataType, example: str) -> ConfigError:
    shown = repr(value) if isinstance(value, int | float | bool) or value is None else type(value).__name__
    if isinstance(value, str) and len(value) <= 40:
        shown = repr(value)
    return ConfigError(
        f"filter on '{column}' ({dtype}) cannot compare with {shown}; use {example} "
        f"/ 列 '{column}'（{dtype}）的筛选值类型不符，请使用 {example}",
        reason="dp-query",
    )


def _coerce(column: str, value: Any, dtype: pl.DataType) -> Any:
    """One filter value as Polars will compare it, checked before any budget is reserved."""
    if value is None:
        return None
    if dtype.is_numeric():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return value
        raise _bad_value(column, value, dtype, "a finite number, e.g. 1990 / 有限数值")
    if dtype == pl.Boolean:
        if isinstance(value, bool):
            return value
        raise _bad_value(column, value, dtype, "true or false")
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        if isinstance(value, str):
            return value
        raise _bad_value(column, value, dtype, "a text value, e.g. '张店区' / 文本")
    if dtype == pl.Date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise _bad_value(column, value, dtype, "an ISO date such as '1990-05-17' / ISO 日期")
    if isinstance(dtype, pl.Datetime):
        parsed = value if isinstance(value, dt.datetime) else None
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                parsed = None
        elif isinstance(value, dt.date) and parsed is None:
            parsed = dt.datetime(value.year, value.month, value.day)
        if parsed is None:
            raise _bad_value(column, value, dtype, "an ISO time such as '2024-05-17T08:00:00' / ISO 时间")
        zone = dtype.time_zone
        if zone is None:
            return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise ConfigError(
        f"column '{column}' ({dtype}) cannot be filtered in DP queries; filter on another column "
        f"/ 列 '{column}'（{dtype}）不支持筛选",
        reason="dp-query",
    )


def _column_keys(column: str, meta: FrameMeta) -> tuple[Any, ...] | None:
    keys = meta.public_keys.get(column)
    return tuple(keys) if keys is not None else None


def _keys(query: Query, meta: FrameMeta) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...] | None]:
    """The key columns and their public keys (None: released, or no grouping at all)."""
    agg = query.aggregate
    columns: list[str] = []
    parts: list[tuple[tuple[Any, ...], ...] | None] = []
    if query.group_by is not None:
        columns += query.group_by.columns
        if query.group_by.keys is not None:
            parts.append(query.group_by.keys)
        else:
            per_column = [_column_keys(c, meta) for c in query.group_by.columns]
            known = None if any(p is None for p in per_column) else tuple(itertools.product(*per_column))  # type: ignore[arg-type]
            parts.append(known)
    if agg.kind == "histogram":
        column = agg.column or ""
        if column in columns:
            raise ConfigError(f"histogram column '{column}' is also a group_by column / 直方图列与分组列重复")
        columns.append(column)
        if agg.bins is not None and not meta.schema[column].is_numeric():
            raise ConfigError(
                f"histogram bins need a numeric column; '{column}' is {meta.schema[column]} / 分箱需要数值列",
                reason="dp-column",
            )
        labels = (
            bin_labels(agg.bins) if agg.bins is not None else agg.categories or _column_keys(column, meta)
        )
        parts.append(None if labels is None else tuple((label,) for label in labels))
    for name in columns:
        if name in RESERVED_NAMES:
            raise ConfigError(
                f"cannot group by a column named '{name}' "
                f"(reserved for results: {', '.join(RESERVED_NAMES)}); "
                "rename it in the dataset / 列名与结果字段冲突",
                reason="dp-query",
            )
    if not columns:
        return (), None
    if any(p is None for p in parts):
        return tuple(columns), None
    keys = tuple(tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*parts))  # type: ignore[arg-type]
    if len(keys) > MAX_PUBLIC_KEYS:
        raise ConfigError(
            f"{len(keys)} groups is too many (at most {MAX_PUBLIC_KEYS}) / 分组过多", reason="dp-query"
        )
    _check_key_types(tuple(columns), keys, meta, query)
    return tuple(columns), keys


def _check_key_types(
    columns: tuple[str, ...], keys: tuple[tuple[Any, ...], ...], meta: FrameMeta, query: Query
) -> None:
    for i, column in enumerate(columns):
        if query.aggregate.kind == "histogram" and query.aggregate.bins is not None and i == len(columns) - 1:
            continue  # bin labels are text
        dtype = key_dtype(meta.schema[column])
        try:
            pl.Series(column, [key[i] for key in keys], dtype=dtype, strict=True)
        except (TypeError, pl.exceptions.PolarsError) as exc:
            raise ConfigError(
                f"group keys of '{column}' do not match its type {dtype} / 分组键类型与列类型不符",
                reason="dp-query",
                detail=str(exc),
            ) from exc


def key_dtype(dtype: pl.DataType) -> pl.DataType:
    """Categorical / Enum keys are grouped and joined as text."""
    return pl.String() if isinstance(dtype, pl.Categorical | pl.Enum) else dtype


def _check_released(query: Query, columns: tuple[str, ...], meta: FrameMeta) -> None:
    secret = [c for c in columns if c not in meta.public_keys]
    if query.aggregate.kind not in ("count", "histogram"):
        raise ConfigError(
            f"{query.aggregate.kind} by {', '.join(secret)} needs public keys; pass them, e.g. "
            f'.group_by("{secret[0]}", keys=[...]), or ask for a count (counts can release keys with delta) '
            "/ 该聚合按非公开键分组时需要给出分组键",
            reason="dp-keys",
        )
    if query.delta <= 0:
        raise ConfigError(
            f"the keys of {', '.join(secret)} are not public: releasing them needs delta > 0, "
            "e.g. delta=1e-7, "
            f'or pass the keys yourself with .group_by("{secret[0]}", keys=[...]) '
            f"/ 列 {', '.join(secret)} 的取值未公开：需要 δ > 0（如 delta=1e-7）或自行给出分组键",
            reason="dp-keys",
        )


def _numeric_kind(query: Query, meta: FrameMeta) -> bool:
    """True for an integer column, False for a float one; anything else is an error."""
    column = query.aggregate.column or ""
    dtype = meta.schema[column]
    if dtype.is_integer() or dtype == pl.Boolean:
        return True
    if dtype.is_float():
        return False
    raise ConfigError(
        f"{query.aggregate.kind} needs a numeric column; '{column}' is {dtype} / 该聚合需要数值列",
        reason="dp-column",
    )


def _int_bounds(query: Query, meta: FrameMeta) -> tuple[int, int]:
    agg = query.aggregate
    column = agg.column or ""
    if not _numeric_kind(query, meta):
        raise ConfigError(
            f"{agg.kind} of the float column '{column}' is not supported yet: "
            "OpenDP would widen its sensitivity "
            "for float rounding; store it in integer units (e.g. cents, 分) / 暂不支持浮点列求和或均值",
            reason="dp-column",
        )
    lower, upper = agg.bounds or (0, 0)
    if float(lower) != int(lower) or float(upper) != int(upper):
        raise ConfigError(
            f"bounds of {agg.kind}('{column}') must be integers for an integer column, got {agg.bounds!r} "
            "/ 整数列的上下界须为整数",
            reason="dp-bounds",
        )
    return int(lower), int(upper)


def _check_overflow(query: Query, meta: FrameMeta, c: int) -> None:
    if meta.max_rows * c >= 2**63:
        raise ConfigError(
            f"bounds of {query.aggregate.kind}('{query.aggregate.column}') are too wide: "
            f"{meta.max_rows} rows of "
            f"{c} could overflow a 64-bit sum; narrow the bounds / 上下界过宽，求和可能溢出",
            reason="dp-bounds",
        )


def _candidates(query: Query, meta: FrameMeta) -> tuple[bool, tuple[Any, ...]]:
    agg = query.aggregate
    integer = _numeric_kind(query, meta)
    if agg.candidates is not None:
        values: Sequence[Any] = agg.candidates
    else:
        lower, upper = agg.bounds or (0, 0)
        values = np.linspace(float(lower), float(upper), MAX_CANDIDATES).tolist()
        if integer:
            values = sorted({round(v) for v in values})
    if integer:
        if any(float(v) != int(v) for v in values):
            raise ConfigError(
                f"candidates of {agg.kind}('{agg.column}') must be integers for an integer column "
                "/ 整数列的候选值须为整数",
                reason="dp-query",
            )
        return True, tuple(int(v) for v in values)
    return False, tuple(float(v) for v in values)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """Labels of the histogram bins: below the first edge, [a, b) for each pair, from the last edge on."""
    inner = [f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(edges)]
    return (f"<{_fmt(edges[0])}", *inner, f">={_fmt(edges[-1])}")
