#!/usr/bin/env python3
"""Benchmark the DP engine beside the exact Polars aggregate and OpenDP's Context API.

For each query and each table size, prints one JSON line::

    {"bench": "dp", "query": "truncated_count_by_district", "rows": 20000000, "p50_s": ...,
     "exact_p50_s": ..., "streaming_p50_s": ..., "context_p50_s": ..., "ratio_to_exact": ...,
     "ratio_to_streaming": ..., "speedup_vs_context": ..., "peak_rss_mb": ..., "same_scale": ..., ...}

The queries: count, bounded sum and mean of income by district (one row per person
vouched by the policy), ``truncated_count_by_district`` (at most 12 rows per person, by
``person_id``: OpenDP's ``truncate_per_group(12)``) and ``median_income_by_district``
(101 candidates over the bounds). All read the same synthetic register (person-months:
each ``person_id`` has 12 rows, in one home district of 8 public ones; integer income
and age), written with numpy in row groups of 1M rows into a temporary directory, so that
100M rows fit in the generator's memory too.

Each measurement runs in its own process, so each ``*peak_rss_mb`` is its own:
``exact`` is the same statistic in plain Polars (truncation with ``.over``, exact median,
in memory where Polars needs it), ``streaming`` the plain streaming aggregate of the same
shape (count / median by district without truncation), ``p50_s`` the engine with the
calibration cache warm, as in a running gateway (``cold_s`` is its first run), and the
Context API runs last with a timeout (``context_p50_s`` is null when it did not finish).
``same_scale`` compares the engine's previewed scales with ``Context.summarize()``.

Usage: bench/bench_dp.py [--rows 1000000 [10000000 ...]] [--repeats 7] [--context-repeats-large 3]
       [--context-timeout 600] [--queries NAME ...] [--parts ours streaming ...] [--data-dir DIR]
100,000,000 rows is opt-in (--rows 100000000); the exact in-memory baselines and the Context API
need about 9-13 GB there, so leave them out on a shared machine (--parts ours streaming scales).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT), str(ROOT / "bench")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from _common import child_json, peak_rss_mb, timed  # noqa: E402

DISTRICTS = ["张店区", "淄川区", "博山区", "临淄区", "周村区", "桓台县", "高青县", "沂源县"]
QUERIES = (
    "count_by_district",
    "sum_income_by_district",
    "mean_income_by_district",
    "truncated_count_by_district",
    "median_income_by_district",
)
PARTS = ("exact", "streaming", "ours", "scales", "context")
BOUNDS = (0, 150_000)
EPSILON = 1.0
PER_PERSON = 12  # rows per person_id (person-months of one year)
LARGE = 5_000_000  # from this size on, the Context API runs fewer times
CHUNK = 1_000_000


def generate(path: Path, rows: int) -> None:
    """Write the synthetic register in row groups of CHUNK rows (bounded memory at 100M rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20240601)
    districts = np.array(DISTRICTS, dtype=object)
    writer = None
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            first = start // PER_PERSON
            people = np.arange(first, (start + n + PER_PERSON - 1) // PER_PERSON, dtype=np.int64)
            pid = np.repeat(people, PER_PERSON)[start - first * PER_PERSON :][:n]
            rng.shuffle(pid)
            home = (people * 2654435761 % len(DISTRICTS)).astype(np.int64)  # one district per person
            table = pa.table(
                {
                    "person_id": pid,
                    "district": pa.array(districts[home[pid - first]], type=pa.string()),
                    "income": rng.lognormal(10.3, 0.6, n).astype(np.int64),
                    "age": rng.integers(0, 100, n),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=CHUNK)
    finally:
        if writer is not None:
            writer.close()


def _setup(query_name: str, path: Path) -> dict[str, Any]:
    """The engine's query, its meta, and the plain-Polars and Context versions of it."""
    import opendp.prelude as dp
    import polars as pl

    from lab import dp as labdp
    from lab.dp.plan import resolve

    dp.enable_features("contrib")
    scan = pl.scan_parquet(path)
    meta = labdp.FrameMeta.from_lazyframe(scan, public_keys={"district": DISTRICTS}, max_rows=10**9)
    income = pl.col("income")
    by = labdp.on("population").group_by("district")
    unit = dp.unit_of(contributions=1)
    truncate = None
    count = pl.len()
    if query_name == "count_by_district":
        query, exact_agg, context_agg = by.count(epsilon=EPSILON), count, dp.len(signed=True)
        streaming_agg = exact_agg
    elif query_name == "sum_income_by_district":
        query = by.sum("income", bounds=BOUNDS, epsilon=EPSILON)
        exact_agg, context_agg = income.sum(), income.dp.sum(BOUNDS)
        streaming_agg = exact_agg
    elif query_name == "mean_income_by_district":
        query = by.mean("income", bounds=BOUNDS, epsilon=EPSILON)
        exact_agg, context_agg = income.mean(), income.dp.mean(BOUNDS)
        streaming_agg = exact_agg
    elif query_name == "truncated_count_by_district":
        truncated = labdp.on("population", max_rows=PER_PERSON, identifier="person_id")
        query = truncated.group_by("district").count(epsilon=EPSILON)
        exact_agg, context_agg, streaming_agg = count, dp.len(signed=True), count
        unit, truncate = dp.unit_of(contributions=1, identifier="person_id"), PER_PERSON
    else:
        query = by.median("income", bounds=BOUNDS, epsilon=EPSILON)
        candidates = list(resolve(query, meta).candidates or ())
        exact_agg, context_agg = income.median(), income.dp.median(candidates)
        streaming_agg = exact_agg

    def exact() -> pl.DataFrame:
        lf = pl.scan_parquet(path)
        if truncate is not None:
            lf = lf.filter(pl.int_range(pl.len()).over("person_id") < truncate)
        return lf.group_by("district").agg(exact_agg).collect(engine="streaming")

    def streaming() -> pl.DataFrame:
        return pl.scan_parquet(path).group_by("district").agg(streaming_agg).collect(engine="streaming")

    def ours() -> labdp.Release:
        return labdp.release(query, pl.scan_parquet(path), meta)

    def context_query() -> Any:
        context = dp.Context.compositor(
            data=pl.scan_parquet(path),
            privacy_unit=unit,
            privacy_loss=dp.loss_of(epsilon=EPSILON),
            split_evenly_over=1,
            margins=[
                dp.polars.Margin(max_length=10**9),
                dp.polars.Margin(by=["district"], invariant="keys", max_length=10**9),
            ],
        )
        q = context.query()
        if truncate is not None:
            q = q.truncate_per_group(truncate)
        return q.group_by("district").agg(context_agg).with_keys(pl.LazyFrame({"district": DISTRICTS}))

    def context() -> pl.DataFrame:
        return context_query().release().collect()

    def scales() -> dict[str, Any]:
        return {
            "scale": [n.scale for n in labdp.preview(query, meta).noise],
            "context_scale": context_query().summarize()["scale"].to_list(),
        }

    return {"exact": exact, "streaming": streaming, "ours": ours, "context": context, "scales": scales}


def run_part(query_name: str, part: str, path: Path, repeats: int) -> dict[str, Any]:
    """One measurement in this process: (first, median) seconds and peak RSS, or the scales."""
    fns = _setup(query_name, path)
    if part == "scales":
        return fns["scales"]()
    fn: Callable[[], Any] = fns[part]
    first, p50 = timed(fn, repeats)
    return {"first_s": first, "p50_s": p50, "peak_rss_mb": peak_rss_mb()}


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, digits)


def measure(query_name: str, rows: int, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One JSON line: every part in its own process; the Context API with a timeout."""

    def part(name: str, repeats: int, timeout: float | None = None) -> dict[str, Any] | None:
        if name not in args.parts:
            return None
        cmd = [sys.executable, __file__, "--part", query_name, name, str(path), "--repeats", str(repeats)]
        return child_json(cmd, timeout=timeout)

    context_repeats = args.repeats if rows < LARGE else args.context_repeats_large
    exact, streaming = part("exact", args.repeats), part("streaming", args.repeats)
    ours, scales = part("ours", args.repeats), part("scales", 1, timeout=args.context_timeout)
    context = part("context", context_repeats, timeout=args.context_timeout * context_repeats)

    def get(result: dict[str, Any] | None, key: str, digits: int = 4) -> float | None:
        return None if result is None else round(result[key], digits)

    p50, exact_p50, streaming_p50 = get(ours, "p50_s"), get(exact, "p50_s"), get(streaming, "p50_s")
    context_p50 = get(context, "p50_s")
    return {
        "bench": "dp",
        "query": query_name,
        "rows": rows,
        "p50_s": p50,
        "exact_p50_s": exact_p50,
        "streaming_p50_s": streaming_p50,
        "context_p50_s": context_p50,
        "ratio_to_exact": _ratio(p50, exact_p50),
        "ratio_to_streaming": _ratio(p50, streaming_p50),
        "speedup_vs_context": _ratio(context_p50, p50, 1),
        "peak_rss_mb": get(ours, "peak_rss_mb", 1),
        "exact_peak_rss_mb": get(exact, "peak_rss_mb", 1),
        "streaming_peak_rss_mb": get(streaming, "peak_rss_mb", 1),
        "context_peak_rss_mb": get(context, "peak_rss_mb", 1),
        "cold_s": get(ours, "first_s"),
        "repeats": args.repeats,
        "context_repeats": context_repeats,
        "context_finished": context is not None,
        "epsilon": EPSILON,
        "scale": None if scales is None else scales["scale"],
        "context_scale": None if scales is None else scales["context_scale"],
        "same_scale": None if scales is None else scales["scale"] == scales["context_scale"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--context-repeats-large", type=int, default=3)
    parser.add_argument("--context-timeout", type=float, default=600.0, help="seconds per Context run")
    parser.add_argument("--queries", nargs="+", choices=QUERIES, default=list(QUERIES))
    parser.add_argument("--data-dir", type=Path, help="keep (and reuse) the generated registers here")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="e.g. leave out exact and context at 100M",
    )
    parser.add_argument("--part", nargs=3, metavar=("QUERY", "PART", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("PATH", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        generate(Path(args.generate[0]), int(args.generate[1]))
        return 0
    if args.part:
        name, part, path = args.part[0], args.part[1], Path(args.part[2])
        print(json.dumps(run_part(name, part, path, args.repeats), ensure_ascii=False), flush=True)
        return 0
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        folder = args.data_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for rows in args.rows:
            path = folder / f"register-{rows}.parquet"
            if not path.exists():
                generate(path, rows)
            for name in args.queries:
                line = measure(name, rows, path, args)
                failed += "ours" in args.parts and line["p50_s"] is None
                print(json.dumps(line, ensure_ascii=False), flush=True)
            if args.data_dir is None:
                path.unlink()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
