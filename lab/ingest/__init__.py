"""Registers from real sources: ``datalab dataset import`` and ``datalab dataset accept``.

Data flows one way: ``sources`` (CSV, Parquet, Excel, and ``postgres``) yield batches;
``frames`` types text columns and streams them into one Parquet file; ``importer`` stores
the file as a new version of the dataset in the raw bucket (``store``: MinIO, or a
directory in tests) with its schema, row count and SHA-256, and the scanner's draft policy
(``lab.discovery``) when no policy is given; ``importer.accept`` publishes a version once
its policy validates (``lab.policy``), recorded in the audit ledger. The catalogue and the gateway find
the published ones through ``lab.registry``. Nothing here imports the synthetic generator.
"""

from __future__ import annotations

from lab.ingest.importer import Imported, accept, import_source, manifests
from lab.ingest.store import DirStore, MinioStore, RawStore

__all__ = [
    "DirStore",
    "Imported",
    "MinioStore",
    "RawStore",
    "accept",
    "import_source",
    "manifests",
]
