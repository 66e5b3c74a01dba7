"""How each column of a synthetic table is filled: modelled, a synthetic identifier, or null.

Rules, in order, for every column of the dataset's schema:

1. core or negative-listed → null (it never leaves, not even as a placeholder);
2. a direct identifier, a pseudonymised column or the privacy-unit column → synthetic
   identifiers ``SYN-000001``, … (unique per row; they match no real identifier);
3. not usable by DP releases, or not in the spec's ``columns`` → null;
4. a public domain → modelled (:mod:`lab.dpextract.encode`): declared ``bins`` or
   ``years``, public keys, ``birth_date`` by year, a number top-coded by the policy in
   1-2-5 bins; without one → null (or, when the spec lists the column, a ConfigError
   saying what to declare).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from lab.dpextract.encode import Binned, Categorical, Encoder, Years, one_two_five
from lab.dpextract.synthspec import SyntheticSpec
from lab.dpextract.view import TableLike
from lab.errors import ConfigError
from lab.policy import Policy

IDENTIFIER_FILL = "synthetic identifier (SYN-000001, ...)"


def _protected(name: str, policy: Policy) -> str | None:
    column = policy.columns.get(name)
    if column is not None and column.level == "core":
        return "null: core data (核心数据) never leaves"
    if name in policy.negative_listed:
        return "null: on the negative list (负面清单)"
    return None


def _identifier(name: str, policy: Policy) -> bool:
    column = policy.columns.get(name)
    if name == policy.privacy_unit:
        return True
    return column is not None and (column.direct_identifier or column.rule == "pseudonym")


def _encoder(
    name: str, dtype: pl.DataType, spec: SyntheticSpec, policy: Policy, keys: Mapping[str, tuple[Any, ...]]
) -> Encoder | None:
    source = spec.source
    if name in spec.bins:
        if not dtype.is_numeric():
            raise source.error(("bins", name), f"bins: '{name}' is {dtype}, not a number (不是数值字段)")
        return Binned(name, spec.bins[name], dtype)
    if name in spec.years:
        if not dtype.is_temporal():
            raise source.error(("years", name), f"years: '{name}' is {dtype}, not a date (不是日期字段)")
        first, last = spec.years[name]
        return Years(name, first, last, dtype, policy.domains.reference_date)
    if name in keys:
        return Categorical(name, keys[name], dtype)
    span = policy.domains.year_span(name)
    if dtype.is_temporal() and span is not None:
        return Years(name, span[0], span[1], dtype, policy.domains.reference_date)
    top = policy.columns[name].params.get("top") if name in policy.columns else None
    if dtype.is_numeric() and isinstance(top, int | float) and top > 0:
        return Binned(name, one_two_five(float(top)), dtype)
    return None


def column_plan(
    spec: SyntheticSpec,
    policy: Policy,
    table: TableLike,
    schema: Mapping[str, pl.DataType],
    keys: Mapping[str, tuple[Any, ...]],
) -> tuple[tuple[Encoder, ...], dict[str, str]]:
    """The encoders of the modelled columns (in schema order) and how every column is filled."""
    wanted = spec.columns
    for column in wanted or ():
        if column not in schema:
            hint = " (it is derived from birth_date: list birth_date)" if column == "birth_year" else ""
            raise spec.source.error(
                ("columns",), f"columns: '{column}' is not a column of the dataset's schema{hint}"
            )
    encoders: list[Encoder] = []
    fill: dict[str, str] = {}
    for name, dtype in schema.items():
        protected = _protected(name, policy)
        if protected is not None:
            fill[name] = protected
        elif _identifier(name, policy):
            fill[name] = IDENTIFIER_FILL
        elif name not in table.columns:
            fill[name] = "null: not usable in DP releases"
        elif wanted is not None and name not in wanted:
            fill[name] = "null: not in the spec's columns"
        elif (encoder := _encoder(name, dtype, spec, policy, keys)) is not None:
            encoders.append(encoder)
            fill[name] = "modelled: " + encoder.describe()
        elif wanted is not None:
            raise spec.source.error(
                ("columns",),
                f"columns: '{name}' has no public domain; declare it under keys (values), bins (numbers) "
                "or years (dates) / 该列没有公开取值域",
                "dpx-keys",
            )
        else:
            fill[name] = "null: no public domain (declare keys, bins or years in the spec to model it)"
    if not encoders:
        raise ConfigError(
            f"nothing to synthesise in '{policy.dataset}': no usable column has a public domain; "
            "declare keys, bins or years in the spec / 没有可建模的列",
            reason="dpx-keys",
        )
    return tuple(encoders), fill
