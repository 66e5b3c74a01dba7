"""Run a plan: the exact aggregate with Polars, then noise from OpenDP's measurements.

The expensive part, scanning the rows, is one Polars query with the same per-row
transformations as OpenDP's Context API: row filters; at most ``max_rows`` rows per
identifier (the first ones, like ``truncate_per_group(k, keep="first")``); values
clamped into the bounds with nulls imputed at the midpoint (as ``.dp.sum`` does); a left
join onto the public keys (as ``.with_keys``). The few resulting integers go through the
OpenDP measurement that :mod:`lab.dp.calibrate` built: noise comes from OpenDP's
samplers only.
"""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np
import polars as pl

from lab.dp.calibrate import Calibration, LaplaceStat, ThresholdStat, laplace_threshold, laplace_vector
from lab.dp.calibrate import quantile_measurement as quantile_mechanism
from lab.dp.plan import Plan, bin_labels, key_dtype
from lab.dp.query import Filter

Row = dict[str, Any]
VALUE = "__dp_clamped_value"
# Polars' streaming engine: as fast as the in-memory one here and a third of its memory on 10M rows.
ENGINE: Final = "streaming"


def filter_expr(f: Filter) -> pl.Expr:
    """The Polars expression of one row filter."""
    column = pl.col(f.column)
    if f.value is None and f.op in ("==", "!="):
        return column.is_null() if f.op == "==" else column.is_not_null()
    ops = {
        "==": lambda v: column == v,
        "!=": lambda v: column != v,
        "<": lambda v: column < v,
        "<=": lambda v: column <= v,
        ">": lambda v: column > v,
        ">=": lambda v: column >= v,
        "in": lambda v: column.is_in(list(v)),
        "not in": lambda v: ~column.is_in(list(v)),
    }
    return ops[f.op](f.value)


def prepare(plan: Plan, frame: pl.LazyFrame) -> pl.LazyFrame:
    """Filters, truncation per identifier, text keys and histogram bins; still lazy."""
    query = plan.query
    lf = frame
    for f in plan.filters:  # values already in the columns' types (lab.dp.plan)
        lf = lf.filter(filter_expr(f))
    unit = query.unit
    if unit.identifier:
        lf = lf.filter(pl.int_range(pl.len()).over(unit.identifier) < unit.max_rows)
    schema = lf.collect_schema()
    casts = [pl.col(c).cast(pl.String) for c in plan.key_columns if key_dtype(schema[c]) != schema[c]]
    if plan.bin_edges is not None:
        column = query.aggregate.column or ""
        labels = list(bin_labels(plan.bin_edges))
        casts.append(
            pl.col(column).cut(list(plan.bin_edges), labels=labels, left_closed=True).cast(pl.String)
        )
    return lf.with_columns(casts) if casts else lf


def _midpoint(lower: int, upper: int) -> int:
    """(lower + upper) / 2 rounded toward zero: the value OpenDP imputes for nulls in a sum."""
    total = lower + upper
    return total // 2 if total >= 0 else -((-total) // 2)


def _with_clamped(plan: Plan, lf: pl.LazyFrame) -> pl.LazyFrame:
    """Add the clamped, null-imputed value column (before grouping: faster than inside ``agg``)."""
    if plan.bounds is None:
        return lf
    lower, upper = plan.bounds
    column = pl.col(plan.query.aggregate.column or "").cast(pl.Int64, strict=False)
    return lf.with_columns(column.clip(lower, upper).fill_null(_midpoint(lower, upper)).alias(VALUE))


def _aggregations(plan: Plan) -> list[pl.Expr]:
    kind = plan.query.aggregate.kind
    length = pl.len().cast(pl.Int64)
    if kind in ("count", "histogram"):
        return [length.alias("count")]
    exprs = [pl.col(VALUE).sum().alias("sum")]
    return [*exprs, length.alias("len")] if kind == "mean" else exprs


def keys_frame(plan: Plan, schema: pl.Schema) -> pl.DataFrame:
    """The public keys as a frame whose column types match the prepared data."""
    keys = plan.keys or ()
    data = {c: [key[i] for key in keys] for i, c in enumerate(plan.key_columns)}
    return pl.DataFrame(data, schema={c: schema[c] for c in plan.key_columns})


