"""The bureau's raw registers in MinIO's restricted ``raw`` bucket.

Each register is one Parquet object ``raw/<dataset>/<dataset>.parquet`` with
``raw/<dataset>/meta.json`` beside it (rows, SHA-256, time; the demo registers are written
by ``lab.stack.demodata``, imported ones published by ``lab.ingest``). Only the bureau's
services hold the credentials for this bucket. The catalogue of both is
``lab.registry.listing``.
"""

from __future__ import annotations

from typing import Any

from minio import Minio

from lab import storage
from lab.errors import NotFound
from lab.store import layout


def raw_meta(client: Minio, dataset: str) -> dict[str, Any] | None:
    """The metadata of a generated raw table, or None if it was never generated."""
    return storage.read_json(client, layout.RAW_BUCKET, layout.raw_meta(dataset))


def require_raw(client: Minio, dataset: str) -> dict[str, Any]:
    """The published raw table's metadata (a generated or an imported register's)."""
    meta = raw_meta(client, dataset)
    if meta is None:
        raise NotFound(
            f"Dataset {dataset!r} has no published data yet; generate it (datalab dataset generate) or "
            f"import and accept it (datalab dataset import / accept). "
            f"/ 数据集 {dataset} 尚无已发布的数据，请先生成或导入并采纳。",
            reason="no-data",
        )
    return meta
