"""Journeys through the hub's own pages and JupyterLab, in Chromium, as an analyst and an operator.

Each step asserts what the person sees and leaves a screenshot in
``test-artifacts/screenshots/<test name>/NN-<step>.png``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from lab.hub.config import user_url
from lab.settings import Settings
from tests.integration.browser import browser, hub_api, login, run_in_kernel  # noqa: F401

pytestmark = pytest.mark.integration

ANALYST, OPERATOR = "zhang.wei", "op.li"  # neither is used by another browser test
REPO = Path(__file__).resolve().parents[2]
BRAND = "数据实验室 · Data Lab"


class Steps:
    """Numbered screenshots of one test."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.folder = REPO / "test-artifacts" / "screenshots" / request.node.name
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.count = 0

    def shot(self, page: Page, step: str, mask: list[Locator] | None = None) -> None:
        self.count += 1
        page.screenshot(
            path=str(self.folder / f"{self.count:02d}-{step}.png"), full_page=True, mask=mask or []
        )


@pytest.fixture
def steps(request: pytest.FixtureRequest) -> Steps:
    return Steps(request)


@pytest.fixture(scope="module")
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:  # noqa: F811
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


def _page(browser: Browser, contexts: list[BrowserContext]) -> Page:  # noqa: F811
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    contexts.append(context)
    return context.new_page()


def _brand_and_chinese(page: Page) -> str:
    """The page's visible text, after checking the lab's name is in the bar and Chinese is shown."""
    expect(page.locator("nav.navbar")).to_contain_text(BRAND)
    assert page.title() == BRAND
    text = page.inner_text("body")
    assert re.search(r"[\u4e00-\u9fff]{4}", text.replace(BRAND, "")), text[:300]
    return text


def _first_code_cell() -> str:
    notebook = json.loads((REPO / "notebooks" / "welcome.ipynb").read_text(encoding="utf-8"))
    return "".join(next(c for c in notebook["cells"] if c["cell_type"] == "code")["source"])


def test_analyst_journey_through_hub_pages_and_jupyterlab(
    browser: Browser,  # noqa: F811
    contexts: list[BrowserContext],
    lab_stack: Settings,
    steps: Steps,
) -> None:
    page = _page(browser, contexts)
    login(page, lab_stack, ANALYST)
    # The hub shows its progress page (bilingual) while the sandbox starts, then JupyterLab.
    page.wait_for_url(
        re.compile(r".*/(hub/spawn-pending/|user/)" + re.escape(ANALYST) + ".*"), timeout=90_000
    )
    if "/spawn-pending/" in page.url:
        expect(page.locator("#datalab-pending")).to_contain_text("正在启动您的服务器")
        steps.shot(page, "spawn-pending")
    page.wait_for_url(f"**/user/{ANALYST}/lab**", timeout=90_000)
    page.wait_for_selector("h1:has-text('欢迎使用数据实验室')", state="visible", timeout=60_000)
    steps.shot(page, "jupyterlab")

    # The welcome notebook's first cell, run as the analyst would (Shift+Enter): a table, no red.
    cell = page.locator(".jp-Notebook .jp-CodeCell").first
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"\[1\]"), timeout=120_000)
    expect(cell.locator(".jp-OutputArea-output").first).to_be_visible()
    steps.shot(page, "first-cell")
    assert cell.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
    assert "Warning" not in cell.locator(".jp-OutputArea").inner_text()
    out = run_in_kernel(page, ANALYST, _first_code_cell())
    assert out["error"] is None and out["stderr"] == "", out["stderr"][:500]

    # The Data Lab menu: the console and the airlock, labelled in both languages.
    page.get_by_text(BRAND, exact=True).click()
    console = page.get_by_text("控制台：数据目录、申请与授权 · Console", exact=False)
    airlock = page.get_by_text("数据导出审核（气闸）· Airlock", exact=False)
    expect(console).to_be_visible()
    expect(airlock).to_be_visible()
    steps.shot(page, "data-lab-menu")
    with page.context.expect_page() as opened:
        airlock.click()
    tab = opened.value
    tab.wait_for_load_state()
    tab.wait_for_url(f"{lab_stack.console_url}/analyst**", timeout=60_000)
    expect(tab.locator("#my-exports")).to_be_visible()
    steps.shot(tab, "airlock-in-console")
    tab.close()

    # The hub's home page: branded, bilingual, with the server's buttons.
    page.goto(f"{lab_stack.hub_url}/hub/home")
    text = _brand_and_chinese(page)
    assert "停止我的服务器 · Stop my server" in text and "进入我的服务器 · Open my server" in text
    expect(page.locator("#nav-console")).to_have_attribute("href", f"{lab_stack.console_url}/")
    steps.shot(page, "home")

    # Tokens: the form and the new token's card in both languages (the token itself masked).
    page.goto(f"{lab_stack.hub_url}/hub/token")
    text = _brand_and_chinese(page)
    assert "访问令牌" in text and "申请新令牌 · Request a new token" in text
    page.fill("#token-note", "journey")
    page.click("#request-token-form button[type=submit]")
    expect(page.locator("#token-area")).to_contain_text("您的新令牌 · Your new token")
    steps.shot(page, "token", mask=[page.locator("#token-result")])

    # An unknown page: the status named in both languages and a way home.
    page.goto(f"{lab_stack.hub_url}/hub/no-such-page")
    text = _brand_and_chinese(page)
    assert "404" in text and "页面不存在" in text and "Not found" in text
    expect(page.locator("#error-home")).to_be_visible()
    steps.shot(page, "not-found")

    # Stop the server from home, start it again: the spawn page takes over, then JupyterLab.
    page.goto(f"{lab_stack.hub_url}/hub/home")
    page.click("#stop")
    expect(page.locator("#start")).to_have_text("启动我的服务器 · Start my server", timeout=60_000)
    steps.shot(page, "home-stopped")
    page.click("#start")
    page.wait_for_url(f"**/hub/spawn-pending/{ANALYST}**", timeout=60_000)
    text = _brand_and_chinese(page)
    assert "正在启动您的服务器" in text and "停止服务器 · Stop server" in text
    steps.shot(page, "spawn-pending-again")
    page.wait_for_url(f"**/user/{ANALYST}/lab**", timeout=90_000)


