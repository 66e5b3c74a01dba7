"""Charging: a query is checked before budget is reserved, and no reservation is left unsettled.

Attacks (issue 11): a ``birth_date`` filter given as an ISO string passed the preview,
failed inside Polars (HTTP 500) and was charged; a gateway killed mid-query left its
reservation outstanding for ever (``settle_abandoned`` had no caller). Played against the
real lab: the gateway behind the hub's proxy, and gateway processes this test starts on
their own loopback ports with the lab's own ledger, one of them killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.ledger.db import read_tx, reservations
from lab.settings import Settings
from lab.stack import procs
from tests.integration import keycloak_test_client as kct
from tests.security.lab_helpers import api, headers, start_gateway

pytestmark = [pytest.mark.security, pytest.mark.integration]

ORG, ANALYST = "sdu-research", "sun.hao"
COUNT = {"dataset": "population", "aggregate": {"kind": "count"}, "epsilon": 0.01}


@pytest.fixture(scope="module")
def book(lab_stack: Settings) -> Iterator[Ledger]:
    kct.ensure(lab_stack)
    with open_ledger(lab_stack) as ledger:
        yield ledger


@pytest.fixture(scope="module")
def grant(book: Ledger) -> Iterator[int]:
    for old in book.list_grants(organisation=ORG, dataset="population", active=True):
        book.revoke(old.id, by="op.wang", reason="security test set-up")
    made = book.create_grant(
        organisation=ORG,
        dataset="population",
        purpose="security test: charging",
        modes=["dp"],
        epsilon=50.0,
        delta=1e-6,
        expires_at=datetime.now(UTC) + timedelta(hours=2),
        approved_by="op.wang",
    )
    yield made.id
    book.revoke(made.id, by="op.wang", reason="security test done")


def _query(
    settings: Settings, body: dict[str, Any], base: str | None = None, timeout: float = 60
) -> httpx.Response:
    url = f"{base}/api/queries" if base else f"{api(settings)}/queries"
    return httpx.post(url, headers=headers(settings, ANALYST), json=body, timeout=timeout)


def test_an_iso_date_filter_is_accepted_and_charged_exactly_once(
    lab_stack: Settings, book: Ledger, grant: int
) -> None:
    before = book.budget(grant)
    body = {**COUNT, "filters": [{"column": "birth_date", "op": "==", "value": "1980-03-14"}]}
    response = _query(lab_stack, body)
    assert response.status_code == 200, response.text
    after = book.budget(grant)
    assert after.epsilon_spent == pytest.approx(before.epsilon_spent + 0.01, abs=1e-12)
    assert after.epsilon_reserved == 0


BAD = [
    ("birth_date", "==", "1980-02-30", "ISO date"),  # no such day
    ("birth_date", "==", 19800314, "ISO date"),
    ("birth_date", ">=", "14/03/1980", "ISO date"),
    ("birth_date", "in", ["1980-03-14", "soon"], "ISO date"),
    ("birth_year", "==", "1980", "number"),
    ("birth_year", "<", True, "number"),
    ("district", "==", 5, "text"),
    ("sex", "==", ["F"], "text"),
    ("education", "==", {"level": 3}, "text"),
]


@pytest.mark.parametrize(("column", "op", "value", "says"), BAD)
def test_a_filter_value_of_the_wrong_type_is_refused_before_any_reservation(
    lab_stack: Settings, book: Ledger, grant: int, column: str, op: str, value: Any, says: str
) -> None:
    before, recorded = book.budget(grant), _records_of(book, grant)
    response = _query(lab_stack, {**COUNT, "filters": [{"column": column, "op": op, "value": value}]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["reason"] == "dp-query" and says in error["message"] and column in error["message"]
    assert "筛选" in error["message"]  # and in Chinese
    assert book.budget(grant) == before  # nothing reserved, nothing spent
    assert _records_of(book, grant) == recorded  # not even a reservation was recorded


def test_grouping_by_the_aggregated_column_is_refused_before_any_reservation(
    lab_stack: Settings, book: Ledger, grant: int
) -> None:
    before = book.budget(grant)
    body = {
        "dataset": "population",
        "aggregate": {"kind": "median", "column": "birth_year", "bounds": [1900, 2030]},
        "epsilon": 0.01,
        "group_by": {"columns": ["birth_year"], "keys": [[1980], [1981]]},
    }
    response = _query(lab_stack, body)
    assert response.status_code == 400 and response.json()["error"]["reason"] == "dp-query", response.text
    assert book.budget(grant) == before


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
    st.dates().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
)
_value = st.one_of(
    _scalar, st.lists(_scalar, max_size=3), st.dictionaries(st.text(max_size=3), _scalar, max_size=2)
)
_columns = st.sampled_from(
    ["sex", "birth_date", "district", "education", "marital_status", "birth_year", "nope"]
)
_filter = st.fixed_dictionaries(
    {
        "column": _columns,
        "op": st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "~"]),
        "value": _value,
    }
)
_aggregate = st.one_of(
    st.fixed_dictionaries({"kind": st.just("count")}),
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["sum", "mean", "median", "histogram"]),
            "column": _columns,
            "bounds": st.just([0, 3000]),
        }
    ),
    st.fixed_dictionaries(
        {"kind": st.just("histogram"), "column": _columns, "categories": st.lists(_scalar, max_size=3)}
    ),
)
_request = st.fixed_dictionaries(
    {
        "dataset": st.just("population"),
        "aggregate": _aggregate,
        "epsilon": st.just(0.001),
        "filters": st.lists(_filter, max_size=2),
        "group_by": st.one_of(
            st.none(), st.fixed_dictionaries({"columns": st.lists(_columns, min_size=1, max_size=2)})
        ),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_request)
def test_no_generated_query_gets_a_5xx_or_pays_for_a_failure(
    lab_stack: Settings, book: Ledger, grant: int, body: dict[str, Any]
) -> None:
    before = book.budget(grant)
    response = _query(lab_stack, body)
    assert response.status_code < 500, (body, response.text)
    after = book.budget(grant)
    assert after.epsilon_reserved == 0
    if response.status_code == 200:
        assert after.epsilon_spent == pytest.approx(before.epsilon_spent + 0.001, abs=1e-12)
    else:
        assert after.epsilon_spent == before.epsilon_spent, (body, response.text)


def _records_of(book: Ledger, grant: int) -> int:
    return sum(1 for r in book.records(kind="dp-query", organisation=ORG) if r.details.get("grant") == grant)


SLOW = {  # about ten seconds of OpenDP quantiles on the demo register: time to kill the gateway
    "dataset": "population",
    "aggregate": {"kind": "median", "column": "birth_year", "bounds": [1900, 2030]},
    "epsilon": 0.5,
    "group_by": {"columns": ["education"], "keys": [[f"level-{i}"] for i in range(20_000)]},
}


def _outstanding(book: Ledger, grant: int) -> list[Any]:
    with read_tx(book._engine) as conn:
        rows = conn.execute(
            select(reservations).where(reservations.c.grant_id == grant, reservations.c.state == "reserved")
        )
        return list(rows.mappings())


def test_a_reservation_left_by_a_killed_gateway_is_settled_by_the_sweeper(
    lab_stack: Settings, book: Ledger, grant: int, tmp_path: Path
) -> None:
    pid_file, base = start_gateway(lab_stack, tmp_path, "doomed")
    caught: list[Any] = []
    try:
        for _attempt in range(5):
            spent = book.budget(grant).epsilon_spent
            sender = threading.Thread(target=lambda: caught.append(_try(lab_stack, base)), daemon=True)
            sender.start()
            found = procs.wait_until(
                lambda s=sender: bool(_outstanding(book, grant)) or not s.is_alive(),
                timeout=120,
                alive=lambda: True,
                interval=0.05,
            )
            assert found
            held = _outstanding(book, grant)
            if held:
                record = procs.read_pid(pid_file)
                assert record is not None
                os.kill(record.pid, signal.SIGKILL)  # the gateway dies mid-query
                sender.join(timeout=60)
                break
        else:
            pytest.fail("the slow query always finished before the gateway could be killed")
    finally:
        procs.stop(pid_file)
    (reservation,) = held
    assert [r["id"] for r in _outstanding(book, grant)] == [reservation["id"]]  # left behind
    assert book.budget(grant).epsilon_reserved == pytest.approx(0.5)
    # A gateway with a short reservation timeout sweeps it: charged, and recorded.
    sweeper_pid, _ = start_gateway(lab_stack, tmp_path, "sweeper", DATALAB_RESERVATION_TIMEOUT_S="1")
    try:
        settled = procs.wait_until(lambda: not _outstanding(book, grant), timeout=120, alive=lambda: True)
    finally:
        procs.stop(sweeper_pid)
    assert settled, "the abandoned reservation was never settled"
    status = book.budget(grant)
    assert status.epsilon_reserved == 0 and status.epsilon_spent == pytest.approx(spent + 0.5, abs=1e-12)
    records = [
        r
        for r in book.records(kind="dp-query", organisation=ORG, newest_first=True, limit=200)
        if r.details.get("reservation") == reservation["id"]
    ]
    assert len(records) == 1
    assert records[0].details["outcome"] == "abandoned"
    assert records[0].details["settled_by"] == "gateway-reservation-sweep"
    assert records[0].details["epsilon"] == 0.5 and book.verify().ok


def _try(settings: Settings, base: str) -> Any:
    try:
        return _query(settings, SLOW, base=base, timeout=300).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__
