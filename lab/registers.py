"""The bureau's raw registers in MinIO's restricted ``raw`` bucket, and their catalogue.

``generate`` writes each synthetic register (``lab.synthetic``) as one Parquet object
``raw/<dataset>/<dataset>.parquet`` with ``raw/<dataset>/meta.json`` beside it (rows,
SHA-256, seed, scale, time). Only the bureau's services hold the credentials for this
bucket. ``catalogue`` joins that metadata with the dataset descriptions and each column's
classification from its policy, for ``datalab dataset list``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minio import Minio

from lab import storage, synthetic
from lab.errors import NotFound
from lab.policy import Policy, load_policies
from lab.registry.catalogue import DATASETS
from lab.registry.catalogue import dataset as catalogue_entry
from lab.settings import Settings
from lab.store import layout
from lab.store.layout import raw_object


@dataclass(frozen=True)
class RawTable:
    dataset: str
    rows: int
    sha256: str
    object_name: str


def generate(
    settings: Settings,
    *,
    rows: int,
    seed: int,
    names: Iterable[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[RawTable]:
    """Generate registers (all by default) at scale ``rows`` residents into the raw bucket."""
    client = storage.root_client(settings)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in names or DATASETS:
        catalogue_entry(name)  # NotFound for an unknown name, before any work
        report = None if progress is None else (lambda done, total, n=name: progress(n, done, total))
        with tempfile.TemporaryDirectory(dir=settings.work_dir) as tmp:
            written = synthetic.write_parquet(name, Path(tmp) / f"{name}.parquet", rows, seed, report)
            meta = {
                "dataset": name,
                "rows": written.rows,
                "sha256": written.sha256,
                "seed": seed,
                "scale": rows,
                "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            # The data object first, its metadata last: a table counts as present once meta.json does.
            client.fput_object(layout.RAW_BUCKET, raw_object(name), str(written.path))
            storage.put_json(client, layout.RAW_BUCKET, layout.raw_meta(name), meta)
        tables.append(RawTable(name, written.rows, written.sha256, raw_object(name)))
    return tables


def raw_meta(client: Minio, dataset: str) -> dict[str, Any] | None:
    """The metadata of a generated raw table, or None if it was never generated."""
    return storage.read_json(client, layout.RAW_BUCKET, layout.raw_meta(dataset))


def require_raw(client: Minio, dataset: str) -> dict[str, Any]:
    meta = raw_meta(client, catalogue_entry(dataset).name)
    if meta is None:
        raise NotFound(
            f"Dataset {dataset!r} has no raw table yet; run 'datalab dataset generate' first. "
            f"/ 数据集 {dataset} 尚无原始数据，请先运行 datalab dataset generate。"
        )
    return meta


def _columns(policy: Policy | None) -> list[dict[str, Any]]:
    if policy is None:
        return []
    return [
        {
            "name": c.name,
            "level": c.level,
            "pi": c.pi,
            "rule": c.rule,
            "negative_list": c.name in policy.negative_listed,
        }
        for c in policy.columns.values()
    ]


def catalogue(settings: Settings) -> list[dict[str, Any]]:
    """Every register: description, owner, rows and update time, and each column's classification."""
    client = storage.root_client(settings)
    policies = load_policies(settings.policies_dir)
    entries = []
    for name, info in DATASETS.items():
        meta = raw_meta(client, name) or {}
        policy = policies.get(name)
        entries.append(
            {
                "name": name,
                "title": {"en": info.title_en, "zh": info.title_zh},
                "owner": info.owner,
                "description": info.description,
                "rows": meta.get("rows"),
                "updated_at": meta.get("updated_at"),
                "release_modes": list(policy.release_modes) if policy else [],
                "columns": _columns(policy),
            }
        )
    return entries
