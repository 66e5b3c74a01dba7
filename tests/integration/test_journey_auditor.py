"""The auditor's day in Chromium: search → a flag → the records behind it → one record →
the log verified → an audit package (and the whole result as CSV, itself audited).

Each step asserts what the auditor sees; screenshots go to
``test-artifacts/screenshots/<test>/``. This module owns ``sdu-research``'s grants on
``utility`` (no demo grant): its analyst repeats one query six times, which is what the
near-duplicate rule flags.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from lab import access
from lab.extracts import ledger as open_ledger
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.browser import Screenshots, browser  # noqa: F401
from tests.integration.test_consoles import console, console_login
from tests.security.lab_helpers import api, headers

pytestmark = pytest.mark.integration

ORG, DATASET, ANALYST, AUDITOR, OPERATOR = "sdu-research", "utility", "sun.hao", "audit.zhao", "op.wang"
QUERY = {"dataset": DATASET, "aggregate": {"kind": "count"}, "epsilon": 0.01}
REPEATS = 6


@pytest.fixture(scope="module")
def queried(lab_stack: Settings) -> Iterator[int]:
    """A grant of the organisation on the dataset, and the same count asked six times."""
    kct.ensure(lab_stack)
    with open_ledger(lab_stack) as book:
        for old in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
            book.revoke(old.id, by=OPERATOR, reason="journey set-up")
        grant = book.create_grant(
            organisation=ORG,
            dataset=DATASET,
            purpose="审计旅程 / auditor journey",
            modes=["dp"],
            epsilon=1.0,
            delta=0.0,
            expires_at=datetime.now(UTC) + timedelta(days=1),
            approved_by=OPERATOR,
        )
        provisioner = access.Provisioner(lab_stack, book)
        provisioner.provision()
        for _ in range(REPEATS):
            done = httpx.post(
                f"{api(lab_stack)}/queries", headers=headers(lab_stack, ANALYST), json=QUERY, timeout=60
            )
            assert done.status_code == 200, done.text
        yield grant.id
        book.revoke(grant.id, by=OPERATOR, reason="journey done")
        provisioner.provision()


def test_auditor_journey(browser: Browser, lab_stack: Settings, queried: int) -> None:  # noqa: F811
    shot = Screenshots("test_auditor_journey")
    base, key = console(lab_stack), f"{ORG} / {DATASET}"
    context = browser.new_context(
        locale="zh-CN", viewport={"width": 1400, "height": 1000}, accept_downloads=True
    )
    try:
        page = context.new_page()
        console_login(page, lab_stack, AUDITOR, "auditor")

        # 0. The budget chart: one row per organisation and dataset, its value and cap written on it.
        row = page.locator(f'#budget-chart g.row[data-series="{key}"]')
        assert row.count() == 1
        assert float(row.locator("text.value").text_content() or 0) >= 0.06 - 1e-9
        assert "(Asia/Shanghai)" in page.inner_text("#chart-title")
        table = page.locator(f'#budget-table tr[data-series="{key}"]')
        assert float(table.locator("td.spent").inner_text()) >= 0.06 - 1e-9
        assert table.locator("td.granted").inner_text() == "1"  # the active grant's ε
        page.locator("#chart").scroll_into_view_if_needed()
        shot(page, "budget-chart", full=False)

        # 1. Search: the organisation's DP queries on the dataset, paged.
        page.fill("#search input[name=organisation]", ORG)
        page.fill("#search input[name=dataset]", DATASET)
        page.select_option("#search select[name=kind]", "dp-query")
        page.select_option("#search select[name=size]", "10")
        page.click("#search button[type=submit]")
        page.wait_for_url("**kind=dp-query**")
        pager = page.inner_text("nav.pager")
        found = re.search(r"第 1 / (\d+) 页 · 共 (\d+) 条", pager)
        assert found and int(found[2]) >= REPEATS, pager
        cells = page.locator("#records tr.record").evaluate_all(
            "rows => rows.map(r => [r.cells[3].innerText, r.cells[4].innerText, r.cells[5].innerText])"
        )
        assert cells and all(c == [ORG, DATASET, "dp-query"] for c in cells)
        assert "(Asia/Shanghai)" in page.inner_text("#records tr >> nth=0")
        shot(page, "search")

        # 2. A flag: the repeated query, linked to the records behind it.
        page.goto(f"{base}/auditor")
        flag = page.locator("#flags tr.flag-near-duplicate", has_text=ORG).filter(has_text=DATASET).first
        count = int(flag.locator("td").nth(4).inner_text())
        assert count >= REPEATS - 1
        flag.scroll_into_view_if_needed()
        shot(page, "flag", full=False)
        flag.locator("a.flag-records").click()
        page.wait_for_url("**/auditor?**")
        assert page.input_value("#search input[name=organisation]") == ORG
        assert page.input_value("#search input[name=dataset]") == DATASET
        assert page.input_value("#search select[name=kind]") == "dp-query"
        assert page.input_value("#search input[name=since]") and page.input_value("#search input[name=until]")
        behind = page.locator("#records tr.record")
        assert int(page.get_attribute("nav.pager", "data-total") or 0) >= count  # every one, over pages
        assert behind.count() >= min(count, 25)  # a full first page
        shot(page, "flag-records")

        # 3. One record, whole: what was asked, ε, and its place in the hash chain.
        seq = int(behind.first.get_attribute("data-seq") or 0)
        behind.first.locator("a.record-link").click()
        page.wait_for_url(f"**/auditor/records/{seq}")
        assert page.get_attribute("#record", "data-seq") == str(seq)
        assert (
            page.inner_text("#record dd.kind") == "dp-query"
            and page.inner_text("#record dd.actor") == ANALYST
        )
        details = json.loads(page.inner_text("#record-details"))
        assert details["epsilon"] == 0.01 and json.loads(details["query"])["dataset"] == DATASET
        assert re.fullmatch(r"[0-9a-f]{64}", page.inner_text("#record dd.hash"))
        assert "(Asia/Shanghai)" in page.inner_text("#record dd.at")
        shot(page, "record")

        # 4. The log verifies.
        assert page.get_attribute("#integrity", "data-ok") == "true"
        assert "审计日志完整" in page.inner_text("#integrity")
        page.go_back()
        page.wait_for_url("**/auditor?**")

        # 5. The audit package of the flag's span holds the record; the CSV holds the whole result.
        with page.expect_download() as download:
            page.click("#package")
        package = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
        assert package["verification"]["ok"] is True
        assert seq in [r["seq"] for r in package["records"]]
        total = int(page.get_attribute("nav.pager", "data-total") or 0)
        with page.expect_download() as download:
            page.click("#csv")
        assert download.value.suggested_filename.endswith(".csv")
        rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8-sig"))))
        assert rows[0][:2] == ["seq", "time (Asia/Shanghai)"] and len(rows) - 1 == total
        assert str(seq) in {r[0] for r in rows[1:]} and all(r[3] == ORG for r in rows[1:])
        page.goto(f"{base}/auditor?kind=audit-export&actor={AUDITOR}")
        newest = page.locator("#records tr.record").first
        assert (
            "records=" + str(total) in newest.inner_text()
            and f"'organisation': '{ORG}'" not in newest.inner_text()
        )
        shot(page, "export-audited")
    finally:
        context.close()
