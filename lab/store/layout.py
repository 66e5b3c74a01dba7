"""Where everything lives in object storage: the bucket names and every object key.

The one place that spells them; every reader and writer builds its names here::

    raw/                                   restricted: the bureau's services only
      <dataset>/<dataset>.parquet          the raw table          raw_object(dataset)
      <dataset>/meta.json                  written last: the table is present once it is
      <dataset>/versions/000001/<file>     an imported version    raw_version(dataset, n, file)
        data.parquet  manifest.json  policy.yaml  policy.draft.yaml  accepted.json
    extracts/                              analysts read <org>/<dataset>/ of their grants
      <org>/<dataset>/<version>/           one published version  extract_prefix(...)
        data.parquet  risk.json            a masked extract and its risk report
        synthetic.parquet  <table>.parquet utility.json    a DP extract
        manifest.json                      written last: the version exists once it does
      .staging/<token>/<file>              uploads before they are copied into place
    exports/                               restricted: airlock requests and kept results
      <org>/<token>/<name>                 an export request's bytes
      _released/<org>/<digest>.json        a released DP result kept for re-checking
    audit-archive/                         object lock, COMPLIANCE retention
      segments/<ledger id>/<first>-<last>.jsonl (+ .json manifest)
      anchors/<ledger id>.json             the chain's head, one version per append (replicas)

Pure names: nothing here talks to MinIO, so the analyst's client may import it too.
"""

from __future__ import annotations

RAW_BUCKET = "raw"
EXTRACTS_BUCKET = "extracts"
EXPORTS_BUCKET = "exports"
AUDIT_BUCKET = "audit-archive"

MANIFEST = "manifest.json"  # of an extract version; written last
RAW_META = "meta.json"  # of a raw table; written last
MASKED_DATA = "data.parquet"
RISK_REPORT = "risk.json"
SYNTHETIC_DATA = "synthetic.parquet"
UTILITY_REPORT = "utility.json"
STAGING = ".staging"  # outside every organisation's prefix (no organisation id starts with ".")
RELEASED = "_released"  # no organisation id starts with "_"
AUDIT_SEGMENTS = "segments/"
AUDIT_ANCHORS = "anchors/"


def raw_object(dataset: str) -> str:
    """The raw table of ``dataset`` in the raw bucket."""
    return f"{dataset}/{dataset}.parquet"


def raw_meta(dataset: str) -> str:
    """The metadata object of a raw table (its presence marks the table present)."""
    return f"{dataset}/{RAW_META}"


VERSION_DATA = "data.parquet"  # an imported version's table, as imported (never rewritten)
VERSION_MANIFEST = "manifest.json"  # written last: the version exists once it does


def raw_versions(dataset: str) -> str:
    """The prefix of an imported register's versions."""
    return f"{dataset}/versions/"


def raw_version(dataset: str, version: int, file: str) -> str:
    """One file of an imported register's version (``VERSION_DATA``, ``VERSION_MANIFEST``, ...)."""
    return f"{raw_versions(dataset)}{version:06d}/{file}"


def org_prefix(org: str) -> str:
    """Everything of one organisation in the extracts bucket."""
    return f"{org}/"


def dataset_prefix(org: str, dataset: str) -> str:
    """Every version of one organisation's extracts of ``dataset`` (ends with ``/``)."""
    return f"{org}/{dataset}/"


def extract_prefix(org: str, dataset: str, version: str) -> str:
    """One published version (no trailing ``/``: ``extract_object`` adds it)."""
    return f"{org}/{dataset}/{version}"


def extract_object(org: str, dataset: str, version: str, file: str) -> str:
    """A file of one published version, e.g. ``extract_object(org, ds, v, RISK_REPORT)``."""
    return f"{extract_prefix(org, dataset, version)}/{file}"


def staging_prefix(token: str) -> str:
    """Where a version's files wait before they are copied into place."""
    return f"{STAGING}/{token}"


def export_object(org: str, token: str, name: str) -> str:
    """The bytes of one export request in the exports bucket."""
    return f"{org}/{token}/{name}"


def released_result(org: str, digest: str) -> str:
    """A released DP result kept in the exports bucket, by its digest."""
    return f"{RELEASED}/{org}/{digest}.json"


def audit_anchor(ledger_id: str) -> str:
    """The head of one ledger's audit chain, kept here with ``DATALAB_AUDIT_ANCHOR=object``."""
    return f"{AUDIT_ANCHORS}{ledger_id}.json"


def audit_segments(ledger_id: str) -> str:
    """The sealed segments of one ledger in the audit archive (ends with ``/``)."""
    return f"{AUDIT_SEGMENTS}{ledger_id}/"


def audit_segment(ledger_id: str, first_seq: int, last_seq: int) -> str:
    """One sealed segment of audit records ``first_seq`` to ``last_seq``."""
    return f"{audit_segments(ledger_id)}{first_seq:012d}-{last_seq:012d}.jsonl"
