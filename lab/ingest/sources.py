"""Readers of a register's source: CSV, Parquet, Excel (.xlsx) files and PostgreSQL tables.

Each reader yields the table in batches (bounded memory) as Polars frames. CSV and Excel
cells arrive as text (``Source.text``): the importer types them (``lab.ingest.frames``).

- CSV: UTF-8 (a BOM is allowed) or GB18030, detected by decoding the whole file once, or
  named with ``--encoding``; read by Arrow's streaming reader (``lab.discovery.source``
  checks the header, and names file and line of a malformed row);
- Parquet: row groups in batches, types as stored;
- Excel: the first worksheet, read with openpyxl in read-only (streaming) mode, cached
  values of formulas (a formula is never evaluated), the first row the header; dates
  become ISO text and are typed like CSV dates;
- PostgreSQL: ``lab.ingest.postgres`` (a server-side cursor, types from the catalogue).

Column names must be ASCII names (``lab.validate.column``), as policies and DP queries
name them. Errors name the file (a URL without user or password), the line or the column
position, and never quote a cell.
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lab.discovery.source import csv_encoding, csv_frames
from lab.errors import ConfigError, NotFound
from lab.validate import InvalidInput, column

BATCH_ROWS = 65_536
# Encodings a CSV may name with --encoding; GBK and GB2312 are subsets of GB18030.
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "gb18030": "gb18030", "gbk": "gb18030", "gb2312": "gb18030"}
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass
class Source:
    """An opened source: what to call it in messages, its format, and its batches."""

    display: str  # safe to print and record: a file name, or a URL without credentials
    format: str  # csv | parquet | xlsx | postgresql
    encoding: str | None
    text: bool  # cells arrive as text and are typed by the importer
    read: Callable[[], Iterator[pl.DataFrame]]  # each call reads the source again from the start
    path: Path | None = None  # a file source, checked by ``verify``
    identity: tuple[int, ...] = ()

    def verify(self) -> None:
        """Refuse a file that was replaced or changed while it was read (nothing is published)."""
        if self.path is None:
            return
        try:
            now = _identity(self.path.lstat())  # a link put in its place has another identity
        except OSError:
            now = ()
        if now != self.identity:
            raise ConfigError(
                f"{self.path}: the file changed while it was imported; import it again once it is "
                "complete (导入过程中文件被修改，请在文件写完后重新导入)",
                reason="changed",
            )


def open_source(spec: str, encoding: str | None = None, password: str | None = None) -> Source:
    """The source named by ``spec``: a file path or a ``postgresql://…?table=…`` URL.

    ``password`` is a PostgreSQL password given apart from the URL (never in it).
    """
    if spec.startswith(POSTGRES_SCHEMES):
        from lab.ingest.postgres import open_table

        if encoding:
            raise ConfigError("--encoding applies to CSV files only (仅适用于 CSV 文件)", reason="encoding")
        return open_table(spec, password)
    path = Path(spec)
    identity = _identity(_regular(path))
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file (无法读取文件): {exc.strerror}") from None
    suffix = path.suffix.lower()
    if encoding and (head.startswith((b"PAR1", b"PK\x03\x04")) or suffix in (".parquet", ".xlsx")):
        raise ConfigError("--encoding applies to CSV files only (仅适用于 CSV 文件)", reason="encoding")
    if head.startswith(b"PAR1") or suffix == ".parquet":
        return Source(path.name, "parquet", None, False, lambda: _parquet(path), path, identity)
    if suffix == ".xls" or head.startswith(b"\xd0\xcf\x11\xe0"):
        raise ConfigError(
            f"{path}: old binary Excel (.xls) files are not read; save the sheet as .xlsx or CSV "
            "(请另存为 .xlsx 或 CSV)",
            reason="unsupported-format",
        )
    if head.startswith(b"PK\x03\x04") or suffix in (".xlsx", ".xlsm"):
        return Source(path.name, "xlsx", None, True, lambda: _excel(path), path, identity)
    chosen = csv_encoding(path, _encoding(encoding) if encoding else None)
    return Source(path.name, "csv", chosen, True, lambda: _csv(path, chosen), path, identity)


def _regular(path: Path) -> os.stat_result:
    """The file's status; refuses what is not one plain file of its own.

    A symbolic link or a second hard link could make an import read a file other than the
    one the operator named (say, planted in a drop directory others write to); a FIFO or a
    device would never end.
    """
    try:
        status = path.lstat()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file (文件不存在)", reason="not-found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file (无法读取文件): {exc.strerror}") from None
    if stat.S_ISLNK(status.st_mode):
        why = "is a symbolic link; name the file itself (是符号链接，请直接指定文件本身)"
    elif not stat.S_ISREG(status.st_mode):
        why = "is not a regular file (不是普通文件)"
    elif status.st_nlink > 1:
        why = "has other hard links; import a copy of it (文件存在其他硬链接，请导入其副本)"
    else:
        return status
    raise ConfigError(f"{path}: {why}", reason="bad-source")


def _identity(status: os.stat_result) -> tuple[int, ...]:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _encoding(name: str) -> str:
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        canonical = ""
    chosen = ENCODINGS.get(canonical.replace("_", "-"), ENCODINGS.get(name.lower()))
    if chosen is None:
        raise ConfigError(
            "--encoding: unknown or unsupported text encoding (无法识别或不支持的文本编码); "
            "use utf-8 or gb18030 (请使用 utf-8 或 gb18030)",
            reason="encoding",
        )
    return chosen


def check_columns(display: str, names: list[str]) -> None:
    """Every column name a valid ASCII name, each once; the error names the position only."""
    seen: set[str] = set()
    for i, name in enumerate(names, 1):
        try:
            column(name, f"column {i}")
        except InvalidInput:
            raise ConfigError(
                f"{display}: column {i} has a name policies cannot use; rename it with ASCII letters, "
                f"digits, '_', '.' or '-' (第 {i} 列的列名无效，请改用英文字母、数字、'_'、'.'、'-')",
                reason="bad-column",
            ) from None
        if name in seen:
            raise ConfigError(
                f"{display}: column {i} repeats the name of an earlier column (第 {i} 列列名重复)",
                reason="bad-column",
            )
        seen.add(name)


def _csv(path: Path, encoding: str) -> Iterator[pl.DataFrame]:
    first = True
    for frame in csv_frames(path, encoding):
        if first:
            check_columns(path.name, frame.columns)
            first = False
        yield frame


def _parquet(path: Path) -> Iterator[pl.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
        check_columns(path.name, parquet.schema_arrow.names)
        batches = parquet.iter_batches(batch_size=BATCH_ROWS)
        empty = True
        for batch in batches:
            empty = False
            yield _frame(batch)
        if empty:
            yield _frame(parquet.schema_arrow.empty_table())
    except (pa.ArrowException, OSError):
        raise ConfigError(
            f"{path}: not a readable Parquet file (无法读取 Parquet 文件)", reason="unreadable"
        ) from None


def _frame(batch: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _cell(value: Any) -> str | None:
    """An Excel cell as text (None for an empty cell); dates as ISO text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ", "seconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    text = str(value)
    return text if text.strip() else None


