"""Run a plan: the exact aggregate (:mod:`lab.dp.aggregate`), then noise from OpenDP's measurements.

The expensive part, scanning the rows, is the :class:`~lab.dp.aggregate.Aggregator`'s, with
the same per-row transformations as OpenDP's Context API: row filters; at most
``max_rows`` rows per identifier (the first ones, like ``truncate_per_group(k,
keep="first")``); values clamped into the bounds with nulls imputed at the midpoint (as
``.dp.sum`` does); a left join onto the public keys (as ``.with_keys``). The few resulting
integers go through the OpenDP measurement that :mod:`lab.dp.calibrate` built: noise
comes from OpenDP's samplers only.

Quantiles. OpenDP's ``make_quantile_score_candidates`` scores candidate ``c`` on ``n``
values as ``|den · min(#(x < c), L) − num · min(n − #(x = c), L)|`` (``alpha = num / den``,
:func:`~lab.dp.calibrate.score_constants`). Those counts come from the aggregator's cell
counts, so the scores are computed here from a few hundred integers and go through the
same report-noisy-min measurement (:func:`~lab.dp.calibrate.quantile_noise`) that follows
OpenDP's score transformation in its quantile mechanism. The unit tests
check the scores against OpenDP's transformation on random data with ties.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

from lab.dp.aggregate import CELL, Aggregator, PolarsAggregator
from lab.dp.calibrate import (
    Calibration,
    LaplaceStat,
    ThresholdStat,
    laplace_threshold,
    laplace_vector,
    quantile_noise,
    score_constants,
)
from lab.dp.plan import Plan

Row = dict[str, Any]


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


def quantile_scores_from_cells(
    cells: np.ndarray, counts: np.ndarray, candidates: int, alpha: float
) -> list[int]:
    """OpenDP's quantile scores of one group from its cell counts (see the module docstring).

    A value in cell ``2i`` lies between candidates ``i - 1`` and ``i``; in cell ``2i + 1``
    it equals candidate ``i``. ``counts`` holds how many values each cell has.
    """
    num, den, limit = score_constants(alpha)
    per_cell = [0] * (2 * candidates + 1)
    for cell, count in zip(cells.tolist(), counts.tolist(), strict=True):
        per_cell[cell] += count
    n = sum(per_cell)
    scores, below = [], 0
    for j in range(candidates):
        below += per_cell[2 * j]  # values < candidate j
        equal = per_cell[2 * j + 1]
        scores.append(abs(den * min(below, limit) - num * min(n - equal, limit)))
        below += equal
    return scores


def noisy_quantiles(plan: Plan, calibration: Calibration, cells: pl.DataFrame) -> list[Row]:
    """OpenDP's report-noisy-min over each group's quantile scores."""
    agg = plan.query.aggregate
    candidates = plan.candidates or ()
    alpha = float(agg.alpha or 0.0)
    mechanism = quantile_noise(candidates, alpha, plan.integer, calibration.scales[0])
    columns = list(plan.key_columns)
    groups: dict[tuple[Any, ...], pl.DataFrame] = (
        {(): cells} if not columns else cells.partition_by(columns, as_dict=True, include_key=False)
    )
    empty = pl.DataFrame({CELL: [], "count": []}, schema={CELL: pl.UInt32, "count": pl.Int64})
    rows = []
    for key in plan.keys or ((),):
        part = groups.get(key, empty)
        scores = quantile_scores_from_cells(
            part[CELL].to_numpy(), part["count"].to_numpy(), len(candidates), alpha
        )
        choice = candidates[mechanism(scores)]
        rows.append({**dict(zip(columns, key, strict=True)), agg.label: choice})
    return rows


def run(
    plan: Plan, calibration: Calibration, frame: pl.LazyFrame, aggregator: Aggregator | None = None
) -> list[Row]:
    """Noisy rows: the key columns and one field per statistic (``count``, ``sum``, ``len``, quantile)."""
    table = (aggregator or PolarsAggregator()).aggregate(plan, frame)
    if plan.candidates is not None:
        return noisy_quantiles(plan, calibration, table)
    if plan.released:
        return noisy_released(plan, calibration, table)
    return noisy_laplace(plan, calibration, table)
