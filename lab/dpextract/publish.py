"""Build a DP extract end to end, with the ledger and the storage passed in.

:func:`build_extract` runs the steps in a fixed order:

1. **plan** — parse and check the spec against the policy and the DP view, preview
   every mechanism (reads no data). A bad spec raises here: nothing is charged or written.
2. **reserve** — ``reserve(epsilon, delta, request)`` (the caller's ``Ledger.spend``)
   reserves exactly ``plan.epsilon``; a budget that cannot pay raises here
   (``BudgetExhausted``): nothing is computed or written.
3. **release** — inside the reservation: ``noise_drawn()``, the OpenDP mechanisms, the
   post-processing, the files in ``workdir``, then ``result(digest, ...)``. The ledger
   commits when the block ends (a failure before the noise refunds, after it charges).
4. **publish** — ``publish(files, manifest)`` (the caller's ``storage.publish``: files
   first, manifest last), only once the ledger's record is durable.

Files: a DP-table extract has one Parquet file per table (``<name>.parquet``); a
synthetic one has ``synthetic.parquet``, whose Parquet metadata says it is synthetic.
Both have ``utility.json`` (:mod:`lab.dpextract.report`). The manifest records the
kind, the normalised spec, ε, δ, the noise scales, the files' SHA-256, and who built it
and when; a synthetic extract's manifest has ``"synthetic": true`` and the method.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import pyarrow.parquet as pq

from lab.dpextract.report import synthetic_report, tables_report
from lab.dpextract.synth import SyntheticPlan, SyntheticSummary, plan_synthetic, release_synthetic
from lab.dpextract.tables import TablesPlan, TablesSummary, plan_tables, release_tables
from lab.dpextract.view import TableLike
from lab.errors import ConfigError
from lab.hashing import file_sha256
from lab.policy import Policy
from lab.store.layout import SYNTHETIC_DATA as SYNTHETIC_FILE
from lab.store.layout import UTILITY_REPORT as REPORT_FILE

KINDS = ("dp-table", "dp-synthetic")
SYNTHETIC_NOTICE = "SYNTHETIC DATA generated from differentially private marginals; no row is a real person"
SYNTHETIC_NOTICE_ZH = "合成数据：由差分隐私边际分布生成，任何一行都不是真实个人"


class SpendLike(Protocol):
    """What :meth:`lab.ledger.Ledger.spend` yields."""

    def noise_drawn(self) -> None: ...

    def result(self, digest: str, **details: Any) -> None: ...


Reserve = Callable[[float, float, str], AbstractContextManager[SpendLike]]
Publish = Callable[[dict[str, Path], dict[str, Any]], None]
Plan = TablesPlan | SyntheticPlan
Summary = TablesSummary | SyntheticSummary


@dataclass(frozen=True)
class Built:
    """A published DP extract."""

    kind: str
    manifest: dict[str, Any]
    files: dict[str, Path]
    summary: Summary


def plan_extract(kind: str, spec: Any, table: TableLike, policy: Policy) -> Plan:
    """Check ``spec`` for ``kind`` and return its plan (``plan.epsilon`` is what to reserve)."""
    if kind == "dp-table":
        return plan_tables(spec, table, policy)
    if kind == "dp-synthetic":
        return plan_synthetic(spec, table, policy)
    raise ConfigError(
        f"unknown DP extract kind {kind!r}; use one of {', '.join(KINDS)} (未知的 DP 数据产品类型)",
        reason="dpx-kind",
    )


def write_parquet(frame: pl.DataFrame, path: Path, metadata: Mapping[str, str]) -> None:
    """Parquet with ``metadata`` in the Arrow schema, so pyarrow, pandas and Polars all show it."""
    table = frame.to_arrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    pq.write_table(table, path, compression="zstd")


def _write_report(report: dict[str, Any], directory: Path) -> Path:
    path = directory / REPORT_FILE
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return path


def write_tables(
    frames: Sequence[tuple[str, pl.DataFrame]], summary: TablesSummary, directory: Path
) -> dict[str, Path]:
    """One Parquet file per table and ``utility.json``, in ``directory``."""
    files = {}
    for name, frame in frames:
        path = directory / f"{name}.parquet"
        metadata = {
            "datalab.kind": "dp-table",
            "datalab.dataset": summary.plan.dataset,
            "datalab.table": name,
        }
        write_parquet(frame, path, metadata)
        files[path.name] = path
    files[REPORT_FILE] = _write_report(tables_report(summary, frames), directory)
    return files


def write_synthetic(
    frame: pl.DataFrame, summary: SyntheticSummary, policy: Policy, directory: Path
) -> dict[str, Path]:
    """``synthetic.parquet`` (marked synthetic in its metadata) and ``utility.json``, in ``directory``."""
    path = directory / SYNTHETIC_FILE
    metadata = {
        "datalab.kind": "dp-synthetic",
        "datalab.synthetic": "true",
        "datalab.dataset": summary.plan.dataset,
        "datalab.notice": f"{SYNTHETIC_NOTICE} / {SYNTHETIC_NOTICE_ZH}",
    }
    write_parquet(frame, path, metadata)
    report = _write_report(synthetic_report(summary, policy), directory)
    return {SYNTHETIC_FILE: path, REPORT_FILE: report}


def _release(plan: Plan, policy: Policy, directory: Path) -> tuple[Summary, dict[str, Path]]:
    if isinstance(plan, TablesPlan):
        frames, tables = release_tables(plan)
        return tables, write_tables(frames, tables, directory)
    frame, synthetic = release_synthetic(plan)
    return synthetic, write_synthetic(frame, synthetic, policy, directory)


def _scales(summary: Summary) -> list[float]:
    if isinstance(summary, TablesSummary):
        return [t.preview.noise[0].scale for t in summary.plan.tables]
    return [m.preview.noise[0].scale for m in summary.plan.marginals]


def manifest(
    kind: str,
    summary: Summary,
    files: Mapping[str, Path],
    policy: Policy,
    about: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest of a DP extract; ``about`` adds organisation, version, created_by, source_sha256."""
    plan = summary.plan
    return {
        "kind": kind,
        "synthetic": kind == "dp-synthetic",
        "dataset": plan.dataset,
        **dict(about),
        "created_at": about.get("created_at") or datetime.now(UTC).isoformat(timespec="seconds"),
        "policy_sha256": policy.digest,
        "spec": plan.spec.to_dict(),
        "epsilon": summary.epsilon,
        "delta": summary.delta,
        "scales": _scales(summary),
        "release": summary.to_dict(),
        "result_digest": summary.digest,
        "files": {name: file_sha256(path) for name, path in files.items()},
        "utility_report": REPORT_FILE,
    }


def build_extract(
    kind: str,
    spec: Any,
    table: TableLike,
    policy: Policy,
    *,
    reserve: Reserve,
    publish: Publish,
    workdir: Path,
    about: Mapping[str, Any],
) -> Built:
    """Plan → reserve → release → publish a DP extract (see the module docstring for the rules)."""
    plan = plan_extract(kind, spec, table, policy)
    with reserve(plan.epsilon, plan.delta, plan.canonical()) as spend:
        workdir.mkdir(parents=True, exist_ok=True)
        spend.noise_drawn()
        summary, files = _release(plan, policy, workdir)
        spend.result(summary.digest, extract=kind, scales=_scales(summary))
    document = manifest(kind, summary, files, policy, about)
    publish(files, document)
    return Built(kind, document, files, summary)
