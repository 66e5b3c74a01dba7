"""One way out: the notebook server sends no data file to the browser (THREAT-MODEL property 2).

A hostile analyst writes a CSV of her organisation's masked extract in the notebook and
tries every way JupyterLab and jupyter_server offer to download it, and a notebook whose
outputs hold the data. Each is refused with a 4xx that says why, the refusal shows in the
server's log, and the files are untouched; the welcome notebook still opens and
``lab.extract`` still works in the kernel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from lab.settings import Settings
from tests.integration.browser import browser, run_json  # noqa: F401
from tests.security.sandbox_support import ANALYST, analyst, fetch, send  # noqa: F401

pytestmark = [pytest.mark.security, pytest.mark.integration]

WRITE = """
import hashlib, json, os, nbformat
import lab.client as lab
frame = lab.extract("legal_entity")
frame.write_csv("x.csv")
nb = nbformat.v4.new_notebook()
csv = open("x.csv").read()
nb.cells.append(nbformat.v4.new_code_cell("print(csv)", outputs=[nbformat.v4.new_output(
    "stream", name="stdout", text=csv * (5_000_000 // len(csv) + 1))]))
nbformat.write(nb, "big.ipynb")
sha = {n: hashlib.sha256(open(n, "rb").read()).hexdigest() for n in ("x.csv", "big.ipynb")}
print(json.dumps({"rows": frame.height, "header": csv.splitlines()[0], "sha": sha,
                  "size": os.path.getsize("big.ipynb")}))
"""

SHA = """
import hashlib, json
print(json.dumps({n: hashlib.sha256(open(n, "rb").read()).hexdigest() for n in ("x.csv", "big.ipynb")}))
"""

BASE = f"/user/{ANALYST}"
REFUSED = [
    "/files/x.csv",
    "/files/x.csv?download=1",
    "/files/big.ipynb?download=1",
    "/files/welcome.ipynb?download=1",
    "/api/contents/x.csv",
    "/api/contents/x.csv?type=file&format=base64",
    "/api/contents/x.csv?type=file&format=text&content=1",
    "/api/contents/big.ipynb",
    "/api/contents/welcome.ipynb?download=1",
    "/view/x.csv",
    "/nbconvert/script/big.ipynb?download=true",
    "/nbconvert/html/welcome.ipynb",
]


@pytest.fixture(scope="module")
def written(analyst: Page, lab_stack: Settings) -> Iterator[dict]:  # noqa: F811
    out = run_json(analyst, ANALYST, WRITE)
    assert out["rows"] > 100 and out["size"] > 4 * 1024 * 1024  # a real extract, a notebook over the cap
    yield out
    for name in ("x.csv", "big.ipynb", "saved.ipynb", "in.csv"):
        (lab_stack.home / "homes" / ANALYST / name).unlink(missing_ok=True)


@pytest.mark.parametrize("path", REFUSED)
def test_downloads_from_the_notebook_server_are_refused(
    analyst: Page,  # noqa: F811
    written: dict,
    lab_stack: Settings,
    path: str,
) -> None:
    log = lab_stack.logs_dir / "hub.log"
    log_size = log.stat().st_size
    answer = fetch(analyst, BASE + path)
    assert 400 <= answer["status"] < 500, answer["status"]
    assert written["header"] not in answer["head"]  # no CSV in the answer
    assert answer["length"] < 4096, answer["length"]
    deadline = time.monotonic() + 10
    while True:  # the refusal is recorded in the server's log (path only)
        with open(log, "rb") as fh:
            fh.seek(log_size)
            new = fh.read().decode(errors="replace")
        if "Refused" in new or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "Refused" in new
    assert run_json(analyst, ANALYST, SHA) == written["sha"]  # the files are as they were


def test_the_welcome_notebook_and_listings_still_open(analyst: Page, written: dict) -> None:  # noqa: F811
    notebook = fetch(analyst, f"{BASE}/api/contents/welcome.ipynb")
    assert notebook["status"] == 200, notebook["status"]
    assert '"welcome.ipynb"' in notebook["head"] and '"content": {' in notebook["head"]
    listing = fetch(analyst, f"{BASE}/api/contents?content=1")
    assert listing["status"] == 200
    meta = fetch(analyst, f"{BASE}/api/contents/x.csv?content=0")
    assert meta["status"] == 200 and '"content": null' in meta["head"]
    analyst.goto(analyst.url.split("/user/")[0] + f"{BASE}/lab/tree/welcome.ipynb")
    analyst.wait_for_selector("h1:has-text('欢迎使用数据实验室')", state="visible", timeout=60_000)


def test_saving_and_uploading_still_work(analyst: Page, written: dict) -> None:  # noqa: F811
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    saved = send(analyst, "PUT", f"{BASE}/api/contents/saved.ipynb", {"type": "notebook", "content": nb})
    assert saved in (200, 201)
    upload = {"type": "file", "format": "text", "content": "a,b\n1,2\n"}
    uploaded = send(analyst, "PUT", f"{BASE}/api/contents/in.csv", upload)
    assert uploaded in (200, 201)  # what comes in is not what the airlock guards
    assert fetch(analyst, f"{BASE}/api/contents/saved.ipynb")["status"] == 200
    assert fetch(analyst, f"{BASE}/api/contents/in.csv")["status"] == 403
