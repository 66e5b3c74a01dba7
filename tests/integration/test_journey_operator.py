"""The operator's day in Chromium: the applications page → an application's detail (asked
vs granted, the organisation's cumulative budget) → approve → the grants page, filtered →
revoke, with its confirmation.

Each step asserts what the operator sees; screenshots go to
``test-artifacts/screenshots/<test>/``. This module owns ``zibo-credit``'s grants on
``utility`` (no demo grant) and the application it files in the ledger for the journey.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, Page

from lab import access
from lab.extracts import ledger as open_ledger
from lab.settings import Settings
from tests.integration.browser import Screenshots, browser  # noqa: F401
from tests.integration.test_consoles import console, console_login

pytestmark = pytest.mark.integration

ORG, DATASET, APPLICANT, OPERATOR = "zibo-credit", "utility", "chen.jing", "op.wang"


@pytest.fixture(scope="module")
def filed(lab_stack: Settings) -> Iterator[dict[str, int | str]]:
    """An earlier grant of the organisation on the dataset and a new application for more."""
    tag = secrets.token_hex(3)
    with open_ledger(lab_stack) as book:
        for old in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
            book.revoke(old.id, by=OPERATOR, reason="journey set-up")
        earlier = book.create_grant(
            organisation=ORG,
            dataset=DATASET,
            purpose=f"旅程测试：已有授权 {tag} / journey: the earlier grant",
            modes=["dp"],
            epsilon=0.5,
            delta=0.0,
            expires_at=datetime.now(UTC) + timedelta(days=30),
            approved_by=OPERATOR,
        )
        provisioner = access.Provisioner(lab_stack, book)
        provisioner.provision()
        app = book.apply(
            organisation=ORG,
            dataset=DATASET,
            purpose=f"旅程测试 {tag} / operator journey",
            modes=["dp"],
            epsilon=2.0,
            delta=0.0,
            term_days=180,
            applicant=APPLICANT,
        )
        yield {"tag": tag, "app": app.id, "earlier": earlier.id}
        for grant in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
            book.revoke(grant.id, by=OPERATOR, reason="journey done")
        provisioner.provision()


def _flash(page: Page) -> str:
    page.wait_for_selector("#flash, #flash-error")
    return (
        page.inner_text("#flash")
        if page.locator("#flash").count()
        else "ERROR " + page.inner_text("#flash-error")
    )


def test_operator_journey(browser: Browser, lab_stack: Settings, filed: dict[str, int | str]) -> None:  # noqa: F811
    shot = Screenshots("test_operator_journey")
    base, app_id, earlier = console(lab_stack), filed["app"], filed["earlier"]
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        console_login(page, lab_stack, OPERATOR, "operator")

        # 1. The applications page: pending ones, in pages, with a filter by organisation.
        assert page.locator("#nav-operator").get_attribute("aria-current") == "page"
        assert re.search(r"第 1 / \d+ 页", page.inner_text("nav.pager"))
        page.select_option("#application-filters select[name=organisation]", ORG)
        page.select_option("#application-filters select[name=dataset]", DATASET)
        page.click("#application-filters button[type=submit]")
        page.wait_for_url(f"**organisation={ORG}**")
        row = page.locator(f"#application-{app_id}")
        assert row.get_attribute("data-state") == "pending"
        assert "ε 2 · δ 0 · 180 天" in row.locator("td.asked").inner_text()
        assert all(ORG in r for r in page.locator("#applications tr[id^=application-]").all_inner_texts())
        shot(page, "applications")

        # 2. The detail: what was asked, nothing granted yet, the organisation's budget so far.
        row.locator("a.detail").first.click()
        page.wait_for_url(f"**/operator/applications/{app_id}")
        assert f"申请 #{app_id}" in page.inner_text("#application-title")
        assert page.inner_text("#compare tr.epsilon td.asked") == "2"
        assert page.inner_text("#compare tr.epsilon td.granted") == "—"
        assert page.inner_text("#compare tr.term td.asked") == "180"
        cumulative = page.inner_text("#cumulative")
        assert f"{ORG} 在 {DATASET} 上有 1 项有效授权" in cumulative and "授权上限合计 ε 0.5" in cumulative
        assert page.locator("#organisation-grants tr[data-status=active]").count() == 1
        assert "仅差分隐私发布" in page.inner_text("#risk")  # dp only: no extract, no risk report
        shot(page, "detail")

        # 3. Unticking every mode is refused, and the form keeps what was typed.
        form = page.locator("#decide form.approve")
        form.locator("input[name=modes][value=dp]").uncheck()
        form.locator("input[name=epsilon]").fill("1")
        form.locator("input[name=term_days]").fill("90")
        form.locator("input[name=note]").fill("先批一半 / half for now")
        form.locator("button[value=approve]").click()
        said = _flash(page)
        assert said.startswith("ERROR") and "请至少勾选一种发布方式" in said
        form = page.locator("#decide form.approve")
        assert form.locator("input[name=epsilon]").input_value() == "1"
        assert form.locator("input[name=term_days]").input_value() == "90"
        assert form.locator("input[name=note]").input_value() == "先批一半 / half for now"
        assert not form.locator("input[name=modes][value=dp]").is_checked()
        shot(page, "no-mode-refused")

        # 4. Approve with a smaller budget: the page says which grant was made, and shows it beside the ask.
        form.locator("input[name=modes][value=dp]").check()
        form.locator("button[value=approve]").click()
        said = _flash(page)
        found = re.search(
            r"已批准申请 #(\d+)，生成授权 #(\d+)（机构 (\S+)，数据集 (\S+)，ε 1，90 天，dp）", said
        )
        assert found and int(found[1]) == app_id and (found[3], found[4]) == (ORG, DATASET), said
        grant_id = int(found[2])
        assert page.inner_text("#compare tr.epsilon td.granted") == "1"
        assert "changed" in (page.get_attribute("#compare tr.epsilon td.granted", "class") or "")
        assert page.inner_text("#compare tr.term td.granted") == "90"
        assert "2 项有效授权" in page.inner_text("#cumulative") and "ε 1.5" in page.inner_text("#cumulative")
        assert page.locator("#decide").count() == 0  # decided: no more buttons
        shot(page, "approved")

        # 5. The grants page, filtered to the organisation and dataset: only active grants by default.
        page.click("#nav-grants")
        page.wait_for_url("**/operator/grants")
        page.select_option("#grant-filters select[name=organisation]", ORG)
        page.select_option("#grant-filters select[name=dataset]", DATASET)
        page.click("#grant-filters button[type=submit]")
        page.wait_for_url(f"**organisation={ORG}**")
        ids = {int(i) for i in page.locator("#grants tr[id^=grant-] td:first-child").all_inner_texts()}
        assert ids == {grant_id, earlier}
        assert set(
            page.locator("#grants tr[id^=grant-]").evaluate_all("rs => rs.map(r => r.dataset.status)")
        ) == {"active"}
        assert "有效 (2)" in page.inner_text("p.state-tabs")
        shot(page, "grants-filtered")

        # 6. Revoke: a confirmation first (cancel goes back, nothing changes) …
        revoke = page.locator(f"#grant-{grant_id} form.revoke")
        revoke.locator("input[name=reason]").fill("旅程测试：撤销 / journey revocation")
        revoke.locator("button").click()
        page.wait_for_selector("#confirm-box")
        box = page.inner_text("#confirm-box")
        assert "确认撤销此授权？" in box and f"#{grant_id}" in box and ORG in box and DATASET in box
        assert (
            page.locator("#confirm input[name=reason]").input_value() == "旅程测试：撤销 / journey revocation"
        )
        shot(page, "confirm-revoke")
        page.click("#cancel")
        page.wait_for_url("**/operator/grants")
        with open_ledger(lab_stack) as book:
            assert book.get_grant(grant_id).revoked_at is None
        # … then confirmed: the message names the grant, organisation and dataset.
        page.goto(f"{base}/operator/grants?organisation={ORG}&dataset={DATASET}")
        revoke = page.locator(f"#grant-{grant_id} form.revoke")
        revoke.locator("input[name=reason]").fill("旅程测试：撤销 / journey revocation")
        revoke.locator("button").click()
        page.wait_for_selector("#confirm-box")
        page.click("#confirm-button")
        said = _flash(page)
        assert f"已撤销授权 #{grant_id}（机构 {ORG}，数据集 {DATASET}）" in said, said
        assert "已完成" not in said
        page.goto(f"{base}/operator/grants?organisation={ORG}&dataset={DATASET}")
        assert page.locator(f"#grant-{grant_id}").count() == 0  # ended: out of the default list …
        page.click("p.state-tabs a.tab-ended")
        page.wait_for_selector(f"#grant-{grant_id}[data-status=revoked]")  # … one click away
        shot(page, "revoked")
        with open_ledger(lab_stack) as book:
            assert book.get_grant(grant_id).revoked_by == OPERATOR
    finally:
        context.close()
