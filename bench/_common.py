"""What the benches share: peak memory, timing, and one JSON line from a child process."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(first run, median of ``repeats`` runs) in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times)


def child_json(cmd: Sequence[str], timeout: float | None = None) -> dict[str, Any] | None:
    """Run ``cmd`` (which prints one JSON object on its last line); None on timeout or failure."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])
