"""Masked extracts built from the raw registers in MinIO, read back as an analyst would."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from minio.error import S3Error

from lab import demo, extracts, registers, storage
from lab.access import Provisioner
from lab.extracts import ledger as open_ledger
from lab.masking import OrgKey, mask_parquet
from lab.policy import load_policies
from lab.settings import Settings
from lab.stack import demodata
from lab.store import layout
from tests.integration import keycloak_test_client as kct

pytestmark = pytest.mark.integration

DATALAB = [sys.executable, "-m", "lab.cli"]
RESIDENT_ID = re.compile(r"\d{17}[\dX]")
PHONE = re.compile(r"(^|\D)1[3-9]\d{9}(\D|$)")


# (organisation, dataset) pairs these tests build masked extracts for.
BUILDS = (("qilu-energy", "population"), ("qilu-energy", "social_insurance"), ("zibo-credit", "population"))


@pytest.fixture(scope="module")
def masked_grants(lab_stack: Settings) -> Iterator[None]:
    """Masked grants for the pairs the demo does not grant, revoked again after the module."""
    with open_ledger(lab_stack) as book:
        held = {(g.organisation, g.dataset) for g in book.list_grants(active=True) if "masked" in g.modes}
        made = [
            book.create_grant(
                organisation=org,
                dataset=dataset,
                purpose="integration test",
                modes=["masked"],
                epsilon=0.0,
                delta=0.0,
                expires_at=datetime.now(UTC) + timedelta(hours=2),
                approved_by="op.wang",
            )
            for org, dataset in BUILDS
            if (org, dataset) not in held
        ]
        Provisioner(lab_stack, book).provision()  # MinIO follows the grants at once
        yield
        for grant in made:
            book.revoke(grant.id, by="op.wang", reason="integration test finished")
        Provisioner(lab_stack, book).provision()


@pytest.fixture(scope="module")
def built(lab_stack: Settings, masked_grants: None) -> dict[tuple[str, str], pl.DataFrame]:
    """Extracts built through the CLI and downloaded with the analysts' own STS credentials."""
    demodata.generate(
        lab_stack, rows=demo.DATA_ROWS, seed=demo.DATA_SEED, names=["population", "social_insurance"]
    )
    kct.ensure(lab_stack)
    analysts = {"qilu-energy": "li.na", "zibo-credit": "chen.jing"}
    frames = {}
    kct.cli_login(lab_stack, "op.wang")  # `extract build` acts as the logged-in operator
    for org, dataset in BUILDS:
        result = subprocess.run(
            [*DATALAB, "extract", "build", dataset, "--org", org, "--as", "op.wang"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        version = extracts.versions(lab_stack, org, dataset)[-1]["version"]
        client = storage.analyst_client(lab_stack, kct.access_token(lab_stack, analysts[org]))
        data = client.get_object(storage.EXTRACTS_BUCKET, f"{org}/{dataset}/{version}/{extracts.DATA}").read()
        frames[(org, dataset)] = pl.read_parquet(io.BytesIO(data))
    return frames


def _raw(settings: Settings, dataset: str) -> pl.DataFrame:
    data = storage.root_client(settings).get_object(storage.RAW_BUCKET, layout.raw_object(dataset)).read()
    return pl.read_parquet(io.BytesIO(data))


def _texts(frame: pl.DataFrame) -> pl.Series:
    columns = [pl.col(c).cast(pl.String) for c in frame.columns]
    return frame.select(pl.concat_list(columns).alias("v")).explode("v")["v"].drop_nulls()


def test_extracts_hold_no_direct_identifier(lab_stack: Settings, built: dict) -> None:
    population = _raw(lab_stack, "population")
    secrets = set()
    for column in ("resident_id", "name", "street_address", "phone"):
        secrets |= set(population[column].to_list())
    for key, frame in built.items():
        values = _texts(frame)
        assert not values.str.contains(RESIDENT_ID.pattern).any(), key
        assert not values.str.contains(PHONE.pattern).any(), key
        leaked = secrets & set(values.to_list())
        assert not leaked, f"{key}: {len(leaked)} source identifiers found in the extract"
        assert not set(frame.columns) & {"name", "street_address", "phone"}


def test_k_anonymity_holds_on_quasi_identifiers(lab_stack: Settings, built: dict) -> None:
    policies = load_policies(lab_stack.policies_dir)
    for (_, dataset), frame in built.items():
        policy = policies[dataset]
        units = policy.privacy_unit
        sizes = frame.group_by(list(policy.quasi_identifiers)).agg(pl.col(units).n_unique().alias("n"))
        assert sizes["n"].min() >= policy.k, dataset
        # suppression did not empty it (longitudinal rows may be aggregated per period: count people)
        assert frame[units].n_unique() > 0.5 * _raw(lab_stack, dataset)[units].n_unique()


def test_extracts_join_neither_across_organisations_nor_across_grants(built: dict) -> None:
    """Pseudonyms are scoped per grant: datasets join only where the policies link them."""
    qilu_people = built[("qilu-energy", "population")]
    zibo_people = built[("zibo-credit", "population")]
    qilu_work = built[("qilu-energy", "social_insurance")]
    assert not set(qilu_people["resident_id"]) & set(zibo_people["resident_id"])
    assert "household_id" not in qilu_people.columns  # the grants' purpose is no household study
    assert qilu_work.join(qilu_people, on="resident_id", how="inner").height == 0


def _trace(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DATALAB, "extract", "trace", str(path)], capture_output=True, text=True)


def test_trace_names_the_recipient_from_a_one_percent_sample(built: dict, tmp_path: Path) -> None:
    for (org, dataset), frame in built.items():
        sample = tmp_path / f"{org}-{dataset}.parquet"
        frame.sample(fraction=0.01, seed=11).write_parquet(sample)
        result = _trace(sample)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Built for {org}" in result.stdout


def test_trace_names_nobody_for_an_extract_it_never_built(lab_stack: Settings, tmp_path: Path) -> None:
    source = tmp_path / "population.parquet"
    _raw(lab_stack, "population").write_parquet(source)
    policy = load_policies(lab_stack.policies_dir)["population"]
    stranger = OrgKey("stranger-co", b"s" * 32)
    mask_parquet(source, tmp_path / "foreign.parquet", policy, stranger)
    result = _trace(tmp_path / "foreign.parquet")
    assert result.returncode == 1
    assert "No organisation can be named" in result.stdout


def test_manifest_describes_the_build(lab_stack: Settings, built: dict) -> None:
    manifest = extracts.versions(lab_stack, "qilu-energy", "population")[-1]
    meta = registers.raw_meta(storage.root_client(lab_stack), "population")
    assert meta is not None
    assert manifest["source_sha256"] == meta["sha256"]
    assert manifest["rows_in"] == demo.DATA_ROWS
    assert manifest["rows_out"] == built[("qilu-energy", "population")].height
    assert manifest["rows_in"] - manifest["rows_suppressed"] == manifest["rows_out"]
    assert manifest["k_achieved"] >= manifest["k_required"] == 5
    assert manifest["created_by"] == "op.wang"
    assert len(manifest["policy_sha256"]) == 64
    assert manifest["scope"].startswith("grant/") and manifest["grant"] is not None
    assert manifest["risk"]["prosecutor_max"] <= manifest["risk"]["threshold"] == 0.2
    risk = extracts.risk_report(lab_stack, "qilu-energy", "population", manifest["version"])
    assert risk["records"]["k"] == manifest["k_achieved"] and risk["exceeded"] == []
    assert risk["household_link"].startswith("withheld")


def _objects(settings: Settings) -> set[str]:
    client = storage.root_client(settings)
    return {o.object_name for o in client.list_objects(storage.EXTRACTS_BUCKET, recursive=True)}


@pytest.mark.parametrize(
    ("case", "argv", "expected"),
    [
        (
            "unknown dataset",
            ["extract", "build", "census", "--org", "qilu-energy", "--as", "op.wang"],
            "unknown dataset 'census'",
        ),
        (
            "unknown org",
            ["extract", "build", "population", "--org", "acme", "--as", "op.wang"],
            "Unknown organisation 'acme'",
        ),
    ],
)
def test_bad_build_request_fails_in_one_line_and_writes_nothing(
    lab_stack: Settings, built: dict, case: str, argv: list[str], expected: str
) -> None:
    before = _objects(lab_stack)
    result = subprocess.run([*DATALAB, *kct.operator_argv(lab_stack, argv)], capture_output=True, text=True)
    assert result.returncode != 0, case
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _objects(lab_stack) == before


@pytest.mark.parametrize(
    ("case", "edit", "expected"),
    [
        ("malformed", lambda text: text.replace("columns:", "columns: [", 1), "population.yaml:"),
        (
            "would leak",
            lambda text: re.sub(r"phone:\s*\{[^}]*\}", "phone: {level: core, pi: pi, rule: keep}", text),
            "population.yaml:",
        ),
    ],
)
def test_bad_policy_stops_the_build_and_writes_nothing(
    lab_stack: Settings, built: dict, tmp_path: Path, case: str, edit: Callable[[str], str], expected: str
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(lab_stack.policies_dir, policies)
    path = policies / "population.yaml"
    path.write_text(edit(path.read_text()))
    before = _objects(lab_stack)
    env = {"DATALAB_POLICIES": str(policies)}
    argv = [*DATALAB, "extract", "build", "population", "--org", "qilu-energy", "--as", "op.wang"]
    kct.cli_login(lab_stack, "op.wang")
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env})
    assert result.returncode != 0, case
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _objects(lab_stack) == before
    check = subprocess.run(
        [*DATALAB, "policy", "check"], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert check.returncode == 1 and expected in check.stderr


def test_failed_publication_leaves_nothing_visible(lab_stack: Settings, tmp_path: Path) -> None:
    good = tmp_path / "a.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(good)
    before = _objects(lab_stack)
    client = storage.root_client(lab_stack)
    with pytest.raises(FileNotFoundError):
        storage.publish(
            client,
            storage.EXTRACTS_BUCKET,
            "qilu-energy/tests/v1",
            {"a.parquet": good, "b.parquet": tmp_path / "missing.parquet"},
            {"kind": "test"},
        )
    assert _objects(lab_stack) == before
    with pytest.raises(S3Error):
        client.stat_object(storage.EXTRACTS_BUCKET, "qilu-energy/tests/v1/manifest.json")
