"""Read a sample of every column of a CSV or Parquet file in bounded memory.

The file is read once, in record batches (Arrow's streaming CSV reader, Parquet row groups);
each column keeps at most ``2 x cap`` of its non-empty values, evenly spread over the file:
when a column's sample outgrows that, every second kept value is dropped and from then on
only every second (fourth, ...) row is looked at (a sparse column keeps a shorter stride).
Memory is bounded by the batch size and the caps, not by the file. Whole-file passes are
only a count of quote bytes (a quote never closed) and, on the error path, Python's ``csv``.

CSV files are UTF-8 (a BOM is allowed) or GB18030. The first MiB decides which is tried
first; a file that turns out not to be UTF-8 further on is read again as GB18030. A file in
neither is refused, naming the line of the first byte that fits neither. A malformed row
(wrong number of fields, a quote never closed) is refused naming file and line: the fast
reader only notices that something is wrong, and Python's ``csv`` module then finds the
line (physical lines, so a quoted field spanning lines counts each line).

Excel files are not read: no Excel reader is installed in the lab's environment (save the
sheet as CSV or Parquet). Errors never quote the file's content.
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lab.discovery.checks import is_bank_card, is_credit_code, is_mobile, is_resident_id
from lab.discovery.patterns import EMAIL_PATTERN
from lab.errors import ConfigError, NotFound

DEFAULT_CAP = 100_000
BLOCK_SIZE = 4 << 20  # bytes of CSV per batch (Arrow reads a few blocks ahead)
PARQUET_BATCH = 65_536  # rows per Parquet batch
HEAD_BYTES = 1 << 20


@dataclass
class Sample:
    """What was read: row count, encoding, and per column a sample of its non-empty values."""

    path: str
    format: str  # "csv" or "parquet"
    encoding: str | None  # "utf-8" or "gb18030" for CSV
    rows: int = 0
    values: dict[str, pl.Series] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    empty: dict[str, int] = field(default_factory=dict)  # null or blank values per column


class _Sampler:
    """Evenly spread samples of up to ``2 x cap`` non-empty values per column."""

    def __init__(self, cap: int, path: Path) -> None:
        self.cap = cap
        self.path = path
        self.rows = 0
        self.chunks: dict[str, list[pl.Series]] = {}
        self.kept: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self.stride: dict[str, int] = {}
        self.empty: dict[str, int] = {}
        self.dtypes: dict[str, str] = {}

    def add(self, frame: pl.DataFrame) -> None:
        """Take this batch's share of every column (one Polars query for all columns)."""
        self.rows += frame.height
        exprs = []
        for name, dtype in frame.schema.items():
            if name not in self.chunks:
                self.chunks[name], self.kept[name], self.seen[name] = [], 0, 0
                self.stride[name], self.empty[name] = 1, 0
                self.dtypes[name] = str(dtype)
            if not _textual(dtype):
                continue
            # Every stride-th row (from where the last batch left off), then blanks dropped:
            # a sparse column keeps a short stride, as only its kept values count.
            stride = self.stride[name]
            offset = (stride - self.seen[name] % stride) % stride
            self.seen[name] += frame.height
            text = pl.col(name).cast(pl.String)
            taken = text.gather_every(stride, offset) if stride > 1 else text
            exprs += [
                taken.filter(taken.str.len_bytes() > 0).implode().alias(name),
                (text.is_null() | (text.str.len_bytes() == 0)).sum().alias(f"{name}\0empty"),
            ]
        if not exprs:
            return
        try:
            row = frame.select(exprs)
        except pl.exceptions.PolarsError:  # its message may quote a value: not passed on
            raise ConfigError(
                f"{self.path}: a column cannot be read as text (无法将列读取为文本)", reason="unreadable"
            ) from None
        for name in self.chunks:
            if name not in row.columns:
                continue
            kept = _compact(row.get_column(name).explode().drop_nulls())
            self.empty[name] += int(row.get_column(f"{name}\0empty").item())
            self.chunks[name].append(kept)
            self.kept[name] += kept.len()
            if self.kept[name] > 2 * self.cap:
                merged = pl.concat(self.chunks[name]).gather_every(2)
                self.chunks[name], self.kept[name] = [merged], merged.len()
                self.stride[name] *= 2

    def sample(self, path: str, fmt: str, encoding: str | None) -> Sample:
        values = {}
        for name, chunks in self.chunks.items():
            series = pl.concat(chunks) if chunks else pl.Series(name, [], pl.String)
            series = series.str.strip_chars()
            series = series.filter(series != "")  # blank values (only spaces) are empty too
            if series.len() > self.cap:
                series = series.gather_every(math.ceil(series.len() / self.cap))
            values[name] = series.rename(name)
        return Sample(path, fmt, encoding, self.rows, values, dict(self.dtypes), dict(self.empty))


