"""Flags for singling-out queries, whatever their shape and whichever analyst asks.

Attack (issue 11): five queries that single out a person (an equality filter on an exact
birth date, the same grouped by district, a histogram, ...) raised no flag. Played
against the real lab: two analysts of one organisation share the shapes between them;
the auditor's flags must name every one of those queries, and not a harmless count.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.security.lab_helpers import api, headers

pytestmark = [pytest.mark.security, pytest.mark.integration]

ORG, ANALYSTS, AUDITOR = "sdu-research", ("sun.hao", "zhou.ting"), "audit.zhao"
DAY = {"column": "birth_date", "op": "==", "value": "1983-07-21"}
BASE = {"dataset": "population", "epsilon": 0.01}
SHAPES = {
    "an exact birth date": {**BASE, "aggregate": {"kind": "count"}, "filters": [DAY]},
    "grouped by district": {
        **BASE,
        "aggregate": {"kind": "count"},
        "filters": [DAY],
        "group_by": {"columns": ["district"]},
    },
    "a histogram": {**BASE, "aggregate": {"kind": "histogram", "column": "district"}, "filters": [DAY]},
    "a sum": {
        **BASE,
        "aggregate": {"kind": "sum", "column": "birth_year", "bounds": [1900, 2030]},
        "filters": [DAY],
    },
    "a one-day range": {
        **BASE,
        "aggregate": {"kind": "count"},
        "filters": [{**DAY, "op": ">="}, {**DAY, "op": "<="}],
    },
}
HARMLESS = {**BASE, "aggregate": {"kind": "count"}, "group_by": {"columns": ["district"]}}


@pytest.fixture(scope="module")
def book(lab_stack: Settings) -> Iterator[Ledger]:
    kct.ensure(lab_stack)
    with open_ledger(lab_stack) as ledger:
        for old in ledger.list_grants(organisation=ORG, dataset="population", active=True):
            ledger.revoke(old.id, by="op.wang", reason="security test set-up")
        grant = ledger.create_grant(
            organisation=ORG,
            dataset="population",
            purpose="security test: flags",
            modes=["dp"],
            epsilon=1.0,
            delta=1e-6,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            approved_by="op.wang",
        )
        yield ledger
        ledger.revoke(grant.id, by="op.wang", reason="security test done")


def _run(settings: Settings, user: str, query: dict[str, Any]) -> int:
    response = httpx.post(f"{api(settings)}/queries", headers=headers(settings, user), json=query, timeout=60)
    assert response.status_code == 200, response.text
    return int(response.json()["reservation_id"])


def _seq(book: Ledger, reservation: int) -> int:
    found = [r for r in book.records(kind="dp-query", organisation=ORG, newest_first=True, limit=100)]
    return next(r.seq for r in found if r.details.get("reservation") == reservation)


def _flagged(settings: Settings) -> dict[int, dict[str, Any]]:
    response = httpx.get(f"{api(settings)}/auditor/flags", headers=headers(settings, AUDITOR), timeout=60)
    assert response.status_code == 200, response.text
    return {
        seq: flag
        for flag in response.json()
        if flag["rule"] == "singling-out" and flag["organisation"] == ORG
        for seq in flag["records"]
    }


def test_each_singling_out_shape_raises_a_flag_across_analysts(lab_stack: Settings, book: Ledger) -> None:
    harmless = _seq(book, _run(lab_stack, ANALYSTS[0], HARMLESS))
    for i, (shape, query) in enumerate(SHAPES.items()):
        seq = _seq(book, _run(lab_stack, ANALYSTS[i % 2], query))
        flagged = _flagged(lab_stack)
        assert seq in flagged, f"{shape}: no flag"
        print(f"{shape}: flagged, {flagged[seq]['message']}")
    flag = flagged[seq]
    assert set(ANALYSTS) <= set(flag["actors"]) and flag["dataset"] == "population"
    assert "个人" in flag["message"]
    assert harmless not in flagged
