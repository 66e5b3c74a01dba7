"""Column transforms of the masking rules, as Polars expressions (pseudonyms are in ``keyed``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from lab.policy import ColumnPolicy

# Values that must never appear in a released text column (defence in depth behind the policy).
IDENTIFIER_PATTERN = r"\d{17}[\dXx]|1[3-9]\d{9}"


def value_expr(column: ColumnPolicy, frequent: Mapping[str, pl.Series], *, labelled: bool = True) -> pl.Expr:
    """The released value of ``column`` under its rule (not for ``drop`` or ``pseudonym``).

    With ``labelled=False`` a date band is its first year (an integer, cheaper to group by);
    ``band_label`` turns that into the released ``"1980-1984"`` text.
    """
    col = pl.col(column.name)
    params = column.params
    if column.rule == "keep":
        return col
    if column.rule == "topcode":
        return col.clip(params.get("bottom"), params.get("top"))
    if column.rule == "suppress_rare":
        kept = pl.when(col.is_in(frequent[column.name].implode())).then(col)
        replacement = params.get("replacement")
        return kept if replacement is None else kept.otherwise(pl.lit(replacement))
    if column.rule == "generalise":
        return _generalise(col, column, labelled)
    raise ValueError(f"rule {column.rule!r} has no value expression")


def is_date_band(column: ColumnPolicy) -> bool:
    """True for a date generalised to a band of years."""
    return column.rule == "generalise" and column.params.get("to") == "band" and "width" not in column.params


def band_label(low: pl.Expr, column: ColumnPolicy) -> pl.Expr:
    """``"1980-1984"`` from the first year of a band."""
    years = int(column.params.get("years", 5))
    return pl.concat_str(low.cast(pl.String), pl.lit("-"), (low + years - 1).cast(pl.String))


def _generalise(col: pl.Expr, column: ColumnPolicy, labelled: bool) -> pl.Expr:
    params = column.params
    target = params["to"]
    if target == "year":
        return col.dt.year()
    if target == "month":
        return col.dt.truncate("1mo")
    if target == "district":  # the first name of the policy's district domain found in the text
        names = "(" + "|".join(re.escape(str(name)) for name in params["districts"]) + ")"
        return col.cast(pl.String).str.extract(names, 1)
    if "width" in params:  # numeric band: lower bound of [lower, lower + width)
        width = params["width"]
        clipped = col.clip(params.get("bottom"), params.get("top"))
        return (clipped / width).floor() * width
    years = int(params.get("years", 5))
    low = (col.dt.year() // years) * years
    return band_label(low, column) if labelled else low


def suppress_rare_columns(columns: Mapping[str, ColumnPolicy]) -> list[ColumnPolicy]:
    """The columns whose rare values need global counts before masking."""
    return [c for c in columns.values() if c.rule == "suppress_rare"]


def frequent_values(lazy: pl.LazyFrame, column: ColumnPolicy) -> pl.Series:
    """Values of ``column`` seen at least ``min_count`` times in the whole table."""
    name = column.name
    counts = lazy.group_by(name).agg(pl.len().alias("n")).filter(pl.col("n") >= column.params["min_count"])
    return counts.select(name).collect(engine="streaming").to_series()
