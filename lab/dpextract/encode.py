"""Public encodings of columns for synthesis: value → code (row by row) and code → value.

A synthetic table is modelled over small integer codes, one per column, each with a
*public* domain, so that every measured marginal is a count over public keys (pure DP):

* :class:`Categorical` — the column's public keys (the policy's ``public_domains``, or
  declared in the spec); decoding returns the key;
* :class:`Binned` — a number cut at public edges (from the spec, else a 1-2-5 series from
  0 up to the policy's top-coding limit); values outside are clamped into the end bins;
  decoding draws uniformly within the bin;
* :class:`Years` — a date by its year over a public span (the spec's, else the policy's
  ``public_domains``: ``{years: [first, last]}``); decoding draws a day of that year, never
  after the policy's ``reference_date``.

Every domain ends with one more code, *missing*: nulls, NaN and values outside the
public domain. So every row is counted in every marginal (the marginals agree on the
number of rows) and the synthetic table has nulls where the source has them. Decoding is
post-processing of released measurements, so numpy's RNG is fine there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl

CODE = pl.UInt32


def _or_missing(codes: pl.Expr, missing: int, column: str) -> pl.Expr:
    return codes.fill_null(missing).cast(CODE).alias(column)


@dataclass(frozen=True)
class Categorical:
    """A column over its public keys (and *missing*)."""

    column: str
    keys: tuple[Any, ...]
    dtype: pl.DataType

    @property
    def size(self) -> int:
        return len(self.keys) + 1

    def describe(self) -> str:
        return f"categorical over {len(self.keys)} public keys (+ missing)"

    def expr(self) -> pl.Expr:
        source = pl.col(self.column)
        if isinstance(self.dtype, pl.Categorical | pl.Enum):
            source = source.cast(pl.String)
        codes = source.replace_strict(
            list(self.keys), list(range(len(self.keys))), default=None, return_dtype=CODE
        )
        return _or_missing(codes, len(self.keys), self.column)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pl.Series:
        keys = pl.Series(self.column, [*self.keys, None])
        return keys.gather(pl.Series(codes, dtype=CODE)).cast(self.dtype)


@dataclass(frozen=True)
class Binned:
    """A number cut at public ``edges`` (the first and last edge clamp the values)."""

    column: str
    edges: tuple[float, ...]
    dtype: pl.DataType

    @property
    def size(self) -> int:
        return len(self.edges)  # len(edges) - 1 bins, then missing

    def describe(self) -> str:
        return f"{len(self.edges) - 1} bins over [{self.edges[0]:g}, {self.edges[-1]:g}] (+ missing)"

    def expr(self) -> pl.Expr:
        value = pl.col(self.column).cast(pl.Float64)
        inner = [(value >= edge).cast(CODE) for edge in self.edges[1:-1]]
        codes = pl.sum_horizontal(inner) if inner else pl.lit(0, dtype=CODE)
        known = pl.when(value.is_null() | value.is_nan()).then(None).otherwise(codes)
        return _or_missing(known, self.size - 1, self.column)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pl.Series:
        missing = codes == self.size - 1
        bins = np.where(missing, 0, codes)
        edges = np.asarray(self.edges, dtype=np.float64)
        low, high = edges[bins], edges[bins + 1]
        if self.dtype.is_integer():
            lo = np.ceil(low).astype(np.int64)
            last = bins + 2 == self.size
            hi = np.where(last, np.floor(high), np.ceil(high) - 1).astype(np.int64)
            values = pl.Series(self.column, rng.integers(lo, np.maximum(hi, lo) + 1))
        else:
            values = pl.Series(self.column, np.round(rng.uniform(low, high), 2))
        return values.scatter(np.flatnonzero(missing), None).cast(self.dtype)


@dataclass(frozen=True)
class Years:
    """A date by its year, over the public span ``first``..``last`` (and *missing*)."""

    column: str
    first: int
    last: int
    dtype: pl.DataType
    until: date | None = None  # no synthetic date after this day (the policy's reference_date)

    @property
    def size(self) -> int:
        return self.last - self.first + 2

    def describe(self) -> str:
        return f"year of the date over {self.first}-{self.last} (+ missing), a random day within the year"

    def expr(self) -> pl.Expr:
        year = pl.col(self.column).dt.year().cast(pl.Int64)
        inside = pl.when((year >= self.first) & (year <= self.last)).then(year - self.first)
        return _or_missing(inside.otherwise(None), self.size - 1, self.column)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pl.Series:
        missing = codes == self.size - 1
        years = np.where(missing, 0, codes).astype(np.int64) + self.first
        start = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
        end = (years - 1969).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
        if self.until is not None:
            last_day = (self.until - date(1970, 1, 1)).days
            end = np.where(years == self.until.year, np.minimum(end, last_day + 1), end)
        days = rng.integers(start, np.maximum(end, start + 1))
        values = pl.Series(self.column, days.astype("datetime64[D]")).cast(pl.Date)
        return values.scatter(np.flatnonzero(missing), None).cast(self.dtype)


Encoder = Categorical | Binned | Years


def one_two_five(top: float) -> tuple[float, ...]:
    """Edges 0, 1, 2, 5, 10, 20, 50, … below ``top``, then ``top`` itself."""
    if top <= 0:
        return (0.0, 1.0)
    edges = [0.0]
    for power in range(0, max(1, math.ceil(math.log10(top))) + 1):
        edges += [m * 10.0**power for m in (1, 2, 5) if m * 10.0**power < top]
    return (*edges, float(top))
