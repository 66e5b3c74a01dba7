"""DP tables: noisy counts and bounded sums over public keys, with intervals per cell.

:func:`plan_tables` checks a ``dp-table`` spec against the dataset's policy and DP view
and previews every table with :func:`lab.dp.preview` — reading no row — so the total ε
is known before anything is computed: that is the amount to reserve in the ledger.
:func:`release_tables` then releases each table with :func:`lab.dp.release` (OpenDP's
Integer Laplace, calibrated as OpenDP's Context API does) and post-processes the noisy
values as the spec says. :func:`build_tables` does both.

**Accounting.** Every table is one ``lab.dp`` query over public keys (pure DP, δ = 0) at
its share of ε (see :mod:`lab.dpextract.budget`). The tables compose by basic
composition: the extract's ε is exactly the sum of the shares, in the ledger's units.

**Intervals.** Each released cell carries ``scale`` (of its noise) and
``[ci_low, ci_high]``, the (1 − alpha) interval of OpenDP's accuracy for that scale,
around the *published* value: widened by half the rounding step when values are rounded,
and cut at 0 for counts and for sums of non-negative amounts (the truth cannot be lower).
Clamping and rounding thus never lower the coverage. Suppressed cells have no value and
no interval.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from lab import dp
from lab.dp.plan import key_dtype
from lab.dp.query import canonical_json
from lab.dpextract.budget import mechanism_epsilon, units_to_epsilon
from lab.dpextract.spec import PostProcess, TableSpec, TablesSpec, load_spec, table_units
from lab.dpextract.specio import Source
from lab.dpextract.view import (
    TableLike,
    View,
    check_column,
    check_dataset,
    make_view,
    public_domains,
    require_keys,
)
from lab.errors import LabError
from lab.policy import Policy, require_release

CELL_COLUMNS = ("value", "scale", "ci_low", "ci_high", "suppressed")


@dataclass(frozen=True)
class TablePlan:
    """One checked table: its ``lab.dp`` query, the preview and its share of ε in ledger units."""

    spec: TableSpec
    query: dp.Query
    preview: dp.Preview
    units: int

    @property
    def epsilon(self) -> float:
        return units_to_epsilon(self.units)

    @property
    def cells(self) -> int:
        return int(self.preview.groups or 1)

    def to_dict(self) -> dict[str, Any]:
        noise = self.preview.noise[0]
        return {
            **self.spec.to_dict(),
            "epsilon": self.epsilon,
            "delta": self.preview.delta,
            "cells": self.cells,
            "scale": noise.scale,
            "distribution": noise.distribution,
            "sensitivity": noise.sensitivity,
            "ci_half_width": noise.accuracy,
        }


@dataclass(frozen=True)
class TablesPlan:
    """A checked ``dp-table`` spec: what it will cost and how noisy each table will be."""

    spec: TablesSpec
    dataset: str
    tables: tuple[TablePlan, ...]
    view: View

    @property
    def units(self) -> int:
        return sum(t.units for t in self.tables)

    @property
    def epsilon(self) -> float:
        """The total ε to reserve: exactly the sum of the tables' shares (basic composition)."""
        return units_to_epsilon(self.units)

    @property
    def delta(self) -> float:
        return 0.0  # every grouping has public keys

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dp-table",
            "dataset": self.dataset,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "alpha": self.spec.alpha,
            "composition": "basic: total epsilon = sum of the tables' epsilons",
            "privacy_unit": self.view.unit.to_dict(),
            "tables": [t.to_dict() for t in self.tables],
        }

    def canonical(self) -> str:
        """The text the ledger records as the request (compact JSON of the normalised spec)."""
        return canonical_json({"dataset": self.dataset, "spec": self.spec.to_dict()})


