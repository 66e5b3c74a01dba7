"""Column types of text sources, and the streaming Parquet writer every source ends in.

CSV and Excel cells arrive as text. ``infer`` picks each column's type from the first batch,
cautiously: a whole number of at most 15 digits without a leading zero is ``Int64`` (so
resident ID numbers, bank cards, phone numbers with a ``+`` and codes like ``0532`` stay
text, their leading zeros and check characters intact), a decimal number ``Float64``, an ISO
date ``Date``, an ISO date and time ``Datetime``; anything else, and a column empty in the
first batch, stays ``String``. ``conform`` casts a later batch to those types; a value that
does not fit raises :class:`Widen` with the wider type the column needs, and the import
starts again with it (the written part is discarded, nothing was published).

``ParquetSink`` writes batches to one zstd Parquet file in row groups of ``ROW_GROUP`` rows
(memory is bounded by one row group, not by the table) and returns the row count and the
SHA-256 of the file (hashed as it is written).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 131_072

INT = r"^-?(?:0|[1-9][0-9]{0,14})$"
FLOAT = r"^-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,3})?$"
DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DATETIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}$"
PATTERNS: dict[str, str] = {"Int64": INT, "Float64": FLOAT, "Date": DATE, "Datetime": DATETIME}
DTYPES: dict[str, pl.DataType] = {
    "Int64": pl.Int64(),
    "Float64": pl.Float64(),
    "Date": pl.Date(),
    "Datetime": pl.Datetime("us"),
    "String": pl.String(),
}


class Widen(Exception):  # a signal to start again, not an error a user meets
    """Column ``column`` holds a value its inferred type cannot take: it becomes ``to``."""

    def __init__(self, column: str, to: str) -> None:
        super().__init__(column, to)
        self.column = column
        self.to = to


def _cast(name: str, kind: str) -> pl.Expr:
    text = pl.col(name).str.replace("T", " ", literal=True) if kind == "Datetime" else pl.col(name)
    if kind == "Date":
        return text.str.to_date("%Y-%m-%d", strict=True)
    if kind == "Datetime":
        return text.str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=True)
    return text.cast(DTYPES[kind], strict=True)


def _fits(frame: pl.DataFrame, name: str, kind: str) -> bool:
    column = frame.get_column(name)
    if kind == "String":
        return True
    values = column.drop_nulls()
    if values.is_empty() or not values.str.contains(PATTERNS[kind]).all():
        return False
    try:
        frame.select(_cast(name, kind))
    except pl.exceptions.PolarsError:  # e.g. 2024-02-30; the message may quote it: dropped
        return False
    return True


def infer(frame: pl.DataFrame) -> dict[str, str]:
    """Each text column's type, judged by the values of ``frame`` (the first batch)."""
    return {
        name: next(kind for kind in (*PATTERNS, "String") if _fits(frame, name, kind))
        for name in frame.columns
    }


def _wider(frame: pl.DataFrame, name: str, kind: str) -> str:
    if kind == "Int64" and _fits(frame, name, "Float64"):
        return "Float64"
    return "String"


def conform(frame: pl.DataFrame, kinds: dict[str, str]) -> pl.DataFrame:
    """``frame`` (text columns) cast to ``kinds``; :class:`Widen` if a value does not fit."""
    exprs = []
    for name in frame.columns:
        kind = kinds[name]
        if kind == "String":
            exprs.append(pl.col(name))
            continue
        bad = frame.get_column(name).drop_nulls().str.contains(PATTERNS[kind]).not_().any()
        if bad:
            raise Widen(name, _wider(frame, name, kind))
        exprs.append(_cast(name, kind).alias(name))
    try:
        return frame.select(exprs)
    except pl.exceptions.PolarsError:
        for name in frame.columns:  # which one (a value its pattern admits but the calendar does not)
            if kinds[name] != "String" and not _fits(frame, name, kinds[name]):
                raise Widen(name, _wider(frame, name, kinds[name])) from None
        raise


@dataclass(frozen=True)
class Written:
    path: Path
    rows: int
    sha256: str
    bytes: int
    schema: pa.Schema


class _Hashing(io.RawIOBase):
    """A file written front to back (as Parquet is), hashed on the way: no second read."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        return self._file.write(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self._file.close()
        super().close()


class ParquetSink:
    """Append Polars or Arrow batches to one Parquet file; ``close`` gives rows and SHA-256."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _Hashing(path)
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, batch: pl.DataFrame | pa.RecordBatch | pa.Table) -> None:
        table = batch.to_arrow() if isinstance(batch, pl.DataFrame) else batch
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._pending or self._schema is None:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._file, self._schema, compression="zstd")
        self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP)
        self._pending, self._pending_rows = [], 0

    def close(self, empty_schema: pa.Schema | None = None) -> Written:
        """Finish the file (an empty table with ``empty_schema`` if nothing was written)."""
        self._flush()
        if self._writer is None:
            self._schema = self._schema or empty_schema or pa.schema([])
            self._writer = pq.ParquetWriter(self._file, self._schema, compression="zstd")
        self._writer.close()
        self._file.close()
        assert self._schema is not None
        return Written(self.path, self.rows, self._file.digest.hexdigest(), self._file.size, self._schema)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            if self._writer is not None:
                self._writer.close()
            self._file.close()


def polars_schema(schema: pa.Schema) -> dict[str, pl.DataType]:
    """Column name to Polars type, for policy validation."""
    return dict(pl.DataFrame(schema.empty_table()).schema)