def _compact(values: pl.Series) -> pl.Series:
    """``values`` in buffers of their own: a gathered string still points into its whole batch,
    and keeping it would keep every batch read (memory growing with the table, not the sample).
    """
    compact = pl.from_arrow(values.to_arrow())
    assert isinstance(compact, pl.Series)
    return compact.alias(values.name)


def _textual(dtype: pl.DataType) -> bool:
    """True for types scanned as text: strings, categories, numbers, dates, booleans."""
    return (
        dtype.is_numeric()
        or (dtype.is_temporal() and not isinstance(dtype, pl.Duration))
        or dtype == pl.String
        or dtype == pl.Boolean
        or isinstance(dtype, pl.Categorical | pl.Enum)
    )


def read_sample(path: str | Path, cap: int = DEFAULT_CAP) -> Sample:
    """A sample of up to ``cap`` non-empty values per column of a CSV or Parquet file.

    Raises ``NotFound`` for a missing file and ``ConfigError`` (reason ``encoding``,
    ``malformed-row``, ``unsupported-format`` or ``unreadable``) naming file and line.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file (文件不存在)", reason="not-found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file (无法读取文件): {exc.strerror}") from None
    if head.startswith(b"PAR1") or path.suffix.lower() == ".parquet":
        return _read_parquet(path, cap)
    if head.startswith(b"PK\x03\x04") or path.suffix.lower() in (".xlsx", ".xls", ".xlsm"):
        raise ConfigError(
            f"{path}: Excel files cannot be scanned here: no Excel reader is installed "
            "(未安装 Excel 读取组件); save the sheet as CSV (UTF-8) or Parquet and scan that",
            reason="unsupported-format",
        )
    return _read_csv(path, head, cap)


def _read_parquet(path: Path, cap: int) -> Sample:
    sampler = _Sampler(cap, path)
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            sampler.add(frame)
    except (pa.ArrowException, OSError):
        raise ConfigError(
            f"{path}: not a readable Parquet file (无法读取 Parquet 文件)", reason="unreadable"
        ) from None
    return sampler.sample(str(path), "parquet", None)


class _NotUtf8(Exception):
    """The file is not UTF-8 after all: read it again as GB18030."""


def _first_encoding(path: Path, head: bytes) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head:
        raise _encoding_error(path, "the file looks like UTF-16 or binary data")
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"  # a character cut by the end of the head
    return "gb18030"


def _encoding_error(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"{path}: unknown text encoding (无法识别的文本编码): {why}; save the file as UTF-8 or "
        "GB18030 (请将文件另存为 UTF-8 或 GB18030 编码)",
        reason="encoding",
    )


def _bad_line(path: Path, encoding: str) -> int | None:
    """The line of the first byte that cannot be decoded in ``encoding``, or None."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    line, pending = 1, b""
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # The error position is inside this chunk (plus what the decoder held back).
                data = pending + chunk
                return line + data[: max(exc.start, 0)].count(b"\n")
            if not chunk:
                return None
            state = decoder.getstate()[0]
            line += (pending + chunk).count(b"\n") - state.count(b"\n")
            pending = state


def _read_csv(path: Path, head: bytes, cap: int) -> Sample:
    encoding = _first_encoding(path, head)
    if encoding == "utf-8":
        try:
            return _read_csv_as(path, "utf-8", cap)
        except _NotUtf8:
            encoding = "gb18030"
    line = _bad_line(path, "gb18030")
    if line is not None:
        utf8_line = _bad_line(path, "utf-8")
        raise _encoding_error(
            path, f"not UTF-8 (line {utf8_line}) and not GB18030 (line {line}) (第 {line} 行无法解码)"
        )
    return _read_csv_as(path, "gb18030", cap)


def _header(path: Path, encoding: str) -> list[str]:
    with path.open("r", encoding="utf-8-sig" if encoding == "utf-8" else encoding, newline="") as handle:
        try:
            header = next(csv.reader(handle), None)
        except (csv.Error, UnicodeDecodeError):
            header = None
    if not header:
        raise ConfigError(
            f"{path}:1: the CSV file has no header row (CSV 文件缺少表头)", reason="malformed-row"
        )
    seen: set[str] = set()
    for i, name in enumerate(header, 1):
        if _looks_like_data(name):
            # A file without a header: its first row would be printed as column names.
            raise ConfigError(
                f"{path}:1: the first row holds data (column {i} is an identifier), not column names "
                "(首行是数据而不是列名); add a header row",
                reason="malformed-row",
            )
        if not name.strip():
            raise ConfigError(f"{path}:1: column {i} has no name (第 {i} 列没有列名)", reason="malformed-row")
        if name in seen:
            raise ConfigError(f"{path}:1: duplicate column name {name!r} (列名重复)", reason="malformed-row")
        seen.add(name)
    return header


