"""DP synthetic microdata: measure marginals with ``lab.dp``, fit a model, draw records.

**Method.** Every modelled column gets a public encoding (:mod:`lab.dpextract.encode`).
The one- and two-way marginals of the codes (by default every pair of modelled
columns) are measured with :func:`lab.dp.release` — OpenDP's Integer Laplace over public
keys, calibrated as OpenDP's Context API does, at the dataset's privacy unit — each at a
share of ε proportional to its number of cells (this equalises the expected noise per
marginal in total-variation distance). A model is fitted to the noisy marginals and
synthetic records are drawn from it (:mod:`lab.dpextract.model`); both are
post-processing. The extract's ε is the sum of the shares (basic composition), δ = 0.

**Why this and not a library.** OpenDP 0.16 has its own route —
``Context.query().contingency_table(algorithm=dp.mbi.Fixed(...) | MST() | AIM())``, with
Private-PGM fitting the model — but it needs the ``opendp[mbi]`` extra: ``mbi`` 1.1 with
JAX, jaxlib, optax and (to synthesise) pandas, over 400 MB more in the gateway. Tried on
200,000 population rows at ε = 1 on two cores: ``Fixed`` over all ten pairs took 24-30 s
(worst one- or two-way TVD of the quasi-identifiers 0.032), ``MST`` about 20 s (0.044).
smartnoise-synth 1.0.8 pins ``opendp<0.15`` (and pulls PyTorch) and dpmm 0.1.9 pins
``opendp==0.12.1`` and ``numpy<2``: both conflict with our pins. The method here measures
the same marginals with the same OpenDP mechanism, keeps noise and calibration in
``lab.dp`` (tested against the Context API), needs no new dependency, took 0.5 s on the
same rows with a worst TVD of 0.009, and its estimator — raking the full table when it
is small, a Chow–Liu tree otherwise — is the classic one for all-pairs marginals.
Swapping in ``dp.mbi`` later would change only the fitting step.

**Schema.** The synthetic table has the dataset's own schema (the catalogue's columns
and types, in order), not the DP view's. Modelled columns carry synthetic values;
direct identifiers, pseudonymised columns and the privacy-unit column get obviously
synthetic values ``SYN-000001``, …; everything else (core or negative-listed columns,
columns without a public domain) is null. How each column was filled is in the summary.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lab import dp
from lab.dp.plan import MAX_PUBLIC_KEYS
from lab.dp.query import canonical_json
from lab.dpextract import model as fitting
from lab.dpextract.budget import mechanism_epsilon, split_units, units_to_epsilon
from lab.dpextract.encode import CODE, Encoder
from lab.dpextract.spec import AgeBand, load_spec
from lab.dpextract.specio import epsilon_units
from lab.dpextract.synthcols import column_plan
from lab.dpextract.synthspec import SyntheticSpec
from lab.dpextract.view import TableLike, check_column, check_dataset, public_domains
from lab.errors import ConfigError
from lab.policy import Policy, require_release
from lab.registry.catalogue import dataset as catalogue_entry

SYNTHETIC_PREFIX = "SYN-"  # synthetic identifiers: SYN-000001, SYN-000002, …


@dataclass(frozen=True)
class MarginalPlan:
    """One marginal to measure: its columns, ``lab.dp`` query, preview and share of ε in units."""

    columns: tuple[str, ...]
    axes: tuple[int, ...]
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
            "columns": list(self.columns),
            "cells": self.cells,
            "epsilon": self.epsilon,
            "scale": noise.scale,
            "distribution": noise.distribution,
            "ci_half_width": noise.accuracy,
        }


@dataclass(frozen=True)
class SyntheticPlan:
    """A checked ``dp-synthetic`` spec: encodings, marginals, cost; reads no data."""

    spec: SyntheticSpec
    dataset: str
    schema: Mapping[str, pl.DataType]  # the dataset's own schema
    encoders: tuple[Encoder, ...]
    fill: Mapping[str, str]  # how each column of the schema is filled
    marginals: tuple[MarginalPlan, ...]
    frame: pl.LazyFrame  # the coded DP view (lazy)
    meta: dp.FrameMeta

    @property
    def units(self) -> int:
        return sum(m.units for m in self.marginals)

    @property
    def epsilon(self) -> float:
        """The total ε to reserve: exactly the sum of the marginals' shares (basic composition)."""
        return units_to_epsilon(self.units)

    @property
    def delta(self) -> float:
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dp-synthetic",
            "dataset": self.dataset,
            "synthetic": True,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "composition": "basic: total epsilon = sum of the measured marginals' epsilons",
            "privacy_unit": {"max_rows": self.marginals[0].query.unit.max_rows},
            "method": "lab.dp (OpenDP Integer Laplace) one- and two-way marginals over public encodings; "
            "fit: raking of the full table (IPF) or a Chow-Liu tree; records by controlled rounding "
            "or ancestral sampling",
            "columns": dict(self.fill),
            "marginals": [m.to_dict() for m in self.marginals],
        }

    def canonical(self) -> str:
        """The text the ledger records as the request."""
        return canonical_json({"dataset": self.dataset, "spec": self.spec.to_dict()})


