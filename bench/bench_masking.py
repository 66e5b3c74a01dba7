"""Benchmark: generate and mask population registers; compare with a plain Polars copy.

For each size, three phases run in fresh processes (so each peak RSS is its own):

- ``generate``: ``lab.synthetic.write_parquet("population", ...)``;
- ``plain_copy``: ``pl.read_parquet(raw).write_parquet(copy)``, the yardstick;
- ``mask``: ``lab.masking.mask_parquet(raw, extract, policy, key)`` with the risk model on, as
  a grant without a household purpose gets it (the default: no household link; rows shuffled;
  the risk report measured); ``mask_household_link``: the same for a household-study purpose
  (household signatures planned and suppressed to k). ``risk_share`` is the share of the
  masking time spent in the risk model (household plan + measuring the release).

The copy and both builds run ``--repeat`` times (default 3), alternating; each figure is the run
of median time, with all runs' seconds in ``runs_seconds``. Prints one JSON line per size: rows/s
and peak RSS of each phase and the ratio of masking time to the plain copy (target: within
3x, under 2 GB at 10M rows)::

    python bench/bench_masking.py                 # 1M and 10M rows
    python bench/bench_masking.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_SECRET = b"bench-only-secret-not-for-real-use!"


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _generate(raw: str, rows: int, seed: int) -> dict[str, Any]:
    from lab.synthetic import write_parquet

    start = time.perf_counter()
    result = write_parquet("population", raw, rows, seed)
    return {"seconds": time.perf_counter() - start, "rows": result.rows}


def _plain_copy(raw: str, copy: str) -> dict[str, Any]:
    import polars as pl

    start = time.perf_counter()
    frame = pl.read_parquet(raw)
    frame.write_parquet(copy)
    return {"seconds": time.perf_counter() - start, "rows": frame.height}


def _mask(raw: str, extract: str, policies: str, purpose: str | None) -> dict[str, Any]:
    from lab.masking import OrgKey, build, mask_parquet
    from lab.policy import load_policies

    spent = {"risk": 0.0}
    originals = {name: getattr(build, name) for name in ("plan_households", "measure")}

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent["risk"] += time.perf_counter() - begin

        return run

    for name, function in originals.items():
        setattr(build, name, timed(function))
    policy = load_policies(policies)["population"]
    start = time.perf_counter()
    key = OrgKey("bench-org", BENCH_SECRET, "grant/1")
    report = mask_parquet(raw, extract, policy, key, purpose=purpose)
    seconds = time.perf_counter() - start
    assert report.risk is not None
    return {
        "seconds": seconds,
        "risk_share": round(spent["risk"] / seconds, 3),
        "risk_prosecutor_max": report.risk.records.prosecutor_max,
        "household_risk_max": None if report.risk.household is None else report.risk.household.risk_max,
        "rows": report.rows_in,
        "rows_out": report.rows_out,
        "k_achieved": report.k_achieved,
        "l_achieved": report.l_achieved,
    }


def _measured(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    result = function(*args)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _in_fresh_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(_measured, function, *args).result()
    result["rows_per_s"] = round(result["rows"] / result["seconds"])
    result["seconds"] = round(result["seconds"], 2)
    return result


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median time, with every run's seconds beside it."""
    ordered = sorted(runs, key=lambda r: float(r["seconds"]))
    return {**ordered[len(ordered) // 2], "runs_seconds": [r["seconds"] for r in runs]}


def bench(rows: int, seed: int, workdir: Path, policies: Path, repeat: int = 3) -> dict[str, Any]:
    """Run the phases for one size and return the JSON-ready record.

    The plain copy and both builds run ``repeat`` times, alternating, each in a fresh process;
    each figure is the run of median time (the 2-core yardstick varies by ±20 % between runs)."""
    raw, copy, extract = (
        str(workdir / f"population-{rows}-{name}.parquet") for name in ("raw", "copy", "masked")
    )
    generate = _in_fresh_process(_generate, raw, rows, seed)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "mask": [], "household": []}
    for _ in range(repeat):
        runs["plain"].append(_in_fresh_process(_plain_copy, raw, copy))
        runs["mask"].append(_in_fresh_process(_mask, raw, extract, str(policies), None))
        Path(extract).unlink(missing_ok=True)
        runs["household"].append(_in_fresh_process(_mask, raw, extract, str(policies), "household-study"))
        Path(extract).unlink(missing_ok=True)
    for path in (raw, copy, extract):
        Path(path).unlink(missing_ok=True)
    plain, mask, household = (_median(runs[k]) for k in ("plain", "mask", "household"))
    return {
        "rows": rows,
        "repeat": repeat,
        "generate": generate,
        "plain_copy": plain,
        "mask": mask,
        "mask_vs_plain_copy": round(mask["seconds"] / plain["seconds"], 2),
        "mask_household_link": household,
        "mask_household_link_vs_plain_copy": round(household["seconds"] / plain["seconds"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, action="append", help="population size (repeatable); default 1M and 10M"
    )
    parser.add_argument("--seed", type=int, default=20250630)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the Parquet files")
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed phase (median reported)")
    args = parser.parse_args(argv)
    sizes = args.rows or [1_000_000, 10_000_000]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for rows in sizes:
            print(json.dumps(bench(rows, args.seed, Path(tmp), args.policies, args.repeat)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
