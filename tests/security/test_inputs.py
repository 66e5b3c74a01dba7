"""Bad names and ids get a clear 4xx and change nothing (threat model property 9).

The hostile analyst, a careless operator and the curious auditor send names of 100 KB,
with NUL bytes, control characters, right-to-left overrides, zero-width spaces or
look-alike letters, ids too large for any column, non-finite numbers and cookies of the
wrong kind. Each must be refused with HTTP 400 (or the console's redirect with the
error) and ``{"error": {"reason", "message"}}`` in 中文 and English that does not repeat
the value; the audit log, budgets, grants, applications and exports stay as they were,
except for a refusal record (where the design records refusals) that holds the field's
name and a fingerprint of the value, never the value.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.ledger.models import AuditRecord
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.console_client import console_login, csrf

pytestmark = [pytest.mark.integration, pytest.mark.security]

ANALYST, OPERATOR, AUDITOR = "li.na", "op.wang", "audit.zhao"
HUGE_ID = "99999999999999999999999"
NO_SUCH_ID = 2147483000  # a valid id that no row has: a refusal that slipped through changes nothing
BAD_NAMES = {
    "100-kb": "p" * 100_000,
    "nul": "popu\x00lation",
    "look-alike": "p\u043epulation",  # Cyrillic о
    "full-width": "\uff50\uff4f\uff50\uff55\uff4c\uff41\uff54\uff49\uff4f\uff4e",  # ｐｏｐｕｌａｔｉｏｎ
    "control": "population\x1b[31m",
    "rtl-override": "\u202epopulation",
    "zero-width": "popu\u200blation",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,99}")
_CJK = re.compile(r"[\u4e00-\u9fff]")


# --- what an audit record may hold (used by the fuzz test too) ---------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def record_problems(record: AuditRecord) -> list[str]:
    """Why a record holds an unvalidated name or text (empty if it holds none)."""
    problems = []
    for field in ("actor", "organisation", "dataset", "kind"):
        value = getattr(record, field)
        if value is not None and not _NAME.fullmatch(value):
            problems.append(f"seq {record.seq}: {field} is not a valid name (length {len(value)})")
    for text in _strings(record.details):
        if len(text) > 20_000:
            problems.append(f"seq {record.seq}: a detail of {len(text)} characters")
        if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") and c not in "\n\t" for c in text):
            problems.append(f"seq {record.seq}: a detail with control or format characters")
    return problems


def holds(record: AuditRecord, value: str) -> bool:
    """True if the record holds the value (or, for a long one, any 64 characters of it)."""
    probe = value if len(value) <= 64 else value[:64]
    fields = [record.actor, record.organisation or "", record.dataset or "", *list(_strings(record.details))]
    return any(probe in text for text in fields)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Settings:
    kct.ensure(lab_stack)
    return lab_stack


@pytest.fixture(scope="module")
def book(lab: Settings) -> Iterator[Ledger]:
    with open_ledger(lab) as ledger:
        yield ledger


class Tokens:
    """Keycloak access tokens per user, fetched again after a minute (they live five)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, tuple[float, str]] = {}

    def __call__(self, user: str) -> dict[str, str]:
        at, token = self._cache.get(user, (0.0, ""))
        if time.monotonic() - at > 60:
            token = kct.access_token(self.settings, user)
            self._cache[user] = (time.monotonic(), token)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def tokens(lab: Settings) -> Tokens:
    return Tokens(lab)


def _gw(settings: Settings) -> str:
    return settings.gateway_public_url  # the consoles' origin, where their cookies live


def snapshot(book: Ledger) -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    grants = book.list_grants()
    return {
        "grants": [(g.id, g.epsilon, g.delta, g.expires_at, g.revoked_at, g.modes) for g in grants],
        "budgets": [(g.id, book.budget(g.id).epsilon_spent, book.budget(g.id).delta_spent) for g in grants],
        "applications": [(a.id, a.state) for a in book.list_applications()],
        "exports": [(e.id, e.state) for e in book.list_exports()],
    }


def _ours(book: Ledger, after: int) -> list[AuditRecord]:
    users = (ANALYST, OPERATOR, AUDITOR)
    return [r for r in book.records(newest_first=False) if r.seq > after and r.actor in users]


def _head(book: Ledger) -> int:
    return book.records(newest_first=True, limit=1)[0].seq


