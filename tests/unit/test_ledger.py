"""The ledger on SQLite and on a throwaway PostgreSQL: grants, budgets, audit chain."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from lab.errors import AccessDenied, BudgetExhausted, ConfigError, LabError
from lab.ledger import (
    FAILED_AFTER_NOISE,
    FAILED_BEFORE_NOISE,
    RELEASED,
    Grant,
    Kind,
    Ledger,
    record_hash,
    result_digest,
)

pytestmark = pytest.mark.unit

START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
EXPIRY = datetime(2030, 1, 31, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def anchor_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.anchor"


@pytest.fixture
def ledger(db_url: str, anchor_path: Path, clock: FakeClock) -> Iterator[Ledger]:
    with Ledger(db_url, anchor_path=anchor_path, clock=clock) as opened:
        yield opened


def raw_sql(url: str, sql: str, **params: Any) -> list[Any]:
    """Run SQL straight against the database, as someone tampering with it would."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def make_grant(ledger: Ledger, **overrides: Any) -> Grant:
    fields: dict[str, Any] = {
        "organisation": "acme",
        "dataset": "population",
        "purpose": "district planning study",
        "modes": ["dp", "masked"],
        "epsilon": 1.0,
        "delta": 1e-6,
        "expires_at": EXPIRY,
        "approved_by": "operator-li",
    }
    fields.update(overrides)
    return ledger.create_grant(**fields)


def fill_log(ledger: Ledger, records: int = 6) -> None:
    for i in range(records):
        ledger.append(Kind.LOGIN, actor=f"user-{i}", organisation="acme", details={"n": i})


# --- grants ------------------------------------------------------------------------------


def test_grant_is_recorded_listed_and_audited(ledger: Ledger) -> None:
    grant = make_grant(ledger)
    make_grant(ledger, organisation="globex", dataset="utilities", modes=["masked"])

    assert ledger.get_grant(grant.id) == grant
    assert grant.modes == ("dp", "masked") and grant.epsilon == 1.0 and grant.delta == 1e-6
    assert grant.expires_at == EXPIRY and grant.created_at == START
    assert [g.id for g in ledger.list_grants(organisation="acme")] == [grant.id]
    assert len(ledger.list_grants(active=True)) == 2
    (record,) = ledger.records(kind=Kind.GRANT, organisation="acme")
    assert record.actor == "operator-li" and record.details["grant"] == grant.id


def test_grant_with_bad_values_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ConfigError, match="not in the future"):
        make_grant(ledger, expires_at=START - timedelta(days=1))
    with pytest.raises(ConfigError, match="release modes"):
        make_grant(ledger, modes=["raw"])
    with pytest.raises(ConfigError, match="epsilon budget"):
        make_grant(ledger, epsilon=-1.0)
    assert ledger.list_grants() == []


def test_organisation_without_grant_is_refused(ledger: Ledger) -> None:
    make_grant(ledger, organisation="globex")
    with pytest.raises(AccessDenied, match="'acme' has no grant for dataset 'population'") as info:
        ledger.active_grant("acme", "population", mode="dp", actor="alice")
    assert info.value.reason == "no-grant"
    (refusal,) = ledger.records(kind=Kind.DP_QUERY)
    assert refusal.details["outcome"] == "refused" and refusal.actor == "alice"


def test_expired_grant_is_refused_with_its_date(ledger: Ledger, clock: FakeClock) -> None:
    grant = make_grant(ledger)
    assert ledger.active_grant("acme", "population", mode="dp").id == grant.id

    clock.now = EXPIRY + timedelta(hours=1)
    with pytest.raises(AccessDenied, match="expired on 2030-01-31") as info:
        ledger.active_grant("acme", "population", mode="dp")
    assert info.value.reason == "grant-expired"
    with pytest.raises(AccessDenied, match="expired on 2030-01-31"):
        ledger.reserve(grant.id, 0.1, actor="alice")
    assert ledger.list_grants(active=True) == []
    assert ledger.budget(grant.id).epsilon_spent == 0.0


def test_revoked_grant_is_refused_with_date_and_reason(ledger: Ledger, clock: FakeClock) -> None:
    grant = make_grant(ledger)
    clock.advance(timedelta(days=2))
    revoked = ledger.revoke(grant.id, by="operator-wang", reason="purpose no longer valid")
    assert ledger.revoke(grant.id, by="operator-wang", reason="again") == revoked

    with pytest.raises(
        AccessDenied, match="revoked on 2030-01-03 09:00 UTC: purpose no longer valid"
    ) as info:
        ledger.active_grant("acme", "population")
    assert info.value.reason == "grant-revoked"
    with pytest.raises(AccessDenied, match="revoked"):
        ledger.reserve(grant.id, 0.1, actor="alice")
    (record,) = ledger.records(kind=Kind.REVOKE)
    assert record.actor == "operator-wang" and record.details["reason"] == "purpose no longer valid"


