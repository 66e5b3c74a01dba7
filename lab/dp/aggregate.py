"""The exact-aggregate step of a DP query, behind one small interface (:class:`Aggregator`).

Everything else in :mod:`lab.dp` (the plan, the calibration, OpenDP's noise) works on the
few integers this step returns, so a bigger engine can take its place (see docs/scale.md)
without touching the guarantee. :meth:`Aggregator.aggregate` returns, for a plan:

* counts, histograms, sums, means: one row per group (every public key, in the plan's
  order, zero when empty; the groups found when keys are released; one row ungrouped)
  with ``count`` / ``sum`` / ``len``, as OpenDP's Context API would aggregate them;
* quantiles: the rows per group and *cell* of the candidates, ``(keys, cell, count)``
  where ``cell = #(candidates < value) + #(candidates <= value)`` (even: between two
  candidates; odd: on one). OpenDP's quantile scores are a function of these counts alone
  (:func:`lab.dp.execute.quantile_scores_from_cells`), so no column of values is ever
  materialised.

:class:`PolarsAggregator` runs on one node in bounded memory. Plain aggregates stream.
Truncation per identifier (the first ``max_rows`` rows of each person, like OpenDP's
``truncate_per_group(k, keep="first")``) needs every row of a person together: the rows
are hash-partitioned by the identifier into ``K`` buckets, processed one at a time (each
bucket is a filtered scan of the Parquet file, pushed down to the reader), and the
partial counts / sums / cell counts are added up. A person's rows all fall in one bucket
and a filter keeps the order of rows, so each bucket keeps exactly the rows the
unpartitioned query keeps: the sums are equal, not approximately so. ``K`` grows with
the table (:attr:`PolarsAggregator.rows_per_bucket`), so memory is bounded by one bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import polars as pl

from lab.dp.plan import Plan, bin_labels, key_dtype
from lab.dp.query import Filter

VALUE: Final = "__dp_clamped_value"
CELL: Final = "__dp_cell"  # #(candidates < value) + #(candidates <= value)
I64_MAX: Final = 2**63 - 1
# Polars' streaming engine: as fast as the in-memory one here and a third of its memory on 10M rows.
ENGINE: Final = "streaming"
ROWS_PER_BUCKET: Final = 4_000_000  # rows of one bucket of the truncation (~200 MB in Polars' window)
HASH_SEED: Final = 0x5EED


class Aggregator(Protocol):
    """Computes a plan's exact aggregates; :mod:`lab.dp.execute` adds OpenDP's noise to them."""

    def aggregate(self, plan: Plan, frame: pl.LazyFrame) -> pl.DataFrame:
        """The exact table described in the module docstring (counts, sums or quantile cells)."""
        ...


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


def filtered(plan: Plan, frame: pl.LazyFrame) -> pl.LazyFrame:
    """The query's row filters (values already in the columns' types, :mod:`lab.dp.plan`)."""
    lf = frame
    for f in plan.filters:
        lf = lf.filter(filter_expr(f))
    return lf


def truncated(plan: Plan, lf: pl.LazyFrame) -> pl.LazyFrame:
    """At most ``max_rows`` rows per identifier, the first ones in row order."""
    unit = plan.query.unit
    if not unit.identifier:
        return lf
    return lf.filter(pl.int_range(pl.len()).over(unit.identifier) < unit.max_rows)


def shaped(plan: Plan, lf: pl.LazyFrame) -> pl.LazyFrame:
    """Text keys and histogram bins."""
    query = plan.query
    schema = lf.collect_schema()
    casts = [pl.col(c).cast(pl.String) for c in plan.key_columns if key_dtype(schema[c]) != schema[c]]
    if plan.bin_edges is not None:
        column = query.aggregate.column or ""
        labels = list(bin_labels(plan.bin_edges))
        casts.append(
            pl.col(column).cut(list(plan.bin_edges), labels=labels, left_closed=True).cast(pl.String)
        )
    return lf.with_columns(casts) if casts else lf


def prepare(plan: Plan, frame: pl.LazyFrame) -> pl.LazyFrame:
    """Filters, truncation per identifier, text keys and histogram bins; still lazy (one pass)."""
    return shaped(plan, truncated(plan, filtered(plan, frame)))


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


def cell_edges(candidates: tuple[Any, ...], integer: bool) -> list[Any]:
    """Each candidate and the next value after it: ``#(edges <= v)`` is ``v``'s cell.

    ``c < v`` holds exactly when ``succ(c) <= v`` (``c + 1`` for integers, the next float
    otherwise), so one search gives ``#(c < v) + #(c <= v)``.
    """
    if integer:
        return sorted([*candidates, *(c + 1 for c in candidates if c < I64_MAX)])
    normal = [c + 0.0 for c in candidates]  # -0.0 and 0.0 are one value for OpenDP (partial_cmp)
    return sorted([*normal, *(math.nextafter(c, math.inf) for c in normal)])


def _with_cells(plan: Plan, lf: pl.LazyFrame) -> pl.LazyFrame:
    """The quantile's column as OpenDP reads it (non-null, non-NaN), replaced by its cell."""
    column = plan.query.aggregate.column or ""
    dtype = pl.Int64 if plan.integer else pl.Float64
    data = lf.select([*plan.key_columns, pl.col(column).cast(dtype, strict=False)]).drop_nulls(column)
    value = pl.col(column)
    if not plan.integer:
        data = data.filter(value.is_not_nan())
        value = value + 0.0  # turns -0.0 into 0.0
    edges = np.array(
        cell_edges(plan.candidates or (), plan.integer), dtype=np.int64 if plan.integer else np.float64
    )

    def cells(values: pl.Series) -> pl.Series:
        return pl.Series(np.searchsorted(edges, values.to_numpy(), side="right").astype(np.uint32))

    # numpy per batch: streams (Polars' search_sorted against a literal holds the whole column)
    cell = value.map_batches(cells, return_dtype=pl.UInt32, is_elementwise=True)
    return data.select(*plan.key_columns, cell.alias(CELL))


