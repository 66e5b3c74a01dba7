"""``lab.extract(..., lazy=True)``: a LazyFrame that scans the object in MinIO with the analyst's credentials.

Nothing but the manifest is downloaded; the scan is given the analyst's own short-lived
keys and session token (from the STS exchange of their token) and the lab's endpoint.
(Checked by hand against a throwaway MinIO too: a 1M-row extract aggregated in streaming.)
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from lab import client
from lab.store import layout

pytestmark = pytest.mark.unit
VERSION = "org-a/people/v0001/"


class Store:
    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self.read: list[str] = []

    def list_objects(self, bucket: str, prefix: str) -> Any:
        names = [VERSION] if prefix.count("/") == 2 else [VERSION + layout.MANIFEST]
        return [SimpleNamespace(object_name=n) for n in names]

    def get_object(self, bucket: str, name: str) -> Any:
        self.read.append(name)
        body = io.BytesIO(json.dumps(self.manifest).encode())
        return SimpleNamespace(read=body.read, close=lambda: None, release_conn=lambda: None)


class Lab(client.Connection):
    def __init__(self, store: Store) -> None:
        super().__init__("http://127.0.0.1:1", "token", s3_endpoint="127.0.0.1:19000")
        self.store = store

    def me(self) -> dict[str, Any]:
        return {"org": "org-a"}

    def _s3(self) -> Any:
        return self.store

    def _credentials(self) -> Any:
        creds = SimpleNamespace(access_key="STS-KEY", secret_key="STS-SECRET", session_token="STS-TOKEN")
        return SimpleNamespace(retrieve=lambda: creds)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, str]]]:
    seen: list[tuple[str, dict[str, str]]] = []

    def scan_parquet(source: str, *, storage_options: dict[str, str]) -> pl.LazyFrame:
        seen.append((source, storage_options))
        return pl.LazyFrame({"x": [1]})

    monkeypatch.setattr(client.pl, "scan_parquet", scan_parquet)
    return seen


def test_a_lazy_masked_extract_scans_minio_with_the_analysts_credentials(scans: list[Any]) -> None:
    store = Store({"kind": "masked"})
    frame = Lab(store).extract("people", lazy=True)
    assert isinstance(frame, pl.LazyFrame)
    assert store.read == [VERSION + layout.MANIFEST]  # the data itself is not downloaded
    ((source, options),) = scans
    assert source == f"s3://{layout.EXTRACTS_BUCKET}/{VERSION}{layout.MASKED_DATA}"
    assert options["aws_access_key_id"] == "STS-KEY" and options["aws_session_token"] == "STS-TOKEN"
    assert options["aws_endpoint_url"] == "http://127.0.0.1:19000"


def test_lazy_dp_tables_are_one_lazyframe_per_table(scans: list[Any]) -> None:
    store = Store({"kind": "dp-table", "files": ["by_district.parquet", "by_age.parquet", "report.json"]})
    tables = Lab(store).extract("people", "dp-table", lazy=True)
    assert sorted(tables) == ["by_age", "by_district"]
    assert all(isinstance(t, pl.LazyFrame) for t in tables.values())
    assert {s for s, _ in scans} == {
        f"s3://extracts/{VERSION}by_district.parquet",
        f"s3://extracts/{VERSION}by_age.parquet",
    }