def test_masked_only_grant_cannot_pay_for_dp(ledger: Ledger) -> None:
    grant = make_grant(ledger, modes=["masked"])
    with pytest.raises(AccessDenied, match="not dp") as info:
        ledger.reserve(grant.id, 0.1, actor="alice")
    assert info.value.reason == "mode-not-granted"
    assert ledger.active_grant("acme", "population", mode="masked").id == grant.id


def test_expiring_grants_are_listed_for_reminders(ledger: Ledger) -> None:
    soon = make_grant(ledger, expires_at=START + timedelta(days=3))
    make_grant(ledger, dataset="utilities", expires_at=START + timedelta(days=60))
    assert [g.id for g in ledger.expiring_grants(timedelta(days=7))] == [soon.id]


# --- budget -------------------------------------------------------------------------------


def test_fifty_concurrent_queries_against_a_budget_for_ten(ledger: Ledger) -> None:
    grant = make_grant(ledger, epsilon=1.0)
    barrier = threading.Barrier(50)
    successes: list[float] = []
    refusals: list[BudgetExhausted] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def query(i: int) -> None:
        barrier.wait()
        try:
            reservation = ledger.reserve(grant.id, 0.1, actor=f"analyst-{i}", query="count by district")
            ledger.commit(reservation, result_digest=result_digest({"i": i}))
            with lock:
                successes.append(reservation.epsilon)
        except BudgetExhausted as exc:
            with lock:
                refusals.append(exc)
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=query, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(successes) == 10 and len(refusals) == 40
    assert all("remaining ε=0.0" in str(exc) for exc in refusals)
    status = ledger.budget(grant.id)
    assert status.epsilon_spent == math.fsum(successes) == 1.0
    assert status.epsilon_reserved == 0.0 and status.epsilon_remaining == 0.0
    outcomes = [r.details["outcome"] for r in ledger.records(kind=Kind.DP_QUERY)]
    assert outcomes.count(RELEASED) == 10 and outcomes.count("refused") == 40
    assert ledger.verify().ok


def test_refusal_says_what_remains_and_spends_nothing(ledger: Ledger) -> None:
    grant = make_grant(ledger, epsilon=0.25, delta=1e-6)
    for _ in range(2):
        ledger.commit(ledger.reserve(grant.id, 0.1, actor="alice"))
    with pytest.raises(BudgetExhausted, match=r"remaining ε=0\.05, δ=1e-06 of ε=0\.25") as info:
        ledger.reserve(grant.id, 0.1, 1e-7, actor="alice")
    assert info.value.reason == "budget-exhausted"
    status = ledger.budget(grant.id)
    assert (status.epsilon_spent, status.epsilon_remaining, status.delta_spent) == (0.2, 0.05, 0.0)


def test_budget_arithmetic_is_exact(ledger: Ledger) -> None:
    # 0.1 + 0.1 + 0.1 > 0.3 in floating point; the ledger must still fit three queries.
    grant = make_grant(ledger, epsilon=0.3)
    for _ in range(3):
        ledger.commit(ledger.reserve(grant.id, 0.1, actor="alice"))
    assert ledger.budget(grant.id).epsilon_remaining == 0.0
    with pytest.raises(BudgetExhausted):
        ledger.reserve(grant.id, 1e-9, actor="alice")


def test_outstanding_reservations_count_against_the_budget(ledger: Ledger) -> None:
    grant = make_grant(ledger, epsilon=0.5)
    held = ledger.reserve(grant.id, 0.4, actor="alice")
    status = ledger.budget(grant.id)
    assert (status.epsilon_reserved, status.epsilon_remaining) == (0.4, 0.1)
    with pytest.raises(BudgetExhausted, match="held by queries still running"):
        ledger.reserve(grant.id, 0.2, actor="bob")
    ledger.release(held, reason="invalid-query")
    assert ledger.budget(grant.id).epsilon_remaining == 0.5


