"""What the gateway does for a caller, independent of HTTP.

``Gateway.run`` is the one path from a notebook to raw data and runs its checks in a
fixed order, never overridden: authorise (role, active grant with the ``dp`` mode) →
validate the query against the DP view → wait for a slot (:mod:`lab.services.admission`:
a query turned away as busy has reserved nothing) → reserve the budget (atomically, in the ledger)
→ execute with OpenDP → record (the audit record with the canonical query, ε, δ and the
result's digest is durable) → release the result.

The rule for failures after the reservation (``Ledger.spend``): a failure before the
mechanism runs (e.g. the raw table cannot be read) refunds the reservation; a failure
once the mechanism has started is charged, because noise may have been drawn. Both
outcomes are audit records; nothing is silently lost or silently free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import polars as pl

from lab import dp, dpextract, extracts
from lab.dp.engine import mean_accuracy
from lab.errors import ConfigError, LabError
from lab.gateway.auth import Caller
from lab.ledger import Grant, Kind, Ledger
from lab.ledger.db import DELTA_SCALE, EPS_SCALE, to_units
from lab.ledger.totals import DEFAULT, Limits
from lab.policy import Policy
from lab.rawtables import RawTables, Table
from lab.registry import catalogue
from lab.registry.datasets import LivePolicies
from lab.services.admission import Admission
from lab.settings import Settings
from lab.suspicious import DatasetProfile


def budget_limits(policy: Policy) -> dict[str, Limits]:
    """The ledger's caps for a policy's ``budget:`` section (``*`` = every organisation)."""
    caps = policy.budget
    if caps is None:
        return {}

    def units(value: float | None, scale: int) -> int | None:
        return None if value is None else to_units(value, scale, name="budget cap", round_up=False)

    def limits(total: Any, grant: Any, source: str) -> Limits:
        return Limits(
            epsilon_units=units(total.epsilon, EPS_SCALE),
            delta_units=units(total.delta, DELTA_SCALE),
            window_seconds=None if total.window_days is None else round(total.window_days * 86400),
            grant_epsilon_units=units(grant.epsilon, EPS_SCALE),
            grant_delta_units=units(grant.delta, DELTA_SCALE),
            source=source,
        )

    out = {DEFAULT: limits(caps.organisation, caps.per_grant, f"policy {policy.digest[:12]}")}
    for org, (total, grant) in caps.agreements.items():
        out[org] = limits(total, grant, f"agreement in policy {policy.digest[:12]}")
    return out


def sync_budget_limits(ledger: Ledger, policies: Mapping[str, Policy], *, actor: str) -> list[str]:
    """Make the ledger's caps follow the policies; the datasets whose caps changed."""
    return [
        name
        for name, policy in sorted(policies.items())
        if ledger.set_budget_limits(name, budget_limits(policy), actor=actor)
    ]


def _budget(ledger: Ledger, grant: Grant) -> dict[str, float]:
    status = ledger.budget(grant.id)
    return {
        "epsilon": status.epsilon_budget,
        "delta": status.delta_budget,
        "epsilon_spent": status.epsilon_spent,
        "delta_spent": status.delta_spent,
        "epsilon_remaining": status.epsilon_remaining,
        "delta_remaining": status.delta_remaining,
    }


def _kinds(settings: Settings, grant: Grant) -> list[str]:
    """The kinds of extract published for the grant's organisation and dataset."""
    return sorted(
        {m.get("kind", "masked") for m in extracts.versions(settings, grant.organisation, grant.dataset)}
    )


def _columns_used(query: dp.Query) -> set[str]:
    used = {f.column for f in query.filters}
    if query.group_by is not None:
        used |= set(query.group_by.columns)
    if query.aggregate.column:
        used.add(query.aggregate.column)
    return used


def _noise(preview: dp.Preview) -> list[dict[str, Any]]:
    return [dataclasses.asdict(n) for n in preview.noise]


MEAN_ROWS_SHOWN = (100, 1_000, 10_000)  # group sizes at which a mean's preview shows its accuracy


