"""The consoles in a real browser (headless Chromium), with an analyst's running notebook.

One story, as the bureau lives it: an analyst of sdu-research applies in the console; the
operator approves in the console and the analyst's notebook queries at once; the operator
revokes and, within 60 s, the same notebook kernel's next gateway call and its next MinIO
read (with the STS credentials it already holds) both fail; the auditor finds both
events and the budget chart. Screenshots are kept in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from lab import vault
from lab.extracts import ledger as open_ledger
from lab.settings import Settings
from tests.integration.browser import _RUN, browser, hub_api, login  # noqa: F401

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ORG, DATASET, ANALYST = "sdu-research", "legal_entity", "zhou.ting"
READY = ".governance-console-test.json"
LIMIT = 60.0


def console(settings: Settings) -> str:
    return f"{settings.hub_url}/services/gateway/console"


def _revoke_ours(settings: Settings) -> None:
    with open_ledger(settings) as book:
        for grant in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
            book.revoke(grant.id, by="op.wang", reason="console tests finished")


@pytest.fixture(scope="module")
def contexts(browser: Browser, lab_stack: Settings) -> Iterator[Callable[[], BrowserContext]]:  # noqa: F811
    _revoke_ours(lab_stack)
    made: list[BrowserContext] = []

    def new() -> BrowserContext:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
        made.append(context)
        return context

    yield new
    for context in made:
        context.close()
    _revoke_ours(lab_stack)


def console_login(page: Page, settings: Settings, username: str, landing: str) -> None:
    """Log in on Keycloak's page (or through its session) and land on ``/console/<landing>``."""
    page.goto(f"{console(settings)}/login")
    if page.url.startswith(settings.issuer):
        page.fill("#username", username)
        page.fill("#password", vault.secret(settings, "demo-password"))
        page.click("#kc-login")
    page.wait_for_url(f"**/services/gateway/console/{landing}**", timeout=30_000)


KERNEL = """
import io, json, os, time
import polars as pl
import lab.client as lab
from minio import Minio
from minio.credentials import WebIdentityProvider

c = lab.connect()
ready_file = os.path.expanduser("~/{ready}")
query = lab.dp("{dataset}").group_by("district").count(epsilon=0.05)
out = {{"groups": query.release().frame.height}}
creds = WebIdentityProvider(
    jwt_provider_func=lambda: {{"access_token": c._token(), "expires_in": "900"}},
    sts_endpoint=f"http://{{c.s3_endpoint}}", duration_seconds=900,
).retrieve()
s3 = Minio(c.s3_endpoint, access_key=creds.access_key, secret_key=creds.secret_key,
           session_token=creds.session_token, secure=False, region="us-east-1")
name = None
for _ in range(60):
    names = {{o.object_name for o in s3.list_objects("extracts", prefix="{org}/{dataset}/", recursive=True)}}
    data = sorted(n for n in names if n.endswith("/data.parquet") and n[:-12] + "manifest.json" in names)
    if data:
        name = data[-1]
        break
    time.sleep(1)
out["extract_rows"] = pl.read_parquet(io.BytesIO(s3.get_object("extracts", name).read())).height
with open(ready_file, "w") as fh:
    json.dump(out, fh)
start = time.time()
while time.time() - start < 95 and not ("gateway_failed" in out and "minio_failed" in out):
    if "gateway_failed" not in out:
        try:
            query.preview()
            query._preview = None
        except Exception as exc:
            out["gateway_failed"] = time.time()
            out["gateway_error"] = getattr(exc, "reason", type(exc).__name__)
    if "minio_failed" not in out:
        try:
            s3.get_object("extracts", name).read()
        except Exception as exc:
            out["minio_failed"] = time.time()
            out["minio_error"] = getattr(exc, "code", type(exc).__name__)
    time.sleep(0.5)
os.remove(ready_file)
print(json.dumps(out))
"""


def start_in_kernel(page: Page, username: str, code: str) -> None:
    page.evaluate(
        "([run, args]) => { window.__job = eval('(' + run + ')')(args); return true; }",
        [_RUN.strip(), [f"/user/{username}", code]],
    )


def job_result(page: Page) -> dict[str, Any]:
    out = page.evaluate("() => window.__job")
    assert out["error"] is None, out
    return dict(json.loads(out["stdout"].strip().splitlines()[-1]))


