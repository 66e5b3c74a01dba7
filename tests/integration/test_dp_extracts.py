"""DP extracts built from the raw registers, charged to a grant, published in MinIO."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pyarrow.parquet as pq
import pytest

from lab import access, storage
from lab.extracts import ledger as open_ledger
from lab.extracts import versions
from lab.ledger import Ledger
from lab.settings import Settings, load_settings
from lab.store import layout
from tests.integration import keycloak_test_client as kct

pytestmark = pytest.mark.integration

ORG = "sdu-research"  # no demo grant: these tests own its grants and revoke them after
DATALAB = [sys.executable, "-m", "lab.cli"]
TABLES = """
kind: dp-table
age_band: {width: 10, top: 80}
tables:
  - {name: people, group_by: [district, sex, age_band], epsilon: 0.3}
  - {name: schooling, group_by: [district, education], epsilon: 0.2}
"""


@pytest.fixture
def grant(lab_stack: Settings) -> Iterator[tuple[Ledger, int]]:
    with open_ledger(lab_stack) as book:
        for old in book.list_grants(organisation=ORG, active=True):
            book.revoke(old.id, by="op.wang", reason="test set-up")
        made = book.create_grant(
            organisation=ORG,
            dataset="population",
            purpose="integration test",
            modes=["dp"],
            epsilon=0.8,
            delta=0.0,
            expires_at=datetime.now(UTC) + timedelta(days=1),
            approved_by="op.wang",
        )
        provisioner = access.Provisioner(lab_stack, book)
        provisioner.provision()  # as an approval does at once (the gateway's sweep would, within 15 s)
        yield book, made.id
        book.revoke(made.id, by="op.wang", reason="test done")
        provisioner.provision()


def _objects(settings: Settings) -> set[str]:
    client = storage.root_client(settings)
    return {
        o.object_name for o in client.list_objects(storage.EXTRACTS_BUCKET, prefix=f"{ORG}/", recursive=True)
    }


def _build(spec: Path, mode: str = "dp-table") -> subprocess.CompletedProcess[str]:
    kct.cli_login(load_settings(), "op.wang")  # `extract build` acts as the logged-in operator
    return subprocess.run(
        [
            *DATALAB,
            "extract",
            "build",
            "population",
            "--org",
            ORG,
            "--mode",
            mode,
            "--spec",
            str(spec),
            "--as",
            "op.wang",
        ],
        capture_output=True,
        text=True,
    )


def test_dp_tables_charge_exactly_their_epsilon_and_overspending_writes_nothing(
    lab_stack: Settings, grant: tuple[Ledger, int], tmp_path: Path
) -> None:
    book, grant_id = grant
    spec = tmp_path / "tables.yaml"
    spec.write_text(TABLES)
    result = _build(spec)
    assert result.returncode == 0, result.stderr
    manifest = versions(lab_stack, ORG, "population")[-1]
    assert manifest["kind"] == "dp-table" and manifest["epsilon"] == pytest.approx(0.5, abs=1e-12)
    status = book.budget(grant_id)
    assert status.epsilon_spent == pytest.approx(manifest["epsilon"], abs=1e-12)
    assert status.epsilon_remaining == pytest.approx(0.3, abs=1e-12)
    # The published cells hold the truth within their intervals at about the stated rate.
    client = storage.root_client(lab_stack)
    prefix = f"{ORG}/population/{manifest['version']}"
    people = pl.read_parquet(
        io.BytesIO(client.get_object(storage.EXTRACTS_BUCKET, f"{prefix}/schooling.parquet").read())
    )
    raw = pl.read_parquet(
        io.BytesIO(client.get_object(storage.RAW_BUCKET, layout.raw_object("population")).read())
    )
    truth = raw.group_by(["district", "education"]).agg(pl.len().alias("truth"))
    joined = people.join(truth, on=["district", "education"], how="left").fill_null(0)
    inside = ((joined["truth"] >= joined["ci_low"]) & (joined["truth"] <= joined["ci_high"])).mean()
    assert 0.85 <= inside <= 1.0, inside  # type: ignore[operator]
    # A second build would need 0.5 with 0.3 left: refused, nothing written, nothing charged.
    before = _objects(lab_stack)
    again = _build(spec)
    assert again.returncode != 0
    assert "remaining" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert _objects(lab_stack) == before
    assert book.budget(grant_id).epsilon_spent == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("kind: dp-table\ntables:\n  - {name: t, group_by: [income], epsilon: 0.1}\n", "income"),
        ("kind: dp-table\ntables:\n  - {name: t, group_by: [phone], epsilon: 0.1}\n", "phone"),
        ("kind: dp-table\ntables:\n  - {name: t, group_by: [district], epsilon: 5}\n", "remaining"),
    ],
)
def test_bad_specs_are_refused_and_nothing_is_written_or_charged(
    lab_stack: Settings, grant: tuple[Ledger, int], tmp_path: Path, spec: str, says: str
) -> None:
    book, grant_id = grant
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    before = _objects(lab_stack)
    result = _build(path)
    assert result.returncode != 0 and says in result.stderr, result.stderr
    assert _objects(lab_stack) == before
    assert book.budget(grant_id).epsilon_spent == 0


def test_synthetic_data_is_marked_and_loads_in_the_client(
    lab_stack: Settings, grant: tuple[Ledger, int], tmp_path: Path
) -> None:
    book, grant_id = grant
    spec = tmp_path / "synthetic.yaml"
    spec.write_text("kind: dp-synthetic\nepsilon: 0.6\n")
    result = _build(spec, mode="dp-synthetic")
    assert result.returncode == 0, result.stderr
    manifest = versions(lab_stack, ORG, "population")[-1]
    assert manifest["synthetic"] is True and book.budget(grant_id).epsilon_spent == pytest.approx(
        0.6, abs=1e-12
    )
    client = storage.root_client(lab_stack)
    data = client.get_object(
        storage.EXTRACTS_BUCKET, f"{ORG}/population/{manifest['version']}/synthetic.parquet"
    )
    metadata = pq.read_schema(io.BytesIO(data.read())).metadata
    assert metadata[b"datalab.synthetic"] == b"true"
    kct.ensure(lab_stack)
    env = {
        **os.environ,
        "DATALAB_TOKEN": kct.access_token(lab_stack, "sun.hao"),
        "DATALAB_GATEWAY_URL": f"{lab_stack.hub_url}/services/gateway",
        "DATALAB_S3_ENDPOINT": lab_stack.minio_endpoint,
    }
    code = (
        "import lab.client as lab; print(lab.datasets()['extracts'][0]); "
        "print(lab.extract('population', kind='dp-synthetic').height)"
    )
    shown = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    kinds, rows = shown.stdout.split()[0:-1], shown.stdout.split()[-1]
    assert "dp-synthetic" in " ".join(kinds) and int(rows) > 50_000
    assert "SYNTHETIC DATA" in shown.stderr  # the client warns whenever synthetic rows are loaded


def test_gateway_previews_and_builds_for_the_callers_organisation(
    lab_stack: Settings, grant: tuple[Ledger, int]
) -> None:
    book, grant_id = grant
    kct.ensure(lab_stack)
    headers = {"Authorization": f"Bearer {kct.access_token(lab_stack, 'sun.hao')}"}
    body = {
        "dataset": "population",
        "kind": "dp-table",
        "spec": {"tables": [{"name": "by_district", "group_by": ["district"], "epsilon": 0.25}]},
    }
    api = f"{lab_stack.hub_url}/services/gateway/api/extracts"
    preview = httpx.post(f"{api}/preview", headers=headers, json=body)
    assert preview.status_code == 200 and preview.json()["epsilon"] == 0.25
    assert book.budget(grant_id).epsilon_spent == 0
    built = httpx.post(api, headers=headers, json=body, timeout=120)
    assert built.status_code == 200, built.text
    assert built.json()["organisation"] == ORG
    assert book.budget(grant_id).epsilon_spent == pytest.approx(0.25, abs=1e-12)
