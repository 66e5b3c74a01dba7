"""The operator's sections against the real lab, played by an attacker.

Issue 13: revoking a grant asked no confirmation, so one forged or mistaken post ended an
organisation's access. Now a destructive post without the confirmation page's token only
answers that page: a post with the CSRF token but a made-up, tampered, another item's or
another session's confirmation changes nothing; without the CSRF token it is refused. An
analyst or an auditor reaches no operator section, whatever they post. Paging and search
parameters that are out of range, huge, or written to break SQL or the page answer a 400
page naming the parameter, never a 5xx, and no page size lets a request read everything.

This module owns the grants of ``qilu-energy`` on ``social_insurance`` (no demo grant).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest

from lab import access
from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.settings import Settings
from tests.integration.console_client import console_base, console_login, csrf

pytestmark = [pytest.mark.integration, pytest.mark.security]

ORG, DATASET = "qilu-energy", "social_insurance"
OPERATOR, ANALYST, AUDITOR = "op.wang", "li.na", "audit.zhao"
SECTIONS = ("operator", "operator/grants", "operator/organisations", "operator/datasets")
TOKEN = re.compile(r'name="confirm" value="([^"]+)"')


@pytest.fixture(scope="module")
def grants(lab_stack: Settings) -> Iterator[tuple[Ledger, list[int]]]:
    with open_ledger(lab_stack) as book:
        for old in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
            book.revoke(old.id, by=OPERATOR, reason="security test set-up")
        made = [
            book.create_grant(
                organisation=ORG,
                dataset=DATASET,
                purpose=f"security test: confirmation {n}",
                modes=["dp"],
                epsilon=0.5,
                delta=0.0,
                expires_at=datetime.now(UTC) + timedelta(days=1),
                approved_by=OPERATOR,
            ).id
            for n in range(2)
        ]
        provisioner = access.Provisioner(lab_stack, book)
        provisioner.provision()
        yield book, made
        for grant_id in made:
            book.revoke(grant_id, by=OPERATOR, reason="security test done")
        provisioner.provision()


def _active(book: Ledger, grant_id: int) -> bool:
    return book.get_grant(grant_id).revoked_at is None


def test_a_revocation_needs_this_pages_confirmation(
    lab_stack: Settings, grants: tuple[Ledger, list[int]]
) -> None:
    book, (first, second) = grants
    base = console_base(lab_stack)
    with (
        closing(console_login(lab_stack, OPERATOR)) as operator,
        closing(console_login(lab_stack, OPERATOR)) as other,
    ):
        token = csrf(operator.get(f"{base}/operator/grants").text)
        url = f"{base}/operator/grants/{first}/revoke"
        asked = operator.post(url, data={"csrf": token, "reason": "attacker"})
        assert asked.status_code == 200 and 'id="confirm-box"' in asked.text and _active(book, first)
        assert ORG in asked.text and DATASET in asked.text  # the page names what would end
        good = TOKEN.search(asked.text)[1]  # type: ignore[index]
        # another session's valid confirmation of the same grant, and one for the other grant
        other_csrf = csrf(other.get(f"{base}/operator/grants").text)
        theirs = TOKEN.search(other.post(url, data={"csrf": other_csrf, "reason": "x"}).text)[1]  # type: ignore[index]
        second_url = f"{base}/operator/grants/{second}/revoke"
        for_second = TOKEN.search(operator.post(second_url, data={"csrf": token, "reason": "x"}).text)[1]  # type: ignore[index]
        for forged in ("yes", "true", "1", good[:-3] + "abc", theirs, for_second, good + "x"):
            answer = operator.post(url, data={"csrf": token, "reason": "attacker", "confirm": forged})
            assert answer.status_code == 200 and 'id="confirm-box"' in answer.text, forged
            assert _active(book, first), f"revoked with confirm={forged[:12]}…"
        for csrf_value in ("", "forged", other_csrf):
            refused = operator.post(url, data={"csrf": csrf_value, "reason": "attacker", "confirm": good})
            assert refused.status_code == 403 and _active(book, first)
        done = operator.post(
            url, data={"csrf": token, "reason": "confirmed by the operator", "confirm": good}
        )
        assert done.status_code == 200 and not _active(book, first)
        assert f"已撤销授权 #{first}（机构 {ORG}，数据集 {DATASET}）" in done.text
        assert _active(book, second)


@pytest.mark.parametrize("user", [ANALYST, AUDITOR])
def test_analysts_and_auditors_reach_no_operator_section(
    lab_stack: Settings, grants: tuple[Ledger, list[int]], user: str
) -> None:
    book, (_, second) = grants
    base = console_base(lab_stack)
    with closing(console_login(lab_stack, user)) as client:
        landing = "analyst" if user == ANALYST else "auditor"
        token = csrf(client.get(f"{base}/analyst").text) if user == ANALYST else "x"
        for section in SECTIONS:
            page = client.get(f"{base}/{section}", params={"state": "all"})
            assert page.status_code == 403 and "operator" in page.text, section
            assert f"grant-{second}" not in page.text
        assert client.get(f"{base}/operator/applications/1").status_code == 403
        for path in (f"operator/grants/{second}/revoke", f"operator/organisations/{ORG}/suspend"):
            post = client.post(f"{base}/{path}", data={"csrf": token, "reason": "x", "confirm": "yes"})
            assert post.status_code == 403, path
        assert _active(book, second)
        assert client.get(f"{base}/{landing}").status_code == 200  # their own console still works


BAD = [
    {"page": "-1"},
    {"page": "0"},
    {"page": str(10**30)},
    {"size": str(10**12)},
    {"size": "201"},
    {"page": "１"},
    {"state": "active' OR '1'='1"},
    {"organisation": "x' UNION SELECT * FROM grants --"},
    {"dataset": "population; DROP TABLE audit"},
    {"organisation": "\u202eqilu"},
    {"q": "%" * 5000},
    {"q": "a\x00b"},
]


READS = {  # the parameters each page reads
    "operator": {"page", "size", "state", "organisation", "dataset", "q"},
    "operator/grants": {"page", "size", "state", "organisation", "dataset", "q"},
    "operator/organisations": {"page", "size", "state", "q"},
    "operator/datasets": {"page", "size", "organisation", "q"},
    "auditor": {"page", "size", "organisation", "dataset"},
    "auditor/records.csv": {"organisation", "dataset"},
}


@pytest.mark.parametrize("params", BAD, ids=lambda p: f"{next(iter(p))}={next(iter(p.values()))[:16]!r}")
def test_bad_search_parameters_are_400_pages_on_every_section(
    lab_stack: Settings, params: dict[str, str]
) -> None:
    base = console_base(lab_stack)
    (name,) = params
    with (
        closing(console_login(lab_stack, OPERATOR)) as operator,
        closing(console_login(lab_stack, AUDITOR)) as auditor,
    ):
        checked = 0
        for path, reads in READS.items():
            if name not in reads:
                continue
            client = auditor if path.startswith("auditor") else operator
            answer = client.get(f"{base}/{path}", params=params)
            assert answer.status_code == 400, (path, params, answer.status_code)
            assert 'id="search-error"' in answer.text and name in answer.text
            checked += 1
        assert checked >= 2


def test_unicode_and_sql_like_text_searches_find_nothing_and_break_nothing(lab_stack: Settings) -> None:
    base = console_base(lab_stack)
    with closing(console_login(lab_stack, OPERATOR)) as operator:
        for q in ("' OR 1=1 --", "%", "_", "张店区", "\U0001f600", "<script>alert(1)</script>"):
            for section in SECTIONS:
                page = operator.get(f"{base}/{section}", params={"q": q, "state": "all"})
                assert page.status_code == 200, (section, q)
                assert "<script>alert(1)</script>" not in page.text


def test_no_page_size_reads_more_than_a_page(lab_stack: Settings) -> None:
    base = console_base(lab_stack)
    with closing(console_login(lab_stack, AUDITOR)) as auditor:
        page = auditor.get(f"{base}/auditor", params={"size": "200"})
        assert page.status_code == 200
        rows = len(re.findall(r'<tr class="record', page.text))
        total = int(re.search(r'data-total="(\d+)"', page.text)[1])  # type: ignore[index]
        assert rows == min(200, total) and total > 0
        assert auditor.get(f"{base}/auditor", params={"size": "100000"}).status_code == 400
