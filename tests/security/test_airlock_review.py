"""Output checking against the people who would cheat it (threat model: "one way out").

A requester who also holds the operator role approves their own export; one operator gives
both approvals; an analyst calls the review API and posts the console's decision form; an
operator overrides a held export without a reason, or alone; files and comments carry
script (in the name, a CSV cell, a comment); a page of HTML is named ``plot.png``; a file
name climbs out of its folder. Each attempt is refused with a message in 中文 and English,
and nothing is released: the organisation's download answers 403 until two different
operators other than the requester have seen the content and approved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lab import iam
from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.settings import Settings
from tests.integration import airlock_support as al
from tests.integration import keycloak_test_client as kct
from tests.integration.console_client import console_base, console_login, csrf
from tests.integration.org_support import create_analyst
from tests.security.identity_support import api

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Iterator[Settings]:
    kct.ensure(lab_stack)
    yield lab_stack


@pytest.fixture(scope="module")
def org(lab: Settings) -> dict[str, str]:
    return al.new_org(lab, "airlock-sec")


@pytest.fixture(scope="module")
def book(lab: Settings) -> Iterator[Ledger]:
    with open_ledger(lab) as ledger:
        yield ledger


def bilingual(response: httpx.Response, reason: str | None = None) -> str:
    error = response.json()["error"]
    if reason is not None:
        assert error["reason"] == reason, error
    message = str(error["message"])
    assert re.search(r"[\u4e00-\u9fff]", message) and re.search(r"[A-Za-z]{4}", message), message
    return message


def not_released(lab: Settings, org: dict[str, str], export_id: int) -> None:
    got = httpx.get(
        f"{api(lab)}/exports/{export_id}/download", headers=al.token(lab, org["user"]), timeout=60
    )
    assert got.status_code == 403, got.status_code
    bilingual(got)


def test_requester_with_the_operator_role_cannot_approve_their_own_export(
    lab: Settings, org: dict[str, str]
) -> None:
    dual = f"dual.{org['id'][-6:]}"
    create_analyst(lab, dual)
    kc = iam.admin(lab)
    kc.assign_realm_roles(kc.get_user_id(dual), [kc.get_realm_role("operator")])
    from lab import cli

    assert cli.main(kct.operator_argv(lab, ["org", "add-user", org["id"], dual, "--as", "op.wang"])) == 0
    export = al.exported(lab, dual, "mine.csv", al.table_csv())
    assert export["state"] == "pending"
    assert al.view(lab, dual, export["id"]).status_code == 200
    refused = al.decide(lab, dual, export["id"], "approve")
    assert refused.status_code == 403
    assert "不能审核自己" in bilingual(refused, "self-approval")
    detail = al.view(lab, "op.wang", export["id"]).json()
    assert detail["export"]["state"] == "pending" and detail["approvals"] == []


def test_one_operator_cannot_give_both_approvals(lab: Settings, org: dict[str, str]) -> None:
    export = al.exported(lab, org["user"], "twice.csv", al.table_csv())
    blind = al.decide(lab, "op.wang", export["id"], "approve")
    assert blind.status_code == 400 and "请先查看" in bilingual(blind, "not-viewed")
    assert al.view(lab, "op.wang", export["id"]).status_code == 200
    first = al.decide(lab, "op.wang", export["id"], "approve")
    assert first.status_code == 200 and first.json()["state"] == "pending"
    again = al.decide(lab, "op.wang", export["id"], "approve", reason="I am sure")
    assert again.status_code == 400
    assert "另一位运营人员" in bilingual(again, "already-reviewed")
    not_released(lab, org, export["id"])


def test_analysts_cannot_review(lab: Settings, org: dict[str, str]) -> None:
    export = al.exported(lab, org["user"], "analyst.csv", al.table_csv())
    for user in (org["user"], org["colleague"]):
        for call in (
            lambda u: al.decide(lab, u, export["id"], "approve"),
            lambda u: al.view(lab, u, export["id"]),
            lambda u: httpx.get(f"{api(lab)}/operator/exports/{export['id']}/file", headers=al.token(lab, u)),
        ):
            refused = call(user)
            assert refused.status_code == 403, (user, refused.status_code)
            assert "operator" in bilingual(refused)
    # the console's decision form, posted by the colleague with a genuine session and CSRF token
    client = console_login(lab, org["colleague"])
    page = client.get(f"{console_base(lab)}/analyst/exports/{export['id']}")
    assert page.status_code == 200 and "analyst.csv" in page.text
    posted = client.post(
        f"{console_base(lab)}/operator/exports/{export['id']}/decide",
        data={"csrf": csrf(page.text), "decision": "approve"},
    )
    assert posted.status_code == 403 and "需要角色" in posted.text
    # … nor withdraw or resubmit a colleague's request
    withdraw = httpx.post(
        f"{api(lab)}/exports/{export['id']}/withdraw", headers=al.token(lab, org["colleague"])
    )
    assert withdraw.status_code == 403 and "申请人本人" in bilingual(withdraw, "not-requester")
    not_released(lab, org, export["id"])


def test_held_export_override_needs_two_approvals_each_with_a_reason(
    lab: Settings, org: dict[str, str]
) -> None:
    export = al.exported(lab, org["user"], "small.csv", al.table_csv(small=True))
    assert export["state"] == "held"
    for operator in ("op.wang", "op.li"):
        assert al.view(lab, operator, export["id"]).status_code == 200
    plain = al.decide(lab, "op.wang", export["id"], "approve", reason="looks fine")
    assert plain.status_code == 400 and "越过检查" in bilingual(plain, "held")
    bare = al.decide(lab, "op.wang", export["id"], "approve", override=True)
    assert bare.status_code == 400
    bilingual(bare, "held")
    one = al.decide(lab, "op.wang", export["id"], "approve", override=True, reason="published totals")
    assert one.status_code == 200 and one.json()["state"] == "held"
    not_released(lab, org, export["id"])
    second = al.decide(lab, "op.li", export["id"], "approve", override=True, reason="agreed: public figures")
    assert second.status_code == 200 and second.json()["state"] == "approved"
    got = httpx.get(f"{api(lab)}/exports/{export['id']}/download", headers=al.token(lab, org["user"]))
    assert got.status_code == 200 and got.content == al.table_csv(small=True)


def test_script_in_name_cell_and_comment_is_shown_as_text(lab: Settings, org: dict[str, str]) -> None:
    evil = b'district,count\n"<script>alert(1)</script>",120\n"<img src=x onerror=alert(2)>",130\n'
    export = al.exported(lab, org["user"], "<svg onload=alert(3)>.csv", evil)
    assert "<" not in export["name"] and ">" not in export["name"]
    comment = httpx.post(
        f"{api(lab)}/operator/exports/{export['id']}/comments",
        headers=al.token(lab, "op.wang"),
        json={"comment": "<script>alert(4)</script> check row 2"},
    )
    assert comment.status_code == 200, comment.text
    client = console_login(lab, "op.li")
    page = client.get(f"{console_base(lab)}/operator/exports/{export['id']}")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(2)&gt;" in page.text
    assert "&lt;script&gt;alert(4)&lt;/script&gt; check row 2" in page.text
    assert "<script" not in page.text and "<img src=x" not in page.text and "<svg" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # and none may run anyway


def test_a_page_named_as_an_image_is_not_served_as_one(lab: Settings, org: dict[str, str]) -> None:
    html = b"<html><body><script>fetch('/services/gateway/api/operator/exports')</script></body></html>"
    export = al.exported(lab, org["user"], "plot.png", html)
    detail = al.view(lab, "op.wang", export["id"]).json()
    assert detail["preview"]["kind"] == "text"
    assert "not image/png" in detail["preview"]["notes"][0]["en"]
    client = console_login(lab, "op.wang")
    page = client.get(f"{console_base(lab)}/operator/exports/{export['id']}")
    assert 'id="content-image"' not in page.text and "不是 image/png" in page.text
    served = client.get(f"{console_base(lab)}/operator/exports/{export['id']}/image")
    assert served.status_code == 400 and "image/png" not in served.headers.get("content-type", "")
    assert re.search(r"[\u4e00-\u9fff]", served.text) and "not an image" in served.text
    # a real PNG is served as exactly that, inert
    real = al.exported(lab, org["user"], "bar.png", al.png())
    shown = client.get(f"{console_base(lab)}/operator/exports/{real['id']}/image")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert shown.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in shown.headers["content-security-policy"]
    not_released(lab, org, export["id"])


def test_file_names_cannot_climb_out(lab: Settings, org: dict[str, str], book: Ledger) -> None:
    export = al.exported(lab, org["user"], "../../exports/qilu-energy/../secret.csv", al.table_csv())
    assert "/" not in export["name"] and ".." not in export["name"]
    stored = book.get_export(export["id"])
    assert stored.object_key.startswith(f"{org['id']}/") and ".." not in stored.object_key
    for bad in ("..%2F1", "1%2F..%2F2", "-1", "99999999999"):
        answer = httpx.get(f"{api(lab)}/operator/exports/{bad}", headers=al.token(lab, "op.wang"), timeout=60)
        assert 400 <= answer.status_code < 500, (bad, answer.status_code)
    not_released(lab, org, export["id"])


def test_every_decision_and_comment_is_in_the_verified_ledger(
    lab: Settings, org: dict[str, str], book: Ledger
) -> None:
    export = al.exported(lab, org["user"], "ledger.csv", al.table_csv())
    al.view(lab, "op.wang", export["id"])
    al.decide(lab, "op.wang", export["id"], "changes", comment="round the counts to tens / 请取整到十位")
    records: list[dict[str, Any]] = [
        {**r.details, "record": r.kind}
        for r in book.records(organisation=org["id"])
        if r.details.get("export") == export["id"]
    ]
    kinds = [r["record"] for r in records]
    assert kinds == ["export", "export-view", "export-review"], kinds
    assert records[-1]["decision"] == "changes" and "取整" in records[-1]["reason"]
    assert book.verify().ok
