"""Headless Chromium (Debian's package) driven by Playwright, and code run in a user's kernel.

The hub and the consoles are at ``Settings.public_url`` (``http://localhost:<port>``); each
user's server is on its own host, ``http://<user>.localhost:<port>/user/<name>/``, which
Chromium resolves to loopback by itself (no /etc/hosts entry is needed or made).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from lab import vault
from lab.settings import Settings
from lab.stack.tools import apt_install

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        apt_install("chromium", "fonts-noto-cjk")
        path = shutil.which("chromium")
    assert path, "chromium is not installed and could not be installed (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (Playwright's loop ends with the module)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def login(page: Page, settings: Settings, username: str) -> None:
    """Log in on Keycloak's own page, as a person would."""
    page.goto(f"{settings.hub_url}/hub/login")
    page.wait_for_url(f"{settings.issuer}/protocol/openid-connect/auth**")
    page.fill("#username", username)
    page.fill("#password", vault.secret(settings, "demo-password"))
    page.click("#kc-login")


_RUN = """
async ([base, code]) => {
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
  const headers = {"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)};
  const made = await fetch(`${base}/api/kernels`, {method: "POST", headers, body: "{}"});
  if (!made.ok) { return {error: `kernel not started: HTTP ${made.status}`}; }
  const kernel = await made.json();
  const url = `${location.origin.replace("http", "ws")}${base}/api/kernels/${kernel.id}/channels`;
  const ws = new WebSocket(url);
  const msgId = crypto.randomUUID();
  const out = {stdout: "", stderr: "", error: null, result: null};
  let finished = false;
  return await new Promise((resolve) => {
    const timer = setTimeout(() => { out.error = "timeout"; ws.close(); resolve(out); }, 120000);
    ws.onopen = () => ws.send(JSON.stringify({
      header: {msg_id: msgId, msg_type: "execute_request", username: "", session: crypto.randomUUID(),
               version: "5.3", date: new Date().toISOString()},
      parent_header: {}, metadata: {}, channel: "shell", buffers: [],
      content: {code, silent: false, store_history: false, user_expressions: {}, allow_stdin: false}}));
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.parent_header.msg_id !== msgId) return;
      const t = msg.header.msg_type;
      if (t === "stream") out[msg.content.name] += msg.content.text;
      if (t === "execute_result") out.result = msg.content.data["text/plain"];
      if (t === "error") out.error = `${msg.content.ename}: ${msg.content.evalue}`;
      if (t === "status" && msg.content.execution_state === "idle") {
        clearTimeout(timer); finished = true; ws.close();
        fetch(`${base}/api/kernels/${kernel.id}`, {method: "DELETE", headers}).finally(() => resolve(out));
      }
    };
    ws.onerror = () => { out.error = "websocket error"; };
    ws.onclose = () => {
      if (finished) return;
      clearTimeout(timer); out.error = out.error || "connection closed"; resolve(out);
    };
  });
}
"""


def hub_origin(page_url: str) -> str:
    """The hub's origin, seen from a page on it or on a user's server (``<user>.<hub host>``)."""
    parts = urlsplit(page_url)
    host = parts.netloc
    if parts.path.startswith("/user/") and "." in host.split(":")[0]:
        host = host.split(".", 1)[1]
    return f"{parts.scheme}://{host}"


def run_in_kernel(page: Page, username: str, code: str) -> dict[str, Any]:
    """Run ``code`` in a new kernel of ``username``'s server (Jupyter REST + websocket API).

    The script runs on the server's own origin (``<user>.<domain>``), so the page goes
    there first if it is elsewhere (the hub redirects ``/user/<name>/`` to it).
    """
    if f"/user/{username}/" not in page.url:
        page.goto(f"{hub_origin(page.url)}/user/{username}/lab")
        page.wait_for_url(f"**/user/{username}/lab**", timeout=90_000)
    return dict(page.evaluate(_RUN, [f"/user/{username}", code]))


def run_json(page: Page, username: str, code: str) -> Any:
    """Run ``code`` whose last line prints one JSON document; return it parsed."""
    out = run_in_kernel(page, username, code)
    assert out["error"] is None, out
    return json.loads(out["stdout"].strip().splitlines()[-1])


_HUB_API = """
async ([method, path]) => {
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
  const r = await fetch(`/hub/api${path}`, {method, headers: {"X-XSRFToken": decodeURIComponent(xsrf)}});
  const text = await r.text();
  return {status: r.status, body: text ? JSON.parse(text) : null};
}
"""


def hub_api(page: Page, method: str, path: str) -> dict[str, Any]:
    """Call the hub's REST API as the logged-in user (session cookie and the hub's XSRF token)."""
    if "/hub/" not in page.url or urlsplit(page.url).path.startswith("/user/"):
        page.goto(f"{hub_origin(page.url)}/hub/home")
    return dict(page.evaluate(_HUB_API, [method, path]))


class Screenshots:
    """Numbered screenshots of one test: ``test-artifacts/screenshots/<test>/NN-<step>.png``."""

    def __init__(self, test: str) -> None:
        from pathlib import Path

        self.folder = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots" / test
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.count = 0

    def __call__(self, page: Page, step: str, *, full: bool = True) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{step}.png"), full_page=full)
