"""The ``dp-synthetic`` spec: synthetic microdata from DP-measured marginals::

    kind: dp-synthetic
    dataset: population                  # optional; must match the table it is built on
    epsilon: 1.0
    columns: [sex, birth_date, district, education, marital_status]  # default: all with a domain
    marginals: all-pairs                 # or a list, e.g. [[sex, birth_date], [district]]
    keys: {account_type: [居民, 非居民]}   # public values of a column that has none
    bins: {electricity_kwh: [0, 100, 200, 500, 1000, 5000]}          # public bin edges of a number
    years: {founded_date: [1990, 2025]}  # dates are modelled by year over a public range
    rows: 100000                         # default: the noisy number of rows
    seed: 7                              # sampling seed (sampling is post-processing)

Only the shape is checked here; :mod:`lab.dpextract.encode` checks the columns against
the dataset's policy and public domains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.dpextract.budget import is_number
from lab.dpextract.specio import Source, check_keys, epsilon_units, int_at_least, public_keys, str_list

SPEC_KEYS = ("kind", "dataset", "epsilon", "columns", "marginals", "bins", "years", "keys", "rows", "seed")


@dataclass(frozen=True)
class SyntheticSpec:
    """A parsed ``dp-synthetic`` spec."""

    epsilon: float
    columns: tuple[str, ...] | None = None
    marginals: tuple[tuple[str, ...], ...] | None = None  # None: every pair of the columns
    bins: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    years: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    keys: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    rows: int | None = None
    seed: int | None = None
    dataset: str | None = None
    source: Source = field(default_factory=Source, compare=False)

    kind = "dp-synthetic"

    def to_dict(self) -> dict[str, Any]:
        """The normalised spec, as recorded in the manifest and the ledger."""
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "epsilon": self.epsilon,
            "columns": None if self.columns is None else list(self.columns),
            "marginals": "all-pairs" if self.marginals is None else [list(m) for m in self.marginals],
            "bins": {c: list(v) for c, v in self.bins.items()},
            "years": {c: list(v) for c, v in self.years.items()},
            "keys": {c: [str(v) for v in vs] for c, vs in self.keys.items()},
            "rows": self.rows,
            "seed": self.seed,
        }


def _marginals(value: Any, source: Source) -> tuple[tuple[str, ...], ...] | None:
    if value is None or value == "all-pairs":
        return None
    if not isinstance(value, list) or not value:
        raise source.error(
            ("marginals",),
            "marginals is 'all-pairs' or a list like [[sex, birth_date], [district]] (边际分布须为 "
            "all-pairs 或列表)",
        )
    out = []
    for i, item in enumerate(value):
        columns = str_list(item, source, ("marginals", i), f"marginals[{i}]")
        if len(columns) > 2:
            raise source.error(
                ("marginals", i),
                f"marginals[{i}]: one- and two-way marginals only (只支持一维和二维边际分布)",
            )
        out.append(columns)
    return tuple(out)


def _bins(value: Any, source: Source) -> dict[str, tuple[float, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise source.error(
            ("bins",),
            "bins maps a numeric column to its public edges, e.g. {water_m3: [0, 5, 10, 50]} (bins "
            "须把数值字段映射到公开的分箱边界)",
        )
    out = {}
    for column, edges in value.items():
        ok = isinstance(edges, list) and len(edges) >= 2 and all(is_number(e) for e in edges)
        if not ok or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
            raise source.error(
                ("bins", column),
                f"bins of '{column}' must be at least two increasing numbers (至少需要两个递增的数)",
            )
        out[str(column)] = tuple(float(e) for e in edges)
    return out


def _years(value: Any, source: Source) -> dict[str, tuple[int, int]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise source.error(
            ("years",),
            "years maps a date column to [first, last] years, e.g. {founded_date: [1990, 2025]} (years "
            "须把日期字段映射到 [起始年, 结束年])",
        )
    out = {}
    for column, span in value.items():
        ok = isinstance(span, list) and len(span) == 2
        ok = ok and all(isinstance(y, int) and not isinstance(y, bool) for y in span)
        if not ok or not 1 <= span[1] - span[0] + 1 <= 500:
            raise source.error(
                ("years", column),
                f"years of '{column}' must be [first, last] with first <= last (须为 [起始年, "
                "结束年]，且起始年不大于结束年)",
            )
        out[str(column)] = (span[0], span[1])
    return out


def parse_synthetic_spec(data: Mapping[str, Any], source: Source | None = None) -> SyntheticSpec:
    """Check and normalise a ``dp-synthetic`` spec (its shape)."""
    source = source or Source()
    check_keys(data, SPEC_KEYS, source, (), "dp-synthetic spec")
    epsilon = data.get("epsilon")
    if epsilon is None:
        raise source.error((), "a dp-synthetic spec needs 'epsilon:' (e.g. 1.0) / 缺少 ε", "dp-epsilon")
    epsilon_units(epsilon, source, ("epsilon",), "dp-synthetic spec")
    columns = data.get("columns")
    rows, seed, dataset = data.get("rows"), data.get("seed"), data.get("dataset")
    return SyntheticSpec(
        epsilon=float(epsilon),
        columns=None if columns is None else str_list(columns, source, ("columns",), "columns"),
        marginals=_marginals(data.get("marginals"), source),
        bins=_bins(data.get("bins"), source),
        years=_years(data.get("years"), source),
        keys=public_keys(data.get("keys"), source),
        rows=None if rows is None else int_at_least(rows, source, ("rows",), "rows", 1),
        seed=None if seed is None else int_at_least(seed, source, ("seed",), "seed", 0),
        dataset=None if dataset is None else str(dataset),
        source=source,
    )