@dataclass(frozen=True)
class TablesSummary:
    """What was released: the plan, each table's digest and suppressed cells."""

    plan: TablesPlan
    digests: tuple[str, ...]
    suppressed: tuple[int, ...]

    @property
    def epsilon(self) -> float:
        return self.plan.epsilon

    @property
    def delta(self) -> float:
        return self.plan.delta

    @property
    def digest(self) -> str:
        """SHA-256 over the tables' release digests, for the ledger's record."""
        return hashlib.sha256(canonical_json(list(self.digests)).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        out = self.plan.to_dict()
        for entry, digest, hidden in zip(out["tables"], self.digests, self.suppressed, strict=True):
            entry.update(digest=digest, suppressed_cells=hidden)
        return out


def _checked_columns(
    spec: TablesSpec, policy: Policy, table: TableLike, keys: Mapping[str, Any], source: Source
) -> None:
    for t in spec.tables:
        what = f"table '{t.name}'"
        for i, column in enumerate(t.group_by):
            check_column(column, policy, table, what, source, (*t.where, "group_by", i))
            require_keys(column, keys, what, source, (*t.where, "group_by", i))
        if t.column is not None:
            check_column(t.column, policy, table, what, source, (*t.where, "column"))
            if t.column in t.group_by or t.column == "age_band":
                raise source.error(
                    (*t.where, "column"),
                    f"{what}: cannot sum '{t.column}', a grouping column (分组字段不能求和)",
                )


def _query(dataset: str, t: TableSpec, units: int, unit: dp.PrivacyUnit) -> dp.Query:
    agg = dp.Aggregate("count") if t.statistic == "count" else dp.Aggregate("sum", t.column, bounds=t.bounds)
    return dp.Query(dataset, agg, mechanism_epsilon(units), 0.0, unit, dp.GroupBy(t.group_by))


def _preview(query: dp.Query, view: View, t: TableSpec, source: Source, alpha: float) -> dp.Preview:
    try:
        return dp.preview(query, view.meta, alpha=alpha)
    except LabError as exc:  # name the table in whatever lab.dp rejects
        message = f"{source.at(t.where)}table '{t.name}': {exc.message}"
        raise type(exc)(message, detail=exc.detail, reason=exc.reason) from exc


def plan_tables(
    spec: TablesSpec | Mapping[str, Any] | str | Path, table: TableLike, policy: Policy
) -> TablesPlan:
    """Check ``spec`` against ``policy`` and the DP view, and preview every table; reads no data.

    Raises PolicyError (a protected column, or a dataset without DP releases: AccessDenied),
    ConfigError (unknown column, grouping without public keys, bad ε, bounds or options).
    """
    parsed = load_spec(spec, "dp-table")
    assert isinstance(parsed, TablesSpec)
    source = parsed.source
    require_release(policy, "dp")
    check_dataset(policy, parsed.dataset, source)
    keys = public_domains(policy, table, parsed.keys, source, parsed.age_band)
    _checked_columns(parsed, policy, table, keys, source)
    units = table_units(parsed)
    derived = any("age_band" in t.group_by for t in parsed.tables)
    view = make_view(table, keys, parsed.age_band, policy.domains.reference_date if derived else None)
    plans = []
    for t, share in zip(parsed.tables, units, strict=True):
        query = _query(policy.dataset, t, share, view.unit)
        plans.append(TablePlan(t, query, _preview(query, view, t, source, parsed.alpha), share))
    return TablesPlan(parsed, policy.dataset, tuple(plans), view)


def _round(value: int, step: int) -> int:
    return value if step == 1 else int(math.floor(value / step + 0.5)) * step


def _cell(raw: int, half_width: float, post: PostProcess, nonnegative: bool) -> tuple[int, float, float]:
    """Published value and its interval (see the module docstring)."""
    value = _round(max(raw, 0) if post.clamp else raw, post.round)
    slack = post.round / 2 if post.round > 1 else 0.0
    low, high = value - half_width - slack, value + half_width + slack
    return value, (max(low, 0.0) if nonnegative else low), high


def _frame(
    tp: TablePlan, release: dp.Release, hidden: Sequence[bool], view: View
) -> tuple[pl.DataFrame, int]:
    bounds = tp.spec.bounds
    nonnegative = tp.spec.statistic == "count" or (bounds is not None and bounds[0] >= 0)
    noise = tp.preview.noise[0]
    half_width = float(noise.accuracy or 0.0)
    columns: dict[str, list[Any]] = {c: [] for c in (*release.key_columns, *CELL_COLUMNS)}
    for row, hide in zip(release.rows, hidden, strict=True):
        for c in release.key_columns:
            columns[c].append(row[c])
        value, low, high = _cell(int(row["value"]), half_width, tp.spec.postprocess, nonnegative)
        columns["value"].append(None if hide else value)
        columns["ci_low"].append(None if hide else low)
        columns["ci_high"].append(None if hide else high)
        columns["scale"].append(noise.scale)
        columns["suppressed"].append(hide)
    schema: dict[str, pl.DataType] = {c: key_dtype(view.meta.schema[c]) for c in release.key_columns}
    schema |= {"value": pl.Int64(), "scale": pl.Float64(), "ci_low": pl.Float64(), "ci_high": pl.Float64()}
    schema["suppressed"] = pl.Boolean()
    return pl.DataFrame(columns, schema=schema), sum(hidden)


def _hidden(
    tp: TablePlan, release: dp.Release, counts: Mapping[str, dict[tuple[Any, ...], int]]
) -> list[bool]:
    post = tp.spec.postprocess
    if post.suppress_below is None:
        return [False] * len(release.rows)
    if tp.spec.statistic == "count":
        return [int(row["value"]) < post.suppress_below for row in release.rows]
    reference = counts[post.count_table or ""]
    order = sorted(release.key_columns)
    return [reference[tuple(row[c] for c in order)] < post.suppress_below for row in release.rows]


def release_tables(plan: TablesPlan) -> tuple[list[tuple[str, pl.DataFrame]], TablesSummary]:
    """Release every planned table (the caller has reserved ``plan.epsilon``) and post-process it.

    Returns ``(name, frame)`` per table — key columns, ``value``, ``scale``, ``ci_low``,
    ``ci_high``, ``suppressed`` — and the summary for the manifest.
    """
    view = plan.view
    releases = [dp.release(tp.query, view.frame, view.meta, alpha=plan.spec.alpha) for tp in plan.tables]
    counts = {
        tp.spec.name: {tuple(row[c] for c in sorted(r.key_columns)): int(row["value"]) for row in r.rows}
        for tp, r in zip(plan.tables, releases, strict=True)
        if tp.spec.statistic == "count"
    }
    frames, hidden_cells = [], []
    for tp, release in zip(plan.tables, releases, strict=True):
        frame, hidden = _frame(tp, release, _hidden(tp, release, counts), view)
        frames.append((tp.spec.name, frame))
        hidden_cells.append(hidden)
    summary = TablesSummary(plan, tuple(r.digest for r in releases), tuple(hidden_cells))
    return frames, summary


def build_tables(
    spec: TablesSpec | Mapping[str, Any] | str | Path, table: TableLike, policy: Policy
) -> tuple[list[tuple[str, pl.DataFrame]], TablesSummary]:
    """Plan and release the tables of ``spec`` (reserve ``plan_tables(...).epsilon`` first)."""
    return release_tables(plan_tables(spec, table, policy))
