"""``datalab dataset import`` / ``accept`` into the real lab: a CSV file and a PostgreSQL table.

Through the command, as an operator runs it: the import stores a version in MinIO's raw bucket
with a draft policy and publishes nothing; ``accept`` publishes it (audited), and only then is
the dataset listed. Each run uses its own dataset names and removes its objects afterwards.
"""

from __future__ import annotations

import csv
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lab import storage
from lab.extracts import ledger as open_ledger
from lab.ingest import MinioStore
from lab.settings import Settings, load_settings
from tests.integration import keycloak_test_client as kct

pytestmark = pytest.mark.integration

DATALAB = [sys.executable, "-m", "lab.cli"]
OPERATOR, REVIEWER = "op.wang", "op.li"


def datalab(*args: str) -> subprocess.CompletedProcess[str]:
    """``datalab ARGS``; a command with ``--as NAME`` runs logged in as NAME (``datalab login``)."""
    argv = kct.operator_argv(load_settings(), args)
    return subprocess.run([*DATALAB, *argv], capture_output=True, text=True, timeout=300)


def listed(name: str) -> dict | None:
    result = datalab("dataset", "list", "--json")
    assert result.returncode == 0, result.stderr
    return next((e for e in json.loads(result.stdout) if e["name"] == name), None)


@pytest.fixture
def names(lab_stack: Settings) -> Iterator[list[str]]:
    """Fresh dataset names; their objects are removed from the raw bucket afterwards."""
    tag = secrets.token_hex(4)
    chosen = [f"itest-import-csv-{tag}", f"itest-import-pg-{tag}"]
    yield chosen
    store = MinioStore(storage.root_client(lab_stack), storage.RAW_BUCKET)
    for name in chosen:
        for key in store.keys(f"{name}/"):
            store.remove(key)
        shutil.rmtree(lab_stack.home / "imports" / name, ignore_errors=True)  # the drafts


def _import_and_accept(lab_stack: Settings, source: str, name: str, rows: int) -> None:
    imported = datalab("dataset", "import", source, "--name", name, "--as", OPERATOR)
    assert imported.returncode == 0, imported.stderr
    assert f"version 1: {rows:,} rows" in imported.stdout and f"dataset accept {name}" in imported.stdout
    assert listed(name) is None  # a draft is not published
    accepted = datalab("dataset", "accept", name, "--as", REVIEWER)
    assert accepted.returncode == 0, accepted.stderr
    entry = listed(name)
    assert entry is not None and entry["rows"] == rows and entry["version"] == 1
    assert {c["name"] for c in entry["columns"]} >= {"district", "age"}
    again = datalab("dataset", "import", source, "--name", name, "--as", OPERATOR)
    assert again.returncode == 1 and "--new-version" in again.stderr
    with open_ledger(lab_stack) as book:
        kinds = [(r.kind, r.actor) for r in book.records(dataset=name)]
    assert ("dataset-import", OPERATOR) in kinds and ("dataset-accept", REVIEWER) in kinds


def test_csv_import_is_listed_after_accept(lab_stack: Settings, names: list[str], tmp_path: Path) -> None:
    path = tmp_path / "register.csv"
    with path.open("w", encoding="gb18030", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["district", "age", "joined"])
        writer.writerows([["张店区", 20 + i % 60, f"2024-01-{1 + i % 28:02d}"] for i in range(500)])
    _import_and_accept(lab_stack, str(path), names[0], 500)


def test_postgres_table_import_is_listed_after_accept(
    lab_stack: Settings, names: list[str], postgres_url: str
) -> None:
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE register (district text, age integer, income numeric(10, 2));"
            "INSERT INTO register SELECT '淄川区', 18 + i % 70, i * 3.5 FROM generate_series(1, 400) i"
        )
    _import_and_accept(lab_stack, f"{url}&table=register", names[1], 400)


def test_a_password_in_the_url_is_refused(lab_stack: Settings, names: list[str]) -> None:
    secret = secrets.token_urlsafe(12)
    result = datalab(
        "dataset", "import", f"postgresql://someone:{secret}@/db?host=/tmp&table=t", "--name", names[1],
        "--as", OPERATOR,
    )  # fmt: skip
    assert result.returncode == 1 and "PGPASSWORD" in result.stderr
    assert secret not in result.stdout + result.stderr and listed(names[1]) is None
