"""Shared by the sandbox attack tests: an analyst logged in through Keycloak, server control,
victim files outside the sandbox and their fingerprints."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from lab.settings import Settings
from tests.integration.browser import hub_api, login

ANALYST = "liu.yang"  # zibo-credit: a masked legal_entity extract; used by no other test module


@dataclass(frozen=True)
class Fingerprint:
    """What root writing or chowning through a link would change (the bytes as a digest)."""

    sha256: str
    uid: int
    gid: int
    mode: int
    mtime_ns: int
    nlink: int


def fingerprint(path: Path) -> Fingerprint:
    info = os.stat(path, follow_symlinks=False)
    mode = stat.S_IMODE(info.st_mode)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Fingerprint(digest, info.st_uid, info.st_gid, mode, info.st_mtime_ns, info.st_nlink)


def make_victim(directory: Path, name: str) -> Path:
    """A root-owned file outside every sandbox, with an old mtime (changes show)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / name
    path.write_bytes(b"host file that no sandbox may change\n")
    os.chown(path, 0, 0)
    os.chmod(path, 0o640)
    os.utime(path, ns=(1_000_000_000 * 10**9, 1_000_000_000 * 10**9))
    return path


def victims_dir(settings: Settings, test: str) -> Path:
    """Under the lab's state directory (root's, 0700, never mounted into a sandbox)."""
    return settings.home / "security-victims" / test


def sandbox_root(settings: Settings, user: str = ANALYST) -> Path:
    """The host directory holding a user's sandbox sockets and token (any layout)."""
    return settings.run_dir / "sandbox" / user


def host_path_of(inode: int, device: int, root: Path) -> Path | None:
    """The host path under ``root`` of the file the sandbox sees as (device, inode)."""
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(parent) / name
            info = os.stat(path, follow_symlinks=False)
            if (info.st_ino, info.st_dev) == (inode, device):
                return path
    return None


def fetch(page: Page, url: str) -> dict[str, Any]:
    """GET ``url`` as script in the page would: the analyst's cookies and XSRF token."""
    return dict(
        page.evaluate(
            """async (url) => {
                 const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
                 const r = await fetch(url, {headers: {"X-XSRFToken": decodeURIComponent(xsrf)}});
                 const text = await r.text();
                 return {status: r.status, url: r.url, length: text.length, head: text.slice(0, 300)};
               }""",
            url,
        )
    )


def send(page: Page, method: str, url: str, body: dict[str, Any]) -> int:
    """``method`` ``url`` with a JSON body as script in the page would; the status."""
    return int(
        page.evaluate(
            """async ([method, url, body]) => {
                 const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
                 const headers = {"X-XSRFToken": decodeURIComponent(xsrf),
                                  "Content-Type": "application/json"};
                 const r = await fetch(url, {method, headers, body: JSON.stringify(body)});
                 return r.status;
               }""",
            [method, url, body],
        )
    )


def open_lab_page(page: Page, settings: Settings, user: str = ANALYST) -> None:
    page.goto(f"{settings.hub_url}/user/{user}/lab")
    page.wait_for_url(f"**/user/{user}/lab**", timeout=90_000)


def restart_server(page: Page, settings: Settings, user: str = ANALYST) -> None:
    """Stop the user's server and start it again through the hub's REST API."""
    hub_api(page, "DELETE", f"/users/{user}/server")
    deadline = time.monotonic() + 120
    while hub_api(page, "GET", f"/users/{user}")["body"].get("server"):
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(0.5)
    started = hub_api(page, "POST", f"/users/{user}/server")
    assert started["status"] in (201, 202), started["status"]
    while not hub_api(page, "GET", f"/users/{user}")["body"].get("server"):
        assert time.monotonic() < deadline, "the server did not start again"
        time.sleep(0.5)
    open_lab_page(page, settings, user)


@pytest.fixture(scope="module")
def analyst(browser: Browser, lab_stack: Settings) -> Iterator[Page]:
    """``liu.yang`` logged in on Keycloak's page, her JupyterLab open; stopped afterwards."""
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    login(page, lab_stack, ANALYST)
    page.wait_for_url(f"**/user/{ANALYST}/lab**", timeout=90_000)
    yield page
    hub_api(page, "DELETE", f"/users/{ANALYST}/server")
    context.close()