@dataclass(frozen=True)
class SyntheticSummary:
    """What was released: the plan, the fit, the number of rows, the seed and the fit report."""

    plan: SyntheticPlan
    model: str
    rows: int
    estimated_rows: float
    seed: int
    digests: tuple[str, ...]
    fit: tuple[dict[str, Any], ...]  # per marginal: noise and fit error (see lab.dpextract.report)

    @property
    def epsilon(self) -> float:
        return self.plan.epsilon

    @property
    def delta(self) -> float:
        return self.plan.delta

    @property
    def digest(self) -> str:
        payload = {"digests": list(self.digests), "rows": self.rows, "seed": self.seed}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        out = self.plan.to_dict()
        out.update(model=self.model, rows=self.rows, seed=self.seed)
        for entry, digest in zip(out["marginals"], self.digests, strict=True):
            entry["digest"] = digest
        return out


def _marginal_axes(spec: SyntheticSpec, names: list[str]) -> list[tuple[int, ...]]:
    if spec.marginals is None:
        return fitting.all_pairs(len(names))
    axes = []
    for i, columns in enumerate(spec.marginals):
        for column in columns:
            if column not in names:
                raise spec.source.error(
                    ("marginals", i),
                    f"marginals[{i}]: '{column}' is not a modelled column ({', '.join(names)})",
                )
        axes.append(tuple(sorted(names.index(c) for c in columns)))
    covered = {a for ax in axes for a in ax}
    return list(dict.fromkeys(axes)) + [(i,) for i in range(len(names)) if i not in covered]


def _coded(
    table: TableLike, encoders: tuple[Encoder, ...]
) -> tuple[pl.LazyFrame, dp.FrameMeta, dp.PrivacyUnit]:
    """The DP view as codes. Rows beyond ``max_rows`` per identifier are dropped first, as
    ``lab.dp`` does (the first ones are kept), so the identifier is not carried along."""
    frame, unit = table.frame, table.unit
    if unit.identifier:
        frame = frame.filter(pl.int_range(pl.len()).over(unit.identifier) < unit.max_rows)
    coded = frame.select([e.expr() for e in encoders])
    keys = {e.column: tuple(range(e.size)) for e in encoders}
    meta = dp.FrameMeta({e.column: CODE() for e in encoders}, keys, table.meta.max_rows)
    return coded, meta, dp.PrivacyUnit(unit.max_rows)


def _marginal_plans(
    spec: SyntheticSpec,
    dataset: str,
    encoders: tuple[Encoder, ...],
    axes: list[tuple[int, ...]],
    meta: dp.FrameMeta,
    unit: dp.PrivacyUnit,
) -> list[MarginalPlan]:
    """One count query per marginal, ε split in proportion to the cells (equal expected TVD)."""
    names = [e.column for e in encoders]
    cells = [int(np.prod([encoders[a].size for a in ax])) for ax in axes]
    for ax, n in zip(axes, cells, strict=True):
        if n > MAX_PUBLIC_KEYS:
            label = " × ".join(names[a] for a in ax)
            raise ConfigError(
                f"the marginal {label} has {n} cells (at most {MAX_PUBLIC_KEYS}); use fewer bins / 分箱过多",
                reason="dpx-cells",
            )
    total = epsilon_units(spec.epsilon, spec.source, ("epsilon",), "dp-synthetic spec")
    if total < len(axes):
        raise spec.source.error(
            ("epsilon",), f"epsilon {spec.epsilon} is too small for {len(axes)} marginals"
        )
    plans = []
    for ax, share in zip(axes, split_units(total, [float(n) for n in cells]), strict=True):
        columns = tuple(names[a] for a in ax)
        count = dp.Aggregate("count")
        query = dp.Query(dataset, count, mechanism_epsilon(share), 0.0, unit, dp.GroupBy(columns))
        plans.append(MarginalPlan(columns, ax, query, dp.preview(query, meta), share))
    return plans


