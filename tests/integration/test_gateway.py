"""DP queries through the gateway, against the real Keycloak, MinIO, ledger and hub proxy."""

from __future__ import annotations

import io
import os
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from lab import demo, storage
from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.registry.organisations import closing_registry, register
from lab.settings import Settings
from lab.stack import procs
from lab.store import layout
from tests.integration import keycloak_test_client as kct

pytestmark = pytest.mark.integration

TEST_ORG = "sdu-research"  # starts with no grant in the demo; these tests own its grants
ANALYST = "sun.hao"
COUNT_BY_DISTRICT = {
    "dataset": "population",
    "aggregate": {"kind": "count"},
    "epsilon": 0.1,
    "group_by": {"columns": ["district"]},
}


def _api(settings: Settings) -> str:
    return f"{settings.hub_url}/services/gateway/api"


def _grant(book: Ledger, dataset: str, epsilon: float, delta: float = 1e-6, days: float = 30) -> int:
    grant = book.create_grant(
        organisation=TEST_ORG,
        dataset=dataset,
        purpose="integration test",
        modes=["dp"],
        epsilon=epsilon,
        delta=delta,
        expires_at=datetime.now(UTC) + timedelta(days=days),
        approved_by="op.wang",
    )
    return grant.id


def _revoke_all(book: Ledger) -> None:
    for grant in book.list_grants(organisation=TEST_ORG, active=True):
        book.revoke(grant.id, by="op.wang", reason="integration test finished")


@pytest.fixture(scope="module")
def book(lab_stack: Settings) -> Iterator[Ledger]:
    kct.ensure(lab_stack)
    with open_ledger(lab_stack) as ledger:
        _revoke_all(ledger)
        yield ledger
        _revoke_all(ledger)


def _headers(settings: Settings, user: str = ANALYST) -> dict[str, str]:
    return {"Authorization": f"Bearer {kct.access_token(settings, user)}"}


def test_granted_analyst_gets_count_by_district_and_pays_exactly_epsilon(
    lab_stack: Settings, book: Ledger
) -> None:
    grant = _grant(book, "population", epsilon=2.0)
    try:
        headers = _headers(lab_stack)
        before = book.budget(grant).epsilon_remaining
        preview = httpx.post(f"{_api(lab_stack)}/queries/preview", headers=headers, json=COUNT_BY_DISTRICT)
        assert preview.status_code == 200
        assert book.budget(grant).epsilon_remaining == before  # a preview spends nothing
        released = httpx.post(f"{_api(lab_stack)}/queries", headers=headers, json=COUNT_BY_DISTRICT)
        assert released.status_code == 200, released.text
        body = released.json()
        assert len(body["rows"]) == 8 and {r["district"] for r in body["rows"]} >= {"张店区", "沂源县"}
        assert body["budget"]["epsilon_remaining"] == pytest.approx(before - 0.1, abs=1e-9)
        assert book.budget(grant).epsilon_spent == pytest.approx(0.1, abs=1e-9)
        assert body["preview"]["noise"][0]["scale"] == preview.json()["noise"][0]["scale"]
        history = httpx.get(f"{_api(lab_stack)}/queries", headers=headers).json()
        assert history[0]["details"]["result_digest"] == body["digest"]
        # The auditor reads that record but may not query.
        auditor = _headers(lab_stack, "audit.zhao")
        records = httpx.get(
            f"{_api(lab_stack)}/auditor/records",
            headers=auditor,
            params={"actor": ANALYST, "kind": "dp-query"},
        ).json()
        record = next(r for r in records if r["details"].get("result_digest") == body["digest"])
        assert record["organisation"] == TEST_ORG and record["dataset"] == "population"
        assert record["details"]["epsilon"] == 0.1 and "district" in record["details"]["query"]
        refused = httpx.post(f"{_api(lab_stack)}/queries", headers=auditor, json=COUNT_BY_DISTRICT)
        assert refused.status_code == 403
    finally:
        book.revoke(grant, by="op.wang", reason="test done")


