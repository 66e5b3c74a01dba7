"""The airlock as its people live it, in headless Chromium: two independent output checkers.

An analyst of this module's own organisation asks (with the notebook client) to take out a
table and a chart. Operator op.wang opens each, sees the table rendered and the chart shown
beside the automatic checks, comments and approves as first checker: nothing is released
yet. Operator op.li makes the second check and approves; the analyst sees the files
released and downloads them. Then: a reviewer sends a table back for changes and the
analyst resubmits a corrected version; and a held table is released only when both
reviewers override with a reason. Screenshots: ``test-artifacts/screenshots/<test>/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

import lab.client
from lab.settings import Settings
from tests.integration import airlock_support as al
from tests.integration import keycloak_test_client as kct
from tests.integration.browser import browser  # noqa: F401  (the Chromium fixture)
from tests.integration.test_consoles import console, console_login
from tests.security.identity_support import api

pytestmark = pytest.mark.integration

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def lab_(lab_stack: Settings) -> Iterator[Settings]:
    kct.ensure(lab_stack)
    yield lab_stack


@pytest.fixture(scope="module")
def org(lab_: Settings) -> dict[str, str]:
    return al.new_org(lab_, "airlock-journey")


@pytest.fixture
def people(browser: Browser, lab_: Settings) -> Iterator[Callable[[str, str], Page]]:  # noqa: F811
    """A logged-in console page per person (each in their own browser context)."""
    made: list[BrowserContext] = []

    def open_as(user: str, landing: str) -> Page:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
        made.append(context)
        page = context.new_page()
        console_login(page, lab_, user, landing)
        return page

    yield open_as
    for context in made:
        context.close()


class Shots:
    """Numbered screenshots in a folder named after the test."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.folder = SHOTS / request.node.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def __call__(self, page: Page, step: str) -> None:
        self.n += 1
        page.screenshot(path=str(self.folder / f"{self.n:02d}-{step}.png"), full_page=True)


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shots:
    return Shots(request)


def request_in_notebook(settings: Settings, user: str, what: Any, **kwargs: Any) -> dict[str, Any]:
    """What the analyst's notebook does: ``lab.client.request_export`` with their own token."""
    lab.client.connect(settings.gateway_url, kct.access_token(settings, user))
    try:
        return lab.client.request_export(what, **kwargs)
    finally:
        lab.client._default = None


def open_export(page: Page, settings: Settings, export_id: int) -> None:
    page.click("#nav-exports")
    page.wait_for_selector("#exports")
    page.click(f"#export-{export_id} a.open")
    page.wait_for_selector("#content")


def decide(page: Page, decision: str, reason: str = "", override: bool = False) -> str:
    if reason:
        page.fill("#decide textarea[name=reason]", reason)
    if override:
        page.check("#decide input[name=override]")
    page.click(f"#decide button[value={decision}]")
    page.wait_for_selector("#flash, #flash-error")
    return page.inner_text("#flash, #flash-error")


def my_row(page: Page, settings: Settings, export_id: int) -> str:
    page.goto(f"{console(settings)}/analyst")
    return page.inner_text(f"#my-exports #export-{export_id}")


TABLE = pl.DataFrame({"district": ["历下区", "市中区", "槐荫区"], "count": [120, 340, 55]})


def test_two_checkers_release_an_export(
    lab_: Settings, org: dict[str, str], people: Callable[[str, str], Page], shot: Shots
) -> None:
    table = request_in_notebook(
        lab_, org["user"], TABLE, purpose="区县人口简报 / district brief", name="counts.csv"
    )
    chart = request_in_notebook(
        lab_, org["user"], al.png(), purpose="区县人口图 / district chart", name="chart.png"
    )
    assert table["state"] == chart["state"] == "pending"

    analyst = people(org["user"], "analyst")
    assert "待审" in my_row(analyst, lab_, table["id"]) and "待审" in my_row(analyst, lab_, chart["id"])
    shot(analyst, "analyst-requested")

    # First checker: op.wang sees the rendered table beside the checks, comments, approves.
    wang = people("op.wang", "operator")
    open_export(wang, lab_, table["id"])
    assert wang.inner_text("#export-name") == "counts.csv"
    assert "自动检查通过" in wang.inner_text("#auto-checks")
    cells = wang.locator("#content-table td").all_inner_texts()
    assert cells[:2] == ["历下区", "120"] and "槐荫区" in cells
    shot(wang, "wang-sees-table")
    wang.fill("#comment-form textarea[name=comment]", "第 3 行人数较少，已核对可以发布 / row 3 checked")
    wang.click("#comment-form button")
    wang.wait_for_selector("#flash")
    assert "row 3 checked" in wang.inner_text(".comments")
    said = decide(wang, "approve")
    assert "还需另一位运营人员审核" in said
    assert wang.inner_text("#export-approvals").startswith("1 / 2")
    assert wang.get_attribute("#export-state", "data-state") == "pending"
    assert "您已审核过此版本" in wang.inner_text("#no-decision")
    shot(wang, "wang-first-check")

    open_export(wang, lab_, chart["id"])
    image = wang.locator("#content-image")
    assert image.is_visible()
    wang.wait_for_function("() => document.querySelector('#content-image').complete", timeout=10_000)
    assert wang.evaluate("() => document.querySelector('#content-image').naturalWidth") == 40
    shot(wang, "wang-sees-image")
    assert "还需另一位" in decide(wang, "approve")

    # Not released yet: the analyst sees it waiting, with op.wang's check and comment.
    row = my_row(analyst, lab_, table["id"])
    assert "待审" in row and analyst.locator(f"#export-{table['id']} a.download").count() == 0
    analyst.click(f"#export-{table['id']} a.open")
    analyst.wait_for_selector("#decisions-title")
    assert "op.wang" in analyst.inner_text(".decisions") and "row 3 checked" in analyst.inner_text(
        ".comments"
    )
    shot(analyst, "analyst-not-yet-released")
    blocked = httpx.get(f"{api(lab_)}/exports/{table['id']}/download", headers=al.token(lab_, org["user"]))
    assert blocked.status_code == 403

    # Second checker: op.li sees the first check, approves; the export is released.
    li = people("op.li", "operator")
    open_export(li, lab_, table["id"])
    assert "op.wang" in li.inner_text(".decisions") and li.inner_text("#export-approvals").startswith("1 / 2")
    said = decide(li, "approve")
    assert "已批准并放行" in said and li.get_attribute("#export-state", "data-state") == "approved"
    shot(li, "li-second-check-released")
    open_export(li, lab_, chart["id"])
    assert "已批准并放行" in decide(li, "approve")

    # The analyst sees both released and downloads them.
    assert "已批准" in my_row(analyst, lab_, table["id"])
    with analyst.expect_download() as got:
        analyst.click(f"#export-{table['id']} a.download")
    downloaded = Path(got.value.path()).read_bytes()
    assert pl.read_csv(downloaded).equals(TABLE)
    shot(analyst, "analyst-released")


