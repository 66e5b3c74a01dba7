#!/usr/bin/env python3
"""Benchmark DP extracts on a population register: DP tables and DP synthetic data.

A population register of ``--rows`` residents is generated into Parquet
(``lab.synthetic.write_parquet``) and read through the gateway's DP view
(``lab.rawtables.dp_view``), as the gateway does. Each kind runs in its own process
(so ``peak_rss_mb`` is its own) and prints one JSON line::

    {"bench": "dpextract", "kind": "dp-table", "rows": 1000000, "seconds": ..., "baseline_s": ...,
     "ratio": ..., "peak_rss_mb": ..., ...}

* ``dp-table``: four count tables (district × sex × age band, district × education,
  district × marital status, sex × age band) at ε = 1 in all, built with
  ``lab.dpextract.build_tables``; baseline: the exact Polars group-by of the same tables
  on the same view. Also reports the share of cells whose 95% interval holds the truth.
* ``dp-synthetic``: ``lab.dpextract.synthesize`` at ε = 1 (every pair of the five
  quasi-identifiers); baseline: the exact Polars group-by of the same ten two-way
  marginals. Also reports the worst total-variation distance between the synthetic and
  the true one- and two-way marginals of the quasi-identifiers (birth date by year).

``seconds`` is the median of ``--repeats`` runs (the first, ``cold_s``, included).

Usage: bench/bench_dpextract.py [--rows 1000000] [--repeats 3] [--kinds dp-table dp-synthetic]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("dp-table", "dp-synthetic")
EPSILON = 1.0
SEED = 20240601
QUASI = ["sex", "birth_date", "district", "education", "marital_status"]
GROUPINGS = [
    ["district", "sex", "age_band"],
    ["district", "education"],
    ["district", "marital_status"],
    ["sex", "age_band"],
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(first run, median, last result) in seconds."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times), result


def _table(path: Path) -> Any:
    """The gateway's Table for the Parquet file (as RawTables.table builds it)."""
    import polars as pl

    from lab.dp import FrameMeta, PrivacyUnit
    from lab.policy import load_policies
    from lab.rawtables import Table, dp_view

    policy = load_policies(ROOT / "policies")["population"]
    frame, columns = dp_view(pl.scan_parquet(path), policy)
    rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    meta = FrameMeta.from_lazyframe(frame, policy.domains.keys(columns), max_rows=rows)
    return Table(frame, meta, PrivacyUnit(1), columns, rows), policy


def _tables_line(path: Path, repeats: int) -> dict[str, Any]:
    import polars as pl

    from lab import dpextract
    from lab.dpextract.spec import AgeBand
    from lab.dpextract.view import age_band_expr

    table, policy = _table(path)
    spec = {"epsilon": EPSILON, "tables": [{"name": f"t{i}", "group_by": g} for i, g in enumerate(GROUPINGS)]}
    reference = policy.domains.reference_date
    view = table.frame.with_columns(age_band_expr(AgeBand(), reference.year))

    def exact() -> list[pl.DataFrame]:
        return [view.group_by(g).agg(pl.len().alias("truth")).collect() for g in GROUPINGS]

    truths = exact()  # also warms the file cache
    cold, seconds, (frames, summary) = _timed(lambda: dpextract.build_tables(spec, table, policy), repeats)
    peak = _peak_rss_mb()
    _, baseline, _ = _timed(exact, repeats)
    hits = cells = 0
    for (_, frame), truth, grouping in zip(frames, truths, GROUPINGS, strict=True):
        joined = frame.join(truth, on=grouping, how="left").fill_null(0)
        hits += int(((joined["truth"] >= joined["ci_low"]) & (joined["truth"] <= joined["ci_high"])).sum())
        cells += joined.height
    return {
        "seconds": round(seconds, 4),
        "cold_s": round(cold, 4),
        "baseline": "exact Polars group-by of the same tables",
        "baseline_s": round(baseline, 4),
        "ratio": round(seconds / baseline, 2),
        "peak_rss_mb": round(peak, 1),
        "epsilon": summary.epsilon,
        "tables": len(frames),
        "cells": cells,
        "ci95_coverage": round(hits / cells, 4),
    }


def _tvd(a: Any, b: Any, by: list[str]) -> float:
    import polars as pl

    pa = a.group_by(by).agg((pl.len() / a.height).alias("p"))
    pb = b.group_by(by).agg((pl.len() / b.height).alias("q"))
    joined = pa.join(pb, on=by, how="full", coalesce=True, nulls_equal=True).fill_null(0.0)
    return 0.5 * float((joined["p"] - joined["q"]).abs().sum())


def _synthetic_line(path: Path, repeats: int) -> dict[str, Any]:
    import polars as pl

    from lab import dpextract

    table, policy = _table(path)
    pairs = [list(p) for p in itertools.combinations(QUASI, 2)]
    view = table.frame.with_columns(pl.col("birth_date").dt.year())

    def exact() -> list[pl.DataFrame]:
        return [view.group_by(p).agg(pl.len()).collect() for p in pairs]

    exact()
    cold, seconds, (synthetic, summary) = _timed(
        lambda: dpextract.synthesize({"epsilon": EPSILON}, table, policy), repeats
    )
    peak = _peak_rss_mb()
    _, baseline, _ = _timed(exact, repeats)
    truth = pl.read_parquet(path, columns=QUASI).with_columns(pl.col("birth_date").dt.year())
    fake = synthetic.with_columns(pl.col("birth_date").dt.year())
    worst = max(_tvd(truth, fake, list(by)) for k in (1, 2) for by in itertools.combinations(QUASI, k))
    report = dpextract.synthetic_report(summary, policy)
    return {
        "seconds": round(seconds, 4),
        "cold_s": round(cold, 4),
        "baseline": "exact Polars group-by of the same two-way marginals",
        "baseline_s": round(baseline, 4),
        "ratio": round(seconds / baseline, 2),
        "peak_rss_mb": round(peak, 1),
        "epsilon": summary.epsilon,
        "model": summary.model,
        "marginals": len(summary.plan.marginals),
        "synthetic_rows": summary.rows,
        "worst_qi_tvd": round(worst, 4),
        "reported_worst_tvd_bound": round(report["worst_tvd_bound"], 4),
    }


def run_one(kind: str, path: Path, rows: int, repeats: int) -> dict[str, Any]:
    line = _tables_line(path, repeats) if kind == "dp-table" else _synthetic_line(path, repeats)
    return {"bench": "dpextract", "kind": kind, "rows": rows, **line, "repeats": repeats}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--one", nargs=3, metavar=("KIND", "ROWS", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, rows, path = args.one[0], int(args.one[1]), Path(args.one[2])
        print(json.dumps(run_one(kind, path, rows, args.repeats), ensure_ascii=False), flush=True)
        return 0
    from lab.synthetic import write_parquet

    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-dpextract-") as tmp:
        path = Path(tmp) / "population.parquet"
        write_parquet("population", path, args.rows, SEED)
        for kind in args.kinds:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                kind,
                str(args.rows),
                str(path),
                "--repeats",
                str(args.repeats),
            ]
            failed += subprocess.run(cmd).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