def _excel(path: Path) -> Iterator[pl.DataFrame]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception:  # zipfile.BadZipFile, openpyxl's InvalidFileException, KeyError, ...
        raise ConfigError(
            f"{path}: not a readable Excel (.xlsx) file (无法读取 Excel 文件)", reason="unreadable"
        ) from None
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [_cell(v) for v in next(rows, ())]
        while header and header[-1] is None:
            header.pop()
        if not header or any(h is None for h in header):
            raise ConfigError(
                f"{path}:1: the first row must name every column (首行必须是完整的列名)",
                reason="malformed-row",
            )
        names = [str(h).strip() for h in header]
        check_columns(path.name, names)
        width = len(names)
        chunk: list[list[str | None]] = []
        yielded = False
        for line, row in enumerate(rows, 2):
            cells = [_cell(v) for v in row]
            if any(c is not None for c in cells[width:]):
                raise ConfigError(
                    f"{path}:{line}: row {line} has values beyond the {width} named columns "
                    f"(第 {line} 行的值超出了表头的 {width} 列)",
                    reason="malformed-row",
                )
            if all(c is None for c in cells):
                continue
            chunk.append((cells + [None] * width)[:width])
            if len(chunk) >= BATCH_ROWS:
                yield _text_frame(names, chunk)
                chunk, yielded = [], True
        if chunk or not yielded:
            yield _text_frame(names, chunk)
    finally:
        book.close()


def _text_frame(names: list[str], rows: list[list[str | None]]) -> pl.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pl.DataFrame({n: pl.Series(n, list(c), pl.String) for n, c in zip(names, columns, strict=True)})