def test_organisation_without_grant_is_refused(lab_stack: Settings, book: Ledger) -> None:
    # zibo-credit never holds a grant on the utility register, in the demo or in any test.
    assert not book.list_grants(organisation="zibo-credit", dataset="utility")
    response = httpx.post(
        f"{_api(lab_stack)}/queries",
        headers=_headers(lab_stack, "chen.jing"),
        json={**COUNT_BY_DISTRICT, "dataset": "utility"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["reason"] == "no-grant"
    assert "zibo-credit" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "reason", "says"),
    [
        ({**COUNT_BY_DISTRICT, "dataset": "census"}, 404, None, "census"),
        ({**COUNT_BY_DISTRICT, "group_by": {"columns": ["income"]}}, 400, "dp-column", "usable:"),
        (
            {"dataset": "population", "aggregate": {"kind": "sum", "column": "birth_year"}, "epsilon": 0.1},
            400,
            "dp-bounds",
            "bounds=(0, 50_000)",
        ),
        ({**COUNT_BY_DISTRICT, "epsilon": -1}, 400, "dp-epsilon", "ε"),
    ],
)
def test_bad_queries_get_clear_errors_and_spend_nothing(
    lab_stack: Settings, book: Ledger, body: dict, status: int, reason: str | None, says: str
) -> None:
    grant = _grant(book, "population", epsilon=1.0)
    try:
        response = httpx.post(f"{_api(lab_stack)}/queries", headers=_headers(lab_stack), json=body)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert says in error["message"]
        if reason:
            assert error["reason"] == reason
        assert book.budget(grant).epsilon_spent == 0
    finally:
        book.revoke(grant, by="op.wang", reason="test done")


def test_expired_grant_is_refused_with_its_date(lab_stack: Settings, book: Ledger) -> None:
    grant = book.create_grant(
        organisation=TEST_ORG,
        dataset="population",
        purpose="integration test",
        modes=["dp"],
        epsilon=1.0,
        delta=0.0,
        expires_at=datetime.now(UTC) + timedelta(seconds=2),
        approved_by="op.wang",
    )
    time.sleep(2.5)
    response = httpx.post(f"{_api(lab_stack)}/queries", headers=_headers(lab_stack), json=COUNT_BY_DISTRICT)
    assert response.status_code == 403
    assert grant.expires_at.date().isoformat() in response.json()["error"]["message"]


def _concurrent(url: str, headers: dict[str, str], n: int = 50) -> list[httpx.Response]:
    """``n`` queries at once; one told "busy" (429, admission control) asks again after Retry-After."""

    def ask(client: httpx.Client) -> httpx.Response:
        for _ in range(60):
            response = client.post(url, headers=headers, json=COUNT_BY_DISTRICT)
            if response.status_code != 429:
                return response
            time.sleep(min(float(response.headers.get("Retry-After", "1")), 5.0))
        return response

    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: ask(client), range(n)))


def _check_exactly_ten(responses: list[httpx.Response], book: Ledger, grant: int) -> None:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == 10
    assert {r.status_code for r in refused} == {403}
    assert {r.json()["error"]["reason"] for r in refused} == {"budget-exhausted"}
    assert all("remaining" in r.json()["error"]["message"] for r in refused)
    status = book.budget(grant)
    assert status.epsilon_spent == pytest.approx(sum(r.json()["preview"]["epsilon"] for r in ok), abs=1e-9)
    assert status.epsilon_remaining == pytest.approx(0, abs=1e-9)


def test_fifty_concurrent_queries_against_a_budget_for_ten(lab_stack: Settings, book: Ledger) -> None:
    grant = _grant(book, "population", epsilon=1.0)
    try:
        responses = _concurrent(f"{_api(lab_stack)}/queries", _headers(lab_stack))
        _check_exactly_ten(responses, book, grant)
        assert book.verify().ok
    finally:
        book.revoke(grant, by="op.wang", reason="test done")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.postgres
def test_fifty_concurrent_queries_on_postgresql(
    lab_stack: Settings, postgres_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "DATALAB_HOME": str(lab_stack.home),
        "DATALAB_DB_URL": postgres_url,
        "DATALAB_GATEWAY_PORT": str(port),
        "PYTHONPATH": str(lab_stack.repo),
        # All fifty reach the ledger at once: the race on PostgreSQL's locks, not the admission queue.
        "DATALAB_HEAVY_QUERIES": "50",
    }
    pid_file = tmp_path / "gateway.pid"
    pg_settings = replace(lab_stack, db_url=postgres_url)
    with closing_registry(pg_settings) as registry:  # organisations live in the ledger's database
        register(registry, demo.DEMO_ORGANISATIONS, by="datalab-bootstrap")
    procs.spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "lab.gateway.app:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        log_file=tmp_path / "gateway.log",
        pid_file=pid_file,
    )
    try:
        base = f"http://127.0.0.1:{port}/services/gateway"
        assert procs.wait_until(
            lambda: procs.http_ok(f"{base}/health"),
            timeout=60,
            alive=lambda: procs.read_pid(pid_file) is not None,
        ), procs.tail(tmp_path / "gateway.log")
        with open_ledger(pg_settings) as book:
            assert book.backend == "postgresql"
            grant = _grant(book, "population", epsilon=1.0)
            responses = _concurrent(f"{base}/api/queries", _headers(lab_stack))
            _check_exactly_ten(responses, book, grant)
            assert book.verify().ok
    finally:
        procs.stop(pid_file)


