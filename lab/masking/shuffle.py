"""A keyed random row order for a whole extract, in bounded memory.

Scatter-shuffle: every row goes to one of ``B`` buckets by a keyed hash of its position
(streaming, one partitioned sink), then each bucket is read, permuted in memory with a seeded
generator and appended to the output. Uniform assignment to buckets followed by a uniform
permutation within each bucket is a uniform permutation of all rows, and memory is bounded by
one bucket (about ``BUCKET_ROWS`` rows) instead of the whole extract.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

BUCKET_ROWS = 500_000
PART_ROW_GROUP = 32_768
# The extract is written with pyarrow: Polars' Parquet writer spends several times longer on
# columns of millions of distinct pseudonyms (its dictionary attempt) than on everything else.
ROW_GROUP = 256 * 1024


def keyed_order(lazy: pl.LazyFrame, seed: int) -> pl.LazyFrame:
    """All rows in a keyed random order, in memory (for small tables)."""
    return lazy.with_row_index("__order").sort(pl.col("__order").hash(seed)).drop("__order")


def sink_shuffled(
    lazy: pl.LazyFrame, target: Path, seed: int, rows_hint: int, *, distinct: Sequence[str] = ()
) -> None:
    """Write ``lazy`` to the Parquet file ``target`` in a keyed random order.

    ``distinct``: columns of (nearly) all-distinct values, such as pseudonyms, written without a
    dictionary attempt or min/max statistics (both cost time and tell nothing about them).
    """
    buckets = max(1, -(-rows_hint // BUCKET_ROWS))
    columns = list(lazy.collect_schema())
    options = _write_options(columns, distinct)
    if buckets == 1:
        frame = keyed_order(lazy, seed).collect(engine="streaming").rechunk()
        pq.write_table(_arrow(frame), target, row_group_size=ROW_GROUP, **options)
        return
    parts = target.with_name(f"{target.name}.parts")
    try:
        bucketed = lazy.with_row_index("__order").with_columns(
            (pl.col("__order").hash(seed) % buckets).alias("__bucket")
        )
        bucketed.sink_parquet(  # scratch parts, read back once: not worth compressing
            pl.PartitionByKey(parts, by="__bucket", include_key=False),
            compression="uncompressed",
            row_group_size=PART_ROW_GROUP,  # each open part buffers at most one row group
            engine="streaming",
            mkdir=True,
        )
        writer: pq.ParquetWriter | None = None
        # The extract is written in a second thread (pyarrow's encoder releases the GIL) while the
        # next bucket is read and permuted: at most two buckets are held at once. On an error the
        # pool waits for the write in flight before the writer is closed.
        try:
            with ThreadPoolExecutor(max_workers=1) as background:
                pending: Future[None] | None = None
                for bucket in range(buckets):
                    table = _permuted(parts / f"__bucket={bucket}", columns, (seed + bucket) % (1 << 64))
                    if table is None:
                        continue
                    if pending is not None:
                        pending.result()
                    if writer is None:
                        writer = pq.ParquetWriter(target, table.schema, **options)
                    pending = background.submit(writer.write_table, table, row_group_size=ROW_GROUP)
                if pending is not None:
                    pending.result()
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            lazy.limit(0).sink_parquet(target, compression="zstd", engine="streaming")
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _write_options(columns: list[str], distinct: Sequence[str]) -> dict[str, Any]:
    ordinary = [c for c in columns if c not in distinct]
    return {"compression": "zstd", "use_dictionary": ordinary, "write_statistics": ordinary}


def _permuted(folder: Path, columns: list[str], seed: int) -> pa.Table | None:
    """The rows of one bucket's scratch parts in a seeded random order (None if it has none)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    # one chunk per column first: a gather across chunks is several times slower
    frame = pl.read_parquet(files).drop("__order").rechunk()
    return _arrow(frame.sample(fraction=1.0, shuffle=True, seed=seed).select(columns))


def _arrow(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as Arrow without copying its strings (string views, as Polars holds them; the
    Parquet file stores plain strings either way, read back by Polars as ``String``)."""
    return frame.to_arrow(compat_level=pl.CompatLevel.newest())
