"""The analyst's ``lab`` client against the real lab (issue 13): what a notebook user sees.

One organisation of its own (added by the operator's CLI, with a new analyst) holds DP grants
on the population and enterprise registers. Through ``lab.client``: a typo gets "did you mean",
a forbidden column its own message, and a hostile analyst's near-miss typos never bring a
protected column's name back; every failure is a ``LabError`` in 中文 and English (a dataset
the organisation lacks in the object store, a gateway that refuses connections); DP tables
and DP synthetic data preview for free and are charged exactly once (a second ``release()``
and a retry with the same request id are free; a refused build charges and writes nothing);
dummy data has the schema, costs nothing and holds no raw value.
"""

from __future__ import annotations

import io
import secrets
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from lab import access, client, storage
from lab.directory import Directory
from lab.errors import ConfigError, LabError, NotFound, Unavailable
from lab.extracts import ledger as open_ledger
from lab.extracts import versions
from lab.gateway.revocation import Sweeper
from lab.ledger import Ledger
from lab.settings import Settings
from lab.store import layout
from tests.integration import keycloak_test_client as kct
from tests.integration.test_onboarding import add_org

pytestmark = pytest.mark.integration

OPERATOR = "op.wang"
PROTECTED = ("resident_id", "name", "phone", "street_address", "household_id")  # population, not for DP


def _bilingual(message: str) -> bool:
    return " / " in message and any("\u4e00" <= ch <= "\u9fff" for ch in message)


@pytest.fixture(scope="module")
def org(lab_stack: Settings) -> Iterator[dict[str, Any]]:
    """A new organisation and analyst, with DP grants on population and legal_entity."""
    kct.ensure(lab_stack)
    tag = secrets.token_hex(3)
    org_id, user = f"client-{tag}", f"an.cl{tag}"
    add_org(lab_stack, org_id, user, "客户端测试研究所", "Client Test Institute", "research")
    with open_ledger(lab_stack) as book:
        grants = {
            dataset: book.create_grant(
                organisation=org_id,
                dataset=dataset,
                purpose="client integration test",
                modes=["dp"],
                epsilon=3.0,
                delta=1e-6,
                expires_at=datetime.now(UTC) + timedelta(days=1),
                approved_by=OPERATOR,
            ).id
            for dataset in ("population", "legal_entity")
        }
        access.Provisioner(lab_stack, book).provision()
        Sweeper(lab_stack, Directory(lab_stack, ttl=0)).sweep()  # admit the new analyst in MinIO now
        yield {"id": org_id, "user": user, "grants": grants, "book": book}
        for grant in grants.values():
            book.revoke(grant, by=OPERATOR, reason="client test done")
        access.Provisioner(lab_stack, book).provision()


@pytest.fixture(scope="module")
def lab(lab_stack: Settings, org: dict[str, Any]) -> client.Connection:
    token = kct.access_token(lab_stack, org["user"])
    return client.Connection(
        f"{lab_stack.hub_url}/services/gateway", token, s3_endpoint=lab_stack.minio_endpoint
    )


def _spent(org: dict[str, Any], dataset: str = "population") -> float:
    book: Ledger = org["book"]
    return book.budget(org["grants"][dataset]).epsilon_spent


def test_typos_get_did_you_mean_and_a_forbidden_column_its_own_message(
    lab: client.Connection, org: dict[str, Any]
) -> None:
    with pytest.raises(NotFound) as caught:
        lab.dp("populaton").count(epsilon=0.1).preview()
    assert "Did you mean 'population'?" in caught.value.message and _bilingual(caught.value.message)
    with pytest.raises(ConfigError) as caught:
        lab.dp("population").group_by("distrct").count(epsilon=0.1).release()
    assert caught.value.reason == "dp-column" and "Did you mean 'district'?" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        lab.dp("population").filter("phone", "==", "x").count(epsilon=0.1).release()
    assert caught.value.reason == "forbidden-column" and "negative list" in caught.value.message
    assert (
        "The policy forbids it" in caught.value.message
        and "there is no such column" not in caught.value.message
    )
    assert "不可用于" in caught.value.message
    with pytest.raises(LabError) as caught:
        lab.dp("population").cuont(epsilon=0.1)
    assert "Did you mean 'count'?" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        lab.dp("population").histogram("educaton", epsilon=0.1).release()
    assert "Did you mean 'education'?" in caught.value.message
    assert _spent(org) == 0