def test_failure_before_noise_is_refunded_and_audited(ledger: Ledger) -> None:
    grant = make_grant(ledger)
    with pytest.raises(KeyError), ledger.spend(grant.id, 0.3, actor="alice", query="mean(income)") as spend:
        raise KeyError("unknown column")  # the query failed before touching the data
    assert spend.reservation.outcome == FAILED_BEFORE_NOISE
    assert ledger.budget(grant.id).epsilon_remaining == 1.0
    (record,) = ledger.records(kind=Kind.DP_QUERY)
    assert record.details["outcome"] == FAILED_BEFORE_NOISE and record.details["reason"] == "KeyError"
    assert "unknown column" not in json.dumps(record.details)


def test_failure_after_noise_is_charged_and_audited(ledger: Ledger) -> None:
    grant = make_grant(ledger)
    with pytest.raises(TimeoutError), ledger.spend(grant.id, 0.3, actor="alice") as spend:
        spend.noise_drawn()
        raise TimeoutError
    assert ledger.budget(grant.id).epsilon_spent == 0.3
    (record,) = ledger.records(kind=Kind.DP_QUERY)
    assert record.details["outcome"] == FAILED_AFTER_NOISE and record.details["epsilon"] == 0.3


def test_commit_writes_the_audit_record_with_the_charge(ledger: Ledger) -> None:
    grant = make_grant(ledger)
    with ledger.spend(grant.id, 0.2, 1e-7, actor="alice", query="count() group_by district") as spend:
        spend.result(result_digest([["Zhangdian", 1042]]), mechanism="laplace")
    settled = spend.reservation
    assert settled.state == "spent" and settled.audit_seq is not None
    (record,) = ledger.records(kind=Kind.DP_QUERY, actor="alice")
    assert record.seq == settled.audit_seq
    assert record.organisation == "acme" and record.dataset == "population"
    assert record.details["query"] == "count() group_by district"
    assert (record.details["epsilon"], record.details["delta"]) == (0.2, 1e-7)
    assert record.details["result_digest"].startswith("sha256:")
    assert "Zhangdian" not in json.dumps(record.details)


def test_settling_twice(ledger: Ledger) -> None:
    grant = make_grant(ledger)
    reservation = ledger.reserve(grant.id, 0.1, actor="alice")
    first = ledger.commit(reservation)
    assert ledger.commit(reservation) == first  # a retry after a lost reply
    with pytest.raises(LabError, match="already settled") as info:
        ledger.release(reservation, reason="late")
    assert info.value.reason == "already-settled"
    assert ledger.budget(grant.id).epsilon_spent == 0.1
    assert len(ledger.records(kind=Kind.DP_QUERY)) == 1


def test_abandoned_reservations_are_charged(ledger: Ledger, clock: FakeClock) -> None:
    grant = make_grant(ledger)
    ledger.reserve(grant.id, 0.1, actor="alice")
    clock.advance(timedelta(minutes=1))
    recent = ledger.reserve(grant.id, 0.1, actor="alice")
    settled = ledger.settle_abandoned(timedelta(seconds=30))
    assert [r.outcome for r in settled] == ["abandoned"]
    status = ledger.budget(grant.id)
    assert (status.epsilon_spent, status.epsilon_reserved) == (0.1, 0.1)
    assert ledger.get_grant(recent.grant_id) == grant


def test_spending_per_organisation_and_dataset_over_time(ledger: Ledger, clock: FakeClock) -> None:
    acme = make_grant(ledger)
    globex = make_grant(ledger, organisation="globex")
    ledger.commit(ledger.reserve(acme.id, 0.1, actor="alice"))
    ledger.commit(ledger.reserve(acme.id, 0.2, actor="alice"))
    clock.advance(timedelta(days=1))
    ledger.commit(ledger.reserve(acme.id, 0.3, actor="alice"))
    ledger.commit(ledger.reserve(globex.id, 0.4, actor="bob"))
    ledger.release(ledger.reserve(globex.id, 0.5, actor="bob"), reason="invalid-query")

    points = [(p.period, p.organisation, p.epsilon, p.operations) for p in ledger.spending()]
    assert points == [
        ("2030-01-01", "acme", pytest.approx(0.3), 2),
        ("2030-01-02", "acme", 0.3, 1),
        ("2030-01-02", "globex", 0.4, 1),
    ]
    assert [p.epsilon for p in ledger.spending(organisation="acme", period="month")] == [0.6]


# --- audit log ----------------------------------------------------------------------------


def test_audit_details_refuse_secrets(ledger: Ledger) -> None:
    with pytest.raises(ConfigError, match="access_token"):
        ledger.append(Kind.LOGIN, actor="alice", details={"access_token": "eyJ..."})
    with pytest.raises(ConfigError, match="kind"):
        ledger.append("DP Query", actor="alice")
    assert ledger.records() == []


