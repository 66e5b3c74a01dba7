"""The analyst's journey in Chromium (issue 13's acceptance): log in → catalogue → apply in the
console → (the operator approves with the CLI) → a DP query in a notebook, previewed before it
is released → an export request; each step asserts what the analyst sees on the page.

A new organisation and analyst of its own (the operator's CLI) so nothing depends on another
module. Screenshots: ``test-artifacts/screenshots/<test name>/NN-<step>.png``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from lab.extracts import ledger as open_ledger
from lab.settings import Settings
from tests.integration.browser import browser  # noqa: F401  (the Chromium fixture)
from tests.integration.test_consoles import console_login
from tests.integration.test_onboarding import OPERATOR, add_org, datalab

pytestmark = pytest.mark.integration

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CELLS = [
    "import lab.client as lab\nlab.datasets()[['dataset', 'epsilon_remaining']]",
    "query = lab.dp('population').group_by('district').count(epsilon=0.1)\nquery",
    "result = query.release()\nresult",
    "lab.dp('population').group_by('distrct').count(epsilon=0.1).release()",
    "lab.dummy('population', rows=5)",
    "export = lab.request_export(result, purpose='旅程测试 / analyst journey', dataset='population')\n"
    "print(export['state'], export['id'])",
]


@pytest.fixture(scope="module")
def analyst(lab_stack: Settings) -> Iterator[dict[str, str]]:
    tag = secrets.token_hex(3)
    org_id, user = f"journey-{tag}", f"an.jy{tag}"
    add_org(lab_stack, org_id, user, "旅程测试研究院", "Journey Test Institute", "research")
    yield {"org": org_id, "user": user, "tag": tag}
    with open_ledger(lab_stack) as book:
        for grant in book.list_grants(organisation=org_id, active=True):
            book.revoke(grant.id, by=OPERATOR, reason="journey test done")


class Steps:
    """Numbered screenshots of one test: ``NN-<step>.png``."""

    def __init__(self, page: Page, test: str) -> None:
        self.page, self.n = page, 0
        self.folder = SHOTS / test
        self.folder.mkdir(parents=True, exist_ok=True)

    def shot(self, step: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(self.folder / f"{self.n:02d}-{step}.png"), full_page=True)


_PUT_NOTEBOOK = """
async ([base, name, cells]) => {
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
  const notebook = {cells: cells.map(source => ({cell_type: "code", source, metadata: {}, outputs: [],
                                                 execution_count: null})),
                    metadata: {kernelspec: {name: "python3", display_name: "Python 3", language: "python"}},
                    nbformat: 4, nbformat_minor: 5};
  const r = await fetch(`${base}/api/contents/${name}`, {method: "PUT",
    headers: {"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)},
    body: JSON.stringify({type: "notebook", format: "json", content: notebook})});
  return r.status;
}
"""


def _output(page: Page, index: int) -> str:
    return (
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
        .nth(index)
        .locator(".jp-OutputArea")
        .inner_text()
    )


def _run_cell(page: Page, index: int, expect: str, timeout: float = 120_000) -> str:
    """Run cell ``index`` as a person would (click it, Shift+Enter) and wait for ``expect``."""
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(3):  # a Shift+Enter before the kernel is connected runs nothing: press it again
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(
                "p => !/\\[\\s*\\]/.test(p.textContent)", arg=prompt.element_handle(), timeout=15_000
            )
            break
        except Exception:
            continue
    try:
        cell.locator(".jp-OutputArea", has_text=expect).wait_for(timeout=timeout)
    except Exception:
        page.screenshot(path=str(SHOTS / f"failed-cell-{index}.png"), full_page=True)
        raise AssertionError(
            f"cell {index} never showed {expect!r}; it shows: {_output(page, index)!r}"
        ) from None
    # done only when the prompt shows its number: a cell run while one that fails is still busy
    # would be aborted by the kernel
    page.wait_for_function(
        "p => /\\[\\d+\\]/.test(p.textContent)", arg=prompt.element_handle(), timeout=timeout
    )
    cell.scroll_into_view_if_needed()
    return _output(page, index)


def test_analyst_applies_in_the_console_then_queries_and_exports_in_a_notebook(
    lab_stack: Settings,
    analyst: dict[str, str],
    browser: Browser,  # noqa: F811
) -> None:
    user, base = analyst["user"], f"{lab_stack.hub_url}/services/gateway/console"
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        steps = Steps(page, "test_analyst_applies_in_the_console_then_queries_and_exports_in_a_notebook")

        # 1. Login: the analyst console, with no grant yet.
        console_login(page, lab_stack, user, "analyst")
        assert user in page.locator("body").inner_text()
        steps.shot("login")

        # 2. The catalogue: the population register, searched in Chinese; no holders' names.
        page.fill("#catalogue-search input[name=q]", "人口")
        page.click("#catalogue-search button[type=submit]")
        page.wait_for_selector("#dataset-population")
        row = page.locator("#dataset-population").inner_text()
        assert "人口库" in row and "sdu-research" not in page.locator("#catalogue").inner_text()
        steps.shot("catalogue")

        # 3. Apply from the catalogue: the form names the register; the application is pending.
        page.locator("#dataset-population a.apply").click()
        page.wait_for_url("**/analyst?dataset=population**")
        assert page.locator("#apply select[name=dataset]").input_value() == "population"
        page.fill("#apply input[name=purpose]", f"旅程测试 {analyst['tag']} / analyst journey")
        page.fill("#apply input[name=epsilon]", "2")
        page.click("#apply button[type=submit]")
        page.wait_for_selector("#flash")
        mine = page.locator("#my-applications tr", has_text=f"旅程测试 {analyst['tag']}").first
        app_id = int(mine.locator("td").first.inner_text())
        assert "待审" in mine.inner_text() and "ε 2" in mine.inner_text()
        steps.shot("applied")

        # 4. The operator approves (CLI); the analyst sees the grant in the console.
        approved = datalab("application", "approve", str(app_id), "--as", OPERATOR)
        assert approved.returncode == 0, approved.stderr
        page.goto(f"{base}/analyst")
        assert page.locator(f"#application-{app_id}").get_attribute("data-state") == "approved"
        assert "population" in page.locator("table").first.inner_text()
        steps.shot("approved")

        # 5. JupyterLab: the hub logs the analyst in through the same Keycloak session.
        page.goto(f"{lab_stack.hub_url}/hub/login")
        page.wait_for_url(f"**/user/{user}/lab**", timeout=120_000)
        page.wait_for_selector(".jp-Launcher, .jp-NotebookPanel", timeout=90_000)
        steps.shot("jupyterlab")
        status = page.evaluate(_PUT_NOTEBOOK, [f"/user/{user}", "journey.ipynb", CELLS])
        assert status in (200, 201), status
        listing = page.locator(".jp-DirListing-item", has_text="journey.ipynb")
        for _ in range(12):  # the file browser polls; opening it as a person would, by a double click
            if listing.count():
                break
            page.locator(".jp-DirListing-content").click(button="right")
            page.keyboard.press("Escape")
            page.wait_for_timeout(2_500)
        listing.first.dblclick()
        page.locator(".lm-TabBar-tab.lm-mod-current", has_text="journey.ipynb").wait_for(timeout=60_000)
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(len(CELLS) - 1).wait_for(
            timeout=90_000
        )

        # 6. The datasets and the preview: cost and accuracy shown, nothing spent.
        listed = _run_cell(page, 0, "population")
        assert "population" in listed and "2.0" in listed
        shown = _run_cell(page, 1, "尚未执行")
        assert (
            "cost 花费: ε=0.1" in shown and "accuracy 95% 精度" in shown and "→ 1.9 after release()" in shown
        )
        with open_ledger(lab_stack) as book:
            grant = book.active_grant(analyst["org"], "population")
            assert book.budget(grant.id).epsilon_spent == 0
        steps.shot("preview")

        # 7. Release: noisy counts by district, the budget charged once.
        released = _run_cell(page, 2, "spent 花费")
        assert "张店区" in released and "budget left 剩余预算: ε 1.9" in released
        with open_ledger(lab_stack) as book:
            assert book.budget(grant.id).epsilon_spent == pytest.approx(0.1, abs=1e-12)
        steps.shot("released")

        # 8. A typo: our error, in both languages, with the fix; no httpx in sight, nothing spent.
        typo = _run_cell(page, 3, "Did you mean")
        assert "ConfigError" in typo and "'district'" in typo and "您是不是想用" in typo
        assert "httpx" not in typo and "client.py" not in typo  # the analyst's line, not our internals
        steps.shot("typo")

        # 9. Dummy rows to write code on: marked, announced, free.
        fake = _run_cell(page, 4, "DUMMY DATA")
        assert "_dummy" in fake and "假数据" in fake
        with open_ledger(lab_stack) as book:
            assert book.budget(grant.id).epsilon_spent == pytest.approx(0.1, abs=1e-12)
        steps.shot("dummy")

        # 10. The export request: a DP result is released at once, and listed in the console.
        exported = _run_cell(page, 5, "released")
        match = re.search(r"released (\d+)", exported)
        assert match, exported
        steps.shot("export-requested")
        page.goto(f"{base}/analyst")
        export_row = page.locator(f"#export-{match.group(1)}")
        assert export_row.get_attribute("data-state") == "released"
        assert "dp-result.json" in export_row.inner_text()
        steps.shot("export-listed")
    finally:
        context.close()
