"""What a build withholds so that households and trajectories reach k.

Both plans are computed on the *released* values (quasi-identifiers generalised, rows of
classes below k already suppressed), before pseudonyms are drawn:

- **households** (``plan_households``): the household link is withheld from the extract unless
  the policy allows it for the grant's purpose; when it is released, the link of every
  household whose signature fewer than k households share is suppressed (the column becomes
  null for its members; their rows stay, under the record-level k). Suppressing whole
  signature classes leaves every other class's count unchanged, so one pass reaches k.
- **trajectories** (``plan_trajectories``): the time column is generalised along the policy's
  levels (month → quarter → half → year) until at most ``max_suppressed`` of the spells are
  shared by fewer than k; those spells are then suppressed. At a level coarser than month the
  rows of one spell and period are aggregated into one (``aggregate``), so the row count does
  not reveal the months inside a period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import polars as pl

from lab.policy import HouseholdLink, Longitudinal
from lab.risk.measures import household_key, household_table, spell_paths

_EVERY = {"quarter": "3mo", "half": "6mo", "year": "1y"}


def period_expr(time: str, level: str) -> pl.Expr:
    """The period (its first day) of a monthly date at ``level``."""
    column = pl.col(time)
    return column if level == "month" else column.dt.truncate(_EVERY[level])


@dataclass(frozen=True)
class HouseholdPlan:
    column: str
    released: bool
    why: str  # "purpose allowed" / "purpose not allowed: ..." for the report
    households: int = 0
    suppressed: pl.DataFrame = field(default_factory=pl.DataFrame, repr=False)  # household_key values

    @property
    def households_suppressed(self) -> int:
        return self.suppressed.height


def plan_households(
    values: pl.LazyFrame,
    link: HouseholdLink,
    keys: Sequence[str],
    k: int,
    purpose: str | None,
) -> HouseholdPlan:
    """Whether the household link is released and the households whose link is suppressed
    (suppressing whole signature classes leaves the others' counts unchanged). The household
    risk is measured on the written extract (``lab.risk.report.measure``), not here.
    """
    if not link.allowed(purpose):
        allowed = ", ".join(link.purposes) or "none"
        return HouseholdPlan(link.column, False, f"purpose not allowed (policy allows: {allowed})")
    table = household_table(values, link.column, keys, sdc=False)
    below = table.filter(pl.col("__g") < k)
    return HouseholdPlan(link.column, True, "purpose allowed", table.height, below.select(link.column))


def suppress_households(lazy: pl.LazyFrame, plan: HouseholdPlan) -> pl.LazyFrame:
    """The rows with the link of suppressed households set to null (or no link column at all)."""
    if not plan.released:
        return lazy.drop(plan.column, strict=False)
    if plan.suppressed.height == 0:
        return lazy
    # Membership by binary search in the sorted keys, per batch: no hash table is built per
    # morsel (``is_in`` on a literal of millions of keys) and no join buffers the rows.
    hidden = np.sort(plan.suppressed[plan.column].to_numpy())
    column = pl.col(plan.column)
    flag = column.map_batches(partial(_is_hidden, hidden), return_dtype=pl.Boolean, is_elementwise=True)
    return lazy.with_columns(
        pl.when(flag & column.is_not_null()).then(None).otherwise(column).alias(plan.column)
    )


def _is_hidden(hidden: np.ndarray, households: pl.Series) -> pl.Series:
    """Whether the 64-bit key (``household_key``) of each household is one of the sorted
    ``hidden`` keys. Runs of one household (its members are adjacent in a register) are
    looked up once."""
    runs = households.rle_id()
    firsts = households.filter(runs != runs.shift(1, fill_value=-1))
    values = firsts.to_frame().select(household_key(households.name)).to_series().to_numpy()
    order = np.argsort(values)  # sorted needles: each search starts where the last one ended
    at = np.empty(len(values), dtype=np.intp)
    at[order] = np.minimum(np.searchsorted(hidden, values[order]), len(hidden) - 1)
    return pl.Series(households.name, hidden[at] == values).gather(runs)


@dataclass(frozen=True)
class TrajectoryPlan:
    unit: str
    within: str | None
    time: str
    level: str
    spells: int
    below_k: dict[str, int]  # level tried → spells below k there
    suppressed: pl.DataFrame = field(default_factory=pl.DataFrame, repr=False)  # (unit, within) rows

    @property
    def spells_suppressed(self) -> int:
        return self.suppressed.height

    @property
    def spell(self) -> list[str]:
        return [self.unit, *([self.within] if self.within else [])]


def plan_trajectories(values: pl.LazyFrame, longitudinal: Longitudinal, unit: str, k: int) -> TrajectoryPlan:
    """The finest level at which trajectories reach k (up to ``max_suppressed``), and what to drop."""
    within, time = longitudinal.within, longitudinal.time
    group = ["__path", *([within] if within else [])]
    tried: dict[str, int] = {}
    chosen = None
    for level in longitudinal.levels:
        paths = spell_paths(values, unit, within, period_expr(time, level))
        table = paths.with_columns(pl.len().over(group).alias("__t")).collect(engine="streaming")
        below = table.filter(pl.col("__t") < k)
        tried[level] = below.height
        chosen = (level, table.height, below)
        if below.height <= longitudinal.max_suppressed * table.height:
            break
    assert chosen is not None  # the policy validator requires at least one level
    level, spells, below = chosen
    spell = [unit, *([within] if within else [])]
    return TrajectoryPlan(unit, within, time, level, spells, tried, below.select(spell))


def generalise_trajectories(lazy: pl.LazyFrame, plan: TrajectoryPlan, columns: Sequence[str]) -> pl.LazyFrame:
    """Suppress the spells below k, then release one row per spell and period at the chosen level.

    Other columns of an aggregated period take their highest value (for contribution bands the
    period's highest band; in sort order for text).
    """
    if plan.suppressed.height:
        lazy = lazy.join(plan.suppressed.lazy(), on=plan.spell, how="anti", nulls_equal=True)
    if plan.level == "month":
        return lazy
    lazy = lazy.with_columns(period_expr(plan.time, plan.level).alias(plan.time))
    keys = [*plan.spell, plan.time]
    others = [c for c in columns if c not in keys]
    return lazy.group_by(keys).agg([pl.col(c).max() for c in others]).select(list(columns))
