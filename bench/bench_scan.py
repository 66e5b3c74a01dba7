"""Benchmark: sensitive-data discovery on a 1M-row CSV; compare with a plain Polars read.

A synthetic CSV with mixed columns (resident ID numbers, mobile numbers, bank cards, names,
addresses, amounts, payment dates, counts and a free-text remark with phone numbers in a
third of its rows; all under uninformative names) is written once, then two phases run in
fresh processes (so each peak RSS is its own):

- ``plain_read``: ``pl.read_csv(path)``, the yardstick;
- ``scan``: ``lab.discovery.scan_source(path)`` (read in batches, sample up to 100k values per
  column, classify every column).

Prints one JSON line per size: rows/s and peak RSS of each phase, the ratio of scan time to
the plain read, and how many columns the scan flagged as direct identifiers (5 planted)::

    python bench/bench_scan.py                 # 1M rows
    python bench/bench_scan.py --rows 200000
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

PLANTED = 5  # resident ID, mobile, bank card, name, address; the remark counts as a sixth


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _digits(rng: Any, rows: int, width: int) -> Any:
    return rng.integers(0, 10, size=(rows, width))


def _strings(matrix: Any) -> Any:
    import numpy as np
    import polars as pl

    text = np.ascontiguousarray(matrix.astype(np.uint8) + ord("0")).view(f"S{matrix.shape[1]}").ravel()
    return pl.Series(text).cast(pl.String)


def _write_csv(path: str, rows: int, seed: int) -> dict[str, Any]:
    """A CSV of ``rows`` rows with valid check characters in the planted columns."""
    import numpy as np
    import polars as pl

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    # Resident ID numbers (GB 11643): region, birth date, order code, ISO 7064 MOD 11-2 check.
    region = rng.choice([370302, 370303, 110105, 440305, 510104], rows)
    born = np.datetime64("1940-01-01") + rng.integers(0, 80 * 365, rows).astype("timedelta64[D]")
    ymd = np.char.replace(np.datetime_as_string(born, unit="D"), "-", "").astype(np.int64)
    body = np.concatenate(
        [(region[:, None] // 10 ** np.arange(5, -1, -1)) % 10,
         (ymd[:, None] // 10 ** np.arange(7, -1, -1)) % 10,
         _digits(rng, rows, 3)], axis=1,
    )  # fmt: skip
    weights = np.array([pow(2, 17 - i, 11) for i in range(17)])
    check = (12 - (body @ weights) % 11) % 11  # 10 is X
    ids = _strings(body) + pl.Series(np.where(check == 10, "X", check.astype(str)))
    # Bank cards: 62 + 16 random digits + the Luhn digit (19 digits).
    card = np.concatenate([np.tile([6, 2], (rows, 1)), _digits(rng, rows, 16)], axis=1)
    doubled = card[:, ::-1].copy()
    doubled[:, ::2] *= 2
    doubled[doubled > 9] -= 9
    cards = _strings(card) + pl.Series(((10 - doubled.sum(axis=1) % 10) % 10).astype(str))
    mobile = _strings(
        np.concatenate([np.ones((rows, 1)), rng.integers(3, 10, (rows, 1)), _digits(rng, rows, 9)], 1)
    )
    surname, given = (
        list("王李张刘陈杨黄赵吴周徐孙马朱胡郭"),
        list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平"),
    )
    names = (
        pl.Series(rng.choice(surname, rows))
        + pl.Series(rng.choice(given, rows))
        + pl.Series(rng.choice(given, rows))
    )
    roads = pl.Series(rng.choice(["共青团路", "人民路", "柳泉路", "华光路", "金晶大道"], rows))
    addresses = "山东省淄博市张店区" + roads + pl.Series(rng.integers(1, 300, rows)).cast(pl.String) + "号"
    with_phone = rng.random(rows) < 0.33
    remark = pl.Series(np.where(with_phone, "客户来电，请回拨", "已处理，无需回访")) + pl.Series(
        np.where(with_phone, mobile.to_numpy(), "")
    )
    frame = pl.DataFrame(
        {
            "c1": ids,
            "c2": mobile,
            "c3": cards,
            "c4": names,
            "c5": addresses,
            "c6": pl.Series(rng.uniform(0, 50_000, rows)).round(2),
            "c7": pl.Series(
                np.datetime64("2024-01-01") + rng.integers(0, 366, rows).astype("timedelta64[D]")
            ),
            "c8": pl.Series(rng.integers(0, 500, rows)),
            "c9": remark,
        }
    )
    frame.write_csv(path)
    return {"seconds": time.perf_counter() - start, "rows": rows}


def _plain_read(path: str) -> dict[str, Any]:
    import polars as pl

    start = time.perf_counter()
    frame = pl.read_csv(path)
    return {"seconds": time.perf_counter() - start, "rows": frame.height}


def _scan(path: str) -> dict[str, Any]:
    from lab.discovery import scan_source

    start = time.perf_counter()
    result = scan_source(path)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": result.rows,
        "direct_identifiers": sum(c.identifier == "direct" for c in result.columns),
        "kinds": {c.column: c.kind for c in result.columns},
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


def bench(rows: int, seed: int, workdir: Path) -> dict[str, Any]:
    """Write the CSV, then time the plain read and the scan; the JSON-ready record."""
    path = str(workdir / f"scan-{rows}.csv")
    written = _in_fresh_process(_write_csv, path, rows, seed)
    size_mb = round(Path(path).stat().st_size / 2**20, 1)
    plain = _in_fresh_process(_plain_read, path)
    scan = _in_fresh_process(_scan, path)
    Path(path).unlink(missing_ok=True)
    return {
        "bench": "scan",
        "rows": rows,
        "csv_mb": size_mb,
        "seconds": scan["seconds"],
        "rows_per_s": scan["rows_per_s"],
        "peak_rss_mb": scan["peak_rss_mb"],
        "write": written,
        "plain_read": plain,
        "scan": scan,
        "scan_vs_plain_read": round(scan["seconds"] / plain["seconds"], 2),
        "planted_found": scan["direct_identifiers"] >= PLANTED,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows (repeatable); default 1M")
    parser.add_argument("--seed", type=int, default=20250630)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the CSV")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for rows in args.rows or [1_000_000]:
            print(json.dumps(bench(rows, args.seed, Path(tmp)), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
