"""Budget totals across grants (per organisation x dataset), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lab.errors import BudgetExhausted, LabError, PolicyError
from lab.ledger import FAILED_BEFORE_NOISE, Ledger
from lab.ledger.db import DELTA_SCALE, EPS_SCALE
from lab.ledger.sweep import ReservationSweeper
from lab.ledger.totals import DEFAULT, Limits
from lab.policy import load_policy
from lab.services.queries import budget_limits
from tests.unit.test_ledger import EXPIRY, START, FakeClock, make_grant

pytestmark = pytest.mark.unit


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def ledger(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Ledger]:
    with Ledger(db_url, anchor_path=tmp_path / "ledger.anchor", clock=clock) as opened:
        yield opened


def caps(total: float | None, per_grant: float | None = None, window_days: float | None = None) -> Limits:
    return Limits(
        epsilon_units=None if total is None else int(total * EPS_SCALE),
        delta_units=int(1e-5 * DELTA_SCALE),
        window_seconds=None if window_days is None else int(window_days * 86400),
        grant_epsilon_units=None if per_grant is None else int(per_grant * EPS_SCALE),
    )


def test_grants_past_the_organisation_total_are_refused_with_the_numbers(ledger: Ledger) -> None:
    assert ledger.set_budget_limits("population", {DEFAULT: caps(6, per_grant=5)}, actor="op")
    assert not ledger.set_budget_limits(
        "population", {DEFAULT: caps(6, per_grant=5)}, actor="op"
    )  # no change
    make_grant(ledger, epsilon=2.5)
    make_grant(ledger, epsilon=2.5)
    outlook = ledger.budget_outlook("acme", "population", 1.5)
    assert outlook is not None and not outlook["fits"]
    assert outlook["epsilon_committed"] == 5.0 and outlook["epsilon_after"] == 6.5
    assert "6.5" in outlook["line"]["en"] and "6.5" in outlook["line"]["zh"]
    head = ledger.verify().head_seq
    with pytest.raises(BudgetExhausted) as refused:
        make_grant(ledger, epsilon=1.5)
    message = refused.value.message
    assert refused.value.reason == "organisation-budget"
    assert "ε=6.0" in message and "ε=5.0" in message and "6.5" in message and "机构" in message
    assert ledger.verify().head_seq == head and len(ledger.list_grants(organisation="acme")) == 2
    make_grant(ledger, epsilon=1.0)  # exactly up to the total
    make_grant(ledger, organisation="other", epsilon=5.0)  # another organisation has its own total
    with pytest.raises(BudgetExhausted, match="at most ε=5.0"):
        make_grant(ledger, organisation="third", epsilon=5.5)  # one grant's own cap


def test_an_approval_is_refused_like_a_grant(ledger: Ledger) -> None:
    ledger.set_budget_limits("population", {DEFAULT: caps(2)}, actor="op")
    apps = [
        ledger.apply(
            organisation="acme",
            dataset="population",
            purpose=f"project {i}",  # one organisation's three projects on one register
            modes=["dp"],
            epsilon=1.0,
            delta=0,
            term_days=10,
            applicant="a",
        )
        for i in range(3)
    ]
    ledger.approve(apps[0].id, by="op")
    ledger.approve(apps[1].id, by="op")
    with pytest.raises(BudgetExhausted, match="at most ε=0.0 can still be granted"):
        ledger.approve(apps[2].id, by="op")
    assert ledger.get_application(apps[2].id).state == "pending"
    grant = ledger.list_grants(organisation="acme")[0]
    ledger.revoke(grant.id, by="op", reason="r")
    ledger.approve(apps[2].id, by="op")  # a revoked grant's unspent budget is free again


def test_spending_counts_across_grants_and_a_rolling_window_forgets(ledger: Ledger, clock: FakeClock) -> None:
    old = [make_grant(ledger, epsilon=5.0), make_grant(ledger, epsilon=5.0)]  # made before the cap
    ledger.set_budget_limits("population", {DEFAULT: caps(3, window_days=7)}, actor="op")
    for _ in range(2):
        ledger.commit(ledger.reserve(old[0].id, 1.0, actor="a"))
    ledger.commit(ledger.reserve(old[1].id, 1.0, actor="a"))
    with pytest.raises(BudgetExhausted) as refused:
        ledger.reserve(old[1].id, 0.5, actor="a")
    assert (
        "spent ε=3.0 of its total ε=3.0" in refused.value.message and "needs ε=0.5" in refused.value.message
    )
    assert ledger.budget(old[1].id).epsilon_remaining == 4.0  # the grant alone could have paid
    clock.advance(timedelta(days=8))
    ledger.commit(ledger.reserve(old[1].id, 0.5, actor="a"))  # the window moved on


def test_agreements_replace_the_default_total(ledger: Ledger) -> None:
    ledger.set_budget_limits("population", {DEFAULT: caps(1), "uni": caps(100)}, actor="op")
    make_grant(ledger, organisation="uni", epsilon=50)
    with pytest.raises(BudgetExhausted):
        make_grant(ledger, organisation="acme", epsilon=2)


def test_concurrent_grants_and_queries_never_pass_the_total(ledger: Ledger) -> None:
    legacy = [make_grant(ledger, epsilon=5.0, expires_at=EXPIRY) for _ in range(2)]
    ledger.set_budget_limits("population", {DEFAULT: caps(3)}, actor="op")
    outcomes: list[str] = []
    lock = threading.Lock()

    def query(i: int) -> None:
        try:
            ledger.commit(ledger.reserve(legacy[i % 2].id, 0.1, actor="a"))
            result = "ok"
        except BudgetExhausted:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=query, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 30 and outcomes.count("refused") == 10
    spent = sum(ledger.budget(g.id).epsilon_spent for g in legacy)
    assert spent == pytest.approx(3.0, abs=1e-12)


def test_concurrent_approvals_never_pass_the_total(ledger: Ledger) -> None:
    ledger.set_budget_limits("population", {DEFAULT: caps(6)}, actor="op")
    made: list[Any] = []
    lock = threading.Lock()

    def grant() -> None:
        try:
            g = make_grant(ledger, epsilon=1.0)
        except BudgetExhausted:
            return
        with lock:
            made.append(g)

    threads = [threading.Thread(target=grant) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 6


def test_a_failure_before_any_row_is_read_is_refunded_and_recorded_so(ledger: Ledger) -> None:
    grant = make_grant(ledger)
    with pytest.raises(KeyError), ledger.spend(grant.id, 0.2, actor="a", query="{}") as spend:
        raise KeyError("before the data")
    assert ledger.budget(grant.id).epsilon_spent == 0
    record = ledger.records(kind="dp-query")[-1]
    assert record.details["outcome"] == FAILED_BEFORE_NOISE
    assert record.details["refunded"] is True and record.details["data_read"] is False
    with pytest.raises(KeyError), ledger.spend(grant.id, 0.2, actor="a", query="{}") as spend:
        spend.reading_data()
        raise KeyError("while reading")
    assert ledger.budget(grant.id).epsilon_spent == pytest.approx(0.2)


def test_the_sweeper_settles_and_records_abandoned_reservations(ledger: Ledger, clock: FakeClock) -> None:
    grant = make_grant(ledger)
    left = ledger.reserve(grant.id, 0.3, actor="a", query="{}")
    sweeper = ReservationSweeper(ledger, timeout_s=60)
    assert sweeper.sweep() == 0  # not stale yet
    clock.advance(timedelta(minutes=2))
    assert sweeper.sweep() == 1 and sweeper.sweep() == 0
    status = ledger.budget(grant.id)
    assert status.epsilon_reserved == 0 and status.epsilon_spent == pytest.approx(0.3)
    record = ledger.records(kind="dp-query")[-1]
    assert record.details["outcome"] == "abandoned" and record.details["reservation"] == left.id
    assert record.details["settled_by"] == "gateway-reservation-sweep"


def test_the_ledger_has_an_identity_that_a_copy_keeps(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with Ledger(url) as book:
        ident = book.identity
    with Ledger(url) as book:
        assert book.identity == ident and len(ident) == 32
    (tmp_path / "b.db").write_bytes((tmp_path / "a.db").read_bytes())
    with Ledger(f"sqlite:///{tmp_path / 'b.db'}") as copy:
        assert copy.identity == ident
    with Ledger(f"sqlite:///{tmp_path / 'c.db'}") as other:
        assert other.identity != ident


def test_the_policy_budget_section_becomes_the_ledgers_caps() -> None:
    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "population.yaml")
    limits = budget_limits(policy)
    assert limits[DEFAULT].epsilon_units == 6 * EPS_SCALE and limits[DEFAULT].window_seconds == 365 * 86400
    assert limits[DEFAULT].grant_epsilon_units == 5 * EPS_SCALE
    assert set(limits) == {DEFAULT}  # the shipped register gives no organisation its own total


def test_a_policy_agreement_replaces_the_default_for_its_organisation(tmp_path: Path) -> None:
    source = (Path(__file__).resolve().parents[2] / "policies" / "population.yaml").read_text()
    marker = "  organisation: {epsilon: 6, delta: 1.0e-5, window_days: 365}\n"
    assert marker in source
    acme = "acme: {epsilon: 20, delta: 1.0e-4, window_days: 30, per_grant: {epsilon: 10}}"
    agreed = f"  agreements:\n    {acme}"
    path = tmp_path / "population.yaml"
    path.write_text(source.replace(marker, marker + agreed + "\n"))
    limits = budget_limits(load_policy(path))
    assert limits["acme"].epsilon_units == 20 * EPS_SCALE and limits["acme"].window_seconds == 30 * 86400
    assert limits["acme"].grant_epsilon_units == 10 * EPS_SCALE
    assert limits[DEFAULT].epsilon_units == 6 * EPS_SCALE


def test_an_agreement_an_operator_records_takes_precedence_is_audited_and_survives_the_sync(
    ledger: Ledger,
) -> None:
    ledger.set_budget_limits("population", {DEFAULT: caps(6, per_grant=5)}, actor="gateway-policy")
    with pytest.raises(BudgetExhausted):
        make_grant(ledger, epsilon=50.0)
    ledger.set_agreement(
        "acme", "population", epsilon=100, delta=1e-3, window_days=1, by="op.wang", reason="agreement 7"
    )
    make_grant(ledger, epsilon=50.0)  # no per-grant cap in the agreement
    outlook = ledger.budget_outlook("acme", "population", 10)
    assert outlook is not None and outlook["epsilon_after"] == 60.0 and outlook["fits"]
    assert "op.wang" in outlook["limits"]["source"]
    record = ledger.records(kind="budget-agreement")[-1]
    assert record.actor == "op.wang" and record.organisation == "acme" and record.dataset == "population"
    assert record.details["limits"]["epsilon"] == 100 and record.details["reason"] == "agreement 7"
    # The policy sync rewrites the policy's caps only; the agreement stays and still rules.
    ledger.set_budget_limits("population", {DEFAULT: caps(7, per_grant=5)}, actor="gateway-policy")
    assert [a["organisation"] for a in ledger.agreements()] == ["acme"]
    make_grant(ledger, epsilon=40.0)
    with pytest.raises(BudgetExhausted, match="ε=100"):
        make_grant(ledger, epsilon=20.0)
    make_grant(ledger, organisation="other", epsilon=5.0)  # other organisations keep the default
    with pytest.raises(BudgetExhausted):
        make_grant(ledger, organisation="other", epsilon=5.0)
    assert ledger.remove_agreement("acme", "population", by="op.wang", reason="agreement ended")
    assert not ledger.remove_agreement("acme", "population", by="op.wang", reason="again")
    assert ledger.agreements() == []
    assert ledger.records(kind="budget-agreement")[-1].details["action"] == "remove"
    with pytest.raises(BudgetExhausted):
        make_grant(ledger, epsilon=1.0)  # back under the policy's 7 ε total, already past it
    assert ledger.verify().ok


def test_a_bad_agreement_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    head = ledger.verify().head_seq
    for bad in ({"epsilon": -1.0}, {"epsilon": float("nan")}, {"window_days": 0.0}, {"window_days": 1e300}):
        args: dict[str, Any] = {"epsilon": 1.0, "delta": None, "window_days": None, **bad}
        with pytest.raises(LabError):
            ledger.set_agreement("acme", "population", **args, by="op.wang", reason="r")
    assert ledger.agreements() == [] and ledger.verify().head_seq == head


def test_a_bad_budget_section_names_file_and_line(tmp_path: Path) -> None:
    source = (Path(__file__).resolve().parents[2] / "policies" / "population.yaml").read_text()
    bad = source.replace("organisation: {epsilon: 6,", "organisation: {epsilon: -6,")
    path = tmp_path / "population.yaml"
    path.write_text(bad)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "epsilon: -6" in text)
    assert f"population.yaml:{line}:" in error.value.message and "budget epsilon" in error.value.message
