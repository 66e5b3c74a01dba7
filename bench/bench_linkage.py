#!/usr/bin/env python3
"""Benchmark: the linkage attacks of tests/security/test_linkage.py at 1,000,000 residents.

Runs the pure-logic attacks of that test module (household signature, in-organisation join,
legal representatives, two-organisation alignment by position and by signature, trajectory
uniqueness) on masked extracts of the demo registers generated at ``--residents``, with the
test's own assertions (every rate ≤ 1/k = 0.2), and beside them, in the same run, at the
demo size (100,000 residents) as the baseline. Prints one JSON line per attack::

    {"bench": "linkage", "attack": ..., "residents": 1000000, "rate": ..., "limit": 0.2,
     "baseline_residents": 100000, "baseline_rate": ..., "ratio": ..., "passed": true,
     "seconds": ..., "peak_rss_mb": ...}

``ratio`` is rate / baseline_rate (null when the baseline is 0); ``passed`` is whether the
test module's assertions held at that size. ``peak_rss_mb`` is that of the test process.

Usage: bench/bench_linkage.py [--residents 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASELINE = 100_000
LIMIT = 0.2


def _run(residents: int, workdir: Path) -> dict[str, Any]:
    """Run the module's pure-logic attacks at ``residents``; their rates, outcome, time, memory."""
    report = workdir / f"linkage-{residents}.xml"
    env = {**os.environ, "DATALAB_LINKAGE_RESIDENTS": str(residents), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "security and not integration",
            "-o",
            "junit_family=xunit1",
            f"--junitxml={report}",
            "tests/security/test_linkage.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.perf_counter() - started
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    rates: dict[str, float] = {}
    failed: set[str] = set()
    for case in ET.parse(report).getroot().iter("testcase"):
        for prop in case.iter("property"):
            rates[prop.get("name", "")] = float(prop.get("value", "nan"))
        if case.find("failure") is not None or case.find("error") is not None:
            failed.update(p.get("name", "") for p in case.iter("property"))
            failed.add(case.get("name", ""))
    if done.returncode not in (0, 1):  # 1: assertions failed, reported per attack below
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
        raise SystemExit(f"bench linkage: pytest exited {done.returncode} at {residents} residents")
    return {"rates": rates, "failed": failed, "seconds": seconds, "peak_rss_mb": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = _run(BASELINE, Path(tmp))
        big = _run(args.residents, Path(tmp))
    for attack, rate in sorted(big["rates"].items()):
        baseline = base["rates"].get(attack)
        line = {
            "bench": "linkage",
            "attack": attack,
            "residents": args.residents,
            "rate": round(rate, 4),
            "limit": LIMIT,
            "baseline_residents": BASELINE,
            "baseline_rate": None if baseline is None else round(baseline, 4),
            "ratio": round(rate / baseline, 2) if baseline else None,
            "passed": attack not in big["failed"] and rate <= LIMIT,
            "seconds": round(big["seconds"], 1),
            "baseline_seconds": round(base["seconds"], 1),
            "peak_rss_mb": round(big["peak_rss_mb"], 1),
        }
        print(json.dumps(line, ensure_ascii=False), flush=True)
    return 0 if not big["failed"] and all(r <= LIMIT for r in big["rates"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