def sum_columns(plan: Plan) -> list[str]:
    """The columns of the exact table that add up across buckets."""
    if plan.candidates is not None:
        return ["count"]
    return [e.meta.output_name() for e in _aggregations(plan)]


def group_columns(plan: Plan) -> list[str]:
    """The columns the exact table is grouped by (quantiles: the keys and the cell)."""
    cells = [CELL] if plan.candidates is not None else []
    return [*plan.key_columns, *cells]


def partial(plan: Plan, lf: pl.LazyFrame) -> pl.LazyFrame:
    """The exact table of the rows of ``lf`` (already filtered and truncated), not yet on the keys."""
    lf = shaped(plan, lf)
    if plan.candidates is not None:
        return _with_cells(plan, lf).group_by(group_columns(plan)).agg(pl.len().cast(pl.Int64).alias("count"))
    exprs = _aggregations(plan)
    lf = _with_clamped(plan, lf)
    if not plan.grouped:
        return lf.select(exprs)
    return lf.group_by(list(plan.key_columns)).agg(exprs)


def merge(plan: Plan, parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Add up the partial tables of the buckets."""
    frame = pl.concat(parts, how="vertical")
    sums = [pl.col(c).sum() for c in sum_columns(plan)]
    by = group_columns(plan)
    if not by:
        return frame.select(sums)
    return frame.group_by(by).agg(sums)


def keys_frame(plan: Plan, schema: pl.Schema) -> pl.DataFrame:
    """The public keys as a frame whose column types match the prepared data."""
    keys = plan.keys or ()
    data = {c: [key[i] for key in keys] for i, c in enumerate(plan.key_columns)}
    return pl.DataFrame(data, schema={c: schema[c] for c in plan.key_columns})


def on_keys(plan: Plan, table: pl.DataFrame) -> pl.DataFrame:
    """Counts / sums on every public key, in the plan's order, zero when the group is empty."""
    if plan.keys is None or plan.candidates is not None or not plan.grouped:
        return table
    names = sum_columns(plan)
    keys = keys_frame(plan, table.schema)
    joined = keys.join(table, on=list(plan.key_columns), how="left", nulls_equal=True, maintain_order="left")
    return joined.with_columns(pl.col(names).fill_null(0))


@dataclass(frozen=True)
class PolarsAggregator:
    """One node, bounded memory: streaming aggregates, hash buckets for truncation per identifier."""

    rows_per_bucket: int = ROWS_PER_BUCKET

    def buckets(self, frame: pl.LazyFrame) -> int:
        """How many buckets the truncation needs (the row count comes from the Parquet footer)."""
        rows = int(frame.select(pl.len()).collect(engine=ENGINE).item())
        return max(1, math.ceil(rows / self.rows_per_bucket))

    def aggregate(self, plan: Plan, frame: pl.LazyFrame) -> pl.DataFrame:
        lf = filtered(plan, frame)
        identifier = plan.query.unit.identifier
        if not identifier:
            table = partial(plan, lf).collect(engine=ENGINE)
        else:
            k = self.buckets(frame)
            if k == 1:
                table = partial(plan, truncated(plan, lf)).collect(engine=ENGINE)
            else:
                bucket = pl.col(identifier).hash(HASH_SEED) % k
                parts = [
                    partial(plan, truncated(plan, lf.filter(bucket == b))).collect(engine=ENGINE)
                    for b in range(k)
                ]
                table = merge(plan, parts)
        return on_keys(plan, table)
