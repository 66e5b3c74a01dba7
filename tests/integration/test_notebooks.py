"""Analysts in their own sandboxed JupyterLab: login in a real browser, then probes in a kernel."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from lab.extracts import ledger as open_ledger
from lab.hub.auth import REFUSED
from lab.settings import Settings
from tests.integration.browser import browser, hub_api, login, run_in_kernel, run_json  # noqa: F401

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def open_lab(browser: Browser, lab_stack: Settings) -> Iterator[Callable[[str], Page]]:  # noqa: F811
    """Log a user in (fresh browser context) and wait until their JupyterLab is there."""
    contexts = []

    def open_for(username: str) -> Page:
        context = browser.new_context(locale="zh-CN")
        contexts.append(context)
        page = context.new_page()
        login(page, lab_stack, username)
        page.wait_for_url(f"**/user/{username}/lab**", timeout=90_000)
        return page

    yield open_for
    for context in contexts:
        context.close()


def test_analyst_lands_in_jupyterlab_and_works_on_granted_data(
    open_lab: Callable[[str], Page], lab_stack: Settings
) -> None:
    page = open_lab("li.na")
    page.wait_for_selector("h1:has-text('欢迎使用数据实验室')", state="visible", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-li.na.png"))
    with open_ledger(lab_stack) as book:
        granted = sorted(g.dataset for g in book.list_grants(organisation="qilu-energy", active=True))
    result = run_json(
        page,
        "li.na",
        """
import json, re
import lab.client as lab
names = sorted(lab.datasets()["dataset"].to_list())
people = lab.extract("population")
ids = people["resident_id"].cast(str)
released = lab.dp("population").group_by("district").count(epsilon=0.05).release()
print(json.dumps({"datasets": names, "rows": people.height, "columns": people.columns,
                  "raw_ids": int(ids.str.contains(r"^\\d{17}[\\dX]$").sum()),
                  "districts": released.frame.height, "left": released.budget["epsilon_remaining"]}))
""",
    )
    assert result["datasets"] == granted
    assert result["rows"] > 50_000 and "name" not in result["columns"] and result["raw_ids"] == 0
    assert result["districts"] == 8


def test_gateway_accepts_the_users_jupyterhub_token(
    open_lab: Callable[[str], Page], lab_stack: Settings
) -> None:
    page = open_lab("li.na")
    made = hub_api(page, "POST", "/users/li.na/tokens")
    assert made["status"] == 201, made["status"]  # the body holds the token: never print it
    api = f"{lab_stack.hub_url}/services/gateway/api"
    with_hub_token = httpx.get(
        f"{api}/datasets", headers={"Authorization": f"Bearer {made['body']['token']}"}
    )
    assert with_hub_token.status_code == 200
    with open_ledger(lab_stack) as book:
        granted = {g.dataset for g in book.list_grants(organisation="qilu-energy", active=True)}
    assert {d["dataset"] for d in with_hub_token.json()} == granted
    assert (
        httpx.get(f"{api}/datasets", headers={"Authorization": "Bearer 0123456789abcdef"}).status_code == 401
    )


def test_user_of_organisation_without_grant_sees_no_datasets(open_lab: Callable[[str], Page]) -> None:
    page = open_lab("sun.hao")
    result = run_json(
        page, "sun.hao", "import json, lab.client as lab; print(json.dumps(lab.datasets().height))"
    )
    assert result == 0


def test_user_in_no_approved_organisation_is_refused_with_the_reason(
    browser: Browser,  # noqa: F811
    lab_stack: Settings,
) -> None:
    context = browser.new_context()
    page = context.new_page()
    login(page, lab_stack, "audit.zhao")
    page.wait_for_url("**/hub/oauth_callback**")
    text = page.inner_text("body")
    context.close()
    assert "403" in text
    assert REFUSED.split(" / ")[0][:60] in text and "仅已获批机构的分析人员" in text


def _probe(settings: Settings) -> str:
    hidden = [
        settings.home,
        settings.home / "homes" / "zhang.wei",
        settings.secrets_dir,
        settings.home / "gateway" / "raw-cache",
        settings.repo / ".datalab",
        Path("/home/zhang.wei"),
    ]
    return f"""
import errno, glob, json, os, socket
out = {{"ports": {{}}, "paths": {{}}}}
for port in {sorted(vars(settings.ports).values())!r}:
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port)); out["ports"][port] = "open"
    except OSError as e:
        out["ports"][port] = errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