def _true_counts(settings: Settings) -> dict[str, int]:
    data = (
        storage.root_client(settings).get_object(storage.RAW_BUCKET, layout.raw_object("population")).read()
    )
    counts = pl.read_parquet(io.BytesIO(data), columns=["district"])["district"].value_counts()
    return dict(zip(counts["district"].to_list(), counts["count"].to_list(), strict=True))


def test_released_noise_has_the_previewed_spread(lab_stack: Settings, book: Ledger) -> None:
    grant = _grant(book, "population", epsilon=100.0)
    try:
        truth = _true_counts(lab_stack)
        headers = _headers(lab_stack)
        query = {**COUNT_BY_DISTRICT, "epsilon": 0.5}
        scale = httpx.post(f"{_api(lab_stack)}/queries/preview", headers=headers, json=query).json()["noise"][
            0
        ]
        errors: list[int] = []
        inside = 0
        with httpx.Client(timeout=60) as client:
            for _ in range(40):  # 40 releases x 8 districts = 320 noise draws
                body = client.post(f"{_api(lab_stack)}/queries", headers=headers, json=query).json()
                for row in body["rows"]:
                    error = row["value"] - truth[row["district"]]
                    errors.append(error)
                    inside += abs(error) <= scale["accuracy"]
        b = scale["scale"]
        # Discrete Laplace with scale b: mean 0, variance 2 e^(-1/b) / (1 - e^(-1/b))^2 (≈ 2 b^2).
        q = pow(2.718281828459045, -1 / b)
        expected_variance = 2 * q / (1 - q) ** 2
        ratio = statistics.pvariance(errors) / expected_variance
        assert 0.6 < ratio < 1.6, ratio
        assert abs(statistics.fmean(errors)) < 4 * (expected_variance / len(errors)) ** 0.5
        assert 0.9 <= inside / len(errors) <= 0.99
    finally:
        book.revoke(grant, by="op.wang", reason="test done")


def _call_with(settings: Settings, token: str) -> httpx.Response:
    return httpx.get(f"{_api(settings)}/datasets", headers={"Authorization": f"Bearer {token}"})


def test_forged_foreign_and_stale_tokens_are_refused(lab_stack: Settings, book: Ledger) -> None:
    genuine = kct.access_token(lab_stack, ANALYST)
    assert _call_with(lab_stack, genuine).status_code == 200
    header = jwt.get_unverified_header(genuine)
    claims = kct.claims(genuine)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": header["kid"]})
    assert _call_with(lab_stack, forged).status_code == 401
    # A token of another realm (master), whose keys the gateway does not trust.
    master = httpx.post(
        f"{lab_stack.keycloak_url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": "admin",
            "password": (lab_stack.secrets_dir / "keycloak-admin-password").read_text(),
        },
    )
    assert _call_with(lab_stack, master.json()["access_token"]).status_code == 401
    # A token of this realm but for another audience.
    kct.ensure_variant(lab_stack, "datalab-test-noaud", without_claims=True)
    kct.ensure_variant(lab_stack, "datalab-test-short", lifespan=2)
    try:
        foreign = kct.token_from(lab_stack, "datalab-test-noaud", ANALYST)
        assert "datalab-gateway" not in kct.claims(foreign).get("aud", [])
        response = _call_with(lab_stack, foreign)
        assert response.status_code == 401 and "not issued for" in response.json()["error"]["message"]
        stale = kct.token_from(lab_stack, "datalab-test-short", ANALYST)
        assert _call_with(lab_stack, stale).status_code == 200
        time.sleep(3)
        response = _call_with(lab_stack, stale)
        assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
    finally:
        kct.remove_client(lab_stack, "datalab-test-noaud")
        kct.remove_client(lab_stack, "datalab-test-short")
    assert httpx.get(f"{_api(lab_stack)}/datasets").status_code == 401
