"""What an extract may read: the dataset's DP view, derived columns and public domains.

The input is the gateway's DP view of a raw table (:func:`lab.rawtables.dp_view`:
DP-usable columns, the privacy-unit identifier, amounts as integers, ``birth_year``),
passed as any object with the fields of :class:`TableLike`. This module adds

* derived columns, each a row-by-row map with a public domain (so grouping by it is pure
  DP): ``age_band``, from ``birth_year``, in ``width``-year bands up to ``top+``, as of
  the year of the policy's ``reference_date``;
* public keys: the policy's ``public_domains``, ``birth_year`` over the span of years
  the policy gives ``birth_date``, the derived columns', and any the spec declares
  for a column without one (values its author knows without the data);

and checks every column a spec names *before* anything is computed: a core,
negative-listed or identifying column is a :class:`~lab.errors.PolicyError`, an unknown
one or a grouping column without public keys a :class:`~lab.errors.ConfigError`; each
error names the table (or spec field) and the column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import polars as pl

from lab.dp import FrameMeta, PrivacyUnit
from lab.dpextract.spec import AgeBand
from lab.dpextract.specio import Source
from lab.errors import ConfigError, PolicyError
from lab.policy import Policy
from lab.policy.yamldoc import Where

DERIVED = ("age_band",)


class TableLike(Protocol):
    """The fields of :class:`lab.rawtables.Table` that extracts use."""

    @property
    def frame(self) -> pl.LazyFrame: ...  # the DP view, with the privacy-unit identifier

    @property
    def meta(self) -> FrameMeta: ...

    @property
    def unit(self) -> PrivacyUnit: ...

    @property
    def columns(self) -> tuple[str, ...]: ...  # the columns DP releases may use

    @property
    def rows(self) -> int: ...


@dataclass(frozen=True)
class View:
    """The frame an extract reads (lazy), what is public about it, and its privacy unit."""

    frame: pl.LazyFrame
    meta: FrameMeta
    unit: PrivacyUnit


def age_band_labels(band: AgeBand) -> tuple[str, ...]:
    """``0-4``, ``5-9``, …, ``85+``: the public keys of ``age_band``."""
    inner = tuple(f"{lo}-{lo + band.width - 1}" for lo in range(0, band.top, band.width))
    return (*inner, f"{band.top}+")


def age_band_expr(band: AgeBand, reference_year: int) -> pl.Expr:
    """The row-by-row map ``birth_year`` → ``age_band`` (age reached in ``reference_year``)."""
    labels = age_band_labels(band)
    age = (pl.lit(reference_year) - pl.col("birth_year")).clip(0, band.top)
    index = (age // band.width).cast(pl.Int64)
    return index.replace_strict(list(range(len(labels))), list(labels), return_dtype=pl.String).alias(
        "age_band"
    )


def check_dataset(policy: Policy, dataset: str | None, source: Source) -> None:
    """A spec that names a dataset must be built on that dataset."""
    if dataset is not None and dataset != policy.dataset:
        raise source.error(
            ("dataset",), f"the spec is for dataset '{dataset}', not '{policy.dataset}' / 规格与数据集不符"
        )


def check_column(
    column: str, policy: Policy, table: TableLike, what: str, source: Source, where: Where
) -> None:
    """``column`` may be used by a DP release; else PolicyError (protected) or ConfigError (unknown)."""
    if column in table.columns or column in DERIVED:
        if column == "age_band" and "birth_year" not in table.columns:
            raise source.error(
                where,
                f"{what}: age_band is derived from birth_year, which '{policy.dataset}' does not have "
                "(该数据集没有 birth_year 字段)",
            )
        if column == "age_band" and policy.domains.reference_date is None:
            raise source.error(
                where,
                f"{what}: age_band needs the day ages are reached, and the policy of '{policy.dataset}' "
                f"({policy.path}) declares no reference_date / 策略缺少 reference_date",
            )
        return
    at = source.at(where)
    col = policy.columns.get(column)
    if col is not None and col.level == "core":
        message = f"{what}: column '{column}' is core data (核心数据) and never leaves the restricted zone"
        raise PolicyError(at + message, reason="dpx-core")
    if column in policy.negative_listed:
        message = f"{what}: column '{column}' is on the negative list (负面清单) and never leaves"
        raise PolicyError(at + message, reason="dpx-negative-list")
    if (col is not None and col.direct_identifier) or column == policy.privacy_unit:
        message = (
            f"{what}: column '{column}' identifies a person or account directly (直接标识符); "
            "DP extracts never group by or release it"
        )
        raise PolicyError(at + message, reason="dpx-identifier")
    usable = ", ".join((*table.columns, *DERIVED))
    raise ConfigError(
        f"{at}{what}: unknown column '{column}'; usable columns: {usable} / 未知列 '{column}'",
        reason="dpx-column",
    )


def public_domains(
    policy: Policy, table: TableLike, declared: Mapping[str, tuple[Any, ...]], source: Source, band: AgeBand
) -> dict[str, tuple[Any, ...]]:
    """The public keys of every usable column that has them (declared keys win)."""
    keys: dict[str, tuple[Any, ...]] = dict(table.meta.public_keys)
    span = policy.domains.year_span("birth_date")
    if "birth_year" in table.columns and span is not None:
        keys["birth_year"] = tuple(range(span[0], span[1] + 1))
    if "birth_year" in table.columns and policy.domains.reference_date is not None:
        keys["age_band"] = age_band_labels(band)
    for column, values in declared.items():
        check_column(column, policy, table, "keys", source, ("keys", column))
        if column in DERIVED:
            raise source.error(
                ("keys", column), f"keys: '{column}' is derived; its keys are fixed (派生字段的取值是固定的)"
            )
        keys[column] = values
    return keys


def require_keys(column: str, keys: Mapping[str, Any], what: str, source: Source, where: Where) -> None:
    """A grouping column needs public keys: grouping by data-derived keys would reveal them."""
    if column not in keys:
        raise source.error(
            where,
            f"{what}: column '{column}' has no public domain, so grouping by it would reveal which values "
            f"exist; declare its values under 'keys: {{{column}: [...]}}' if they are public knowledge "
            f"/ 列 '{column}' 没有公开的取值域",
            "dpx-keys",
        )


def make_view(
    table: TableLike, keys: Mapping[str, tuple[Any, ...]], band: AgeBand, reference: date | None
) -> View:
    """The table's frame with ``age_band`` (if ``reference``, the day ages are reached) and ``keys``."""
    frame = table.frame.with_columns(age_band_expr(band, reference.year)) if reference else table.frame
    meta = FrameMeta.from_lazyframe(frame, keys, max_rows=table.meta.max_rows)
    return View(frame, meta, table.unit)
