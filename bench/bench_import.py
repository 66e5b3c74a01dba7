"""Benchmark: ``datalab dataset import`` of a large CSV beside a plain Polars CSV -> Parquet.

The CSV is the discovery benchmark's synthetic register (``bench_scan``: resident ID
numbers, mobiles, bank cards, names, addresses, amounts, dates, counts, remarks), written
once per size and cached under ``~/.cache/datalab/bench``. Phases run in fresh processes (so
each peak RSS is its own):

- ``plain``: ``pl.scan_csv(path).sink_parquet(out)``, Polars' own streaming conversion, the
  yardstick;
- ``import``: ``lab.ingest.import_source`` without a policy, into a directory store: the
  encoding check, the streamed typing and Parquet writing with its SHA-256, the scanner's
  sample and draft policy, and the copy into the store (where MinIO's upload would be);
- ``scan``: ``lab.discovery.scan_source`` of a 1M-row file of the same kind.

Prints one JSON line per size: rows/s and peak RSS of the import, the ratio of its time to
the plain conversion, and the scan's rows/s. The acceptance size is 10M rows::

    python bench/bench_import.py                  # 10M rows (about 1.3 GB of CSV, cached)
    python bench/bench_import.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_scan import _in_fresh_process, _scan, _write_csv  # noqa: E402

CACHE = Path.home() / ".cache" / "datalab" / "bench"
SCAN_ROWS = 1_000_000


def _cached_csv(rows: int, seed: int) -> tuple[Path, dict[str, Any] | None]:
    """The CSV of ``rows`` rows, written now (and timed) unless it is cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"import-{rows}-{seed}.csv"
    if path.exists():
        return path, None
    partial = path.with_suffix(".partial")
    written = _in_fresh_process(_write_csv, str(partial), rows, seed)
    partial.rename(path)
    return path, written


def _plain(path: str, out: str) -> dict[str, Any]:
    import polars as pl

    start = time.perf_counter()
    pl.scan_csv(path).sink_parquet(out, compression="zstd")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": pl.scan_parquet(out).select(pl.len()).collect().item()}


def _import(path: str, workdir: str) -> dict[str, Any]:
    from lab.ingest import DirStore, import_source
    from lab.settings import load_settings

    settings = load_settings({"DATALAB_HOME": str(Path(workdir) / "home")})
    store = DirStore(Path(workdir) / "raw")
    start = time.perf_counter()
    done = import_source(settings, store, path, name="bench", actor="op.bench")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": done.rows,
        "parquet_mb": round(next((Path(workdir) / "raw").rglob("data.parquet")).stat().st_size / 2**20, 1),
        "types": {c["name"]: c["type"] for c in done.schema},
        "direct_identifiers": list(done.flagged),
    }


def bench(rows: int, seed: int, workdir: Path) -> dict[str, Any]:
    path, written = _cached_csv(rows, seed)
    plain = _in_fresh_process(_plain, str(path), str(workdir / "plain.parquet"))
    imported = _in_fresh_process(_import, str(path), str(workdir))
    scan_path = path if rows == SCAN_ROWS else _cached_csv(SCAN_ROWS, seed)[0]
    scan = _in_fresh_process(_scan, str(scan_path))
    scan.pop("kinds", None)
    return {
        "bench": "import",
        "rows": rows,
        "csv_mb": round(path.stat().st_size / 2**20, 1),
        "seconds": imported["seconds"],
        "rows_per_s": imported["rows_per_s"],
        "peak_rss_mb": imported["peak_rss_mb"],
        "write": written,
        "plain": plain,
        "import": imported,
        "import_vs_plain": round(imported["seconds"] / plain["seconds"], 2),
        "rss_vs_plain": round(imported["peak_rss_mb"] / plain["peak_rss_mb"], 2),
        "scan_1m": scan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows (repeatable); default 10M")
    parser.add_argument("--seed", type=int, default=20250630)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch space for the outputs")
    args = parser.parse_args(argv)
    for rows in args.rows or [10_000_000]:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            print(json.dumps(bench(rows, args.seed, Path(tmp)), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
