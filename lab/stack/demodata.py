"""The synthetic city's registers written into the raw bucket: demo data for a new lab.

The one production module that imports the generator (``lab.synthetic``); only the entry
points that make demo data call it: ``datalab dataset generate`` and the seeding of
``datalab up`` (``lab.stack.seed``). Each register is written as ``layout.raw_object`` with
its ``meta.json`` (rows, SHA-256, seed, scale, time) last, so a table counts as present
once its metadata does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lab import storage, synthetic
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
