"""The ``dp-table`` spec: which noisy tables to release, at which ε, post-processed how.

A spec is a YAML or JSON file, or the same as a dict::

    kind: dp-table
    dataset: population                  # optional; must match the table it is built on
    epsilon: 1.0                         # optional overall ε, split evenly over tables without one
    alpha: 0.05                          # intervals are (1 - alpha) confidence intervals
    age_band: {width: 5, top: 85}        # the derived column age_band (default 5 years, 85+)
    keys: {account_type: [居民, 非居民]}   # public values of a column that has none (optional)
    postprocess: {clamp: true}           # defaults for every table
    tables:
      - name: people_by_district_sex_age
        group_by: [district, sex, age_band]
        statistic: count
        epsilon: 0.5
        postprocess: {round: 5, suppress_below: 20}
      - name: electricity_by_district_month
        group_by: [district, month]
        statistic: sum
        column: electricity_kwh
        bounds: [0, 5000]

Post-processing is free (it only reads released values): ``round: N`` rounds values to a
multiple of N; ``clamp: true`` replaces negative values by 0; ``suppress_below: T`` hides
the cells of a count table whose noisy count is below T, and a sum table hides its cells
by the noisy counts of a count table on the same keys (``count_table: NAME``).

Only the shape is checked here; :mod:`lab.dpextract.view` checks the columns against the
dataset's policy and public domains. :func:`load_spec` reads either kind of spec (the
``dp-synthetic`` kind is in :mod:`lab.dpextract.synthspec`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.dpextract.budget import is_number, split_units, units_to_epsilon
from lab.dpextract.specio import (
    Source,
    check_keys,
    epsilon_units,
    int_at_least,
    public_keys,
    read_spec,
    str_list,
)
from lab.dpextract.synthspec import SyntheticSpec, parse_synthetic_spec
from lab.policy.yamldoc import Where

STATISTICS = ("count", "sum")
TABLE_KEYS = ("name", "group_by", "statistic", "column", "bounds", "epsilon", "postprocess")
SPEC_KEYS = ("kind", "dataset", "epsilon", "alpha", "age_band", "keys", "postprocess", "tables")
POSTPROCESS_KEYS = ("round", "clamp", "suppress_below", "count_table")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # table names become file names


@dataclass(frozen=True)
class PostProcess:
    """Free post-processing of one table's released values."""

    round: int = 1
    clamp: bool = False
    suppress_below: int | None = None
    count_table: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TableSpec:
    """One noisy table: counts or bounded sums over the product of public keys."""

    name: str
    group_by: tuple[str, ...]
    statistic: str
    column: str | None = None
    bounds: tuple[int, int] | None = None
    epsilon: float | None = None  # as written; None: a share of the spec's overall ε
    postprocess: PostProcess = PostProcess()
    where: Where = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group_by": list(self.group_by),
            "statistic": self.statistic,
            "column": self.column,
            "bounds": None if self.bounds is None else list(self.bounds),
            "epsilon": self.epsilon,
            "postprocess": self.postprocess.to_dict(),
        }


@dataclass(frozen=True)
class AgeBand:
    """``age_band`` derived from ``birth_year``: ``width``-year bands, the last one ``top+``."""

    width: int = 5
    top: int = 85


@dataclass(frozen=True)
class TablesSpec:
    """A parsed ``dp-table`` spec."""

    tables: tuple[TableSpec, ...]
    epsilon: float | None = None
    alpha: float = 0.05
    age_band: AgeBand = AgeBand()
    keys: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    dataset: str | None = None
    source: Source = field(default_factory=Source, compare=False)

    kind = "dp-table"

    def to_dict(self) -> dict[str, Any]:
        """The normalised spec (defaults filled in), as recorded in the manifest and the ledger."""
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "epsilon": self.epsilon,
            "alpha": self.alpha,
            "age_band": dict(self.age_band.__dict__),
            "keys": {c: [str(v) for v in vs] for c, vs in self.keys.items()},
            "tables": [t.to_dict() for t in self.tables],
        }


Spec = TablesSpec | SyntheticSpec