def wait_for_file(path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                return dict(json.loads(path.read_text()))
            except ValueError:
                pass  # still being written
        time.sleep(0.5)
    raise AssertionError(f"the notebook never got access ({path.name} missing)")


def test_approve_revoke_and_audit_in_the_consoles(
    contexts: Callable[[], BrowserContext], lab_stack: Settings
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    base = console(lab_stack)
    ready = lab_stack.home / "homes" / ANALYST / READY
    ready.unlink(missing_ok=True)

    # The analyst: notebook first (hub login on Keycloak's page), then the console (same SSO session).
    analyst = contexts()
    notebook = analyst.new_page()
    login(notebook, lab_stack, ANALYST)
    notebook.wait_for_url(f"**/user/{ANALYST}/lab**", timeout=90_000)
    desk = analyst.new_page()
    console_login(desk, lab_stack, ANALYST, "analyst")
    for path in ("operator", "auditor"):
        refused = desk.goto(f"{base}/{path}")
        assert refused is not None and refused.status == 403 and "403" in desk.inner_text("#forbidden")
    desk.goto(f"{base}/analyst")
    desk.select_option("#apply select[name=dataset]", DATASET)
    desk.fill("#apply input[name=purpose]", "浏览器测试 / browser test")
    desk.check("#apply input[name=modes][value=masked]")
    desk.fill("#apply input[name=epsilon]", "1")
    desk.fill("#apply input[name=term_days]", "30")
    desk.click("#apply button[type=submit]")
    desk.wait_for_selector("#flash")
    row = desk.locator("#my-applications tr", has_text="浏览器测试").first
    app_id = int(row.locator("td").first.inner_text())
    assert "待审" in row.inner_text()

    # The operator approves with a smaller budget.
    operator = contexts().new_page()
    console_login(operator, lab_stack, "op.wang", "operator")
    pending = operator.locator(f"#application-{app_id}")
    pending.locator("input[name=epsilon]").fill("0.5")
    pending.locator("button[value=approve]").click()
    operator.wait_for_selector("#flash")
    assert f"已批准申请 #{app_id}" in operator.inner_text("#flash")
    operator.goto(f"{base}/operator/grants?organisation={ORG}&dataset={DATASET}")
    grant_row = operator.locator("#grants tr[data-status=active]", has_text=DATASET).first
    grant_id = int(grant_row.locator("td").first.inner_text())
    with open_ledger(lab_stack) as book:
        grant = book.get_grant(grant_id)
    assert (grant.organisation, grant.epsilon, grant.approved_by) == (ORG, 0.5, "op.wang")
    operator.screenshot(path=str(ARTIFACTS / "console-operator.png"), full_page=True)

    # The analyst sees what was asked beside what was granted; the same request twice is refused
    # while the first is pending, and a pending application can be withdrawn.
    desk.goto(f"{base}/analyst")
    row = desk.locator(f"#application-{app_id}")
    assert "ε 1 " in row.locator("td.asked").inner_text() and "30 天" in row.locator("td.asked").inner_text()
    assert "ε 0.5 " in row.locator("td.granted").inner_text()
    purpose = f"撤回测试 {time.time_ns()} / withdraw test"
    for attempt in range(2):
        desk.select_option("#apply select[name=dataset]", DATASET)
        desk.fill("#apply input[name=purpose]", purpose)
        desk.click("#apply button[type=submit]")
        desk.wait_for_selector("#flash-error" if attempt else "#flash")
    assert "尚待审批" in desk.inner_text("#flash-error")
    again = desk.locator("#my-applications tr", has_text=purpose)
    assert again.count() == 1 and again.get_attribute("data-state") == "pending"
    again.locator("form.withdraw button").click()
    desk.wait_for_selector("#flash")
    assert "已撤回" in desk.inner_text("#flash")
    assert desk.locator("#my-applications tr", has_text=purpose).get_attribute("data-state") == "withdrawn"

    # The analyst's running notebook: its next query and MinIO read succeed...
    start_in_kernel(notebook, ANALYST, KERNEL.format(ready=READY, org=ORG, dataset=DATASET))
    granted = wait_for_file(ready, 60)
    assert granted["groups"] >= 5 and granted["extract_rows"] > 100

    # ...until the operator revokes; then both fail within 60 s, in the same kernel.
    operator.goto(f"{base}/operator/grants?organisation={ORG}&dataset={DATASET}")
    form = operator.locator(f"#grant-{grant_id} form.revoke")
    form.locator("input[name=reason]").fill("浏览器测试：撤销 / test revocation")
    form.locator("button").click()
    operator.wait_for_selector("#confirm-box")  # revoking asks first
    revoked_at = time.time()
    operator.click("#confirm-button")
    operator.wait_for_selector("#flash")
    assert f"已撤销授权 #{grant_id}" in operator.inner_text("#flash")
    operator.goto(f"{base}/operator/grants?state=ended&q=%23{grant_id}")
    operator.wait_for_selector(f"#grant-{grant_id}[data-status=revoked]")
    result = job_result(notebook)
    gateway_s = result["gateway_failed"] - revoked_at
    minio_s = result["minio_failed"] - revoked_at
    assert result["gateway_error"] == "grant-revoked" and gateway_s <= LIMIT
    assert result["minio_error"] == "AccessDenied" and minio_s <= LIMIT
    print(f"notebook lost access after the revocation: gateway {gateway_s:.1f} s, MinIO {minio_s:.1f} s")

    # The auditor sees the grant and its revocation, and the budget chart.
    auditor = contexts().new_page()
    console_login(auditor, lab_stack, "audit.zhao", "auditor")
    auditor.goto(f"{base}/auditor?organisation={ORG}&dataset={DATASET}&period=hour")
    assert auditor.get_attribute("#integrity", "data-ok") == "true"
    kinds = auditor.locator("#records tr.record").evaluate_all(
        "rows => rows.map(r => [r.cells[5].innerText, r.cells[6].innerText])"
    )
    assert any(k == "grant" and f"grant={grant_id}" in d for k, d in kinds)
    assert any(k == "revoke" and f"grant={grant_id}" in d for k, d in kinds)
    assert any(k == "decision" and f"application={app_id}" in d for k, d in kinds)
    series = auditor.locator("#budget-chart polyline.series").evaluate_all(
        "lines => lines.map(l => l.getAttribute('data-series'))"
    )
    assert f"{ORG} / {DATASET}" in series
    assert auditor.locator("#budget-chart").bounding_box()["height"] > 100  # type: ignore[index]
    auditor.locator("#chart").scroll_into_view_if_needed()
    auditor.screenshot(path=str(ARTIFACTS / "console-auditor.png"))
    assert "审计控制台" in auditor.inner_text("h1")
    auditor.click("#lang-en")
    auditor.wait_for_selector("h1:has-text('Auditor console')")
    assert "Privacy budget spent" in auditor.inner_text("main")
    auditor.click("#lang-zh")
    auditor.wait_for_selector("h1:has-text('审计控制台')")
    hub_api(notebook, "DELETE", f"/users/{ANALYST}/server")  # leave the machine as we found it
