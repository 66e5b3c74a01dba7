"""Re-identification risk measures on a released table, vectorised in Polars.

Definitions follow ARX and sdcMicro (docs/risk.md). An *equivalence class* is a set of
released records with the same quasi-identifier values; ``f`` is its size in the release
(counted in distinct privacy units when a unit has several rows), ``F`` its size in the
population the attacker draws from (here the whole register, which the lab knows exactly):

- **prosecutor risk** of a record: ``1 / f`` (the attacker knows the target is in the release);
  reported as the maximum and the mean over records (ARX: highest / average prosecutor risk);
- **journalist risk**: ``1 / F`` (the target is somewhere in the population);
- **marketer risk**: the expected share of records an attacker re-identifies by linking every
  record, ``sum(f / F) / n`` (ARX), ``classes / n`` when the release is the population;
- **k-anonymity**: the smallest ``f``; **l-diversity**: fewest distinct sensitive values in a class;
- **household risk**: a household's *signature* (the multiset of its members' released QIs) is
  a quasi-identifier of the household; its risk is ``1 / g`` with ``g`` the households sharing
  the signature (the mean is over members: the chance of finding a member's household, an
  upper bound of singling the member out). sdcMicro's household risk ``1 - prod(1 - r_i)``
  over members ``i`` is reported too;
- **trajectory uniqueness**: a spell is the periods in which one unit appears within one value
  (e.g. months insured at one employer); its risk is ``1 / t`` with ``t`` the spells that share
  the value and the periods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

Frame = pl.DataFrame | pl.LazyFrame
_SEED = 0x5EED  # hashing seed of signatures (a grouping device, not a secret)


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _fsum(values: pl.Series) -> float:
    """The sum of ``values`` (non-negative), the same whatever the row order, so that a measure
    never differs in its last bits between two passes over the same release.

    Each value is rounded to a multiple of 2^-30 and the integers are summed (integer addition
    does not depend on order; the error of a mean is below 1e-9). When the integer sum could
    overflow, or a value is not finite, ``math.fsum`` (exactly rounded, slower) is used.
    """
    values = values.drop_nulls().cast(pl.Float64)
    if values.len() == 0:
        return 0.0
    top = values.max()
    assert isinstance(top, float)
    if values.min() >= 0 and math.isfinite(top) and (top + 1) * values.len() < _SUM_LIMIT:  # type: ignore[operator]
        return int((values * _SUM_SCALE).round().cast(pl.Int64).sum()) / _SUM_SCALE
    return math.fsum(values.to_list())


_SUM_SCALE = float(1 << 30)
_SUM_LIMIT = float(1 << 32)  # values x count below 2^32, so the scaled sum stays below 2^62


# sdcMicro's household risk multiplies (1 - 1/f) over members; the logs are summed as fixed-point
# integers (2^-40, far below the measure's meaning) so the sum does not depend on row order.
_LOG_SCALE = float(1 << 40)
# log(1 - 1/1) is -inf: a unique member stands for -2^8 (exp(-256) vanishes against 1, so the
# household's risk is exactly 1.0); the sum cannot overflow below 2^14 members per household.
_LOG_UNIQUE = -(1 << 48)


@dataclass(frozen=True)
class RecordRisk:
    records: int  # released records (distinct privacy units when a unit has several rows)
    classes: int
    k: int | None  # smallest class; None for an empty release
    prosecutor_max: float
    prosecutor_mean: float
    journalist_max: float
    journalist_mean: float
    marketer: float
    uniques: int  # records alone in their class

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_risk(
    sample: Frame,
    keys: Sequence[str],
    *,
    unit: str | None = None,
    population: pl.DataFrame | None = None,
    classes: pl.DataFrame | None = None,
) -> RecordRisk:
    """Prosecutor, journalist and marketer risk of the released ``sample`` on ``keys``.

    ``population``: one row per class of the population with its size in column ``__F``
    (the register before suppression); without it the release is taken as the population.
    With ``unit``, a class counts distinct units and a unit's risk is that of its rarest class.
    ``classes`` (keys and size ``__f``), when the caller already counted the release's classes
    (one row per privacy unit), spares the pass over ``sample``.
    """
    keys = list(keys)
    lazy = _lazy(sample)
    if not keys:
        rows = lazy.select(pl.len()).collect().item()
        one = 1.0 / rows if rows else 0.0
        return RecordRisk(rows, 1 if rows else 0, rows or None, one, one, one, one, one, int(rows == 1))
    if classes is not None and unit is None:
        classes = classes.select([*keys, "__f"])
    elif unit is None:
        classes = lazy.group_by(keys).agg(pl.len().alias("__f")).collect(engine="streaming")
    else:
        classes = lazy.group_by(keys).agg(pl.col(unit).n_unique().alias("__f")).collect(engine="streaming")
    if classes.height == 0:
        return RecordRisk(0, 0, None, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    if population is not None:
        classes = classes.join(population.select([*keys, "__F"]), on=keys, how="left", nulls_equal=True)
        classes = classes.with_columns(
            pl.max_horizontal(pl.col("__F").fill_null(pl.col("__f")), pl.col("__f"))
        )
    else:
        classes = classes.with_columns(pl.col("__f").alias("__F"))
    if unit is None:
        records = int(classes["__f"].sum())
        p_sum = float(classes.height)  # each class contributes f * (1 / f)
        j_sum = _fsum(classes["__f"] / classes["__F"])
        uniques = int((classes["__f"] == 1).sum())
    else:
        # a unit's risk is 1 / (its rarest class): count units by (rarest f, rarest F)
        rated = (
            lazy.select([*keys, unit])
            .join(classes.lazy(), on=keys, how="left", nulls_equal=True)
            .group_by(unit)
            .agg(pl.col("__f").min(), pl.col("__F").min())
            .group_by("__f", "__F")
            .agg(pl.len().alias("__units"))
            .collect(engine="streaming")
        )
        records = int(rated["__units"].sum())
        p_sum = _fsum(rated["__units"] / rated["__f"])
        j_sum = _fsum(rated["__units"] / rated["__F"])
        uniques = int(rated.filter(pl.col("__f") == 1)["__units"].sum())
    k = int(classes["__f"].min())  # type: ignore[arg-type]
    marketer = _ratio(_fsum(classes["__f"] / classes["__F"]), records)
    return RecordRisk(
        records=records,
        classes=classes.height,
        k=k,
        prosecutor_max=1.0 / k,
        prosecutor_mean=_ratio(p_sum, records),
        journalist_max=float((1.0 / classes["__F"]).max()),  # type: ignore[arg-type]
        journalist_mean=_ratio(j_sum, records),
        marketer=min(marketer, 1.0),
        uniques=uniques,
    )


def l_diversity(sample: Frame, keys: Sequence[str], sensitive: Sequence[str]) -> int | None:
    """Fewest distinct values of any ``sensitive`` column in a class (distinct l-diversity)."""
    if not sensitive:
        return None
    lazy = _lazy(sample)
    aggs = [pl.col(s).n_unique().alias(s) for s in sensitive]
    table = (lazy.group_by(list(keys)).agg(aggs) if keys else lazy.select(aggs)).collect(engine="streaming")
    if table.height == 0:
        return None
    return int(table.select(pl.min_horizontal([pl.col(s).min() for s in sensitive])).item())


def member_tuple(keys: Sequence[str], seed: int = _SEED) -> pl.Expr:
    """One 64-bit value per row for its released quasi-identifiers (nulls are a value)."""
    return pl.struct([pl.col(k) for k in keys]).hash(seed).alias("__t")


def household_key(household: str) -> pl.Expr:
    """A 64-bit key of the household column (cheaper to group by than text; collisions among
    millions of households have probability below 1e-6 and only merge two signatures)."""
    return pl.col(household).hash(_SEED + 2).alias(household)


def member_hashes(keys: Sequence[str]) -> list[pl.Expr]:
    """Two 64-bit values per row for its released quasi-identifiers: ``__t`` (``member_tuple``)
    and ``__t2``, a second, independent hash of ``__t`` (one pass over the text columns)."""
    return [member_tuple(keys), member_tuple(keys).hash(_SEED + 1).alias("__t2")]


def _signature() -> pl.Expr:
    return pl.struct("__s1", "__s2", "__size").hash(_SEED).alias("__sig")


def household_signatures(sample: Frame, household: str, keys: Sequence[str]) -> pl.LazyFrame:
    """Per household (its 64-bit ``household_key``): its signature and its size.

    The signature is a multiset digest of the member tuples: the member count and the wrapping
    sums of two independent 64-bit hashes of each member's tuple (order-free, so no sort or
    list per household), hashed into one value.
    """
    return (
        _lazy(sample)
        .filter(pl.col(household).is_not_null())
        .select(household_key(household), *member_hashes(keys))
        .group_by(household)
        .agg(pl.col("__t").sum().alias("__s1"), pl.col("__t2").sum().alias("__s2"), pl.len().alias("__size"))
        .select(pl.col(household), _signature(), "__size")
    )


@dataclass(frozen=True)
class HouseholdRisk:
    households: int  # released households (with a household link)
    members: int
    signatures: int
    below_k: int  # households whose signature fewer than k households share
    risk_max: float  # 1 / g of the rarest signature
    risk_mean: float  # mean over members of 1 / g (finding the member's household)
    sdc_household_mean: float  # sdcMicro: mean over households of 1 - prod(1 - r_i)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def household_table(
    sample: Frame,
    household: str,
    keys: Sequence[str],
    classes: pl.DataFrame | None = None,
    *,
    sdc: bool = True,
) -> pl.DataFrame:
    """Per household of ``sample`` (sums only): key, signature, size and sdcMicro's household
    risk ``1 - prod(1 - 1/f_i)`` (as ``1 - exp(sum log(1 - 1/f_i))``; 1 with a unique member).

    One streaming pass over ``sample`` collects two 64-bit values per linked row (household
    key, member tuple); the households are then aggregated on that narrow table, in parts of
    at most ``HOUSEHOLD_PART_ROWS`` rows by household key (a group-by's memory grows with its
    groups, and these are millions). ``classes`` maps each member tuple (``__t``) to its class
    size ``__f`` in the release; by default it is counted among the rows with a household link.
    ``sdc=False`` leaves out ``__h`` (and so the class sizes): what a plan needs, signatures only.
    """
    keys = list(keys)
    narrow = (
        _lazy(sample)
        .filter(pl.col(household).is_not_null())
        .select(household_key(household), member_tuple(keys))
        .collect(engine="streaming")
    )
    if classes is None and sdc:
        classes = narrow.group_by("__t").agg(pl.len().alias("__f"))
    parts = max(1, -(-narrow.height // HOUSEHOLD_PART_ROWS))
    rows = narrow.lazy()
    tables = [
        _household_part(
            rows if parts == 1 else rows.filter(pl.col(household) % parts == part), household, classes
        )
        for part in range(parts)
    ]
    return pl.concat(tables).with_columns(pl.len().over("__sig").alias("__g"))


HOUSEHOLD_PART_ROWS = 2_500_000


def _household_part(rows: pl.LazyFrame, household: str, classes: pl.DataFrame | None) -> pl.DataFrame:
    """The ``household_table`` columns but the signature counts, for the households in ``rows``
    (without ``__h`` when ``classes`` is None)."""
    if classes is None:
        return (
            rows.group_by(household)
            .agg(
                pl.col("__t").sum().alias("__s1"),
                pl.col("__t").hash(_SEED + 1).sum().alias("__s2"),
                pl.len().alias("__size"),
            )
            .select(household, _signature(), "__size")
            .collect(engine="streaming")
        )
    f = pl.col("__f").fill_null(1)
    return (
        rows.join(classes.lazy().select("__t", "__f"), on="__t", how="left")
        .group_by(household)
        .agg(
            pl.col("__t").sum().alias("__s1"),
            pl.col("__t").hash(_SEED + 1).sum().alias("__s2"),
            pl.len().alias("__size"),
            pl.when(f > 1)
            .then(((1.0 - 1.0 / f.clip(lower_bound=2)).log() * _LOG_SCALE).round().cast(pl.Int64))
            .otherwise(_LOG_UNIQUE)
            .sum()
            .alias("__log"),
        )
        .select(
            household,
            _signature(),
            "__size",
            (1.0 - (pl.col("__log") / _LOG_SCALE).exp()).alias("__h"),
        )
        .collect(engine="streaming")
    )


def household_risk_of(table: pl.DataFrame, k: int) -> HouseholdRisk:
    """The household risk of a ``household_table`` (signature counts ``__g`` within it)."""
    if table.height == 0:
        return HouseholdRisk(0, 0, 0, 0, 0.0, 0.0, 0.0)
    table = table.with_columns(pl.len().over("__sig").alias("__g"))
    members = int(table["__size"].sum())
    member_sum = _fsum(table["__size"] / table["__g"])
    return HouseholdRisk(
        households=table.height,
        members=members,
        signatures=int(table["__sig"].n_unique()),
        below_k=int((table["__g"] < k).sum()),
        risk_max=float(1.0 / table["__g"].min()),  # type: ignore[operator]
        risk_mean=member_sum / members,
        sdc_household_mean=_fsum(table["__h"]) / table.height,
    )


def household_risk(sample: Frame, household: str, keys: Sequence[str], k: int) -> HouseholdRisk:
    """Risk of the households of ``sample`` (rows with a null ``household`` carry no link)."""
    return household_risk_of(household_table(sample, household, keys), k)


def spell_paths(sample: Frame, unit: str, within: str | None, period: pl.Expr) -> pl.LazyFrame:
    """Per spell (unit, within): the hash of its sorted distinct periods."""
    spell = [unit, *([within] if within else [])]
    return (
        _lazy(sample)
        .select([*spell, period.alias("__period")])
        .unique()
        .group_by(spell)
        .agg(pl.col("__period").sort().alias("__path"))
        .with_columns(pl.col("__path").hash(_SEED))
    )


@dataclass(frozen=True)
class TrajectoryRisk:
    spells: int
    unique: int  # spells no other spell shares
    below_k: int  # spells fewer than k spells share
    risk_max: float
    risk_mean: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trajectory_risk(
    sample: Frame, unit: str, within: str | None, time: str, k: int, period: pl.Expr | None = None
) -> TrajectoryRisk:
    """Uniqueness of the spells of ``sample``: periods (``time``, or ``period``) per unit within a value."""
    paths = spell_paths(sample, unit, within, period if period is not None else pl.col(time))
    group = ["__path", *([within] if within else [])]
    table = paths.with_columns(pl.len().over(group).alias("__t")).select("__t").collect(engine="streaming")
    if table.height == 0:
        return TrajectoryRisk(0, 0, 0, 0.0, 0.0)
    t = table["__t"]
    return TrajectoryRisk(
        spells=table.height,
        unique=int((t == 1).sum()),
        below_k=int((t < k).sum()),
        risk_max=float(1.0 / t.min()),  # type: ignore[operator]
        risk_mean=_fsum(1.0 / t) / table.height,
    )
