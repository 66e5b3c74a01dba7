"""Building one masked extract: a statistics pass, then one streaming masking pass.

1. **Statistics** (lazy, streaming; reads only quasi-identifier, sensitive, privacy-unit and
   rare-value columns): frequent values of ``suppress_rare`` columns, then per group of
   generalised quasi-identifiers the number of distinct privacy units (k) and of distinct
   sensitive values (l). Groups below k or l are suppressed. The same pass checks that no
   released text looks like a resident ID or phone number (defence in depth behind the
   policy), so a leaking build fails before anything is written.
2. **Masking** (one Polars streaming query, scan to sink): generalise / top-code / suppress
   rare values, semi-join on the allowed groups, replace identifiers by keyed pseudonyms and
   mark watermarked numbers (vectorised UDFs run per morsel), write Parquet.

Memory stays bounded by Polars' streaming engine and the group table, whatever the size.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from lab.errors import PolicyError
from lab.hashing import file_sha256
from lab.masking.keyed import SCHEME, OrgKey, pseudonymise, watermark
from lab.masking.shuffle import keyed_order, sink_shuffled
from lab.masking.transform import (
    IDENTIFIER_PATTERN,
    band_label,
    frequent_values,
    is_date_band,
    suppress_rare_columns,
    value_expr,
)
from lab.policy import Policy, require_release
from lab.risk import RiskReport, measure, plan_households, plan_trajectories, refuse_if_exceeded
from lab.risk.protect import generalise_trajectories, suppress_households


@dataclass(frozen=True)
class Fingerprint:
    """What the ledger keeps about one build so that ``trace`` can recognise it later.

    Holds no secret: ``key_id`` names the organisation key without revealing it.
    """

    build_id: str
    org: str
    dataset: str
    key_id: str
    scheme: str
    columns: tuple[str, ...]
    pseudonym_columns: dict[str, str] = field(default_factory=dict)  # column -> key family
    watermark_columns: dict[str, float] = field(default_factory=dict)  # column -> unit
    rows: int = 0
    scope: str = ""  # the pseudonym scope of the build (no secret)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = list(self.columns)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(**{**data, "columns": tuple(data["columns"])})


@dataclass(frozen=True)
class MaskReport:
    """The outcome of one build, for the manifest and the audit log."""

    dataset: str
    org: str
    rows_in: int
    rows_out: int
    k_required: int
    k_achieved: int | None  # smallest number of privacy units in a released group; None without QIs
    l_required: int
    l_achieved: int | None  # fewest distinct sensitive values in a released group; None if not declared
    groups: int
    groups_suppressed: int
    policy_digest: str
    fingerprint: Fingerprint
    output_sha256: str | None = None
    risk: RiskReport | None = None

    @property
    def rows_suppressed(self) -> int:
        return self.rows_in - self.rows_out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows_suppressed"] = self.rows_suppressed
        data["fingerprint"] = self.fingerprint.to_dict()
        data["risk"] = None if self.risk is None else self.risk.to_dict()
        return data


class _Plan:
    """Everything decided before the masking pass: expressions, allowed groups, statistics."""

    def __init__(
        self, policy: Policy, key: OrgKey, lazy: pl.LazyFrame, *, build_id: str, purpose: str | None = None
    ) -> None:
        require_release(policy, "masked")
        self.policy, self.key, self.build_id = policy, key, build_id
        columns = policy.columns.values()
        self.frequent = {c.name: frequent_values(lazy, c) for c in suppress_rare_columns(policy.columns)}
        self.pseudonyms = {c.name: str(c.params["family"]) for c in columns if c.rule == "pseudonym"}
        self.marks = {c.name: float(c.watermark) for c in columns if c.watermark is not None and c.released}
        self.output = policy.masked_columns()
        self.values = {
            name: value_expr(policy.columns[name], self.frequent).alias(name)
            for name in self.output
            if name not in self.pseudonyms
        }
        self.keys = list(policy.quasi_identifiers)
        # Groups are counted on unlabelled values (a date band is its first year); labelling is
        # one-to-one, so ``stats`` (labelled, as released) has the same groups in the same order.
        self.raw_stats = self._group_stats(lazy)
        self.stats = self.raw_stats.with_columns(
            band_label(pl.col(n), policy.columns[n]).alias(n)
            for n in self.keys
            if is_date_band(policy.columns[n])
        )
        ok = pl.col("__units") >= policy.k
        for name in policy.sensitive:
            ok &= pl.col(f"__l_{name}") >= policy.l
        self.allowed, self.raw_allowed = self.stats.filter(ok), self.raw_stats.filter(ok)
        self._guard(lazy)
        released = self._released(lazy)
        self.households = (
            None
            if policy.household is None
            else plan_households(
                self._linked(lazy, policy.household.column),
                policy.household,
                self.keys,
                policy.k,
                purpose,
            )
        )
        self.trajectories = (
            None
            if policy.longitudinal is None or policy.privacy_unit is None
            else plan_trajectories(released, policy.longitudinal, policy.privacy_unit, policy.k)
        )
        if self.households is not None and not self.households.released:
            self.output = [n for n in self.output if n != self.households.column]
            self.pseudonyms.pop(self.households.column, None)

    def _group_stats(self, lazy: pl.LazyFrame) -> pl.DataFrame:
        """Per group of quasi-identifiers: rows, privacy units, distinct sensitive values.

        Two levels, so that the pass over the table only counts rows (streaming-friendly):
        rows per (group, sensitive values, unit), then distinct counts on that small table.
        """
        policy = self.policy
        sensitive = list(policy.sensitive)
        names = [*self.keys, *sensitive]
        exprs = [value_expr(policy.columns[n], self.frequent, labelled=False).alias(n) for n in names]
        by_rows = policy.privacy_unit is None or policy.max_rows == 1
        if not by_rows:
            exprs.append(pl.col(str(policy.privacy_unit)).hash(seed=7).alias("__unit"))
        if not exprs:
            return lazy.select(pl.len().alias("__rows"), pl.len().alias("__units")).collect(
                engine="streaming"
            )
        level1 = (
            lazy.select(exprs).group_by([*names, *([] if by_rows else ["__unit"])]).agg(pl.len().alias("__n"))
        )
        first = level1.collect(engine="streaming").with_columns(
            band_label(pl.col(n), policy.columns[n]).alias(n)
            for n in sensitive
            if is_date_band(policy.columns[n])
        )
        aggs = [pl.col("__n").sum().alias("__rows")]
        aggs.append(
            pl.col("__n").sum().alias("__units") if by_rows else pl.col("__unit").n_unique().alias("__units")
        )
        aggs += [pl.col(n).n_unique().alias(f"__l_{n}") for n in sensitive]
        aggs += [
            pl.col(n).cast(pl.String).str.contains(IDENTIFIER_PATTERN).any().alias(f"__id_{n}")
            for n in sensitive
        ]
        return first.group_by(self.keys).agg(aggs) if self.keys else first.select(aggs)

    def _guard(self, lazy: pl.LazyFrame) -> None:
        """Refuse a build whose released text would contain ID-like or phone-like values."""
        schema = lazy.select(list(self.values.values())).collect_schema()
        texts = [n for n, dtype in schema.items() if dtype == pl.String]
        in_groups = [n for n in texts if n in self.keys]
        others = [n for n in texts if n not in self.keys and n not in self.policy.sensitive]
        found = [n for n in in_groups if self.stats[n].str.contains(IDENTIFIER_PATTERN).any()]
        found += [n for n in self.policy.sensitive if self.stats[f"__id_{n}"].any()]
        if others:
            checks = [self.values[n].str.contains(IDENTIFIER_PATTERN).any() for n in others]
            row = lazy.select(checks).collect(engine="streaming").row(0)
            found += [n for n, hit in zip(others, row, strict=True) if hit]
        if found:
            raise PolicyError(
                f"{self.policy.path}: column {found[0]!r} would release values that look like ID or "
                "phone numbers (疑似泄露身份证号或手机号); classify it as a direct identifier and drop "
                "or pseudonymise it",
                reason="leak",
            )

    def _released_classes(self) -> pl.DataFrame | None:
        """The written extract's classes, when they are exactly the allowed groups: one row per
        privacy unit and no trajectory suppression or aggregation after the group check."""
        by_rows = self.policy.privacy_unit is None or self.policy.max_rows == 1
        if not self.keys or not by_rows or self.trajectories is not None:
            return None
        return self.allowed.rename({"__units": "__f"})

    def _linked(self, lazy: pl.LazyFrame, household: str) -> pl.LazyFrame:
        """The household link and unlabelled quasi-identifiers of the rows in classes of at least
        k: what the household plan needs (hashing a band's first year is cheaper than its label)."""
        policy = self.policy
        exprs = [value_expr(policy.columns[n], self.frequent, labelled=False).alias(n) for n in self.keys]
        out = lazy.select(*exprs, pl.col(household))
        if self.allowed.height == 0:
            return out.limit(0)
        if self.allowed.height < self.stats.height:
            out = out.join(
                self.raw_allowed.select(self.keys).lazy(), on=self.keys, how="semi", nulls_equal=True
            )
        return out

    def _released(self, lazy: pl.LazyFrame) -> pl.LazyFrame:
        """Released values of the rows in classes of at least k (identifiers still raw)."""
        out = lazy.select([pl.col(n) if n in self.pseudonyms else self.values[n] for n in self.output])
        if self.allowed.height == 0:
            return out.limit(0)
        if self.allowed.height < self.stats.height:
            allowed = self.allowed.select(self.keys).lazy()
            out = out.join(allowed, on=self.keys, how="semi", nulls_equal=True)
        return out

    @property
    def seed(self) -> int:
        """The keyed seed of this build's row order."""
        return self.key.shuffle_seed(self.build_id)

    def unkeyed(self, lazy: pl.LazyFrame) -> pl.LazyFrame:
        """The released rows before pseudonyms and watermarks (identifiers still raw)."""
        out = self._released(lazy)
        if self.households is not None:
            out = suppress_households(out, self.households)
        if self.trajectories is not None:
            out = generalise_trajectories(out, self.trajectories, self.output)
        return out

    def query(self, lazy: pl.LazyFrame) -> pl.LazyFrame:
        """The masking query over the source rows (in source order; see ``shuffle``)."""
        out = self.unkeyed(lazy)
        key = self.key
        udfs = [
            pl.col(name).map_batches(
                partial(pseudonymise, key, family), return_dtype=pl.String, is_elementwise=True
            )
            for name, family in self.pseudonyms.items()
        ]
        udfs += [
            pl.col(name).map_batches(partial(_mark, key, unit), return_dtype=pl.Float64, is_elementwise=True)
            for name, unit in self.marks.items()
        ]
        return out.with_columns(udfs) if udfs else out

    def risk(self, released: pl.LazyFrame | pl.DataFrame) -> RiskReport:
        """The risk report of the written extract; ``PolicyError`` above the policy's threshold."""
        report = self.measured(released)
        refuse_if_exceeded(report)
        return report

    def measured(self, released: pl.LazyFrame | pl.DataFrame) -> RiskReport:
        """The risk report of ``released``, whatever it says (``risk`` refuses above the threshold)."""
        population = None
        if self.keys:
            population = self.stats.select([*self.keys, pl.col("__units").alias("__F")])
        return measure(
            released,
            self.policy,
            org=self.key.org,
            scope=self.key.scope,
            population=population,
            households=self.households,
            trajectories=self.trajectories,
            classes=self._released_classes(),
        )

    def report(self, rows_out: int, build_id: str, digest: str | None, risk: RiskReport) -> MaskReport:
        has_keys = bool(self.keys) and self.allowed.height > 0
        l_columns = [f"__l_{n}" for n in self.policy.sensitive]
        l_achieved = None
        if l_columns and self.allowed.height:
            l_achieved = int(self.allowed.select(pl.min_horizontal(pl.col(l_columns).min())).item())
        fingerprint = Fingerprint(
            build_id=build_id,
            org=self.key.org,
            dataset=self.policy.dataset,
            key_id=self.key.key_id,
            scheme=SCHEME,
            columns=tuple(self.output),
            pseudonym_columns=dict(self.pseudonyms),
            watermark_columns=dict(self.marks),
            rows=rows_out,
            scope=self.key.scope,
        )
        k_achieved = risk.records.k if has_keys else None
        return MaskReport(
            dataset=self.policy.dataset,
            org=self.key.org,
            rows_in=int(self.stats["__rows"].sum()),
            rows_out=rows_out,
            k_required=self.policy.k,
            k_achieved=k_achieved,
            l_required=self.policy.l,
            l_achieved=risk.l_achieved if l_columns and risk.l_achieved is not None else l_achieved,
            groups=self.stats.height,
            groups_suppressed=self.stats.height - self.allowed.height,
            policy_digest=self.policy.digest,
            fingerprint=fingerprint,
            output_sha256=digest,
            risk=risk,
        )


def _mark(key: OrgKey, unit: float, values: pl.Series) -> pl.Series:
    return watermark(key, values, unit)


def mask_frame(
    frame: pl.DataFrame,
    policy: Policy,
    key: OrgKey,
    *,
    build_id: str | None = None,
    purpose: str | None = None,
) -> tuple[pl.DataFrame, MaskReport]:
    """Mask an in-memory table for the organisation of ``key``: the extract and its report.

    ``purpose`` is the grant's purpose (the household link needs one the policy allows).
    ``PolicyError`` (reason ``risk``) when the release would exceed the policy's risk threshold.
    """
    build_id = build_id or uuid.uuid4().hex
    plan = _Plan(policy, key, frame.lazy(), build_id=build_id, purpose=purpose)
    out = keyed_order(plan.query(frame.lazy()), plan.seed).collect(engine="streaming")
    return out, plan.report(out.height, build_id, None, plan.risk(out))


def mask_parquet(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    policy: Policy,
    key: OrgKey,
    *,
    build_id: str | None = None,
    purpose: str | None = None,
) -> MaskReport:
    """Mask the Parquet table ``source`` into ``dest`` for the organisation of ``key``.

    ``dest`` appears only when complete and within the policy's risk threshold; on any error
    (``PolicyError`` reason ``risk`` above it) nothing is left behind. The report's
    ``fingerprint`` is what the ledger should keep for ``trace``, its ``risk`` the measures.
    """
    source, target = Path(source), Path(dest)
    build_id = build_id or uuid.uuid4().hex
    plan = _Plan(policy, key, pl.scan_parquet(source), build_id=build_id, purpose=purpose)
    temporary = target.with_name(f".{target.name}.partial")
    try:
        rows_hint = int(plan.stats["__rows"].sum())
        query = plan.query(pl.scan_parquet(source))
        sink_shuffled(query, temporary, plan.seed, rows_hint, distinct=list(plan.pseudonyms))
        rows_out = pq.ParquetFile(temporary).metadata.num_rows
        risk = plan.risk(pl.scan_parquet(temporary))
        digest = file_sha256(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return plan.report(rows_out, build_id, digest, risk)


def preview_risk(
    source: str | os.PathLike[str],
    policy: Policy,
    key: OrgKey,
    *,
    purpose: str | None = None,
    dest: str | os.PathLike[str] | None = None,
) -> tuple[RiskReport, dict[str, int]]:
    """The risk report a build for ``purpose`` would carry, and its row counts: a dry run.

    Nothing is published and nothing is refused: the report is returned whatever it says
    (``RiskReport.exceeded`` names what a build would be refused for). The measures depend on
    the released values only, so rows are neither pseudonymised nor shuffled unless ``dest``
    asks for the masked rows (written there, e.g. to measure a join with linked extracts).
    """
    source = Path(source)
    plan = _Plan(policy, key, pl.scan_parquet(source), build_id="risk-preview", purpose=purpose)
    rows_in = int(plan.stats["__rows"].sum())
    counts = {
        "rows_in": rows_in,
        "rows_suppressed": rows_in - int(plan.allowed["__rows"].sum()),
        "groups": plan.stats.height,
        "groups_suppressed": plan.stats.height - plan.allowed.height,
    }
    measured_columns = {*policy.quasi_identifiers, *policy.sensitive}
    if dest is None and not measured_columns & set(plan.marks):  # watermarks change measured values
        return plan.measured(plan.unkeyed(pl.scan_parquet(source))), counts
    if dest is None:
        return plan.measured(plan.query(pl.scan_parquet(source))), counts
    target = Path(dest)
    plan.query(pl.scan_parquet(source)).sink_parquet(target)
    return plan.measured(pl.scan_parquet(target)), counts
