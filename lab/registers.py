"""The bureau's raw registers in MinIO's restricted ``raw`` bucket, and their catalogue.

Each register is one Parquet object ``raw/<dataset>/<dataset>.parquet`` with
``raw/<dataset>/meta.json`` beside it (rows, SHA-256, time; the demo registers are written
by ``lab.stack.demodata``). Only the bureau's services hold the credentials for this
bucket. ``catalogue`` joins that metadata with the dataset descriptions and each column's
classification from its policy, for ``datalab dataset list``.
"""

from __future__ import annotations

from typing import Any

from minio import Minio

from lab import storage
from lab.errors import NotFound
from lab.policy import Policy, load_policies
from lab.registry.catalogue import DATASETS
from lab.registry.catalogue import dataset as catalogue_entry
from lab.settings import Settings
from lab.store import layout


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