def load_spec(source: Spec | Mapping[str, Any] | str | Path, kind: str | None = None) -> Spec:
    """A parsed spec from a file, a dict or an already parsed spec; ``kind`` checks which it is."""
    if isinstance(source, TablesSpec | SyntheticSpec):
        spec: Spec = source
    else:
        data, origin = read_spec(source) if isinstance(source, str | Path) else (source, Source())
        if not isinstance(data, Mapping):
            raise origin.error((), "a spec is a mapping with 'kind:' and its fields / 规格须为映射")
        spec_kind = data.get("kind") or kind or ("dp-table" if "tables" in data else "dp-synthetic")
        if spec_kind == "dp-table":
            spec = parse_tables_spec(data, origin)
        elif spec_kind == "dp-synthetic":
            spec = parse_synthetic_spec(data, origin)
        else:
            raise origin.error(
                ("kind",), f"unknown kind {spec_kind!r}; use dp-table or dp-synthetic (未知的规格类型)"
            )
    if kind is not None and spec.kind != kind:
        raise spec.source.error(("kind",), f"this is a {spec.kind} spec, not a {kind} one / 规格类型不符")
    return spec


def _postprocess(value: Any, base: PostProcess, source: Source, where: Where, what: str) -> PostProcess:
    if value is None:
        return base
    if not isinstance(value, Mapping):
        raise source.error(
            where,
            f"{what}: postprocess is a mapping, e.g. {{clamp: true, suppress_below: 10}} (postprocess "
            "须为映射)",
        )
    check_keys(value, POSTPROCESS_KEYS, source, where, what)
    out = dict(base.__dict__)
    if "round" in value:
        out["round"] = int_at_least(value["round"], source, (*where, "round"), f"{what}: round", 1)
    if "clamp" in value:
        if not isinstance(value["clamp"], bool):
            raise source.error(
                (*where, "clamp"), f"{what}: clamp must be true or false (clamp 只能是 true 或 false)"
            )
        out["clamp"] = value["clamp"]
    if "suppress_below" in value:
        below = value["suppress_below"]
        where_below = (*where, "suppress_below")
        label = f"{what}: suppress_below"
        out["suppress_below"] = None if below is None else int_at_least(below, source, where_below, label, 1)
    if "count_table" in value:
        out["count_table"] = value["count_table"]
    return PostProcess(**out)


def _bounds(value: Any, source: Source, where: Where, what: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(is_number(v) and float(v).is_integer() for v in value)
        or value[0] > value[1]
    ):
        raise source.error(
            where,
            f"{what}: bounds must be two integers [lower, upper] with lower <= upper, e.g. [0, 5000]; "
            f"got {value!r} / 上下界须为两个整数",
            "dp-bounds",
        )
    return int(value[0]), int(value[1])


def _table(data: Any, index: int, defaults: PostProcess, source: Source) -> TableSpec:
    where: Where = ("tables", index)
    if not isinstance(data, Mapping):
        raise source.error(
            where,
            f"tables[{index}] must be a mapping with name, group_by and statistic (每张表须包含 "
            "name、group_by 和 "
            "statistic)",
        )
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise source.error(
            (*where, "name"),
            f"tables[{index}] needs a name of letters, digits, '_', '-' or '.', got {name!r} / 表名不合法",
        )
    what = f"table '{name}'"
    check_keys(data, TABLE_KEYS, source, where, what)
    group_by = str_list(data.get("group_by"), source, (*where, "group_by"), f"{what}: group_by")
    statistic = data.get("statistic", "count")
    if statistic not in STATISTICS:
        raise source.error(
            (*where, "statistic"),
            f"{what}: statistic must be count or sum, got {statistic!r} (统计量只能是 count 或 sum)",
        )
    column, bounds = data.get("column"), None
    if statistic == "sum":
        if not isinstance(column, str) or not column:
            raise source.error(
                where, f"{what}: a sum needs 'column:' (the amount to add up) / 求和需要指定列"
            )
        bounds = _bounds(data.get("bounds"), source, (*where, "bounds"), what)
    elif column is not None or data.get("bounds") is not None:
        raise source.error(
            (*where, "column"), f"{what}: a count takes no column or bounds / 计数不需要列或上下界"
        )
    epsilon = data.get("epsilon")
    if epsilon is not None:
        epsilon_units(epsilon, source, (*where, "epsilon"), what)
    post = _postprocess(data.get("postprocess"), defaults, source, (*where, "postprocess"), what)
    return TableSpec(name, group_by, statistic, column, bounds, epsilon, post, where)


def _age_band(value: Any, source: Source) -> AgeBand:
    if value is None:
        return AgeBand()
    if not isinstance(value, Mapping):
        raise source.error(
            ("age_band",), "age_band is a mapping, e.g. {width: 5, top: 85} (age_band 须为映射)"
        )
    check_keys(value, ("width", "top"), source, ("age_band",), "age_band")
    width = int_at_least(value.get("width", 5), source, ("age_band", "width"), "age_band width", 1)
    top = int_at_least(value.get("top", 85), source, ("age_band", "top"), "age_band top", 1)
    if top % width or top > 150:
        raise source.error(
            ("age_band",),
            f"age_band top ({top}) must be a multiple of width ({width}), at most 150 "
            "(上限须为宽度的整数倍，最大 150)",
        )
    return AgeBand(width, top)