def test_untouched_log_verifies(ledger: Ledger, anchor_path: Path) -> None:
    assert ledger.verify().ok  # empty
    fill_log(ledger)
    result = ledger.verify()
    assert result.ok and result.checked == 6 and result.anchored and result.unanchored == 0
    assert json.loads(anchor_path.read_text())["seq"] == 6


def _edit(url: str) -> None:
    raw_sql(url, "UPDATE ledger_audit SET details = :d WHERE seq = 3", d='{"n":99}')


def _delete_middle(url: str) -> None:
    raw_sql(url, "DELETE FROM ledger_audit WHERE seq = 3")


def _swap(url: str) -> None:
    raw_sql(url, "UPDATE ledger_audit SET seq = -3 WHERE seq = 3")
    raw_sql(url, "UPDATE ledger_audit SET seq = 3 WHERE seq = 4")
    raw_sql(url, "UPDATE ledger_audit SET seq = 4 WHERE seq = -3")


def _edit_and_rehash(url: str) -> None:
    (row,) = raw_sql(url, "SELECT * FROM ledger_audit WHERE seq = 3")
    fields = dict(row._mapping)
    fields["details"] = {"n": 99}
    at = fields["at"]
    fields["at"] = (at if isinstance(at, datetime) else datetime.fromisoformat(at)).replace(tzinfo=UTC)
    raw_sql(
        url,
        "UPDATE ledger_audit SET details = :d, hash = :h WHERE seq = 3",
        d='{"n":99}',
        h=record_hash(fields),
    )


def _delete_last(url: str) -> None:
    raw_sql(url, "DELETE FROM ledger_audit WHERE seq = 6")


def _delete_last_and_fix_head(url: str) -> None:
    (row,) = raw_sql(url, "SELECT hash FROM ledger_audit WHERE seq = 5")
    raw_sql(url, "DELETE FROM ledger_audit WHERE seq = 6")
    raw_sql(url, "UPDATE ledger_audit_head SET seq = 5, hash = :h", h=row.hash)


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "why"),
    [
        (_edit, 3, "does not match its hash"),
        (_delete_middle, 3, "missing"),
        (_swap, 3, "does not match its hash"),
        (_edit_and_rehash, 3, "rewritten"),
        (_delete_last, 6, "missing"),
        (_delete_last_and_fix_head, 6, "anchor"),
    ],
    ids=["edit", "delete-middle", "reorder", "edit-and-rehash", "delete-last", "delete-last-and-head"],
)
def test_tampering_names_the_record(ledger: Ledger, db_url: str, tamper: Any, bad_seq: int, why: str) -> None:
    fill_log(ledger)
    tamper(db_url)
    result = ledger.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq, result.problem
    assert why in (result.problem or "")
    assert f"seq {bad_seq}" in result.message


def test_truncation_stays_detected_after_later_appends(ledger: Ledger, db_url: str) -> None:
    fill_log(ledger)
    _delete_last_and_fix_head(db_url)
    fill_log(ledger, 3)  # the log grows again past the anchored seq
    result = ledger.verify()
    assert not result.ok and result.first_bad_seq == 6, result.problem


def test_missing_anchor_file_is_reported(ledger: Ledger, anchor_path: Path) -> None:
    fill_log(ledger, 2)
    anchor_path.unlink()
    result = ledger.verify()
    assert not result.ok and "anchor file is missing" in (result.problem or "")
    assert ledger.reanchor(actor="auditor-zhao").ok
    assert ledger.records(kind="anchor-reset")[0].details["previous_anchor_seq"] is None


def test_concurrent_appends_never_fork_the_chain(ledger: Ledger) -> None:
    def writer(i: int) -> None:
        for j in range(5):
            ledger.append(Kind.DOWNLOAD, actor=f"user-{i}", details={"j": j})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    records = ledger.records()
    assert [r.seq for r in records] == list(range(1, 51))
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    assert ledger.verify().ok


def test_records_are_searchable(ledger: Ledger, clock: FakeClock) -> None:
    ledger.append(Kind.LOGIN, actor="alice", organisation="acme")
    clock.advance(timedelta(hours=1))
    ledger.append(Kind.DOWNLOAD, actor="alice", organisation="acme", dataset="population")
    ledger.append(Kind.DOWNLOAD, actor="bob", organisation="globex", dataset="utilities")
    clock.advance(timedelta(hours=1))
    ledger.append(Kind.EXPORT, actor="bob", organisation="globex", dataset="utilities")

    def seqs(**filters: Any) -> list[int]:
        return [r.seq for r in ledger.records(**filters)]

    assert seqs(organisation="globex") == [3, 4]
    assert seqs(actor="alice", kind=Kind.DOWNLOAD) == [2]
    assert seqs(dataset="utilities") == [3, 4]
    assert seqs(since=START + timedelta(hours=1), until=START + timedelta(hours=2)) == [2, 3]
    assert seqs(newest_first=True, limit=2) == [4, 3]


