"""Synthetic public registers of Zibo: generators, catalogue and Parquet writer.

Four registers describe one synthetic city. They are generated from a ``seed`` and a scale
``rows`` (the number of residents), deterministically and in chunks, so memory stays flat
from 1 thousand to 10 million residents:

============================  ======================================================
``population`` (人口库)        exactly ``rows`` rows, one per resident
``legal_entity`` (法人库)      ``ceil(rows / 16)`` rows, one per entity
``utility`` (水电气暖)          12 rows (months of 2024) per household and per entity
``social_insurance`` (社保)     one row per employed person and month worked in 2024
============================  ======================================================

**How the tables link.** Every register is produced by walking the *same* population, block
by block (``population.PopulationStream``), and reading what it needs from each block. So
with the same ``(seed, rows)``:

- each ``social_insurance.resident_id`` and ``legal_entity.legal_rep_id`` is a
  ``population.resident_id``;
- each ``utility.household_id`` is a ``population.household_id``;
- each ``social_insurance.employer_credit_code`` and ``utility.credit_code`` is a
  ``legal_entity.credit_code`` (credit codes are a pure function of seed and entity index).

Generate all four with the same ``seed`` and ``rows`` to get a consistent city; a different
``rows`` is a different city. Output does not depend on ``chunk_rows``.

Resident ID numbers carry a real Zibo region code, the birth date and a GB 11643 check
character, and are unique; credit codes carry a GB 11714 organisation code and a GB 32100
check character, and are unique.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from lab.errors import ConfigError
from lab.hashing import file_sha256
from lab.registry.catalogue import DATASETS, DatasetInfo, dataset
from lab.synthetic.codes import (
    REGIONS,
    is_valid_credit_code,
    is_valid_resident_id,
)
from lab.synthetic.population import PersonBlock, PopulationStream, person_frame
from lab.synthetic.registers import (
    entity_count,
    entity_frame,
    social_insurance_frame,
    utility_frame,
)

__all__ = [
    "DATASETS",
    "REGIONS",
    "DatasetInfo",
    "Progress",
    "WriteResult",
    "dataset",
    "expected_rows",
    "generate",
    "is_valid_credit_code",
    "is_valid_resident_id",
    "write_parquet",
]

DEFAULT_CHUNK_ROWS = 262_144
Progress = Callable[[int, int], None]
"""Called as ``progress(residents_done, residents_total)`` after each generation block."""

_Builder = Callable[[PersonBlock, int, int], pl.DataFrame]
_BUILDERS: dict[str, _Builder] = {
    "population": lambda block, seed, rows: person_frame(block, seed),
    "legal_entity": entity_frame,
    "utility": utility_frame,
    "social_insurance": social_insurance_frame,
}


@dataclass(frozen=True)
class WriteResult:
    """What ``write_parquet`` wrote."""

    path: Path
    rows: int
    sha256: str  # hex digest of the Parquet file's bytes


def expected_rows(name: str, rows: int) -> int:
    """About how many rows ``generate(name, rows, ...)`` yields (exact for the first two)."""
    dataset(name)
    if name == "population":
        return rows
    if name == "legal_entity":
        return entity_count(rows)
    if name == "utility":
        return round((rows / 2.63 + entity_count(rows)) * 12)
    return round(rows * 0.36 * 11.6)


def _check_arguments(rows: int, seed: int, chunk_rows: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (随机种子必须是非负整数), got {seed!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigError(f"rows must be a positive integer (行数必须是正整数), got {rows!r}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be positive (分块行数必须为正), got {chunk_rows!r}")


def generate(
    name: str,
    rows: int,
    seed: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield the register ``name`` of a city of ``rows`` residents, ``chunk_rows`` rows at a time.

    Every chunk has exactly ``chunk_rows`` rows except the last; columns and types follow
    ``DATASETS[name].schema``. Raises ``NotFound`` for an unknown name, ``ConfigError`` for a
    bad ``rows``, ``seed`` or ``chunk_rows``.
    """
    info = dataset(name)
    _check_arguments(rows, seed, chunk_rows)
    stream = PopulationStream(seed, rows)
    return _chunks(info, stream, chunk_rows, progress)


def _chunks(
    info: DatasetInfo, stream: PopulationStream, chunk_rows: int, progress: Progress | None
) -> Iterator[pl.DataFrame]:
    builder = _BUILDERS[info.name]
    casts = [pl.col(column).cast(dtype) for column, dtype in info.schema.items()]
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    for block in stream.blocks():
        frame = builder(block, stream.seed, stream.rows).select(casts)
        pending.append(frame)
        pending_rows += frame.height
        while pending_rows >= chunk_rows:
            whole = pl.concat(pending, rechunk=False)
            yield whole.slice(0, chunk_rows).rechunk()
            rest = whole.slice(chunk_rows)
            pending, pending_rows = [rest], rest.height
        if progress is not None:
            progress(block.start + block.size, stream.rows)
    if pending_rows:
        yield pl.concat(pending).rechunk()


def write_parquet(
    name: str,
    path: str | os.PathLike[str],
    rows: int,
    seed: int,
    progress: Progress | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> WriteResult:
    """Generate register ``name`` into one Parquet file at ``path``, chunk by chunk.

    The file appears at ``path`` only when complete (written beside it, then renamed); a
    failure leaves no file. Returns the row count and the SHA-256 of the file.
    """
    target = Path(path)
    info = dataset(name)
    temporary = target.with_name(f".{target.name}.partial")
    written = 0
    schema = pl.DataFrame(schema=dict(info.schema)).to_arrow().schema
    try:
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            for chunk in generate(name, rows, seed, chunk_rows=chunk_rows, progress=progress):
                writer.write_table(chunk.to_arrow().cast(schema), row_group_size=chunk_rows)
                written += chunk.height
        digest = file_sha256(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return WriteResult(path=target, rows=written, sha256=digest)
