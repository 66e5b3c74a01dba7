"""The bureau's raw registers in MinIO's restricted ``raw`` bucket.

``generate`` writes each synthetic register (``lab.synthetic``) as one Parquet object
``raw/<dataset>/<dataset>.parquet`` with ``raw/<dataset>/meta.json`` beside it (rows,
SHA-256, seed, scale, time). Only the bureau's services hold the credentials for this
bucket. Imported registers (``lab.ingest``) publish into the same two names; the catalogue
of both is ``lab.registry.listing``.
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
from lab.registry.catalogue import DATASETS
from lab.registry.catalogue import dataset as catalogue_entry
from lab.settings import Settings

META = "meta.json"


@dataclass(frozen=True)
class RawTable:
    dataset: str
    rows: int
    sha256: str
    object_name: str


def raw_object(dataset: str) -> str:
    return f"{dataset}/{dataset}.parquet"


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
            client.fput_object(storage.RAW_BUCKET, raw_object(name), str(written.path))
            storage.put_json(client, storage.RAW_BUCKET, f"{name}/{META}", meta)
        tables.append(RawTable(name, written.rows, written.sha256, raw_object(name)))
    return tables


def raw_meta(client: Minio, dataset: str) -> dict[str, Any] | None:
    """The metadata of a generated raw table, or None if it was never generated."""
    return storage.read_json(client, storage.RAW_BUCKET, f"{dataset}/{META}")


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