def test_export_has_records_verification_and_summary(ledger: Ledger, clock: FakeClock) -> None:
    grant = make_grant(ledger)
    clock.advance(timedelta(days=1))
    ledger.commit(ledger.reserve(grant.id, 0.1, actor="alice", query="count"))
    ledger.append(Kind.DOWNLOAD, actor="alice", organisation="acme", dataset="population")
    clock.advance(timedelta(days=1))
    ledger.append(Kind.LOGIN, actor="bob", organisation="acme")

    package = ledger.export(START + timedelta(days=1), START + timedelta(days=2))
    assert [r.seq for r in package.records] == [2, 3]
    assert package.verification.ok and package.verification.head_seq == 4
    assert package.summary["by_kind"] == {"dp-query": 1, "download": 1}
    assert package.summary["by_outcome"] == {"dp-query:released": 1}
    assert package.summary["budget_spent"][0]["epsilon"] == 0.1
    json.dumps(package.as_dict())  # JSON-ready for the audit package file


def test_reopening_keeps_everything(db_url: str, anchor_path: Path, clock: FakeClock) -> None:
    with Ledger(db_url, anchor_path=anchor_path, clock=clock) as first:
        grant = make_grant(first)
        first.commit(first.reserve(grant.id, 0.5, actor="alice"))
    with Ledger(db_url, anchor_path=anchor_path, clock=clock) as second:
        assert second.budget(grant.id).epsilon_remaining == 0.5
        assert second.verify().ok and second.verify().checked == 2


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as ledger:
        ledger.append(Kind.LOGIN, actor="alice")
        assert ledger.backend == "sqlite"
    assert raw_sql(url, "PRAGMA journal_mode")[0][0] == "wal"


def test_unsupported_database_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SQLite and PostgreSQL"):
        Ledger("mysql://localhost/ledger")
    with pytest.raises(ConfigError, match="needs an SQLite file"):
        Ledger("sqlite://")


def test_spending_periods_are_days_of_the_lab_zone_when_asked(ledger: Ledger, clock: FakeClock) -> None:
    """The auditor's chart counts Beijing days: a spend late on a UTC day is the next day there."""
    from lab.localtime import ZONE

    grant = make_grant(ledger)
    now = clock()
    clock.advance(timedelta(hours=23 - now.hour, minutes=30 - now.minute))  # 23:30 UTC
    ledger.commit(ledger.reserve(grant.id, 0.1, actor="alice"))
    assert [p.period for p in ledger.spending()] == ["2030-01-01"]
    assert [p.period for p in ledger.spending(zone=ZONE)] == ["2030-01-02"]
    assert [p.period for p in ledger.spending(zone=ZONE, period="hour")] == ["2030-01-02T07:00+0800"]


def test_an_object_anchor_keeps_the_file_anchors_promises(tmp_path: Path) -> None:
    """The head kept in the object store (replicas): monotonic, old head kept as evidence, locked."""
    from lab.ledger.chain import ObjectAnchor

    versions: list[bytes] = []
    locked: list[bool] = []

    class Lock:
        def __enter__(self) -> None:
            locked.append(True)

        def __exit__(self, *exc: object) -> None:
            locked.pop()

    def put(data: bytes) -> None:
        assert locked, "the anchor was written outside the ledger's lock"
        versions.append(data)

    anchor = ObjectAnchor("audit-archive/anchors/x.json", lambda: versions[-1] if versions else None, put)
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    book.use_anchor(anchor)
    anchor.lock = Lock  # observe that writes take the lock the ledger provides
    for i in range(3):
        book.append("test-record", actor="writer", details={"n": i})
    assert anchor.read() == (3, book.records()[-1].hash) and len(versions) == 3
    assert not anchor.advance(2, "0" * 64)  # never backwards
    assert book.verify().ok and book.verify().anchored

    def unreadable() -> bytes:
        raise OSError("connection refused")

    broken = ObjectAnchor("audit-archive/anchors/x.json", unreadable, put)
    with pytest.raises(ConfigError) as caught:
        broken.read()
    assert "无法读取" in caught.value.message and "connection refused" not in caught.value.message
    book.close()
