"""Applications, decisions, expiries and export requests in the ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lab.errors import AccessDenied, ConfigError
from lab.ledger import Ledger
from lab.ledger.applications import APPROVED, PENDING, REJECTED
from lab.ledger.exports import check_download

pytestmark = pytest.mark.unit

START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def book(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Ledger]:
    url = (
        f"sqlite:///{tmp_path / 'l.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    with Ledger(url, anchor_path=tmp_path / "l.anchor", clock=clock) as ledger:
        yield ledger


def _apply(book: Ledger, applicant: str = "li.na", **over: object) -> int:
    values: dict = {
        "organisation": "qilu-energy",
        "dataset": "population",
        "purpose": "energy demand",
        "modes": ["dp", "masked"],
        "epsilon": 2.0,
        "delta": 1e-6,
        "term_days": 90,
        "applicant": applicant,
        **over,
    }
    return book.apply(**values).id


def test_approval_creates_the_grant_and_both_records_in_one_go(book: Ledger, clock: Clock) -> None:
    app_id = _apply(book)
    app, grant = book.approve(app_id, by="op.wang", epsilon=1.5, term_days=30)
    assert app.state == APPROVED and app.grant_id == grant.id and app.decided_by == "op.wang"
    assert grant.epsilon == 1.5 and grant.delta == 1e-6 and grant.modes == ("dp", "masked")
    assert grant.expires_at == START + timedelta(days=30)
    kinds = [r.kind for r in book.records()]
    assert kinds == ["application", "grant", "decision"]
    decision = book.records(kind="decision")[0]
    assert decision.details["reduced"] == ["epsilon", "term"]
    assert book.verify().ok


@pytest.mark.parametrize(
    ("decider", "org"),
    [("li.na", None), ("someone", "qilu-energy")],
)
def test_nobody_decides_their_own_application(book: Ledger, decider: str, org: str | None) -> None:
    app_id = _apply(book)
    with pytest.raises(AccessDenied) as refused:
        book.approve(app_id, by=decider, by_org=org)
    assert refused.value.reason == "self-approval"
    with pytest.raises(AccessDenied):
        book.reject(app_id, by=decider, by_org=org, reason="no")
    assert book.get_application(app_id).state == PENDING
    assert book.list_grants() == []
    assert [r.kind for r in book.records()] == ["application"]


@pytest.mark.parametrize(
    "terms",
    [{"epsilon": 2.5}, {"delta": 1e-5}, {"term_days": 91}, {"modes": ["dp", "masked", "raw"]}],
)
def test_an_approval_never_grants_more_than_asked(book: Ledger, terms: dict) -> None:
    app_id = _apply(book)
    with pytest.raises(ConfigError):
        book.approve(app_id, by="op.wang", **terms)
    assert book.get_application(app_id).state == PENDING


def test_fewer_modes_may_be_granted(book: Ledger) -> None:
    _, grant = book.approve(_apply(book), by="op.wang", modes=["dp"])
    assert grant.modes == ("dp",)


def test_rejection_needs_a_reason_and_is_final(book: Ledger) -> None:
    app_id = _apply(book)
    with pytest.raises(ConfigError):
        book.reject(app_id, by="op.wang", reason="  ")
    app = book.reject(app_id, by="op.wang", reason="purpose too vague")
    assert app.state == REJECTED and app.decision_reason == "purpose too vague"
    with pytest.raises(ConfigError) as again:
        book.approve(app_id, by="op.wang")
    assert again.value.reason == "already-decided"


def test_the_same_application_twice_is_refused_while_the_first_is_pending(book: Ledger) -> None:
    first = _apply(book)
    with pytest.raises(ConfigError) as twice:
        _apply(book, applicant="zhou.ting")  # a colleague, the same register and purpose
    assert twice.value.reason == "duplicate-application" and str(first) in twice.value.message
    assert "请等待审批或先撤回" in twice.value.message
    other = _apply(book, purpose="heating subsidy study")  # another project: its own application
    book.reject(first, by="op.wang", reason="purpose too vague")
    assert _apply(book) not in (first, other)  # decided: the organisation may ask again


@pytest.mark.security
@pytest.mark.parametrize(("who", "org"), [("an.rival", "zibo-credit"), ("op.wang", None)])
def test_only_the_applying_organisation_withdraws_and_only_while_pending(
    book: Ledger, who: str, org: str | None
) -> None:
    """Attack (an analyst of another organisation, or someone of none): withdrawing a rival's
    application to delay its project. Refused, recorded nowhere, the application still pending."""
    app_id = _apply(book)
    before = len(book.records())
    with pytest.raises(AccessDenied):
        book.withdraw(app_id, by=who, by_org=org)
    assert book.get_application(app_id).state == "pending" and len(book.records()) == before
    app = book.withdraw(app_id, by="zhou.ting", by_org="qilu-energy")  # a colleague of the applicant
    assert app.state == "withdrawn" and app.decided_by == "zhou.ting"
    (record,) = book.records()[before:]
    assert record.kind == "decision" and record.details == {"application": app_id, "decision": "withdrawn"}
    with pytest.raises(ConfigError) as again:
        book.withdraw(app_id, by="li.na", by_org="qilu-energy")
    assert again.value.reason == "already-decided"
    with pytest.raises(ConfigError):
        book.approve(app_id, by="op.wang")  # a withdrawn application is never granted


@pytest.mark.parametrize(
    "bad",
    [
        {"purpose": ""},
        {"modes": []},
        {"modes": ["raw"]},
        {"epsilon": -1},
        {"epsilon": 0},
        {"delta": 1.0},
        {"term_days": 0},
        {"term_days": 5000},
        {"epsilon": float("nan")},
    ],
)
def test_bad_applications_are_refused(book: Ledger, bad: dict) -> None:
    with pytest.raises(ConfigError):
        _apply(book, **bad)
    assert book.records() == []


def test_expiries_are_recorded_once(book: Ledger, clock: Clock) -> None:
    _, grant = book.approve(_apply(book, term_days=1), by="op.wang")
    assert book.record_expiries() == []
    clock.now += timedelta(days=1, seconds=1)
    assert [g.id for g in book.record_expiries()] == [grant.id]
    assert book.record_expiries() == []
    (record,) = book.records(kind="expire")
    assert record.details["grant"] == grant.id and record.dataset == "population"


def test_revoked_grants_are_not_reported_as_expired(book: Ledger, clock: Clock) -> None:
    _, grant = book.approve(_apply(book, term_days=1), by="op.wang")
    book.revoke(grant.id, by="op.wang", reason="done")
    clock.now += timedelta(days=2)
    assert book.record_expiries() == []


def _export(book: Ledger, state: str) -> int:
    return book.request_export(
        organisation="qilu-energy",
        requester="li.na",
        name="table.csv",
        kind="table",
        dataset="population",
        purpose="report",
        sha256="0" * 64,
        size=10,
        object_key="qilu-energy/x/table.csv",
        state=state,
        checks={"findings": [{"severity": "fail", "message": "2 cell(s) below 10"}]}
        if state == "held"
        else {},
    ).id


def test_export_review_rules(book: Ledger) -> None:
    held = _export(book, "held")
    with pytest.raises(AccessDenied):
        book.decide_export(held, by="li.na", decision="reject", reason="mine")
    with pytest.raises(ConfigError) as refused:
        book.decide_export(held, by="op.wang", decision="approve")
    assert refused.value.reason == "held" and "2 cell(s) below 10" in refused.value.message
    with pytest.raises(ConfigError):  # an override needs a reason
        book.decide_export(held, by="op.wang", decision="approve", override=True)
    first = book.decide_export(held, by="op.wang", decision="approve", override=True, reason="public totals")
    assert first.state == "held"  # one of two approvals: not released
    approved = book.decide_export(held, by="op.li", decision="approve", override=True, reason="agreed")
    assert approved.state == "approved"
    check_download(approved)
    revoked = book.revoke_export(held, by="op.wang", reason="published by mistake")
    with pytest.raises(AccessDenied) as gone:
        check_download(revoked)
    assert gone.value.reason == "export-revoked"
    kinds = [r.kind for r in book.records()]
    assert kinds == ["export", "export-review", "export-review", "export-revoke"]


def test_pending_export_is_not_downloadable(book: Ledger) -> None:
    with pytest.raises(AccessDenied):
        check_download(book.get_export(_export(book, "pending")))


def test_hub_logins_are_recorded_without_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.hub.login import record_login

    monkeypatch.setenv("DATALAB_HOME", str(tmp_path))
    monkeypatch.delenv("DATALAB_DB_URL", raising=False)
    auth = {
        "name": "li.na",
        "auth_state": {
            "access_token": "header.payload.signature",
            "refresh_token": "refresh-secret",
            "oauth_user": {"org": "qilu-energy", "roles": ["analyst", "default-roles-datalab"]},
        },
    }
    assert record_login(None, None, auth) is auth
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", anchor_path=tmp_path / "ledger.anchor") as book:
        (record,) = book.records(kind="login")
        assert book.verify().ok
    assert (record.actor, record.organisation) == ("li.na", "qilu-energy")
    assert record.details == {"via": "hub", "roles": ["analyst", "default-roles-datalab"]}
