"""The DP query model: what an analyst asks for, in a form the audit log can record.

A :class:`Query` names a dataset, optional row filters, an optional grouping, one
aggregate, the privacy loss (ε, δ) and the privacy unit. Its :meth:`Query.canonical`
text is compact, sorted JSON, so that two equal queries always log the same string and
:meth:`Query.digest` is stable. :meth:`Query.from_dict` parses that JSON back (the
gateway receives queries this way) and rejects malformed input with a
:class:`~lab.errors.ConfigError`.

Only shape checks live here; checks that need the dataset's schema and public keys
(unknown columns, bounds on a text column, a grouping without public keys) are made by
:mod:`lab.dp.plan` against a :class:`FrameMeta`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lab.errors import ConfigError
from lab.hashing import canonical_json
from lab.suggest import did_you_mean

KINDS = ("count", "sum", "mean", "quantile", "median", "histogram")
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
# A generous public bound on the number of rows of a table (the Context API's `max_length`).
DEFAULT_MAX_ROWS = 10**10

Scalar = int | float | str | bool | None


def _tuple(values: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values)


@dataclass(frozen=True)
class PrivacyUnit:
    """Who is protected: at most ``max_rows`` rows belong to one person.

    With ``identifier`` set, the engine keeps at most ``max_rows`` rows per value of that
    column (OpenDP's ``truncate_per_group(max_rows)`` under ``unit_of(identifier=...)``).
    Without it, the dataset policy vouches that no person has more than ``max_rows`` rows
    (OpenDP's ``unit_of(contributions=max_rows)``).
    """

    max_rows: int = 1
    identifier: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise ConfigError(
                f"the privacy unit needs max_rows >= 1 (got {self.max_rows!r}) / 每人最多行数必须 ≥ 1",
                reason="dp-unit",
            )

    def to_dict(self) -> dict[str, Any]:
        return {"max_rows": self.max_rows, "identifier": self.identifier}


@dataclass(frozen=True)
class Filter:
    """Keep rows where ``column op value``; ``value`` is a tuple for ``in`` / ``not in``.

    A row filter is 1-stable (each person still changes at most ``max_rows`` rows), so it
    does not change the sensitivity of what follows.
    """

    column: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            en, zh = did_you_mean(self.op, FILTER_OPS)
            raise ConfigError(
                f"unknown filter operator {str(self.op)[:64]!r}; use one of {', '.join(FILTER_OPS)}.{en} "
                f"/ 未知的筛选运算符，可用：{', '.join(FILTER_OPS)}。{zh}",
                reason="dp-query",
            )
        if self.op in ("in", "not in"):
            if isinstance(self.value, str) or not isinstance(self.value, Sequence):
                raise ConfigError(
                    f"filter {self.column} {self.op} needs a list of values, e.g. ['张店区', '淄川区']",
                    reason="dp-query",
                )
            object.__setattr__(self, "value", tuple(self.value))

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"column": self.column, "op": self.op, "value": value}


@dataclass(frozen=True)
class Aggregate:
    """One aggregate: ``count``, ``sum``/``mean`` (bounds), ``quantile``/``median``, ``histogram``.

    * ``sum`` and ``mean`` clamp each value into ``bounds`` (nulls count as the midpoint,
      like OpenDP's ``.dp.sum``);
    * ``quantile`` picks one of ``candidates`` (or ~100 points spread over ``bounds``)
      with OpenDP's exponential mechanism; ``median`` is ``alpha = 0.5``;
    * ``histogram`` counts rows per bin (``bins`` are edges) or per public ``categories``.
    """

    kind: str
    column: str | None = None
    bounds: tuple[float, float] | None = None
    alpha: float | None = None
    candidates: tuple[Any, ...] | None = None
    bins: tuple[float, ...] | None = None
    categories: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("bounds", "candidates", "bins", "categories"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, _tuple(value))
        if self.kind == "median" and self.alpha is None:
            object.__setattr__(self, "alpha", 0.5)
        self._check()

    def _check(self) -> None:
        if self.kind not in KINDS:
            en, zh = did_you_mean(self.kind, KINDS)
            raise ConfigError(
                f"unknown aggregate {str(self.kind)[:64]!r}; use one of {', '.join(KINDS)}.{en} "
                f"/ 未知的聚合类型，可用：{', '.join(KINDS)}。{zh}",
                reason="dp-query",
            )
        if self.kind != "count" and not self.column:
            raise ConfigError(f"{self.kind} needs a column / 需要指定列", reason="dp-query")
        if self.kind in ("sum", "mean"):
            _check_bounds(self.kind, self.column or "", self.bounds)
        if self.kind in ("quantile", "median"):
            _check_quantile(self)
        if self.kind == "histogram":
            _check_histogram(self)

    @property
    def label(self) -> str:
        """The name of the released statistic, e.g. ``0.25-quantile``."""
        if self.kind in ("quantile", "median"):
            return f"{self.alpha}-quantile"
        return "count" if self.kind == "histogram" else self.kind

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in ("column", "bounds", "alpha", "candidates", "bins", "categories"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


def _check_bounds(kind: str, column: str, bounds: tuple[float, float] | None) -> None:
    example = f'.{kind}("{column}", bounds=(0, 50_000))'
    if bounds is None:
        raise ConfigError(
            f"{kind} of '{column}' needs bounds, so that one person's effect is limited; "
            f"e.g. {example} (values outside are clamped) / {kind} 需要给出取值上下界，例如 {example}",
            reason="dp-bounds",
        )
    if len(bounds) != 2 or not all(_is_number(b) for b in bounds) or not bounds[0] <= bounds[1]:
        raise ConfigError(
            f"bounds of {kind}('{column}') must be two finite numbers (lower, upper) with lower <= upper, "
            f"got {bounds!r}; e.g. {example} / 上下界必须是两个有限数且下界 ≤ 上界",
            reason="dp-bounds",
        )


def _check_quantile(agg: Aggregate) -> None:
    alpha = agg.alpha
    if not _is_number(alpha) or not 0.0 <= float(alpha) <= 1.0:  # type: ignore[arg-type]
        raise ConfigError(
            f"quantile alpha must be in [0, 1], got {alpha!r} / 分位点须在 [0, 1]", reason="dp-query"
        )
    if agg.candidates is None and agg.bounds is None:
        raise ConfigError(
            f"{agg.kind} of '{agg.column}' needs candidates or bounds, e.g. "
            f'.{agg.kind}("{agg.column}", bounds=(0, 100)) or candidates=[20, 30, 40] / 需要候选值或上下界',
            reason="dp-bounds",
        )
    if agg.bounds is not None:
        _check_bounds(agg.kind, agg.column or "", agg.bounds)
    if agg.candidates is not None:
        cands = agg.candidates
        if (
            not cands
            or not all(_is_number(c) for c in cands)
            or any(a >= b for a, b in itertools.pairwise(cands))
        ):
            raise ConfigError(
                f"candidates of {agg.kind}('{agg.column}') must be increasing numbers, got {list(cands)!r} "
                "/ 候选值须为递增数列",
                reason="dp-query",
            )


def _check_histogram(agg: Aggregate) -> None:
    if agg.bins is not None and agg.categories is not None:
        raise ConfigError(
            "histogram takes bins or categories, not both / bins 与 categories 只能二选一", reason="dp-query"
        )
    if agg.bins is not None:
        bins = agg.bins
        if (
            len(bins) < 2
            or not all(_is_number(b) for b in bins)
            or any(a >= b for a, b in itertools.pairwise(bins))
        ):
            raise ConfigError(
                "histogram bins are increasing edges (at least two), e.g. bins=[0, 18, 65, 120]; "
                f"got {list(bins)!r}"
                " / 分箱边界须为至少两个递增的数",
                reason="dp-query",
            )
    if agg.categories is not None and not agg.categories:
        raise ConfigError("histogram categories must not be empty / 类别列表不能为空", reason="dp-query")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GroupBy:
    """Group by ``columns``; ``keys`` lists the groups when the analyst supplies them.

    Without ``keys`` the dataset's public keys are used (pure DP); when a column has none,
    the groups themselves are released with a threshold that spends δ.
    """

    columns: tuple[str, ...]
    keys: tuple[tuple[Any, ...], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise ConfigError(
                "group_by needs distinct column names / 分组列不能为空或重复", reason="dp-query"
            )
        if self.keys is not None:
            keys = tuple(k if isinstance(k, tuple | list) else (k,) for k in self.keys)
            keys = tuple(tuple(k) for k in keys)
            if not keys or any(len(k) != len(self.columns) for k in keys) or len(set(keys)) != len(keys):
                raise ConfigError(
                    f"group keys must be distinct and have one value per column {list(self.columns)} "
                    "/ 分组键须互不相同且每列一个值",
                    reason="dp-query",
                )
            object.__setattr__(self, "keys", keys)

    def to_dict(self) -> dict[str, Any]:
        keys = None if self.keys is None else [list(k) for k in self.keys]
        return {"columns": list(self.columns), "keys": keys}


@dataclass(frozen=True)
class Query:
    """A DP query; ``epsilon`` and ``delta`` are what it may spend."""

    dataset: str
    aggregate: Aggregate
    epsilon: float
    delta: float = 0.0
    unit: PrivacyUnit = field(default_factory=PrivacyUnit)
    group_by: GroupBy | None = None
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        if not _is_number(self.epsilon) or self.epsilon <= 0:
            raise ConfigError(
                f"epsilon must be a finite number > 0, got {self.epsilon!r} (e.g. epsilon=0.5) "
                "/ ε 必须为正数",
                reason="dp-epsilon",
            )
        if not _is_number(self.delta) or not 0.0 <= self.delta < 1.0:
            raise ConfigError(
                f"delta must be in [0, 1), got {self.delta!r} (e.g. delta=1e-7) / δ 必须在 [0, 1) 内",
                reason="dp-delta",
            )
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "delta", float(self.delta))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "aggregate": self.aggregate.to_dict(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "unit": self.unit.to_dict(),
            "group_by": None if self.group_by is None else self.group_by.to_dict(),
            "filters": [f.to_dict() for f in self.filters],
        }

    def canonical(self) -> str:
        """The text recorded in the audit log: compact JSON, sorted keys."""
        return canonical_json(self.to_dict())

    def digest(self) -> str:
        """SHA-256 of :meth:`canonical`, hex."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def describe(self) -> str:
        """A short human form, e.g. ``population | district | sum(income, 0..50000) ε=1``."""
        agg = self.aggregate
        extra = [f"alpha={agg.alpha}" if agg.kind == "quantile" else ""]
        extra += [
            f"{name}={list(v)}" for name in ("bins", "categories") if (v := getattr(agg, name)) is not None
        ]
        args = ", ".join(str(a) for a in (agg.column, _range(agg.bounds), *extra) if a)
        parts = [self.dataset]
        parts += [f"{f.column} {f.op} {f.value!r}" for f in self.filters]
        if self.group_by is not None:
            parts.append("by " + ",".join(self.group_by.columns))
        loss = f"ε={self.epsilon:g}" + (f" δ={self.delta:g}" if self.delta else "")
        return " | ".join([*parts, f"{agg.kind}({args}) {loss}"])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Query:
        """Parse :meth:`to_dict` / :meth:`canonical` output; malformed input is a ConfigError."""
        try:
            agg = Aggregate(**dict(data["aggregate"]))
            unit = PrivacyUnit(**dict(data.get("unit") or {}))
            group = data.get("group_by")
            group_by = None if group is None else GroupBy(tuple(group["columns"]), group.get("keys"))
            filters = tuple(Filter(**dict(f)) for f in data.get("filters") or ())
            return cls(
                dataset=str(data["dataset"]),
                aggregate=agg,
                epsilon=data["epsilon"],
                delta=data.get("delta", 0.0),
                unit=unit,
                group_by=group_by,
                filters=filters,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"malformed DP query ({type(exc).__name__}: {str(exc)[:120]}); send the JSON that "
                "lab.client builds / 查询格式错误",
                reason="dp-query",
            ) from exc


def _range(bounds: tuple[float, float] | None) -> str:
    return "" if bounds is None else f"{bounds[0]}..{bounds[1]}"


@dataclass(frozen=True)
class FrameMeta:
    """What may be known about a table without reading it: schema, public keys, a row bound.

    ``public_keys`` maps a column to the values that the dataset policy declares public
    (e.g. the eight districts); grouping by such a column is pure DP. ``max_rows`` is a
    public upper bound on the table's length (OpenDP's ``Margin.max_length``), used to
    rule out overflow of integer sums.
    """

    schema: Mapping[str, pl.DataType]
    public_keys: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    max_rows: int = DEFAULT_MAX_ROWS

    @classmethod
    def from_lazyframe(
        cls,
        frame: pl.LazyFrame,
        public_keys: Mapping[str, Sequence[Any]] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> FrameMeta:
        """Read the schema only (for Parquet: the file footer), never the rows."""
        keys = {col: tuple(values) for col, values in (public_keys or {}).items()}
        return cls(schema=dict(frame.collect_schema()), public_keys=keys, max_rows=max_rows)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema)