def _analyst_server_running(browser: Browser, contexts: list[BrowserContext], settings: Settings) -> None:  # noqa: F811
    page = _page(browser, contexts)
    login(page, settings, ANALYST)
    page.wait_for_url(f"**/user/{ANALYST}/lab**", timeout=90_000)


def test_operator_journey_on_the_admin_page(
    browser: Browser,  # noqa: F811
    contexts: list[BrowserContext],
    lab_stack: Settings,
    steps: Steps,
) -> None:
    _analyst_server_running(browser, contexts, lab_stack)
    page = _page(browser, contexts)
    login(page, lab_stack, OPERATOR)
    page.wait_for_url(re.compile(r".*/(hub|user)/.*"), timeout=90_000)
    page.goto(f"{lab_stack.hub_url}/hub/admin")
    row = page.locator("tr.user-row", has_text=ANALYST)
    expect(row.get_by_text("Stop Server")).to_be_visible(timeout=30_000)
    text = _brand_and_chinese(page)
    assert "服务器管理" in text and "不能进入任何人的服务器" in text
    steps.shot(page, "admin")
    # Offered only what an operator may do: no way into the analyst's server, nor to act for them.
    for label in ("Access Server", "Spawn Page", "Edit User", "Add Users", "Manage Groups", "Shutdown Hub"):
        visible = [e for e in page.get_by_text(label, exact=True).all() if e.is_visible()]
        assert visible == [], f"the admin page offers {label!r} to an operator"

    # Typing the analyst's address does not get the operator in either.
    refused = page.goto(f"{user_url(lab_stack, ANALYST)}lab")
    assert refused is not None and refused.status == 403, refused and refused.status
    assert "无权访问" in _brand_and_chinese(page)
    steps.shot(page, "analyst-server-refused")

    # What an operator is for still works from the page: stopping the analyst's server.
    page.goto(f"{lab_stack.hub_url}/hub/admin")
    row = page.locator("tr.user-row", has_text=ANALYST)
    row.get_by_text("Stop Server").click()
    deadline = time.monotonic() + 60
    while hub_api(page, "GET", f"/users/{ANALYST}")["body"].get("servers"):
        assert time.monotonic() < deadline, "the operator's stop did not stop the analyst's server"
        time.sleep(1)
    page.goto(f"{lab_stack.hub_url}/hub/admin")
    expect(page.locator("tr.user-row", has_text=ANALYST).get_by_text("Stop Server")).to_have_count(0)
    steps.shot(page, "admin-after-stop")