@pytest.mark.security
def test_a_hostile_analysts_near_miss_typos_never_bring_back_a_protected_column(
    lab: client.Connection, org: dict[str, Any]
) -> None:
    """The attacker types names one letter off the protected columns of the register, in every
    place a column goes, hoping a suggestion or a list confirms them: nothing names them."""
    seen: list[str] = []
    for column in PROTECTED:
        for typo in {column[:-1], column[1:], column + "s", column.replace("_", "")} - set(PROTECTED):
            for query in (
                lab.dp("population").group_by(typo).count(epsilon=0.1),
                lab.dp("population").filter(typo, "==", 1).count(epsilon=0.1),
                lab.dp("population").sum(typo, bounds=(0, 1), epsilon=0.1),
            ):
                with pytest.raises(ConfigError) as caught:
                    query.preview()
                seen.append(caught.value.message)
                assert caught.value.reason == "dp-column"
    for message in seen:
        assert not [c for c in PROTECTED if f"'{c}'" in message or f"{c}," in message], message
    with pytest.raises(LabError) as caught:  # the DP-table path answers the same way
        lab.dp_table("population", tables=[{"name": "t", "group_by": ["phon"], "epsilon": 0.1}]).preview()
    assert "'phone'" not in caught.value.message and "phone," not in caught.value.message
    assert _spent(org) == 0


def test_every_failure_is_a_lab_error_in_both_languages(lab_stack: Settings, lab: client.Connection) -> None:
    with pytest.raises(LabError) as caught:  # the S3Error traceback: a dataset not held
        lab.extract("utility")
    error = caught.value
    assert type(error).__module__ == "lab.errors" and _bilingual(error.message)
    assert "S3Error" not in error.message and error.__cause__ is None
    with pytest.raises(NotFound) as caught:
        lab.extract("populaton")
    assert "Did you mean 'population'?" in caught.value.message
    with pytest.raises(LabError) as caught:
        lab.extract("population", kind="dp-tabel")
    assert "Did you mean 'dp-table'?" in caught.value.message
    refused = client.Connection("http://127.0.0.1:1/services/gateway", "token")
    with pytest.raises(Unavailable) as caught:
        refused.datasets()
    assert "DATALAB_GATEWAY_URL" in caught.value.message and _bilingual(caught.value.message)
    expired = client.Connection(f"{lab_stack.hub_url}/services/gateway", "not-a-token")
    with pytest.raises(LabError) as caught:
        expired.datasets()
    assert caught.value.reason in ("not-authenticated", "refused") and _bilingual(caught.value.message)


def test_dp_tables_preview_free_then_charge_exactly_once(
    lab_stack: Settings, lab: client.Connection, org: dict[str, Any]
) -> None:
    before = _spent(org)
    pending = lab.dp_table(
        "population",
        tables=[
            {"name": "by_district", "group_by": ["district"], "epsilon": 0.2},
            {"name": "by_sex", "group_by": ["sex"], "epsilon": 0.1},
        ],
    )
    shown = repr(pending)
    assert "ε=0.3" in shown and "table by_district: count by district, 8 cells" in shown
    assert "→ 2.7 after release()" in shown and _spent(org) == before  # the preview spends nothing
    built = pending.release()
    assert _spent(org) == pytest.approx(before + 0.3, abs=1e-12)
    assert sorted(built.data) == ["by_district", "by_sex"] and built.data["by_district"].height == 8
    assert "spent 花费 ε=0.3" in repr(built) and built.budget["epsilon_remaining"] == pytest.approx(2.7)
    assert pending.release() is built and _spent(org) == pytest.approx(before + 0.3, abs=1e-12)
    retry = lab.dp_table("population", pending.spec)  # a retry after a timeout keeps the request id
    retry.request_id = pending.request_id
    again = retry.release()
    assert again.manifest["repeated"] is True and again.version == built.version
    assert _spent(org) == pytest.approx(before + 0.3, abs=1e-12)
    loaded = lab.extract("population", kind="dp-table", table="by_sex")  # reloading is free
    assert loaded.height == 2 and _spent(org) == pytest.approx(before + 0.3, abs=1e-12)


