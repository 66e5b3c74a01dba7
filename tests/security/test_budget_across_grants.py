"""Budget across grants: an organisation cannot collect budget by asking again and again.

Attack (issue 11): one organisation received 6 population grants within 15 minutes
(7.9 ε) and nothing warned the operator. Played here against the real lab: an analyst of
zibo-credit applies six times for ε = 1.5 on the population register, the operator
approves each through the gateway's API. The policy caps what one organisation holds on
the register at ε = 6 over 365 days: the operator sees what each approval would bring the
total to, and the approval that would pass the total is refused with the numbers,
changing nothing. A grant already past the total (made before the cap, here written
straight into the ledger) cannot be spent past it either.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.ledger import grants as grant_rows
from lab.ledger.db import write_tx
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.security.lab_helpers import api, headers

pytestmark = [pytest.mark.security, pytest.mark.integration]

ORG, DATASET, ANALYST, OPERATOR = "zibo-credit", "population", "chen.jing", "op.wang"
TOTAL = 6.0  # policies/population.yaml: budget.organisation.epsilon


def _revoke_all(book: Ledger) -> None:
    for grant in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
        book.revoke(grant.id, by=OPERATOR, reason="security test clean-up")


@pytest.fixture
def book(lab_stack: Settings) -> Iterator[Ledger]:
    kct.ensure(lab_stack)
    with open_ledger(lab_stack) as ledger:
        _revoke_all(ledger)
        yield ledger
        _revoke_all(ledger)
        for app in ledger.list_applications(organisation=ORG, state="pending"):
            ledger.reject(app.id, by=OPERATOR, reason="security test clean-up")


def _decisions(book: Ledger) -> list[int]:
    return [r.seq for kind in ("grant", "decision") for r in book.records(kind=kind, organisation=ORG)]


def _pending(settings: Settings, app_id: int) -> dict:
    listed = httpx.get(
        f"{api(settings)}/operator/applications",
        headers=headers(settings, OPERATOR),
        params={"state": "pending"},
    )
    assert listed.status_code == 200, listed.text
    return next(a for a in listed.json() if a["id"] == app_id)


def test_grants_past_the_organisation_total_are_refused_at_approval(
    lab_stack: Settings, book: Ledger
) -> None:
    granted, refused = [], []
    run = secrets.token_hex(3)
    for i in range(6):
        applied = httpx.post(
            f"{api(lab_stack)}/applications",
            headers=headers(lab_stack, ANALYST),
            json={
                "dataset": DATASET,
                "purpose": f"project {i} of run {run}",  # six projects: each its own application
                "modes": ["dp"],
                "epsilon": 1.5,
                "delta": 1e-7,
                "term_days": 30,
            },
        )
        assert applied.status_code == 200, applied.text
        app = _pending(lab_stack, applied.json()["id"])
        outlook = app["organisation_budget"]  # what the operator sees before approving
        assert outlook["limits"]["epsilon"] == TOTAL and outlook["window"].startswith("rolling 365 days")
        assert outlook["epsilon_after"] == pytest.approx(outlook["epsilon_committed"] + 1.5)
        assert str(outlook["epsilon_after"]).rstrip("0").rstrip(".") in outlook["line"]["en"]
        grants_before = book.list_grants(organisation=ORG, dataset=DATASET)
        decisions_before = _decisions(book)
        response = httpx.post(
            f"{api(lab_stack)}/operator/applications/{app['id']}/approve",
            headers=headers(lab_stack, OPERATOR),
            json={},
            timeout=60,
        )
        if outlook["fits"]:
            assert response.status_code == 200, response.text
            granted.append(response.json()["grant"]["id"])
            continue
        # Refused with the numbers, in both languages; nothing changed.
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["reason"] == "organisation-budget"
        assert f"ε={TOTAL}" in error["message"] and "1.5" in error["message"] and "机构" in error["message"]
        assert f"ε={outlook['epsilon_committed']}" in error["message"]
        assert book.list_grants(organisation=ORG, dataset=DATASET) == grants_before
        assert book.get_application(app["id"]).state == "pending"
        assert book.verify().ok and _decisions(book) == decisions_before  # no grant, no decision recorded
        refused.append(app["id"])
    total = sum(book.get_grant(g).epsilon for g in granted)
    print(f"granted {len(granted)} x 1.5 ε = {total} ε, refused {len(refused)} (total {TOTAL} ε)")
    assert refused and total <= TOTAL


def test_a_grant_past_the_total_cannot_be_spent_past_it(lab_stack: Settings, book: Ledger) -> None:
    # A grant made before the cap existed: 10 ε, more than the organisation may hold.
    now = datetime.now(UTC)
    with write_tx(book._engine) as conn:
        legacy = grant_rows.insert_grant(
            conn,
            organisation=ORG,
            dataset=DATASET,
            purpose="granted before the total existed",
            modes=["dp"],
            epsilon=10.0,
            delta=1e-6,
            expires_at=now + timedelta(days=1),
            approved_by=OPERATOR,
            now=now,
        )
    spent = sum(
        p.epsilon for p in book.spending(organisation=ORG, dataset=DATASET, since=now - timedelta(days=365))
    )
    epsilon = round(max(TOTAL - spent, 0.0) + 1.0, 6)  # the grant could pay for it; the total cannot
    assert epsilon <= book.budget(legacy.id).epsilon_remaining
    query = {
        "dataset": DATASET,
        "aggregate": {"kind": "count"},
        "epsilon": epsilon,
        "group_by": {"columns": ["district"]},
    }
    preview = httpx.post(f"{api(lab_stack)}/queries/preview", headers=headers(lab_stack, ANALYST), json=query)
    assert preview.status_code == 200 and preview.json()["affordable"] is False  # the analyst is told first
    assert preview.json()["organisation_budget"]["epsilon_total"] == TOTAL
    response = httpx.post(
        f"{api(lab_stack)}/queries", headers=headers(lab_stack, ANALYST), json=query, timeout=60
    )
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["reason"] == "organisation-budget"
    assert f"of its total ε={TOTAL}" in error["message"] and f"needs ε={epsilon}" in error["message"]
    assert "机构" in error["message"]
    status = book.budget(legacy.id)
    assert status.epsilon_spent == 0 and status.epsilon_reserved == 0  # nothing spent, nothing held
    assert book.verify().ok
