"""Differentially private queries over Polars LazyFrames, with OpenDP's guarantee.

::

    from lab import dp as labdp
    meta = labdp.FrameMeta.from_lazyframe(lf, public_keys={"district": DISTRICTS})
    q = labdp.on("population").group_by("district").count(epsilon=0.5)
    labdp.preview(q, meta)        # scale, 95% half-width, ε, δ; reads no data
    labdp.release(q, lf, meta)    # noisy counts per district, digest for the audit log

How it stays fast and keeps OpenDP's guarantee. OpenDP's Context API compiles a Polars
plan with DP plugins and searches its noise scale on every query (0.6-0.8 s on 2M rows).
Here the rows are aggregated by plain Polars queries doing the same per-row work
(filters, truncation per identifier, clamping, nulls at the midpoint, join onto public
keys) in bounded memory (:mod:`lab.dp.aggregate`, the one step another engine can take
over), and only the resulting integers go through OpenDP measurements: the same
mechanisms, sensitivities and noise samplers, calibrated with the same scale search
(:mod:`lab.dp.calibrate`). The unit tests check that the scales and thresholds equal
those of ``Context.summarize()`` and that OpenDP's privacy map at the unit is the ε
asked for.

Modules: :mod:`~lab.dp.query` (the query model, canonical text),
:mod:`~lab.dp.builder` (fluent builder), :mod:`~lab.dp.plan` (checks against the schema
and public keys; sensitivities), :mod:`~lab.dp.calibrate` (OpenDP measurements and
scales), :mod:`~lab.dp.aggregate` (exact aggregates, the
:class:`~lab.dp.aggregate.Aggregator` interface), :mod:`~lab.dp.execute` (noise), :mod:`~lab.dp.engine`
(:func:`preview`, :func:`release`).
"""

from lab.dp.builder import QueryBuilder, on
from lab.dp.calibrate import ALPHA
from lab.dp.engine import MIN_MEAN_ROWS, Noise, Preview, Release, preview, release, result_digest
from lab.dp.query import Aggregate, Filter, FrameMeta, GroupBy, PrivacyUnit, Query

__all__ = [
    "ALPHA",
    "MIN_MEAN_ROWS",
    "Aggregate",
    "Filter",
    "FrameMeta",
    "GroupBy",
    "Noise",
    "Preview",
    "PrivacyUnit",
    "Query",
    "QueryBuilder",
    "Release",
    "on",
    "preview",
    "release",
    "result_digest",
]