def _check_postprocess_refs(tables: Sequence[TableSpec], source: Source) -> None:
    by_name = {t.name: t for t in tables}
    for table in tables:
        post, what = table.postprocess, f"table '{table.name}'"
        if table.statistic == "count" and post.count_table is not None:
            raise source.error(
                table.where, f"{what}: count_table is only for sum tables (count_table 只用于求和表)"
            )
        if table.statistic == "sum" and post.suppress_below is not None:
            ref = by_name.get(post.count_table or "")
            if ref is None or ref.statistic != "count" or set(ref.group_by) != set(table.group_by):
                raise source.error(
                    table.where,
                    f"{what}: suppress_below on a sum needs count_table: NAME, a count table with the same "
                    "group_by, whose noisy counts decide which cells are hidden "
                    "/ 求和表的抑制需引用同分组的计数表",
                )
        if table.statistic == "sum" and post.clamp and table.bounds is not None and table.bounds[0] < 0:
            raise source.error(
                table.where,
                f"{what}: clamp needs a lower bound >= 0 (the true sum may be negative) (截断需要下界 ≥ 0)",
            )


def parse_tables_spec(data: Mapping[str, Any], source: Source | None = None) -> TablesSpec:
    """Check and normalise a ``dp-table`` spec (its shape; columns are checked against a policy later)."""
    source = source or Source()
    check_keys(data, SPEC_KEYS, source, (), "dp-table spec")
    tables_data = data.get("tables")
    if not isinstance(tables_data, list) or not tables_data:
        raise source.error(("tables",), "a dp-table spec needs 'tables:', a list of tables / 缺少 tables")
    defaults = _postprocess(data.get("postprocess"), PostProcess(), source, ("postprocess",), "postprocess")
    tables = tuple(_table(t, i, defaults, source) for i, t in enumerate(tables_data))
    names = [t.name for t in tables]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise source.error(("tables", i, "name"), f"two tables are named '{name}' / 表名重复")
    _check_postprocess_refs(tables, source)
    overall = data.get("epsilon")
    if overall is not None:
        epsilon_units(overall, source, ("epsilon",), "dp-table spec")
    missing = [t for t in tables if t.epsilon is None]
    if missing and overall is None:
        raise source.error(
            missing[0].where,
            f"table '{missing[0].name}' has no epsilon and the spec has no overall epsilon to share; "
            "add 'epsilon:' to the table or to the spec / 缺少 ε",
            "dp-epsilon",
        )
    alpha = data.get("alpha", 0.05)
    if not is_number(alpha) or not 0 < alpha < 1:
        raise source.error(
            ("alpha",),
            f"alpha must be in (0, 1), e.g. 0.05 for 95% intervals; got {alpha!r} (alpha 须在 0 到 1 之间)",
        )
    dataset = data.get("dataset")
    return TablesSpec(
        tables=tables,
        epsilon=None if overall is None else float(overall),
        alpha=float(alpha),
        age_band=_age_band(data.get("age_band"), source),
        keys=public_keys(data.get("keys"), source),
        dataset=None if dataset is None else str(dataset),
        source=source,
    )


def table_units(spec: TablesSpec) -> list[int]:
    """Each table's share in ledger units: its own ε, or an even share of what the overall ε leaves."""
    source = spec.source
    own = {
        t.name: epsilon_units(t.epsilon, source, (*t.where, "epsilon"), f"table '{t.name}'")
        for t in spec.tables
        if t.epsilon is not None
    }
    if spec.epsilon is None:
        return [own[t.name] for t in spec.tables]
    rest = [t for t in spec.tables if t.epsilon is None]
    explicit = sum(own.values())
    overall = epsilon_units(spec.epsilon, source, ("epsilon",), "dp-table spec")
    if explicit + len(rest) > overall:
        raise source.error(
            ("epsilon",),
            f"the tables' own epsilons add up to {units_to_epsilon(explicit)}, more than the overall "
            f"epsilon {spec.epsilon} leaves for them / 各表 ε 之和超过总 ε",
            "dp-epsilon",
        )
    shares = iter(split_units(overall - explicit, [1.0] * len(rest)) if rest else [])
    return [own[t.name] if t.epsilon is not None else next(shares) for t in spec.tables]
