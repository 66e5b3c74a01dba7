"""The risk report of one extract, the joined views it enters, and the refusal above threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lab.errors import PolicyError
from lab.policy import Policy
from lab.risk.measures import (
    Frame,
    HouseholdRisk,
    RecordRisk,
    TrajectoryRisk,
    household_risk,
    l_diversity,
    record_risk,
    trajectory_risk,
)
from lab.risk.protect import HouseholdPlan, TrajectoryPlan, period_expr


@dataclass(frozen=True)
class RiskReport:
    """The measures of one release and what the build withheld to reach them."""

    dataset: str
    org: str
    scope: str  # the pseudonym family: extracts join only within one scope
    threshold: float
    k_required: int
    records: RecordRisk
    l_achieved: int | None = None
    household_link: str = "none"  # none / withheld: <why> / released
    household: HouseholdRisk | None = None
    households_suppressed: int = 0
    trajectory_level: str | None = None
    trajectory: TrajectoryRisk | None = None
    spells_suppressed: int = 0
    trajectory_tried: dict[str, int] = field(default_factory=dict)
    row_order: str = "shuffled per build (keyed)"
    joined: list[dict[str, Any]] = field(default_factory=list)  # views with linked extracts

    def exceeded(self) -> list[str]:
        """Why the release is above the threshold (empty when it is not)."""
        t = self.threshold
        found = []
        if self.records.prosecutor_max > t:
            found.append(f"record prosecutor risk {self.records.prosecutor_max:.3f}")
        if self.household is not None and self.household.risk_max > t:
            found.append(f"household risk {self.household.risk_max:.3f}")
        if self.trajectory is not None and self.trajectory.risk_max > t:
            found.append(f"trajectory risk {self.trajectory.risk_max:.3f}")
        for view in self.joined:
            if view["prosecutor_max"] > t:
                found.append(f"joined view {'+'.join(view['datasets'])} risk {view['prosecutor_max']:.3f}")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "organisation": self.org,
            "scope": self.scope,
            "threshold": self.threshold,
            "k_required": self.k_required,
            "records": self.records.to_dict(),
            "l_achieved": self.l_achieved,
            "household_link": self.household_link,
            "household": None if self.household is None else self.household.to_dict(),
            "households_suppressed": self.households_suppressed,
            "trajectory_level": self.trajectory_level,
            "trajectory": None if self.trajectory is None else self.trajectory.to_dict(),
            "spells_suppressed": self.spells_suppressed,
            "trajectory_below_k_by_level": dict(self.trajectory_tried),
            "row_order": self.row_order,
            "joined": list(self.joined),
            "exceeded": self.exceeded(),
        }


def _unit(policy: Policy) -> str | None:
    unit = policy.privacy_unit
    return unit if unit is not None and policy.max_rows > 1 else None


def measure(
    released: Frame,
    policy: Policy,
    *,
    org: str,
    scope: str,
    population: pl.DataFrame | None = None,
    households: HouseholdPlan | None = None,
    trajectories: TrajectoryPlan | None = None,
    classes: pl.DataFrame | None = None,
) -> RiskReport:
    """The risk report of ``released`` (the extract as written) under ``policy``.

    ``population`` (classes of the register with their size ``__F``) gives journalist and
    marketer risk; the plans say what the build withheld. ``classes``: the release's classes
    (keys, size ``__f`` and the ``__l_<column>`` distinct sensitive counts) when the build has
    them already (rows are released whole per class), sparing passes over ``released``.
    """
    # Public identifiers name entities, not people: they count only in joined views (joined_view).
    keys = list(policy.quasi_identifiers)
    records = record_risk(released, keys, unit=_unit(policy), population=population, classes=classes)
    report: dict[str, Any] = {}
    if households is not None:
        if households.released:
            report["household_link"] = "released"
            report["household"] = household_risk(
                released, households.column, policy.quasi_identifiers, policy.k
            )
            report["households_suppressed"] = households.households_suppressed
        else:
            report["household_link"] = f"withheld: {households.why}"
    if trajectories is not None:
        report["trajectory_level"] = trajectories.level
        report["trajectory"] = trajectory_risk(
            released,
            trajectories.unit,
            trajectories.within,
            trajectories.time,
            policy.k,
            period_expr(trajectories.time, trajectories.level),
        )
        report["spells_suppressed"] = trajectories.spells_suppressed
        report["trajectory_tried"] = trajectories.below_k
    return RiskReport(
        dataset=policy.dataset,
        org=org,
        scope=scope,
        threshold=policy.threshold,
        k_required=policy.k,
        records=records,
        l_achieved=_l(released, policy, classes),
        **report,
    )


def _l(released: Frame, policy: Policy, classes: pl.DataFrame | None) -> int | None:
    columns = [f"__l_{s}" for s in policy.sensitive]
    if classes is not None and columns and all(c in classes.columns for c in columns) and classes.height:
        return int(classes.select(pl.min_horizontal([pl.col(c).min() for c in columns])).item())
    return l_diversity(released, list(policy.quasi_identifiers), policy.sensitive)


def joined_view(parts: Sequence[tuple[Frame, Policy]]) -> dict[str, Any]:
    """Risk of the view an organisation builds by joining extracts on their shared pseudonyms.

    Extracts join on pseudonym columns of one key family (a person pseudonym under any column
    name); the view's quasi-identifiers are the union of each part's quasi-identifiers and
    public identifiers (a public register names the entity, and so the person it links to).
    """
    view: pl.LazyFrame | None = None
    keys: list[str] = []
    datasets = []
    for frame, policy in parts:
        person = person_column(policy)
        if person is None:
            continue
        own = [*policy.quasi_identifiers, *policy.public_identifiers]
        part = (
            _as_lazy(frame)
            .select(
                [pl.col(person).alias("__person"), *[pl.col(q).alias(f"{policy.dataset}.{q}") for q in own]]
            )
            .filter(pl.col("__person").is_not_null())
            .unique()
        )
        keys += [f"{policy.dataset}.{q}" for q in own]
        datasets.append(policy.dataset)
        view = part if view is None else view.join(part, on="__person", how="inner")
    if view is None or len(datasets) < 2:
        return {"datasets": datasets, "persons": 0, "prosecutor_max": 0.0, "prosecutor_mean": 0.0}
    risk = record_risk(view, keys, unit="__person")
    return {
        "datasets": datasets,
        "persons": risk.records,
        "prosecutor_max": risk.prosecutor_max if risk.records else 0.0,
        "prosecutor_mean": risk.prosecutor_mean,
        "uniques": risk.uniques,
    }


def person_column(policy: Policy) -> str | None:
    """The column naming the person by a ``person`` pseudonym (the privacy unit first)."""
    household = policy.household.column if policy.household is not None else None
    people = [
        c.name
        for c in policy.columns.values()
        if c.rule == "pseudonym" and c.params.get("family") == "person" and c.name != household
    ]
    if policy.privacy_unit in people:
        return policy.privacy_unit
    return people[0] if people else None


def _as_lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def refuse_if_exceeded(report: RiskReport) -> None:
    """``PolicyError`` (reason ``risk``) naming each measure above the policy's threshold."""
    exceeded = report.exceeded()
    if exceeded:
        raise PolicyError(
            f"extract of {report.dataset!r} for {report.org!r} refused: {'; '.join(exceeded)} exceeds the "
            f"policy's risk threshold {report.threshold:g} (重识别风险超过策略阈值，拒绝生成); "
            "coarsen the quasi-identifiers, raise k, or do not link these datasets",
            reason="risk",
            detail="\n".join(exceeded),
        )
