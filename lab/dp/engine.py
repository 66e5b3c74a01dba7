"""Preview and release DP queries: the engine's two entry points.

:func:`preview` needs only the query and a :class:`~lab.dp.query.FrameMeta`: it reports
the noise (distribution, scale, 95% half-width per statistic), the threshold when keys
are released, and the (ε, δ) the query spends, without reading any row, so no budget is
spent. :func:`release` runs the same plan on a Polars LazyFrame and returns the noisy
values with a digest for the audit log. Budgets are the caller's (the gateway reserves
``preview.epsilon`` / ``preview.delta`` in the ledger before calling :func:`release`).

Means. Like OpenDP's ``.dp.mean``, a mean is a noisy clamped sum over a noisy row count
with one global scale, so ε is split evenly between the two. A mean is only shown when
the group is big enough to make it useful: it is suppressed (``value = None``,
``suppressed = True``) when the lower end of the count's interval, at α/2, is below
:data:`MIN_MEAN_ROWS`. The noisy count is always reported. Suppression and the
interval are post-processing of the released values and cost nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from lab.dp.aggregate import Aggregator
from lab.dp.calibrate import ALPHA, Calibration, calibrate, discrete_laplace_accuracy
from lab.dp.execute import run
from lab.dp.plan import Plan, resolve
from lab.dp.query import FrameMeta, Query, canonical_json
from lab.errors import NotFound

MIN_MEAN_ROWS = 10


@dataclass(frozen=True)
class Noise:
    """The noise added to one statistic (one value per group)."""

    statistic: str  # count, sum, len, 0.5-quantile
    distribution: str  # OpenDP's name: Integer Laplace, ExponentialMin
    scale: float
    accuracy: float | None  # half-width of the (1 - alpha) interval; None for quantiles
    sensitivity: float  # how far one privacy unit moves it (L1 over groups; quantiles: score shift)


@dataclass(frozen=True)
class Preview:
    """What a query would cost and how accurate it would be, before it runs."""

    query: str  # canonical text
    epsilon: float  # ε the query spends
    delta: float  # δ the query spends (0 unless keys are released)
    alpha: float
    noise: tuple[Noise, ...]
    groups: int | None  # number of public groups; None when ungrouped or released
    released_keys: bool
    threshold: int | None  # released groups need a noisy count >= threshold
    epsilon_map: float  # OpenDP's privacy map at the unit (<= epsilon)
    delta_map: float
    notes: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        return self.noise[0].scale

    @property
    def accuracy(self) -> float | None:
        return self.noise[0].accuracy

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "noise"}
        out["noise"] = [n.__dict__ for n in self.noise]
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class Release:
    """Noisy values per group, the guarantee they carry and a digest for the audit log.

    Each row holds the key columns, ``value`` (the count, sum, mean or quantile) and
    ``ci`` (its half-width at the preview's alpha); means add ``count``, ``sum`` and
    ``suppressed``.
    """

    query: str
    key_columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    preview: Preview
    digest: str

    @property
    def epsilon(self) -> float:
        return self.preview.epsilon

    @property
    def delta(self) -> float:
        return self.preview.delta

    @property
    def scale(self) -> float:
        return self.preview.scale

    @property
    def ci_half_width(self) -> float | None:
        return self.preview.accuracy

    @property
    def values(self) -> list[Any]:
        return [row["value"] for row in self.rows]

    def to_polars(self) -> pl.DataFrame:
        return pl.DataFrame(list(self.rows))

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "key_columns": list(self.key_columns),
            "rows": [dict(r) for r in self.rows],
            "preview": self.preview.to_dict(),
            "digest": self.digest,
        }


def _notes(plan: Plan) -> tuple[str, ...]:
    kind = plan.query.aggregate.kind
    notes = []
    if kind == "mean":
        notes.append(
            "mean = noisy sum / noisy count, each with half of epsilon (as OpenDP's .dp.mean); "
            f"means of groups whose count may be under {MIN_MEAN_ROWS} are suppressed"
        )
    if plan.released:
        notes.append(
            "group keys come from the data: groups whose noisy count is below the threshold are omitted"
        )
    if kind in ("quantile", "median"):
        notes.append("the result is one of the candidates, chosen by OpenDP's exponential mechanism")
    return tuple(notes)


def _build_preview(query: Query, plan: Plan, cal: Calibration, alpha: float) -> Preview:
    noise = tuple(
        Noise(stat.label, stat.distribution, scale, stat.accuracy(scale, alpha), stat.sensitivity())
        for stat, scale in zip(plan.stats, cal.scales, strict=True)
    )
    return Preview(
        query=query.canonical(),
        epsilon=query.epsilon,
        delta=plan.delta,
        alpha=alpha,
        noise=noise,
        groups=None if plan.keys is None else len(plan.keys),
        released_keys=plan.released,
        threshold=cal.threshold,
        epsilon_map=cal.epsilon_map,
        delta_map=cal.delta_map,
        notes=_notes(plan),
    )


def _plan(query: Query, meta: FrameMeta, alpha: float) -> tuple[Plan, Calibration, Preview]:
    plan = resolve(query, meta)
    cal = calibrate(plan.stats, float(query.epsilon), float(plan.delta))
    return plan, cal, _build_preview(query, plan, cal, alpha)


def preview(query: Query, meta: FrameMeta, alpha: float = ALPHA) -> Preview:
    """Noise, accuracy and cost of ``query``; reads no data and spends no budget."""
    return _plan(query, meta, alpha)[2]


def release(
    query: Query,
    frame: pl.LazyFrame,
    meta: FrameMeta | None = None,
    alpha: float = ALPHA,
    *,
    before_read: Callable[[], None] | None = None,
    aggregator: Aggregator | None = None,
) -> Release:
    """Run ``query`` on ``frame`` and return the noisy result (the caller has reserved the budget).

    ``meta`` carries the public keys and row bound from the dataset policy; without it only
    the frame's schema is known (groups then need explicit keys or delta). ``before_read``
    is called once every check that needs no row has passed, just before the first row is
    read: the ledger charges a failure after it and refunds one before it. ``aggregator``
    computes the exact aggregates (default: :class:`~lab.dp.aggregate.PolarsAggregator`).
    """
    meta = meta if meta is not None else FrameMeta.from_lazyframe(frame)
    schema = frame.collect_schema()
    missing = [c for c in meta.columns if c not in schema]
    if missing:
        raise NotFound(
            f"columns {missing} are missing from the data / 数据中缺少列 {missing}", reason="dp-column"
        )
    plan, cal, prev = _plan(query, meta, alpha)
    if before_read is not None:
        before_read()
    rows = _finish(plan, prev, run(plan, cal, frame, aggregator))
    return Release(prev.query, plan.key_columns, rows, prev, digest=result_digest(prev, rows))


def _finish(plan: Plan, prev: Preview, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    kind = plan.query.aggregate.kind
    keys = plan.key_columns
    if kind == "mean":
        return tuple(_mean_row(plan, prev, row) for row in rows)
    label = plan.stats[0].label
    ci = prev.noise[0].accuracy
    return tuple({**{c: row[c] for c in keys}, "value": row[label], "ci": ci} for row in rows)


def _mean_row(plan: Plan, prev: Preview, row: dict[str, Any]) -> dict[str, Any]:
    """Noisy mean, its interval from both noises at alpha/2 each, and the small-group rule."""
    noisy_sum, noisy_len = row["sum"], row["len"]
    sum_noise, len_noise = prev.noise
    half = prev.alpha / 2
    sum_acc = discrete_laplace_accuracy(sum_noise.scale, half)
    len_acc = discrete_laplace_accuracy(len_noise.scale, half)
    keys = {c: row[c] for c in plan.key_columns}
    out = {**keys, "value": None, "ci": None, "count": noisy_len, "sum": noisy_sum, "suppressed": True}
    if noisy_len - len_acc < MIN_MEAN_ROWS:
        return out
    corners = [
        (noisy_sum + ds) / (noisy_len + dn) for ds in (-sum_acc, sum_acc) for dn in (-len_acc, len_acc)
    ]
    out.update(value=noisy_sum / noisy_len, ci=(max(corners) - min(corners)) / 2, suppressed=False)
    return out


def mean_accuracy(
    sum_scale: float, count_scale: float, alpha: float, bounds: tuple[float, float], rows: int
) -> float | None:
    """Half-width of a mean's interval for a group of ``rows`` rows, before the query runs.

    The same interval a released mean gets (both noises at ``alpha / 2``, the corners of
    sum ± and count ±), taken at the worst true mean within ``bounds``: it uses only the
    preview's public figures, never the data. None when such a group would be suppressed.
    """
    sum_acc = discrete_laplace_accuracy(sum_scale, alpha / 2)
    count_acc = discrete_laplace_accuracy(count_scale, alpha / 2)
    if rows - count_acc < MIN_MEAN_ROWS:
        return None
    widths = []
    for mean in bounds:
        corners = [
            (mean * rows + ds) / (rows + dn) for ds in (-sum_acc, sum_acc) for dn in (-count_acc, count_acc)
        ]
        widths.append((max(corners) - min(corners)) / 2)
    return max(widths)


def result_digest(prev: Preview, rows: tuple[dict[str, Any], ...]) -> str:
    """SHA-256 over the canonical query, the rows, the guarantee and the noise scales."""
    payload = {
        "query": prev.query,
        "rows": json.loads(json.dumps(list(rows), default=str)),
        "epsilon": prev.epsilon,
        "delta": prev.delta,
        "scales": [n.scale for n in prev.noise],
        "threshold": prev.threshold,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
