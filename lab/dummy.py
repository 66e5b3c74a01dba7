"""Dummy data (假数据) for writing notebook code without spending budget, like Lomas's dummy data.

A dummy frame has the columns and types of a dataset's DP view and fake values built only
from what is public: a column with a public domain in the policy takes values from that
domain; any other column gets made-up values of its type (``dummy-<column>-<n>`` for text,
numbers in a fixed range, dates over the domain's years or 2000–2024). No value is read
from the data, so nothing about it can leak and no budget is spent. Each frame is marked:
its last column ``DUMMY_COLUMN`` is true on every row.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

DUMMY_COLUMN = "_dummy"
NOTICE = (
    "DUMMY DATA: fake values of the right types, built from the schema and public domains only; "
    "no row is real and results mean nothing. Use it to write code, then run lab.dp(...). "
    "/ 假数据：仅按表结构与公开取值域生成，没有任何真实记录，结果没有意义；"
    "请用于编写代码，再用 lab.dp(...) 查询。"
)
TYPES: Mapping[str, pl.DataType] = {
    "String": pl.String(),
    "Int64": pl.Int64(),
    "Int32": pl.Int32(),
    "Int16": pl.Int16(),
    "Int8": pl.Int8(),
    "UInt64": pl.UInt64(),
    "UInt32": pl.UInt32(),
    "Float64": pl.Float64(),
    "Float32": pl.Float32(),
    "Boolean": pl.Boolean(),
    "Date": pl.Date(),
    "Categorical": pl.String(),
}


def dtype_of(text: str) -> pl.DataType:
    """The Polars type a schema names as text (``Datetime(...)`` as naive microseconds)."""
    if text.startswith("Datetime"):
        return pl.Datetime("us")
    if text.startswith(("Categorical", "Enum")):
        return pl.String()
    return TYPES.get(text, pl.String())


def _from_domain(values: Sequence[str], dtype: pl.DataType, n: int, rng: random.Random) -> list[Any]:
    picked = [rng.choice(list(values)) for _ in range(n)]
    if dtype == pl.Date():
        return [dt.date.fromisoformat(v[:10]) for v in picked]
    if isinstance(dtype, pl.Datetime):
        return [dt.datetime.fromisoformat(v) for v in picked]
    if dtype.is_integer():
        return [int(v) for v in picked]
    if dtype.is_float():
        return [float(v) for v in picked]
    return picked


def _made_up(
    column: str, dtype: pl.DataType, n: int, rng: random.Random, years: tuple[int, int]
) -> list[Any]:
    if dtype == pl.Boolean():
        return [rng.random() < 0.5 for _ in range(n)]
    if dtype.is_integer():
        return [rng.randint(0, 100) for _ in range(n)]
    if dtype.is_float():
        return [round(rng.uniform(0, 100), 2) for _ in range(n)]
    if dtype == pl.Date() or isinstance(dtype, pl.Datetime):
        first, last = dt.date(years[0], 1, 1).toordinal(), dt.date(years[1], 12, 31).toordinal()
        days = [dt.date.fromordinal(rng.randint(first, last)) for _ in range(n)]
        return days if dtype == pl.Date() else [dt.datetime(d.year, d.month, d.day) for d in days]
    return [f"dummy-{column}-{rng.randint(1, 20)}" for _ in range(n)]


def frame(
    columns: Mapping[str, str],
    public_keys: Mapping[str, Sequence[str]],
    *,
    years: Mapping[str, Sequence[int]] | None = None,
    rows: int = 100,
    seed: int = 0,
) -> pl.DataFrame:
    """``rows`` fake rows with ``columns`` (name -> type as text): values from ``public_keys``
    where a column has them, dates within the public span of ``years`` (``birth_year`` the
    year of ``birth_date``), made up otherwise; marked by ``DUMMY_COLUMN``."""
    rng = random.Random(seed)
    years = years or {}
    data: dict[str, pl.Series] = {}
    for name, text in columns.items():
        dtype = dtype_of(text)
        domain = public_keys.get(name)
        span = years.get(name)
        if domain:
            values = _from_domain(domain, dtype, rows, rng)
        else:
            first, last = (int(span[0]), int(span[1])) if span else (2000, 2024)
            values = _made_up(name, dtype, rows, rng, (first, last))
        data[name] = pl.Series(name, values, dtype=dtype)
    if "birth_year" in data and "birth_date" in data and data["birth_date"].dtype == pl.Date():
        data["birth_year"] = data["birth_date"].dt.year().cast(data["birth_year"].dtype)
    data[DUMMY_COLUMN] = pl.Series(DUMMY_COLUMN, [True] * rows, dtype=pl.Boolean())
    return pl.DataFrame(data)
