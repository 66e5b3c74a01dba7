"""The restricted raw tables as the DP engine sees them.

``RawTables.frame`` keeps a local, read-only copy of each raw register (fetched from
MinIO's ``raw`` bucket, checked against its SHA-256, keyed by it so a regenerated table
is fetched again) and returns a lazy *DP view* of it: only the columns the policy lets
DP queries use, plus the privacy-unit identifier for contribution bounding; amounts
rounded to whole units (the engine sums integers exactly; rounding each row is a
row-by-row map, so the guarantee is unchanged); ``birth_year`` derived from the birth
date. Nothing here ever leaves the gateway except through ``lab.dp``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from lab import registers, storage
from lab.dp import FrameMeta, PrivacyUnit
from lab.errors import NotFound
from lab.hashing import file_sha256
from lab.policy import Policy, dp_columns
from lab.settings import Settings
from lab.store import layout

META_TTL = 5.0  # seconds a raw table's metadata is trusted before MinIO is asked again


@dataclass(frozen=True)
class Table:
    frame: pl.LazyFrame
    meta: FrameMeta
    unit: PrivacyUnit
    columns: tuple[str, ...]  # what queries may name
    rows: int


def dp_view(frame: pl.LazyFrame, policy: Policy) -> tuple[pl.LazyFrame, tuple[str, ...]]:
    """The columns DP queries may use (and the unit identifier), amounts as integers."""
    schema = frame.collect_schema()
    allowed = [c for c in dp_columns(policy) if c in schema]
    exprs: list[pl.Expr] = []
    for name in allowed:
        dtype = schema[name]
        exprs.append(pl.col(name).round(0).cast(pl.Int64) if dtype.is_float() else pl.col(name))
    if "birth_date" in allowed:
        exprs.append(pl.col("birth_date").dt.year().cast(pl.Int64).alias("birth_year"))
        allowed.append("birth_year")
    identifier = policy.privacy_unit
    if identifier and identifier not in allowed:
        exprs.append(pl.col(identifier))
    return frame.select(exprs), tuple(allowed)


class RawTables:
    """Local copies of the raw registers, and their DP views."""

    def __init__(self, settings: Settings, policies: Mapping[str, Policy]) -> None:
        self.settings = settings
        self.policies = policies
        self.directory = settings.home / "gateway" / "raw-cache"
        self._lock = threading.Lock()
        # dataset -> (checked at, DP view, raw sha256): no MinIO round trip on every query
        self._tables: dict[str, tuple[float, Table, str]] = {}

    def _local(self, dataset: str, meta: dict[str, object]) -> Path:
        path = self.directory / f"{dataset}-{str(meta['sha256'])[:16]}.parquet"
        with self._lock:
            if path.exists():
                return path
            self.directory.mkdir(parents=True, exist_ok=True)
            client = storage.root_client(self.settings)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".part")
            os.close(fd)
            try:
                client.fget_object(layout.RAW_BUCKET, layout.raw_object(dataset), tmp)
                if file_sha256(Path(tmp)) != meta["sha256"]:
                    raise NotFound(
                        f"The raw table of {dataset!r} changed while it was fetched; try again. "
                        "/ 原始数据表在读取时发生了变化，请重试"
                    )
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
            for stale in self.directory.glob(f"{dataset}-*.parquet"):
                if stale != path:
                    stale.unlink(missing_ok=True)
        return path

    def policy(self, dataset: str) -> Policy:
        policy = self.policies.get(dataset)
        if policy is None:
            known = ", ".join(sorted(self.policies))
            raise NotFound(f"Unknown dataset {dataset!r}; known: {known}. / 未知数据集 {dataset}。")
        return policy

    def table(self, dataset: str) -> Table:
        """The DP view of ``dataset``; rebuilt when the raw table changed, checked every few seconds."""
        cached = self._tables.get(dataset)
        if cached is not None and time.monotonic() - cached[0] < META_TTL:
            return cached[1]
        policy = self.policy(dataset)
        meta = registers.require_raw(storage.root_client(self.settings), dataset)
        if cached is not None and cached[2] == meta["sha256"]:
            self._tables[dataset] = (time.monotonic(), cached[1], cached[2])
            return cached[1]
        table = self._build(dataset, policy, meta)
        self._tables[dataset] = (time.monotonic(), table, str(meta["sha256"]))
        return table

    def _build(self, dataset: str, policy: Policy, meta: dict[str, object]) -> Table:
        frame, columns = dp_view(pl.scan_parquet(self._local(dataset, meta)), policy)
        rows = int(str(meta["rows"]))
        identifier = policy.privacy_unit if policy.max_rows > 1 else None
        unit = PrivacyUnit(max_rows=policy.max_rows, identifier=identifier)
        frame_meta = FrameMeta.from_lazyframe(frame, policy.domains.keys(columns), max_rows=max(rows, 1))
        return Table(frame, frame_meta, unit, columns, rows)