def test_changes_requested_then_resubmitted(
    lab_: Settings, org: dict[str, str], people: Callable[[str, str], Page], shot: Shots
) -> None:
    first = request_in_notebook(lab_, org["user"], TABLE, purpose="精确计数 / exact counts", name="exact.csv")
    wang = people("op.wang", "operator")
    open_export(wang, lab_, first["id"])
    said = decide(wang, "changes", reason="请将计数取整到十位后重新提交 / round the counts to tens")
    assert "已退回申请人修改" in said and wang.get_attribute("#export-state", "data-state") == "returned"
    shot(wang, "wang-requests-changes")

    analyst = people(org["user"], "analyst")
    assert "已退回修改" in my_row(analyst, lab_, first["id"])
    analyst.click(f"#export-{first['id']} a.open")
    analyst.wait_for_selector("#resubmit")
    assert "round the counts to tens" in analyst.inner_text(".decisions")
    assert "审核人要求修改" in analyst.inner_text("#state-hint")
    shot(analyst, "analyst-sees-request")
    rounded = pl.DataFrame({"district": ["历下区", "市中区", "槐荫区"], "count": [120, 340, 60]})
    analyst.set_input_files(
        "#resubmit input[name=file]",
        files=[{"name": "rounded.csv", "mimeType": "text/csv", "buffer": rounded.write_csv().encode()}],
    )
    analyst.fill("#resubmit textarea[name=note]", "已取整到十位 / rounded to tens")
    analyst.click("#resubmit button")
    analyst.wait_for_selector("#flash")
    assert "新版本已提交" in analyst.inner_text("#flash")
    new_id = int(analyst.inner_text("#flash").split("导出申请 ")[1].split("）")[0])
    analyst.goto(f"{console(lab_)}/analyst/exports/{new_id}")
    versions = analyst.locator("#history tr[data-version]").all_inner_texts()
    assert len(versions) == 2 and "已被新版本取代" in versions[0] and "待审" in versions[1]
    shot(analyst, "analyst-resubmitted")

    for operator in ("op.wang", "op.li"):
        page = wang if operator == "op.wang" else people("op.li", "operator")
        open_export(page, lab_, new_id)
        assert "rounded to tens" in page.inner_text(".comments")
        assert page.locator("#content-table td").all_inner_texts()[-1] == "60"
        decide(page, "approve")
    assert page.get_attribute("#export-state", "data-state") == "approved"
    shot(page, "released-after-changes")
    assert "已批准" in my_row(analyst, lab_, new_id) and "已被新版本取代" in my_row(
        analyst, lab_, first["id"]
    )


def test_override_of_a_held_export_needs_both_reviewers(
    lab_: Settings, org: dict[str, str], people: Callable[[str, str], Page], shot: Shots
) -> None:
    small = pl.DataFrame({"district": ["历下区", "市中区"], "count": [4, 340]})
    held = request_in_notebook(lab_, org["user"], small, purpose="小区县 / small district", name="small.csv")
    assert held["state"] == "held"
    wang = people("op.wang", "operator")
    open_export(wang, lab_, held["id"])
    assert "未通过" in wang.inner_text("#auto-checks") and "少于 10" in wang.inner_text("#auto-checks")
    assert wang.locator("#content-table tr.flagged").all_inner_texts() == ["历下区\t4"]
    shot(wang, "wang-sees-held")
    refused = decide(wang, "approve", reason="数字已公开")
    assert "越过检查" in refused and "override" in refused
    shot(wang, "wang-override-refused-without-box")
    said = decide(
        wang, "approve", reason="该数字已在统计公报中公开 / published in the bulletin", override=True
    )
    assert "还需另一位" in said and wang.get_attribute("#export-state", "data-state") == "held"

    analyst = people(org["user"], "analyst")
    assert "已拦截" in my_row(analyst, lab_, held["id"])

    li = people("op.li", "operator")
    open_export(li, lab_, held["id"])
    assert "越过检查批准" in li.inner_text(".decisions")
    said = decide(li, "approve", reason="核对公报无误 / checked against the bulletin", override=True)
    assert "已批准并放行" in said
    shot(li, "li-second-override-released")
    assert "已批准" in my_row(analyst, lab_, held["id"])
    shot(analyst, "analyst-held-released")
