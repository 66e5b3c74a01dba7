"""A fourth organisation, added and suspended through ``datalab org`` on the running lab.

The operator adds it (Keycloak group, MinIO policies, key), creates an analyst and puts
them in it; the analyst logs in, holds a grant and reads its extract prefix with year-long
STS credentials, and has a notebook server running. Then the operator suspends the
organisation: the gateway and S3 access end within 60 s, the notebook server is stopped, the
grant is revoked, and every record is kept.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from minio.error import S3Error
from playwright.sync_api import Browser

from lab import cli, iam, storage, vault
from lab.hub.servers import TOKEN_SECRET
from lab.ledger import Ledger
from lab.registry.organisations import closing_registry
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.browser import browser, login  # noqa: F401  (the Chromium fixture)
from tests.integration.org_support import create_analyst, credit_code
from tests.security.identity_support import api, bearer
from tests.security.test_identity_storage import YEAR, s3, sts

pytestmark = pytest.mark.integration

LIMIT = 60.0  # seconds: suspension ends every credential within this (THREAT-MODEL)


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Iterator[Settings]:
    kct.ensure(lab_stack)
    yield lab_stack


@pytest.fixture(scope="module")
def org(lab: Settings) -> dict[str, str]:
    """A new organisation and a new analyst, both unique to this run (records are never deleted)."""
    suffix = secrets.token_hex(3)
    return {"id": f"test-org-{suffix}", "user": f"an.{suffix}", "code": credit_code()}


def _add(lab: Settings, org: dict[str, str], actor: str) -> int:
    """``datalab org add`` with ``--as actor``, by whoever is logged in."""
    return cli.main(
        [
            "org", "add", org["id"], "--name-zh", "测试水务数据有限公司", "--name-en", "Test Water Data Co.",
            "--credit-code", org["code"], "--kind", "enterprise", "--contact", "Data office / 数据办",
            "--as", actor,
        ]
    )  # fmt: skip


@pytest.mark.security
def test_analysts_and_strangers_cannot_add_an_organisation(lab: Settings, org: dict[str, str]) -> None:
    kct.cli_login(lab, "op.wang")  # an operator's login, someone else's name
    for actor in ("mallory", "zhang.wei", "audit.zhao"):
        assert _add(lab, {**org, "id": f"{org['id']}-x"}, actor) == 1
    for actor in ("zhang.wei", "audit.zhao"):  # logged in as themselves: not operators
        kct.cli_login(lab, actor)
        assert _add(lab, {**org, "id": f"{org['id']}-x"}, actor) == 1
    with closing_registry(lab) as registry:
        assert f"{org['id']}-x" not in registry.known_ids()


def _server(lab: Settings, user: str) -> dict[str, object]:
    """The user's default server as the hub reports it (the gateway's steward token)."""
    answer = httpx.get(
        f"{lab.hub_api_url}/users/{user}",
        headers={"Authorization": f"token {vault.secret(lab, TOKEN_SECRET)}"},
    )
    assert answer.status_code == 200, answer.status_code
    return dict(answer.json().get("servers", {}).get("", {}))


def test_a_fourth_organisation_logs_in_and_loses_access_on_suspension(
    lab: Settings,
    org: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    browser: Browser,  # noqa: F811
) -> None:
    started = time.monotonic()
    kct.cli_login(lab, "op.wang")
    assert _add(lab, org, "op.wang") == 0
    kc = iam.admin(lab)
    group = kc.get_group_by_path(f"/{org['id']}")
    assert group["attributes"]["status"] == ["active"]
    assert set(group["attributes"]["minio_policy"]) == {f"extracts-read-{org['id']}", f"members-{org['id']}"}
    assert (lab.secrets_dir / f"org-key-{org['id']}").is_file()
    create_analyst(lab, org["user"])
    assert cli.main(["org", "add-user", org["id"], org["user"], "--as", "op.wang"]) == 0
    with capsys.disabled():
        print(f"\norg added and analyst joined in {time.monotonic() - started:.1f} s")

    # The analyst logs in: their token names the new organisation and its policies.
    token = kct.access_token(lab, org["user"])
    claims = kct.claims(token)
    assert claims["org"] == org["id"] and f"members-{org['id']}" in claims["policy"]

    # An approved application gives them a dataset at the gateway and its extract prefix in MinIO.
    with Ledger(lab.ledger_url, anchor_path=lab.ledger_anchor) as book:
        app = book.apply(
            organisation=org["id"], dataset="population", purpose="integration test of organisations",
            modes=["dp"], epsilon=0.5, delta=1e-7, term_days=30, applicant=org["user"],
        )  # fmt: skip
    assert cli.main(["application", "approve", str(app.id), "--as", "op.wang"]) == 0
    name = f"{org['id']}/population/probe/probe.json"  # not a manifest: the catalogue ignores it
    storage.put_json(storage.root_client(lab), storage.EXTRACTS_BUCKET, name, {"test": True})
    client = s3(lab, sts(lab, token, YEAR))

    def s3_get() -> bool:
        try:
            client.stat_object(storage.EXTRACTS_BUCKET, name)
            return True
        except S3Error:
            return False

    def gateway() -> bool:
        response = httpx.get(f"{api(lab)}/datasets", headers=bearer(token))
        return response.status_code == 200 and bool(response.json())

    deadline = time.monotonic() + 60  # the gateway's registry and directory caches (≤ 30 s)
    while not (s3_get() and gateway()) and time.monotonic() < deadline:
        time.sleep(1)
    assert s3_get() and gateway(), {"s3": s3_get(), "gateway": gateway()}

    # The analyst's notebook server runs (spawned by logging in to the hub).
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        login(page, lab, org["user"])
        page.goto(f"{lab.hub_url}/user/{org['user']}/lab")
        page.wait_for_url(f"**/user/{org['user']}/lab**", timeout=120_000)
    finally:
        context.close()
    assert _server(lab, org["user"]).get("ready") is True

    # Suspend: access ends within 60 s.
    capsys.readouterr()
    suspended_at = time.monotonic()
    assert cli.main(["org", "suspend", org["id"], "--as", "op.wang", "--reason", "integration test"]) == 0
    assert "notebook servers stopped: 1" in capsys.readouterr().out
    ended: dict[str, float] = {}
    while time.monotonic() - suspended_at < 2 * LIMIT and len(ended) < 2:
        for probe, works in (("s3", s3_get), ("gateway", gateway)):
            if probe not in ended and not works():
                ended[probe] = time.monotonic() - suspended_at
        time.sleep(1)
    with capsys.disabled():
        print(f"\nsuspension: access ended after {ended}")
    assert set(ended) == {"s3", "gateway"} and max(ended.values()) <= LIMIT, ended
    while _server(lab, org["user"]) and time.monotonic() - suspended_at < LIMIT:
        time.sleep(1)
    assert _server(lab, org["user"]) == {}, "the suspended analyst's notebook server still runs"
    # A fresh login gets no storage policy, and nobody can join the suspended organisation.
    assert kct.claims(kct.access_token(lab, org["user"])).get("policy") in (None, [])
    assert cli.main(["org", "add-user", org["id"], "zhang.wei", "--as", "op.wang"]) == 1

    # Every record is kept: the organisation, its member, its revoked grant, the audit chain.
    assert cli.main(["org", "show", org["id"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["status"] == "suspended" and [m["username"] for m in shown["members"]] == [org["user"]]
    (grant,) = shown["grants"]
    assert grant["status"] == "revoked" and grant["provenance"]["application"] == app.id
    with Ledger(lab.ledger_url, anchor_path=lab.ledger_anchor) as book:
        kinds = [r.kind for r in book.records(organisation=org["id"])]
        assert book.verify().ok
    for kind in ("org-add", "org-member-add", "application", "grant", "org-suspend", "revoke"):
        assert kind in kinds, kinds