def plan_synthetic(
    spec: SyntheticSpec | Mapping[str, Any] | str | Path, table: TableLike, policy: Policy
) -> SyntheticPlan:
    """Check ``spec`` against ``policy`` and the DP view; plan the marginals. Reads no data."""
    parsed = load_spec(spec, "dp-synthetic")
    assert isinstance(parsed, SyntheticSpec)
    source = parsed.source
    require_release(policy, "dp")
    check_dataset(policy, parsed.dataset, source)
    keys = public_domains(policy, table, parsed.keys, source, AgeBand())
    named = [("columns", c) for c in parsed.columns or ()]
    named += [("bins", c) for c in parsed.bins] + [("years", c) for c in parsed.years]
    for field_name, column in named:
        check_column(column, policy, table, field_name, source, (field_name, column))
    schema = catalogue_entry(policy.dataset).schema
    encoders, fill = column_plan(parsed, policy, table, schema, keys)
    names = [e.column for e in encoders]
    axes = _marginal_axes(parsed, names)
    frame, meta, unit = _coded(table, encoders)
    plans = _marginal_plans(parsed, policy.dataset, encoders, axes, meta, unit)
    return SyntheticPlan(parsed, policy.dataset, schema, encoders, fill, tuple(plans), frame, meta)


def _measure(plan: SyntheticPlan, coded: pl.LazyFrame) -> tuple[list[fitting.Measured], list[str]]:
    measured, digests = [], []
    for mp in plan.marginals:
        release = dp.release(mp.query, coded, plan.meta)
        shape = tuple(plan.encoders[a].size for a in mp.axes)
        counts = np.zeros(shape, dtype=np.int64)
        index = tuple(np.asarray([row[c] for row in release.rows], dtype=np.int64) for c in mp.columns)
        counts[index] = [row["value"] for row in release.rows]
        measured.append(fitting.Measured(mp.axes, counts, mp.preview.noise[0].scale))
        digests.append(release.digest)
    return measured, digests


def _fit_report(
    plan: SyntheticPlan, measured: list[fitting.Target], codes: np.ndarray, estimate: float
) -> tuple[dict[str, Any], ...]:
    """Per marginal: expected noise (from the scale) and the synthetic table's distance to the measurement."""
    sizes = [e.size for e in plan.encoders]
    out = []
    for mp, m in zip(plan.marginals, measured, strict=True):
        flat = np.ravel_multi_index(tuple(codes[:, a] for a in mp.axes), tuple(sizes[a] for a in mp.axes))
        synthetic = np.bincount(flat, minlength=m.cells) / max(len(codes), 1)
        fit_tvd = 0.5 * float(np.abs(synthetic - m.p.ravel()).sum())
        noise_l1 = m.cells * fitting.noise_mean_abs(m.scale)
        noise_tvd = noise_l1 / (2 * estimate) if estimate > 0 else 1.0
        out.append(
            {
                "columns": list(mp.columns),
                "cells": mp.cells,
                "epsilon": mp.epsilon,
                "scale": m.scale,
                "expected_l1_noise": noise_l1,
                "expected_noise_tvd": min(noise_tvd, 1.0),
                "fit_tvd": fit_tvd,
                "tvd_bound": min(fit_tvd + noise_tvd, 1.0),
            }
        )
    return tuple(out)


def _output(plan: SyntheticPlan, codes: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    rows = len(codes)
    by_column = {e.column: (i, e) for i, e in enumerate(plan.encoders)}
    numbers = pl.int_range(1, rows + 1, eager=True).cast(pl.String).str.zfill(6)
    ids = (SYNTHETIC_PREFIX + numbers).alias("id")
    columns = []
    for name, dtype in plan.schema.items():
        if name in by_column:
            i, encoder = by_column[name]
            columns.append(encoder.decode(codes[:, i], rng).alias(name).cast(dtype))
        elif plan.fill[name].startswith("synthetic identifier"):
            columns.append(ids.alias(name).cast(dtype))
        else:
            columns.append(pl.repeat(None, rows, dtype=dtype, eager=True).alias(name))
    return pl.DataFrame(columns)


def release_synthetic(plan: SyntheticPlan) -> tuple[pl.DataFrame, SyntheticSummary]:
    """Measure the planned marginals (the caller has reserved ``plan.epsilon``), fit and sample."""
    coded = plan.frame.collect(engine="streaming").lazy()
    measured, digests = _measure(plan, coded)
    estimate = fitting.estimated_rows(measured)
    distributions = fitting.targets(measured, estimate)
    model = fitting.fit([e.size for e in plan.encoders], distributions)
    rows = plan.spec.rows if plan.spec.rows is not None else max(int(round(estimate)), 1)
    seed = plan.spec.seed if plan.spec.seed is not None else secrets.randbelow(2**63)
    rng = np.random.default_rng(seed)
    codes = model.sample(rows, rng)
    report = _fit_report(plan, distributions, codes, estimate)
    frame = _output(plan, codes, rng)
    summary = SyntheticSummary(plan, model.kind, rows, estimate, seed, tuple(digests), report)
    return frame, summary


def synthesize(
    spec: SyntheticSpec | Mapping[str, Any] | str | Path, table: TableLike, policy: Policy
) -> tuple[pl.DataFrame, SyntheticSummary]:
    """Plan and release a synthetic table (reserve ``plan_synthetic(...).epsilon`` first)."""
    return release_synthetic(plan_synthetic(spec, table, policy))