def assert_refused(response: httpx.Response, value: str | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"reason", "message"}, error
    assert _CJK.search(error["message"]) and re.search(r"[A-Za-z]{4}", error["message"]), error
    if value is not None:
        assert value[:64] not in response.text, "the refusal repeats the bad value"
    return dict(error)


def assert_page_refused(response: httpx.Response, value: str | None = None) -> None:
    """A console page refusing its query: a 400 page naming what was wrong in both languages."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    refusal = re.search(r'id="search-error"[^>]*>(.*?)</div>', response.text, re.S)
    assert refusal is not None, response.text[:300]
    message = refusal.group(1)
    assert _CJK.search(message) and re.search(r"[A-Za-z]{4}", message), message
    if value is not None:
        assert value[:64] not in response.text, "the refusal repeats the bad value"


def assert_nothing_changed(
    book: Ledger, before: dict[str, Any], head: int, *values: str
) -> list[AuditRecord]:
    assert snapshot(book) == before
    new = _ours(book, head)
    for record in new:
        assert record.details.get("outcome") == "refused", (record.kind, record.details)
        assert record.details.get("reason") == "invalid-input", record.details
        assert not record_problems(record), record_problems(record)
        assert not any(holds(record, v) for v in values), f"record {record.seq} holds the bad value"
    assert book.verify().ok
    return new


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_bad_dataset_name_is_refused_before_the_audit_log(
    lab: Settings, book: Ledger, tokens: Tokens, case: str
) -> None:
    bad = BAD_NAMES[case]
    before, head = snapshot(book), _head(book)
    requests = [
        ("/api/extracts/preview", {"dataset": bad, "kind": "dp-table", "spec": {}}),
        ("/api/extracts", {"dataset": bad, "kind": "dp-table", "spec": {}}),
        ("/api/queries", {"dataset": bad, "aggregate": {"kind": "count"}, "epsilon": 0.01}),
        ("/api/queries/preview", {"dataset": bad, "aggregate": {"kind": "count"}, "epsilon": 0.01}),
    ]
    for path, body in requests:
        response = httpx.post(f"{_gw(lab)}{path}", headers=tokens(ANALYST), json=body, timeout=60)
        assert assert_refused(response, bad)["reason"] == "invalid-input", path
    new = assert_nothing_changed(book, before, head, bad)
    # Each refusal is recorded, with the field and a fingerprint in place of the value.
    assert len(new) == len(requests), [r.details for r in new]
    digest = hashlib.sha256(bad.encode("utf-8", errors="surrogatepass")).hexdigest()
    assert all(
        r.details["field"] == "dataset" and r.details["refused_value"]["sha256"] == digest for r in new
    )


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_bad_text_in_applications_and_exports_changes_nothing(
    lab: Settings, book: Ledger, tokens: Tokens, case: str
) -> None:
    bad = BAD_NAMES[case]
    in_url = bad[:5000]  # a request line stays under the HTTP server's limit
    before, head = snapshot(book), _head(book)
    api = f"{_gw(lab)}/api"
    # Names (datasets, modes, states, actors) must be plain ASCII names: every case is refused.
    attempts = [
        ("POST", f"{api}/applications", ANALYST, {"dataset": bad, "purpose": "research", "modes": ["dp"]}),
        ("POST", f"{api}/applications", ANALYST, {"dataset": "population", "purpose": "x", "modes": [bad]}),
        (
            "POST",
            f"{api}/exports",
            ANALYST,
            {"name": "a.csv", "purpose": "r", "dataset": bad, "content_b64": "eA=="},
        ),
        ("GET", f"{api}/applications", ANALYST, {"state": in_url}),
        ("GET", f"{api}/auditor/records", AUDITOR, {"actor": in_url}),
        ("GET", f"{api}/auditor/records", AUDITOR, {"dataset": in_url}),
    ]
    # Free text (a purpose, a reason, a file name) may be any language (it is kept in NFKC
    # form, so the full-width and look-alike cases are valid text), but never too long, nor
    # with control or format characters.
    if len(bad) > 2000 or not bad.isprintable():
        attempts += [
            (
                "POST",
                f"{api}/applications",
                ANALYST,
                {"dataset": "population", "purpose": bad, "modes": ["dp"]},
            ),
            ("POST", f"{api}/exports", ANALYST, {"name": bad, "purpose": "report", "content_b64": "eA=="}),
            ("POST", f"{api}/exports", ANALYST, {"name": "a.csv", "purpose": bad, "content_b64": "eA=="}),
            ("POST", f"{api}/operator/grants/{NO_SUCH_ID}/revoke", OPERATOR, {"reason": bad}),
        ]
    for method, url, user, body in attempts:
        if method == "GET":
            response = httpx.get(url, headers=tokens(user), params=body, timeout=60)
        else:
            response = httpx.post(url, headers=tokens(user), json=body, timeout=60)
        assert_refused(response, bad)
    assert_nothing_changed(book, before, head, bad)


# --- ids and numbers ----------------------------------------------------------------------


def test_huge_and_malformed_ids_get_400(lab: Settings, book: Ledger, tokens: Tokens) -> None:
    before, head = snapshot(book), _head(book)
    api = f"{_gw(lab)}/api"
    for bad_id in (HUGE_ID, "-1", "0", "1e3", "٣", "1 OR 1=1"):
        attempts = [
            ("GET", f"{api}/exports/{bad_id}/download", ANALYST, None),
            ("POST", f"{api}/operator/grants/{bad_id}/revoke", OPERATOR, {"reason": "test"}),
            ("POST", f"{api}/operator/applications/{bad_id}/approve", OPERATOR, {}),
            ("POST", f"{api}/operator/applications/{bad_id}/reject", OPERATOR, {"reason": "test"}),
            (
                "POST",
                f"{api}/operator/exports/{bad_id}/review",
                OPERATOR,
                {"decision": "reject", "reason": "x"},
            ),
            ("POST", f"{api}/operator/exports/{bad_id}/revoke", OPERATOR, {"reason": "test"}),
        ]
        for method, url, user, body in attempts:
            response = httpx.request(method, url, headers=tokens(user), json=body, timeout=60)
            assert assert_refused(response)["reason"] == "invalid-input", (url, response.text[:200])
    assert_nothing_changed(book, before, head)


def test_non_finite_numbers_and_times_out_of_range_get_400(
    lab: Settings, book: Ledger, tokens: Tokens
) -> None:
    before, head = snapshot(book), _head(book)
    api = f"{_gw(lab)}/api"
    raw = [
        '{"dataset":"population","aggregate":{"kind":"count"},"epsilon":NaN}',
        '{"dataset":"population","aggregate":{"kind":"count"},"epsilon":Infinity}',
        '{"dataset":"population","aggregate":{"kind":"count"},"epsilon":1e999}',
        '{"dataset":"population","aggregate":{"kind":"count"},"epsilon":' + "9" * 400 + "}",
        "[" * 5000 + "]" * 5000,
        '{"dataset": "population", "purpose": "x", "epsilon": NaN}',
    ]
    for path in ("/queries/preview", "/queries", "/applications"):
        for body in raw:
            headers = {**tokens(ANALYST), "content-type": "application/json"}
            response = httpx.post(f"{api}{path}", headers=headers, content=body, timeout=60)
            assert_refused(response)
    for query in (
        "flags?days=1e308",
        "flags?days=nan",
        "flags?days=-inf",
        "records?since=9999-12-31T23:59:59-23:59",
        "records?until=0001-01-01T00:00:00%2B23:59",
        f"records?limit={HUGE_ID}",
        "package?since=9999-12-31T23:59:59-23:59",
        "spending?period=%E2%80%AEday",
    ):
        response = httpx.get(f"{api}/auditor/{query}", headers=tokens(AUDITOR), timeout=60)
        assert response.status_code < 500, (query, response.status_code)
        if response.status_code != 200:
            assert_refused(response)
    assert_nothing_changed(book, before, head)


# --- console cookies and forms -------------------------------------------------------------


def test_login_flow_cookie_as_session_cookie_is_no_session(lab: Settings, book: Ledger) -> None:
    base = f"{_gw(lab)}/console"
    with httpx.Client(timeout=60) as client:
        started = client.get(f"{base}/login")
        assert started.status_code == 303
        flow = started.cookies.get("datalab_oidc")
        assert flow
    before, head = snapshot(book), _head(book)
    for page in ("/", "/operator", "/auditor", "/analyst", "/exports/1/download"):
        response = httpx.get(f"{base}{page}", cookies={"datalab_console": flow}, timeout=60)
        assert response.status_code == 303 and "/console/login" in response.headers["location"], (
            page,
            response.status_code,
        )
    posted = httpx.post(
        f"{base}/operator/grants/1/revoke",
        cookies={"datalab_console": flow},
        headers={"Origin": lab.public_url},  # same-origin, so the session itself is what is judged
        data={"csrf": "x", "reason": "x"},
        timeout=60,
    )
    assert posted.status_code == 401
    assert_nothing_changed(book, before, head)


def test_console_forms_and_filters_refuse_bad_input(lab: Settings, book: Ledger) -> None:
    base = f"{_gw(lab)}/console"
    with (
        closing(console_login(lab, OPERATOR)) as operator,
        closing(console_login(lab, AUDITOR)) as auditor,
        closing(console_login(lab, ANALYST)) as analyst,
    ):
        before, head = snapshot(book), _head(book)  # after the logins (each one is recorded)
        token = csrf(operator.get(f"{base}/operator").text)
        for path, form in [
            (f"/operator/exports/{HUGE_ID}/decide", {"decision": "approve"}),
            (f"/operator/grants/{HUGE_ID}/revoke", {"reason": "x"}),
            (f"/operator/applications/{HUGE_ID}/approve", {"epsilon": "nan"}),
            (f"/operator/applications/{NO_SUCH_ID}/approve", {"epsilon": "1e999"}),
            (f"/operator/grants/{NO_SUCH_ID}/revoke", {"reason": BAD_NAMES["nul"]}),
        ]:
            response = operator.post(f"{base}{path}", data={"csrf": token, **form}, follow_redirects=False)
            assert response.status_code == 303, (path, response.status_code)
            page = operator.get(f"{base}/operator")  # the one-shot message says what was wrong
            assert page.status_code == 200 and "请改正后重新提交" in page.text, path
        for query in (
            "since=yesterday",
            "until=9999-12-31T23:59:59-23:59",
            f"actor={BAD_NAMES['rtl-override']}",
        ):
            response = auditor.get(f"{base}/auditor?{query}", follow_redirects=False)
            assert_page_refused(response, BAD_NAMES["rtl-override"])
        response = auditor.get(f"{base}/auditor/package?since=not-a-time", follow_redirects=False)
        assert_page_refused(response)
        token = csrf(analyst.get(f"{base}/analyst").text)
        for form in (
            {"dataset": BAD_NAMES["100-kb"], "purpose": "x"},
            {"dataset": "population", "purpose": "\x00"},
        ):
            response = analyst.post(
                f"{base}/analyst/apply", data={"csrf": token, **form}, follow_redirects=False
            )
            assert response.status_code == 303
            page = analyst.get(f"{base}/analyst")
            assert "请改正后重新提交" in page.text
        assert_nothing_changed(book, before, head, BAD_NAMES["100-kb"], BAD_NAMES["nul"])


# --- names chosen in MinIO, reported by its audit webhook ---------------------------------


def test_object_names_read_through_minio_reach_the_audit_log_only_as_fingerprints(
    lab: Settings, book: Ledger
) -> None:
    """The analyst's STS credentials ask MinIO for objects named to break the log; MinIO
    refuses them and reports each request to the gateway, which records the attempt with a
    fingerprint of the name, never the name."""
    from minio.error import S3Error

    from lab import storage

    client = storage.analyst_client(lab, kct.access_token(lab, ANALYST))
    names = [
        f"qilu-energy/{BAD_NAMES[case]}/v1/data.parquet" for case in ("rtl-override", "zero-width", "nul")
    ]
    names.append(f"qilu-energy/{'p' * 900}/v1/data.parquet")
    head = _head(book)
    for name in names:
        with pytest.raises(S3Error):
            client.get_object("extracts", name).read()
    deadline, found = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        found = [
            r
            for r in book.records(kind="download", actor=ANALYST)
            if r.seq > head and "refused_object" in r.details
        ]
        if len(found) >= len(names):
            break
        time.sleep(1)
    digests = {hashlib.sha256(n.encode("utf-8", errors="surrogatepass")).hexdigest() for n in names}
    assert {r.details["refused_object"]["sha256"] for r in found} >= digests, "every attempt is recorded"
    for record in book.records(kind="download"):
        if record.seq > head:
            assert not record_problems(record), record_problems(record)
            assert not any(holds(record, BAD_NAMES[c]) for c in ("rtl-override", "zero-width", "nul"))
    assert book.verify().ok
