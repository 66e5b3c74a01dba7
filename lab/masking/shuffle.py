"""A keyed random row order for a whole extract, in bounded memory.

Scatter-shuffle: every row goes to one of ``B`` buckets by a keyed hash of its position
(streaming, one partitioned sink), then each bucket is read, permuted in memory with a seeded
generator and appended to the output. Uniform assignment to buckets followed by a uniform
permutation within each bucket is a uniform permutation of all rows, and memory is bounded by
one bucket (about ``BUCKET_ROWS`` rows) instead of the whole extract.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

BUCKET_ROWS = 500_000
PART_ROW_GROUP = 32_768
# The extract is written with pyarrow: Polars' Parquet writer spends several times longer on
# columns of millions of distinct pseudonyms (its dictionary attempt) than on everything else.
ROW_GROUP = 256 * 1024


def keyed_order(lazy: pl.LazyFrame, seed: int) -> pl.LazyFrame:
    """All rows in a keyed random order, in memory (for small tables)."""
    return lazy.with_row_index("__order").sort(pl.col("__order").hash(seed)).drop("__order")


def sink_shuffled(lazy: pl.LazyFrame, target: Path, seed: int, rows_hint: int) -> None:
    """Write ``lazy`` to the Parquet file ``target`` in a keyed random order."""
    buckets = max(1, -(-rows_hint // BUCKET_ROWS))
    if buckets == 1:
        frame = keyed_order(lazy, seed).collect(engine="streaming").rechunk()
        pq.write_table(frame.to_arrow(), target, row_group_size=ROW_GROUP, compression="zstd")
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
        schema = lazy.collect_schema()
        writer: pq.ParquetWriter | None = None
        try:
            for bucket in range(buckets):
                folder = parts / f"__bucket={bucket}"
                files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
                if not files:
                    continue
                # one chunk per column first: a gather across chunks is several times slower
                frame = pl.read_parquet(files).drop("__order").rechunk()
                frame = frame.sample(fraction=1.0, shuffle=True, seed=(seed + bucket) % (1 << 64))
                table = frame.select(list(schema)).to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(target, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=ROW_GROUP)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            lazy.limit(0).sink_parquet(target, compression="zstd", engine="streaming")
    finally:
        shutil.rmtree(parts, ignore_errors=True)