def _mean_accuracy(query: dp.Query, preview: dp.Preview) -> dict[str, Any]:
    """For a mean: the accuracy of the mean itself (not of its sum and count) at a few group sizes."""
    bounds = query.aggregate.bounds
    if query.aggregate.kind != "mean" or bounds is None:
        return {}
    sum_noise, count_noise = preview.noise
    return {
        "mean_accuracy": [
            {
                "rows": rows,
                "accuracy": mean_accuracy(sum_noise.scale, count_noise.scale, preview.alpha, bounds, rows),
            }
            for rows in MEAN_ROWS_SHOWN
        ]
    }


class Gateway:
    def __init__(self, settings: Settings, ledger: Ledger, policies: Mapping[str, Policy]) -> None:
        self.settings = settings
        self.ledger = ledger
        self.tables = RawTables(settings, policies)
        self.admission = Admission(settings.heavy_queries, settings.heavy_queue, settings.heavy_wait_s)
        self._profiles: dict[str, tuple[Any, DatasetProfile]] = {}
        sync_budget_limits(ledger, policies, actor="gateway-policy")
        if isinstance(policies, LivePolicies):  # a register accepted later gets its caps at once
            policies.on_load = lambda found: sync_budget_limits(ledger, found, actor="gateway-policy")

    # -- catalogue -------------------------------------------------------------------
    def datasets(self, caller: Caller) -> list[dict[str, Any]]:
        """The caller's organisation's active grants, with schema and remaining budget."""
        caller.require("analyst")
        if caller.org is None:
            return []
        entries = []
        for grant in self.ledger.list_grants(organisation=caller.org, active=True):
            info = catalogue.dataset(grant.dataset)
            table = self.tables.table(grant.dataset)
            schema = table.meta.schema
            entries.append(
                {
                    "dataset": grant.dataset,
                    "title": {"en": info.title_en, "zh": info.title_zh},
                    "grant_id": grant.id,
                    "purpose": grant.purpose,
                    "modes": list(grant.modes),
                    "expires_at": grant.expires_at.isoformat(),
                    "rows": table.rows,
                    "columns": {c: str(schema[c]) for c in table.columns},
                    "public_keys": {c: [str(v) for v in keys] for c, keys in table.meta.public_keys.items()},
                    "privacy_unit": {"max_rows": table.unit.max_rows},
                    "budget": _budget(self.ledger, grant),
                    "extracts": _kinds(self.settings, grant),
                }
            )
        return entries

    def profile(self, dataset: str) -> DatasetProfile | None:
        """Rows, distinct values and ranges of the DP view, for the singling-out flags."""
        try:
            table = self.tables.table(dataset)
        except LabError:
            return None
        cached = self._profiles.get(dataset)
        if cached is not None and cached[0] is table.frame:
            return cached[1]
        schema = table.meta.schema
        columns = list(table.columns)
        ranged = [c for c in columns if schema[c].is_numeric() or schema[c].is_temporal()]
        exprs = [pl.col(c).n_unique().alias(f"n:{c}") for c in columns]
        for c in ranged:
            value = pl.col(c).cast(pl.Date).cast(pl.Int64) if schema[c].is_temporal() else pl.col(c)
            exprs += [
                value.min().cast(pl.Float64).alias(f"lo:{c}"),
                value.max().cast(pl.Float64).alias(f"hi:{c}"),
            ]
        row = table.frame.select(exprs).collect().row(0, named=True)
        offset = 719_163  # date.toordinal() of 1970-01-01: Polars counts days from the epoch
        ranges = {}
        for c in ranged:
            lo, hi = row[f"lo:{c}"], row[f"hi:{c}"]
            if lo is not None and hi is not None:
                shift = offset if schema[c].is_temporal() else 0
                ranges[c] = (lo + shift, hi + shift)
        found = DatasetProfile(table.rows, {c: int(row[f"n:{c}"]) for c in columns}, ranges)
        self._profiles[dataset] = (table.frame, found)
        return found

    # -- queries ---------------------------------------------------------------------
    def _prepare(self, caller: Caller, body: Mapping[str, Any]) -> tuple[dp.Query, Table, Grant]:
        caller.require("analyst")
        query = dp.Query.from_dict({**body, "unit": None})
        self.tables.policy(query.dataset)  # an unknown dataset is named before any grant check
        grant = self.ledger.active_grant(caller.org or "", query.dataset, mode="dp", actor=caller.username)
        table = self.tables.table(query.dataset)
        unknown = _columns_used(query) - set(table.columns)
        if unknown:
            raise ConfigError(
                f"Column(s) {', '.join(sorted(unknown))} cannot be used in DP queries on {query.dataset}; "
                f"usable: {', '.join(table.columns)}. / 这些列不可用于差分隐私查询。",
                reason="dp-column",
            )
        return dataclasses.replace(query, unit=table.unit), table, grant

    def preview(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        """Cost and expected accuracy of a query; spends nothing."""
        query, table, grant = self._prepare(caller, body)
        preview = dp.preview(query, table.meta)
        budget = _budget(self.ledger, grant)
        total = self.ledger.organisation_spending(grant.organisation, grant.dataset)
        within_total = total is None or (
            (total["epsilon_left"] is None or preview.epsilon <= total["epsilon_left"])
            and (total["delta_left"] is None or preview.delta <= total["delta_left"])
        )
        return {
            "query": query.describe(),
            "epsilon": preview.epsilon,
            "delta": preview.delta,
            "alpha": preview.alpha,
            "noise": _noise(preview),
            "notes": list(preview.notes),
            "budget": budget,
            "organisation_budget": total,
            "affordable": preview.epsilon <= budget["epsilon_remaining"]
            and preview.delta <= budget["delta_remaining"]
            and within_total,
            **_mean_accuracy(query, preview),
        }

    def run(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        """Authorise → reserve → execute → record → release (see the module docstring)."""
        query, table, grant = self._prepare(caller, body)
        preview = dp.preview(query, table.meta)  # invalid queries fail here, before any reservation
        try:
            with (
                self.admission.slot(),
                self.ledger.spend(
                    grant.id, preview.epsilon, preview.delta, actor=caller.username, query=query.canonical()
                ) as spend,
            ):
                # Charged from the first row read on; a failure before it is refunded.
                result = dp.release(query, table.frame, table.meta, before_read=spend.reading_data)
                spend.result(result.digest, scale=result.scale, groups=len(result.rows))
        except LabError:
            raise
        except Exception as exc:  # settled by the ledger above (charged once data was read)
            raise ConfigError(
                "The query could not be run on the data; the budget it reserved was settled by the "
                "ledger's rule (see your query history). Check the filter values and column types. "
                "/ 查询无法在数据上执行；预留的预算已按规则结算（见查询历史），请检查筛选值与列类型。",
                detail=f"query failed in the engine: {type(exc).__name__}",
                reason="dp-query-failed",
            ) from None
        released = result.to_dict()
        released["budget"] = _budget(self.ledger, grant)
        released["reservation_id"] = spend.reservation.id
        return released

    # -- DP extracts -------------------------------------------------------------------
    def extract_preview(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        """What a DP extract would cost (ε, δ, scales), checked against the policy; spends nothing."""
        caller.require("analyst")
        dataset, kind = str(body.get("dataset")), str(body.get("kind"))
        grant = self.ledger.active_grant(caller.org or "", dataset, mode="dp", actor=caller.username)
        table = self.tables.table(dataset)
        plan = dpextract.plan_extract(kind, body.get("spec") or {}, table, self.tables.policy(dataset))
        return {
            "plan": plan.to_dict(),
            "epsilon": plan.epsilon,
            "delta": plan.delta,
            "budget": _budget(self.ledger, grant),
        }

    def build_extract(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        """Build a DP extract for the caller's organisation, charged to its grant."""
        caller.require("analyst")
        with self.admission.slot():  # before the extract reserves its budget
            return extracts.build_dp(
                self.settings,
                str(body.get("dataset")),
                caller.org or "",
                kind=str(body.get("kind")),
                spec=body.get("spec") or {},
                actor=caller.username,
            )

    def history(self, caller: Caller) -> list[dict[str, Any]]:
        """The caller's own DP queries, newest first."""
        records = self.ledger.records(actor=caller.username, kind=Kind.DP_QUERY, newest_first=True, limit=500)
        return [r.as_dict() for r in records]