def exact_table(plan: Plan, lf: pl.LazyFrame) -> pl.DataFrame:
    """Exact counts / clamped sums per group (every public key present, zero when empty)."""
    exprs = _aggregations(plan)
    lf = _with_clamped(plan, lf)
    if not plan.grouped:
        return lf.select(exprs).collect(engine=ENGINE)
    grouped = lf.group_by(list(plan.key_columns)).agg(exprs)
    if plan.keys is None:
        return grouped.collect(engine=ENGINE)
    names = [e.meta.output_name() for e in exprs]
    keys = keys_frame(plan, lf.collect_schema()).lazy()
    joined = keys.join(
        grouped, on=list(plan.key_columns), how="left", nulls_equal=True, maintain_order="left"
    )
    return joined.with_columns(pl.col(names).fill_null(0)).collect(engine=ENGINE)


def _key_rows(plan: Plan, table: pl.DataFrame) -> list[Row]:
    if not plan.grouped:
        return [{}]
    columns = [table[c].to_list() for c in plan.key_columns]
    return [dict(zip(plan.key_columns, values, strict=True)) for values in zip(*columns, strict=True)]


def noisy_laplace(plan: Plan, calibration: Calibration, table: pl.DataFrame) -> list[Row]:
    """One Integer Laplace release per statistic over the vector of groups."""
    rows = _key_rows(plan, table)
    for stat, scale in zip(plan.stats, calibration.scales, strict=True):
        assert isinstance(stat, LaplaceStat)
        exact = [int(v) for v in table[stat.label].to_list()]
        for row, value in zip(rows, laplace_vector(scale)(exact), strict=True):
            row[stat.label] = int(value)
    return rows


def noisy_released(plan: Plan, calibration: Calibration, table: pl.DataFrame) -> list[Row]:
    """Counts over the groups found in the data, through OpenDP's Laplace threshold."""
    (stat,) = plan.stats
    assert isinstance(stat, ThresholdStat) and calibration.threshold is not None
    columns = list(plan.key_columns)
    by_label: dict[str, Row] = {}
    counts: dict[str, int] = {}
    for row in table.to_dicts():
        key = {c: row[c] for c in columns}
        label = json.dumps([key[c] for c in columns], default=str, ensure_ascii=False)
        by_label[label], counts[label] = key, int(row["count"])
    noisy = laplace_threshold(calibration.scales[0], calibration.threshold)(counts)
    return [{**by_label[label], "count": int(noisy[label])} for label in sorted(noisy)]


def noisy_quantiles(plan: Plan, calibration: Calibration, lf: pl.LazyFrame) -> list[Row]:
    """OpenDP's quantile mechanism on each group's column."""
    agg = plan.query.aggregate
    column = agg.column or ""
    dtype = pl.Int64 if plan.integer else pl.Float64
    data = lf.select([*plan.key_columns, pl.col(column).cast(dtype, strict=False)]).drop_nulls(column)
    if not plan.integer:
        data = data.filter(pl.col(column).is_not_nan())
    frame = data.collect(engine=ENGINE)
    candidates = plan.candidates or ()
    mechanism = quantile_mechanism(candidates, float(agg.alpha or 0.0), plan.integer, calibration.scales[0])
    if not plan.grouped:
        return [{agg.label: candidates[mechanism(frame[column].to_numpy(writable=True))]}]
    parts = frame.partition_by(list(plan.key_columns), as_dict=True, include_key=False)
    empty = np.empty(0, dtype=np.int64 if plan.integer else np.float64)
    rows = []
    for key in plan.keys or ():
        values = parts[key][column].to_numpy(writable=True) if key in parts else empty
        rows.append(
            {**dict(zip(plan.key_columns, key, strict=True)), agg.label: candidates[mechanism(values)]}
        )
    return rows


def run(plan: Plan, calibration: Calibration, frame: pl.LazyFrame) -> list[Row]:
    """Noisy rows: the key columns and one field per statistic (``count``, ``sum``, ``len``, quantile)."""
    lf = prepare(plan, frame)
    if plan.candidates is not None:
        return noisy_quantiles(plan, calibration, lf)
    table = exact_table(plan, lf)
    if plan.released:
        return noisy_released(plan, calibration, table)
    return noisy_laplace(plan, calibration, table)