out["interfaces"] = [name for _, name in socket.if_nameindex()]
out["routes"] = open("/proc/net/route").read().strip().splitlines()[1:]
for path in {[str(p) for p in hidden]!r}:
    try:
        os.listdir(path); out["paths"][path] = "listed"
    except OSError as e:
        out["paths"][path] = errno.errorcode.get(e.errno, str(e))
leaks = []
for environ in glob.glob("/proc/[0-9]*/environ"):
    try:
        data = open(environ, "rb").read()
    except OSError:
        continue
    if any(k in data for k in (b"JUPYTERHUB_CRYPT_KEY", b"MINIO_ROOT", b"KC_BOOTSTRAP", b"CONFIGPROXY")):
        leaks.append(environ)
out["environ_leaks"] = leaks
out["processes"] = len(glob.glob("/proc/[0-9]*"))
out["uid"] = os.getuid()
from minio import Minio
from minio.credentials import WebIdentityProvider
token = open(os.environ["DATALAB_TOKEN_FILE"]).read()
endpoint = os.environ["DATALAB_S3_ENDPOINT"]
provider = WebIdentityProvider(jwt_provider_func=lambda: {{"access_token": token, "expires_in": "900"}},
                               sts_endpoint="http://" + endpoint, duration_seconds=900)
s3 = Minio(endpoint, credentials=provider, secure=False, region="us-east-1")
try:
    s3.get_object("raw", "population/population.parquet"); out["raw"] = "read"
except Exception as e:
    out["raw"] = getattr(e, "code", type(e).__name__)
print(json.dumps(out))
"""


def test_sandbox_reaches_nothing_but_its_relays(open_lab: Callable[[str], Page], lab_stack: Settings) -> None:
    page = open_lab("li.na")
    out = run_json(page, "li.na", _probe(lab_stack))
    assert set(out["ports"].values()) == {"ECONNREFUSED"}, out["ports"]
    assert out["interfaces"] == ["lo"] and out["routes"] == []
    assert set(out["paths"].values()) == {"ENOENT"}, out["paths"]
    assert out["environ_leaks"] == []
    assert out["processes"] < 50  # its own pid namespace: no host process is visible
    assert out["uid"] >= 20000
    assert out["raw"] == "AccessDenied"


FORK_BOMB = """
import json, os, time
children, failed = [], None
try:
    for _ in range(5000):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
except OSError as e:
    failed = e.errno
for pid in children:
    os.kill(pid, 9)
for pid in children:
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "errno": failed}))
"""


def test_fork_bomb_is_contained(open_lab: Callable[[str], Page]) -> None:
    page = open_lab("li.na")
    result = run_json(page, "li.na", FORK_BOMB)
    assert result["errno"] == 11 and result["forked"] < 512  # EAGAIN at the pids limit
    assert run_json(page, "li.na", "print(6 * 7)") == 42  # the server still works


def test_memory_limit_kills_only_that_server(open_lab: Callable[[str], Page]) -> None:
    victim = open_lab("zhang.wei")
    bystander = open_lab("chen.jing")
    assert run_json(bystander, "chen.jing", "print(1)") == 1
    run_in_kernel(victim, "zhang.wei", "hog = bytearray(3 * 1024**3)")  # over the 2 GiB limit
    deadline = time.monotonic() + 60
    state = hub_api(victim, "GET", "/users/zhang.wei")
    while time.monotonic() < deadline and state["body"].get("server"):
        time.sleep(1)
        state = hub_api(victim, "GET", "/users/zhang.wei")
    assert state["status"] == 200 and state["body"]["server"] is None, json.dumps(state)  # the hub reports it
    assert run_json(bystander, "chen.jing", "print(2 + 2)") == 4


TOKEN_EXPIRY = """
import json, os, jwt
token = open(os.environ["DATALAB_TOKEN_FILE"]).read()
print(json.dumps(jwt.decode(token, options={"verify_signature": False})["exp"]))
"""


def test_access_token_in_the_notebook_stays_fresh(open_lab: Callable[[str], Page]) -> None:
    page = open_lab("li.na")
    first = run_json(page, "li.na", TOKEN_EXPIRY)
    latest = first
    deadline = time.monotonic() + 180  # tokens live 300 s; the spawner renews them with 240 s left
    while latest == first and time.monotonic() < deadline:
        time.sleep(10)
        latest = run_json(page, "li.na", TOKEN_EXPIRY)
    assert latest > first
    assert (
        run_json(page, "li.na", "import json, lab.client as lab; print(json.dumps(lab.datasets().height))")
        > 0
    )