def test_a_refused_dp_build_charges_and_writes_nothing(
    lab_stack: Settings, lab: client.Connection, org: dict[str, Any]
) -> None:
    before, published = _spent(org), len(versions(lab_stack, org["id"], "population"))
    too_much = lab.dp_table("population", tables=[{"name": "t", "group_by": ["district"], "epsilon": 50}])
    assert "✗ budget" in repr(too_much) and "release() 将被拒绝" in repr(too_much)
    for pending in (
        too_much,
        lab.dp_table("population", tables=[{"name": "t", "group_by": ["street_address"], "epsilon": 0.1}]),
        lab.dp_synthetic("population", epsilon=0.1, columns=["sex", "distrct"]),
    ):
        with pytest.raises(LabError) as caught:
            pending.release()
        assert _bilingual(caught.value.message), caught.value.message
    assert _spent(org) == before and len(versions(lab_stack, org["id"], "population")) == published


def test_dp_synthetic_data_previews_then_builds_marked(lab: client.Connection, org: dict[str, Any]) -> None:
    before = _spent(org)
    pending = lab.dp_synthetic("population", epsilon=0.4, columns=["sex", "district", "education"], rows=2000)
    assert "DP synthetic data" in repr(pending) and "ε=0.4" in repr(pending) and _spent(org) == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = pending.release()
    assert any("SYNTHETIC DATA" in str(w.message) for w in caught)
    assert built.data.height == 2000 and {"sex", "district", "education"} <= set(built.data.columns)
    assert _spent(org) == pytest.approx(before + 0.4, abs=1e-12)
    assert built.manifest["synthetic"] is True


@pytest.mark.security
def test_dummy_data_has_the_schema_costs_nothing_and_holds_no_raw_value(
    lab_stack: Settings, lab: client.Connection, org: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker hopes dummy rows are sampled from the register: none of the enterprise
    register's industries or statuses (no public domain) may appear, and nothing is charged."""
    spent = {d: _spent(org, d) for d in org["grants"]}
    entry = next(d for d in lab._call("GET", "/datasets") if d["dataset"] == "legal_entity")
    dummy = lab.dummy("legal_entity", rows=500)
    assert "DUMMY DATA" in capsys.readouterr().out and "假数据" in DUMMY_NOTICE
    assert dummy.columns == [*entry["columns"], "_dummy"] and dummy["_dummy"].all()
    assert {c: str(t) for c, t in dummy.schema.items() if c != "_dummy"} == entry["columns"]
    raw = storage.root_client(lab_stack).get_object(layout.RAW_BUCKET, layout.raw_object("legal_entity"))
    real = pl.read_parquet(io.BytesIO(raw.read()))
    for column in ("industry", "status", "name", "credit_code"):
        if column in dummy.columns:
            assert not set(dummy[column].cast(pl.String)) & set(real[column].cast(pl.String)), column
    assert set(dummy["district"]) <= set(entry["public_keys"]["district"])
    people = lab.dummy("population", rows=300)
    assert set(people["education"]) <= set(entry_keys(lab, "population")["education"])
    assert people["birth_date"].dt.year().is_between(1920, 2025).all()  # the policy's public span
    assert (people["birth_year"] == people["birth_date"].dt.year()).all()
    assert {d: _spent(org, d) for d in org["grants"]} == spent


DUMMY_NOTICE = client._dummy.NOTICE


def entry_keys(lab: client.Connection, dataset: str) -> dict[str, list[str]]:
    return next(d["public_keys"] for d in lab._call("GET", "/datasets") if d["dataset"] == dataset)