def _looks_like_data(name: str) -> bool:
    """True if a header cell is itself an identifier (ID, credit code, card, phone, e-mail)."""
    name = name.strip()
    checks = (is_resident_id, is_credit_code, is_bank_card, is_mobile)
    return any(check(name) for check in checks) or re.fullmatch(EMAIL_PATTERN, name) is not None


def _batches(path: Path, encoding: str, header: list[str]) -> Iterator[pl.DataFrame]:
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=encoding, block_size=BLOCK_SIZE),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
    )
    for batch in reader:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        yield frame


def _read_csv_as(path: Path, encoding: str, cap: int) -> Sample:
    header = _header(path, encoding)
    sampler = _Sampler(cap, path)
    try:
        for frame in _batches(path, encoding, header):
            sampler.add(frame)
    except UnicodeDecodeError:
        raise _encoding_error(path, f"not {encoding.upper()} throughout") from None
    except pa.ArrowInvalid as exc:
        if encoding == "utf-8" and "UTF8" in str(exc):
            raise _NotUtf8 from None
        error = _malformed(path, encoding, len(header))
        raise error or ConfigError(
            f"{path}: the CSV file cannot be parsed (CSV 文件无法解析)", reason="malformed-row"
        ) from None
    if _odd_quotes(path):  # Arrow takes a quote never closed to run to the end of the file
        error = _malformed(path, encoding, len(header))
        if error is not None:
            raise error
    return sampler.sample(str(path), "csv", encoding)


def _odd_quotes(path: Path) -> bool:
    """True if the file holds an odd number of quote bytes (0x22 is never part of a GB18030
    multi-byte character, so bytes can be counted in either encoding)."""
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            count += chunk.count(b'"')
    return count % 2 == 1


def _malformed(path: Path, encoding: str, width: int) -> ConfigError | None:
    """The error naming the first malformed row (found with Python's csv module), if any."""
    text_encoding = "utf-8-sig" if encoding == "utf-8" else encoding
    with path.open("r", encoding=text_encoding, newline="") as handle:
        reader = csv.reader(handle, strict=True)
        start = 1
        try:
            for row in reader:
                if row and len(row) != width:
                    return ConfigError(
                        f"{path}:{start}: malformed CSV row: expected {width} fields, found {len(row)} "
                        f"(CSV 行格式错误：应有 {width} 个字段，实际 {len(row)} 个)",
                        reason="malformed-row",
                    )
                start = reader.line_num + 1
        except csv.Error:
            return ConfigError(
                f"{path}:{start}: malformed CSV row: a quoted field is not closed or has stray quotes "
                "(CSV 行格式错误：引号不匹配)",
                reason="malformed-row",
            )
    return None


def csv_encoding(path: str | Path, encoding: str | None = None) -> str:
    """The encoding of a CSV file: ``encoding`` if the whole file decodes in it, otherwise the
    first of UTF-8 and GB18030 that decodes the whole file. ``ConfigError`` (reason
    ``encoding``) naming the line that fits neither. One decoding pass over the file.
    """
    path = Path(path)
    tried = [encoding] if encoding else ["utf-8", "gb18030"]
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not encoding:
        _first_encoding(path, head)  # refuses UTF-16 and binary data
    lines = {}
    for name in tried:
        line = _bad_line(path, name)
        if line is None:
            return name
        lines[name] = line
    where = " and ".join(f"not {name.upper()} (line {line})" for name, line in lines.items())
    raise _encoding_error(path, f"{where} (第 {min(lines.values())} 行无法解码)")


def csv_frames(path: str | Path, encoding: str, block_size: int = BLOCK_SIZE) -> Iterator[pl.DataFrame]:
    """Every row of a CSV file in ``encoding``, as batches of text columns (empty fields null).

    The header is checked first; a malformed row (wrong number of fields, a quote never
    closed) raises ``ConfigError`` (reason ``malformed-row``) naming file and line, also after
    the last batch (a quote never closed runs to the end of the file). Errors never quote
    the file's content.
    """
    path = Path(path)
    header = _header(path, encoding)
    try:  # opening reads the first block: it may already meet a malformed row
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(encoding=encoding, block_size=block_size),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
            ),
        )
        for batch in reader:
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame
    except UnicodeDecodeError:
        raise _encoding_error(path, f"not {encoding.upper()} throughout") from None
    except pa.ArrowInvalid:
        error = _malformed(path, encoding, len(header))
        raise error or ConfigError(
            f"{path}: the CSV file cannot be parsed (CSV 文件无法解析)", reason="malformed-row"
        ) from None
    if _odd_quotes(path):
        error = _malformed(path, encoding, len(header))
        if error is not None:
            raise error


Sampler = _Sampler

__all__ = ["DEFAULT_CAP", "Sample", "Sampler", "csv_encoding", "csv_frames", "read_sample"]
