"""Origins (THREAT-MODEL property 3): an analyst's page cannot read or drive the consoles.

The attacker is a hostile analyst who swapped ``jupyter.sock`` for a server of their own.
We play that with a tiny HTTP server on a unix socket registered in configurable-http-proxy
as the analyst's route (exactly what the hub would route to their server), serving a page
with a script. A logged-in operator opens it in headless Chromium. The script tries to read
the operator console (with the operator's cookies) and to submit the approve form of a
pending application. Then the same forgery is sent with the operator's real cookie and
CSRF token from outside a browser. Each time: refused, and nothing changed.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page

from lab import vault
from lab.extracts import ledger as open_ledger
from lab.hub.config import user_url
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.browser import browser  # noqa: F401
from tests.integration.console_client import console_login as http_console_login
from tests.integration.console_client import csrf

pytestmark = [pytest.mark.integration, pytest.mark.security]

ANALYST, ORG, DATASET, OPERATOR = "liu.yang", "zibo-credit", "legal_entity", "op.wang"

ATTACK_PAGE = """<!doctype html><meta charset=utf-8><title>totally a notebook</title>
<script>
const CONSOLE = %(console)s;
window.stolen = (async () => {
  const out = {read: 0, csrf: null, status: null, error: null};
  try {
    const r = await fetch(CONSOLE + "/operator", {credentials: "include"});
    const text = await r.text();
    out.status = r.status; out.read = text.length;
    out.csrf = (text.match(/name="csrf" value="([^"]+)"/) || [])[1] || null;
  } catch (e) { out.error = String(e); }
  return out;
})();
window.forge = async (appId) => {
  const got = await window.stolen;
  const form = document.createElement("form");
  form.method = "POST";
  form.action = `${CONSOLE}/operator/applications/${appId}/approve`;
  const fields = {csrf: got.csrf || "guessed", modes: "dp", epsilon: "5", delta: "0.00001", term_days: "365"};
  for (const [k, v] of Object.entries(fields)) {
    const i = document.createElement("input"); i.name = k; i.value = v; form.appendChild(i);
  }
  document.body.appendChild(form);
  form.submit();
};
</script><p>loading…</p>
"""


FRAME_PAGE = """<!doctype html><meta charset=utf-8><title>framed</title>
<iframe id=console width=1200 height=800 src=%(console)s></iframe>
"""


class _Page(http.server.BaseHTTPRequestHandler):
    body = b""
    frame = b""

    def do_GET(self) -> None:
        body = self.frame if self.path.endswith("/frame") else self.body
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _proxy(settings: Settings) -> httpx.Client:
    return httpx.Client(
        base_url=settings.url("proxy_api", "/api/routes"),
        headers={"Authorization": f"token {vault.secret(settings, 'proxy-auth-token')}"},
        timeout=10,
    )


@pytest.fixture(scope="module")
def analyst_page(lab_stack: Settings) -> Iterator[str]:
    """The analyst's own server, routed by the proxy where their notebook would be; its page URL."""
    server_url = user_url(lab_stack, ANALYST)
    parts = urlsplit(server_url)
    # With per-user hosts the proxy routes by host: the route is "/<host>/user/<name>/".
    same_host = parts.netloc == urlsplit(lab_stack.public_url).netloc
    routespec = parts.path if same_host else f"/{parts.hostname}{parts.path}"
    page = (ATTACK_PAGE % {"console": json.dumps(lab_stack.console_url)}).encode()
    frame = (FRAME_PAGE % {"console": json.dumps(f"{lab_stack.console_url}/operator")}).encode()
    handler = type("AttackPage", (_Page,), {"body": page, "frame": frame})
    sock_dir = Path(tempfile.mkdtemp(prefix="origins-"))
    sock = sock_dir / "jupyter.sock"
    server = _UnixServer(str(sock), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with _proxy(lab_stack) as proxy:
        before = proxy.get("").json().get(routespec)
        added = proxy.post(routespec, json={"target": "http+unix://" + quote(str(sock), safe="")})
        assert added.status_code == 201, added.text
        try:
            yield server_url + "attack"
        finally:
            proxy.delete(routespec)
            if before:
                proxy.post(routespec, json={"target": before["target"], **before.get("data", {})})
            server.shutdown()
            sock.unlink(missing_ok=True)
            sock_dir.rmdir()


@pytest.fixture()
def pending(lab_stack: Settings) -> Iterator[dict[str, Any]]:
    """A pending application by the analyst, and the ledger's state before the attack."""
    kct.ensure(lab_stack)
    token = kct.access_token(lab_stack, ANALYST)
    body = {
        "dataset": DATASET,
        "purpose": "origin test / 来源测试",
        "modes": ["dp"],
        "epsilon": 0.5,
        "delta": 1e-6,
        "term_days": 7,
    }
    made = httpx.post(
        f"{lab_stack.gateway_url}/api/applications",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=30,
    )
    assert made.status_code == 200, made.text
    app = dict(made.json())
    with open_ledger(lab_stack) as book:
        grants = [g.id for g in book.list_grants(organisation=ORG, dataset=DATASET)]
    time.sleep(0.01)
    yield {"id": app["id"], "grants": grants, "since": _now_records(lab_stack)}
    with open_ledger(lab_stack) as book:
        for grant in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
            if grant.id not in grants:
                book.revoke(grant.id, by=OPERATOR, reason="origin test: a forged approval got through")
        if book.get_application(app["id"]).state == "pending":
            book.reject(app["id"], by=OPERATOR, reason="origin test finished")


def _now_records(settings: Settings) -> int:
    with open_ledger(settings) as book:
        return max((r.seq for r in book.records(newest_first=True, limit=1)), default=0)


def _unchanged(settings: Settings, state: dict[str, Any]) -> None:
    """The application is still pending, no grant appeared, and no record but the minute seal was written."""
    with open_ledger(settings) as book:
        assert book.get_application(state["id"]).state == "pending"
        assert [g.id for g in book.list_grants(organisation=ORG, dataset=DATASET)] == state["grants"]
        new = [r for r in book.records() if r.seq > state["since"] and r.kind != "audit-seal"]
        assert new == [], [(r.kind, r.actor) for r in new]
        assert book.verify().ok


def _operator_console(page: Page, settings: Settings) -> None:
    page.goto(f"{settings.console_url}/login")
    if page.url.startswith(settings.issuer):
        page.fill("#username", OPERATOR)
        page.fill("#password", vault.secret(settings, "demo-password"))
        page.click("#kc-login")
    page.wait_for_url("**/services/gateway/console/operator**", timeout=30_000)
    assert page.locator("input[name=csrf]").count() > 0  # the operator's console works in this browser


def test_analyst_page_cannot_read_or_drive_the_operator_console(
    browser: Browser,  # noqa: F811
    lab_stack: Settings,
    analyst_page: str,
    pending: dict[str, Any],
) -> None:
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        _operator_console(page, lab_stack)
        pending["since"] = _now_records(lab_stack)  # after the operator's own login record
        page.goto(analyst_page)
        assert page.title() == "totally a notebook"  # the analyst's own content, served to the operator
        stolen = page.evaluate("() => window.stolen")
        token = "found" if stolen["csrf"] else "absent"
        assert stolen["csrf"] is None and stolen["read"] == 0, (
            f"the analyst's script read the console: {stolen['read']} characters, CSRF token {token}"
        )
        assert urlsplit(page.url).netloc != urlsplit(lab_stack.console_url).netloc
        with page.expect_navigation() as navigation:
            page.evaluate(f"() => window.forge({pending['id']})")
        response = navigation.value
        assert response is not None and response.status == 403, response and response.status
        assert "nothing was changed" in page.text_content("body")  # the refusal says what happened
        assert "未做任何更改" in page.text_content("body")
    finally:
        context.close()
    _unchanged(lab_stack, pending)


def test_analyst_page_cannot_frame_the_console(
    browser: Browser,  # noqa: F811
    lab_stack: Settings,
    analyst_page: str,
) -> None:
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        _operator_console(page, lab_stack)
        # The console's own (hash-pinned) styles still apply under its policy.
        colour = page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb(11, 61, 98)"
        page.goto(analyst_page.replace("/attack", "/frame"))
        assert page.title() == "framed"
        children = [f for f in page.frames if f is not page.main_frame]
        assert len(children) == 1
        framed = children[0].locator("input[name=csrf]").count()
        assert framed == 0, "the console rendered inside the analyst's page"
    finally:
        context.close()


def test_hosts_do_not_mix(lab_stack: Settings, analyst_page: str) -> None:
    """The analyst's content is only on their host; the gateway only on the hub's.

    Python's resolver does not know ``*.localhost``, so we ask the proxy on 127.0.0.1 with the
    ``Host`` header a browser would send.
    """
    user_host = urlsplit(analyst_page).netloc
    hub_host = urlsplit(lab_stack.public_url).netloc
    path = urlsplit(analyst_page).path
    with httpx.Client(base_url=lab_stack.bind_url, timeout=30, follow_redirects=False) as proxy:
        assert "totally a notebook" in proxy.get(path, headers={"Host": user_host}).text  # the route works
        on_hub = proxy.get(path, headers={"Host": hub_host})
        assert "totally a notebook" not in on_hub.text, "the analyst's page is served on the hub's origin"
        for gateway_path in ("/services/gateway/health", "/services/gateway/console/login"):
            on_user = proxy.get(gateway_path, headers={"Host": user_host})
            answered = (gateway_path, on_user.status_code)
            assert "default-src 'none'" not in on_user.headers.get("content-security-policy", ""), answered
            assert on_user.status_code == 302 and '"ok"' not in on_user.text, answered
            assert urlsplit(on_user.headers["location"]).netloc in ("", hub_host)


FOREIGN = ["{user}", "null", "http://evil.localhost:{port}", "{public}.evil"]


def test_forged_post_with_the_operators_own_cookie_and_token_is_refused(
    lab_stack: Settings, pending: dict[str, Any]
) -> None:
    """Even holding the operator's session cookie and CSRF token, a foreign Origin changes nothing."""
    operator = http_console_login(lab_stack, OPERATOR)
    user_origin = "http://" + urlsplit(user_url(lab_stack, ANALYST)).netloc
    url = f"{lab_stack.console_url}/operator/applications/{pending['id']}/approve"
    with closing(operator):
        token = csrf(operator.get(f"{lab_stack.console_url}/operator").text)
        stolen = httpx.Client(cookies=operator.cookies, timeout=30)  # sends only what we set
    pending["since"] = _now_records(lab_stack)  # after the operator's own login record
    form = {"csrf": token, "modes": "dp", "epsilon": "5", "delta": "0.00001", "term_days": "365"}
    attempts: list[dict[str, str]] = [
        {"Origin": o.format(user=user_origin, port=lab_stack.ports.hub, public=lab_stack.public_url)}
        for o in FOREIGN
    ]
    attempts += [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {},  # no Origin at all: never enough for a cookie-authenticated form
    ]
    with stolen:
        for headers in attempts:
            answer = stolen.post(url, data=form, headers=headers, follow_redirects=False)
            assert answer.status_code == 403, (headers, answer.status_code)
            assert "未做任何更改" in answer.text and "nothing was changed" in answer.text
    _unchanged(lab_stack, pending)


def test_api_refuses_a_foreign_origin_even_with_a_bearer_token(
    lab_stack: Settings, pending: dict[str, Any]
) -> None:
    """A page on the analyst's origin that holds a token still cannot call the API from there."""
    kct.ensure(lab_stack)
    token = kct.access_token(lab_stack, OPERATOR)
    user_origin = "http://" + urlsplit(user_url(lab_stack, ANALYST)).netloc
    answer = httpx.post(
        f"{lab_stack.gateway_public_url}/api/operator/applications/{pending['id']}/approve",
        headers={"Authorization": f"Bearer {token}", "Origin": user_origin},
        json={},
        timeout=30,
    )
    assert answer.status_code == 403, answer.text
    body = answer.json()["error"]
    assert body["reason"] == "cross-origin" and "未做任何更改" in body["message"]
    _unchanged(lab_stack, pending)
