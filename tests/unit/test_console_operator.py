"""The operator's sections in-process: lists with filters and pages, the confirmation of
destructive actions, messages that say what happened, forms that keep what was typed.

The console runs over a stand-in for :class:`~lab.services.governance.Governance` (a few
applications and grants in memory) and one operator session with a real signer.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lab.errors import ConfigError
from lab.gateway import console as pages
from lab.gateway import console_operator
from lab.gateway.auth import Caller
from lab.gateway.sessions import Session, Signer

pytestmark = pytest.mark.unit
CSRF = "csrf-token-1"
TOKEN = re.compile(r'name="confirm" value="([^"]+)"')


def _grant(n: int, status: str, org: str = "org-a") -> dict[str, Any]:
    return {
        "id": n,
        "organisation": org,
        "dataset": "population",
        "purpose": f"study {n}",
        "modes": ["dp"],
        "status": status,
        "expires_at": "2027-01-01T00:00:00+00:00",
        "term_days": 90.0,
        "reminder": None,
        "revoke_reason": None,
        "approved_by": "op.li",
        "budget": {"epsilon": 1.0, "delta": 0.0, "epsilon_spent": 0.25, "epsilon_remaining": 0.75},
    }


class Gov:
    policies = {"population": object(), "utility": object()}

    def __init__(self) -> None:
        self.grant_rows = [_grant(n, "active" if n % 8 == 0 else "revoked") for n in range(1, 32)]
        self.grant_rows[-1]["organisation"] = "org-b"
        self.revoked: list[tuple[str, dict[str, Any]]] = []
        self.rejected: list[str] = []
        self.approved: list[dict[str, Any]] = []

    def applications(self, who: Caller, state: Any = None, *, outlook: bool = True) -> list[dict[str, Any]]:
        return [
            {
                "id": n,
                "organisation": "org-a" if n % 2 else "org-b",
                "dataset": "population",
                "purpose": f"purpose {n}",
                "modes": ["dp", "masked"],
                "epsilon": 2.0,
                "delta": 0.0,
                "term_days": 180.0,
                "applicant": "ana",
                "created_at": "2026-12-01T00:00:00+00:00",
                "state": "pending" if n > 40 else "approved",
                "grant_id": None,
                "decided_by": None,
                "decision_reason": None,
            }
            for n in range(60, 0, -1)
        ]

    def outlook(self, app: dict[str, Any]) -> dict[str, Any]:
        return app

    def exports(self, who: Caller, state: Any = None) -> list[dict[str, Any]]:
        return []

    def application_of(self, who: Caller, item: str) -> dict[str, Any]:
        return next(a for a in self.applications(who) if str(a["id"]) == item)

    def approve(self, who: Caller, item: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("epsilon") == "99":
            raise ConfigError(
                "epsilon: 99 is more than the dataset allows / ε 超过上限", reason="invalid-value"
            )
        self.approved.append(body)
        grant = {**_grant(77, "active"), "modes": body.get("modes") or ["dp"]}
        return {"application": {"id": int(item)}, "grant": grant}

    def reject(self, who: Caller, item: str, body: dict[str, Any]) -> dict[str, Any]:
        self.rejected.append(item)
        return self.application_of(who, item)

    def grants(self, who: Caller) -> list[dict[str, Any]]:
        return [dict(g) for g in self.grant_rows]

    def grant(self, who: Caller, item: str) -> dict[str, Any]:
        return next(dict(g) for g in self.grant_rows if str(g["id"]) == item)

    def revoke(self, who: Caller, item: str, body: dict[str, Any]) -> dict[str, Any]:
        self.revoked.append((item, body))
        return {**self.grant(who, item), "status": "revoked"}


def serve(csrf: str = CSRF) -> tuple[TestClient, Gov]:
    gov = Gov()
    session = Session(Caller("op.wang", None, frozenset({"operator"})), 2**40, csrf)
    sessions = SimpleNamespace(read=lambda cookie: session, signer=Signer(b"k" * 32), cookie_path="/")
    console = pages.Console(gov, sessions, "/console")  # type: ignore[arg-type]
    app = FastAPI()
    pages.install(app, console)
    app.include_router(pages.router(console))
    app.include_router(console_operator.router(console))
    return TestClient(app, raise_server_exceptions=False), gov


@pytest.fixture
def client() -> tuple[TestClient, Gov]:
    return serve()


def test_ended_grants_are_filtered_out_by_default_but_one_click_away(client: tuple[TestClient, Gov]) -> None:
    app, _ = client
    page = app.get("/console/operator/grants").text
    shown = re.findall(r'<tr id="grant-(\d+)" data-status="(\w+)"', page)
    assert shown and {s for _, s in shown} == {"active"}
    assert "有效 (3)" in page and "已结束 (28)" in page and "全部 (31)" in page
    ended = app.get("/console/operator/grants", params={"state": "ended"}).text
    assert len(re.findall(r'data-status="revoked"', ended)) == 25  # one page of 25 …
    assert "第 1 / 2 页 · 共 28 条（显示第 1–25 条）" in ended  # … of two
    second = app.get("/console/operator/grants", params={"state": "ended", "page": "2"}).text
    assert "第 2 / 2 页" in second and len(re.findall(r'data-status="revoked"', second)) == 3
    only = app.get("/console/operator/grants", params={"state": "all", "organisation": "org-b"}).text
    assert re.findall(r'<tr id="grant-(\d+)"', only) == ["31"]
    by_id = app.get("/console/operator/grants", params={"state": "all", "q": "#3"}).text
    assert re.findall(r'<tr id="grant-(\d+)"', by_id) == ["3"]  # "#3" is grant 3, not 13 or 30


def test_applications_are_listed_pending_first_in_pages(client: tuple[TestClient, Gov]) -> None:
    app, _ = client
    page = app.get("/console/operator", params={"size": "10"}).text
    ids = re.findall(r'<tr id="application-(\d+)" data-state="pending"', page)
    assert ids == [str(n) for n in range(60, 50, -1)]  # newest first, a stable order
    assert "第 1 / 2 页 · 共 20 条" in page and "待审 (20)" in page and "已批准 (40)" in page
    assert 'href="/console/operator/applications/60"' in page


@pytest.mark.parametrize(
    "params",
    [
        {"page": "-1"},
        {"page": str(10**30)},
        {"size": str(10**9)},
        {"size": "0"},
        {"state": "' OR 1=1 --"},
        {"organisation": "org\u202e"},
        {"dataset": "人口; DROP TABLE grants"},
        {"q": "x" * 5000},
        {"q": "a\x00b"},
    ],
)
@pytest.mark.parametrize("path", ["/console/operator", "/console/operator/grants"])
def test_bad_list_parameters_are_400_pages(
    client: tuple[TestClient, Gov], path: str, params: dict[str, str]
) -> None:
    app, _ = client
    answer = app.get(path, params=params)
    assert answer.status_code == 400, answer.text[:300]
    assert 'id="search-error"' in answer.text and list(params)[0] in answer.text


def test_revoking_asks_for_confirmation_then_says_what_was_revoked(client: tuple[TestClient, Gov]) -> None:
    app, gov = client
    first = app.post("/console/operator/grants/8/revoke", data={"csrf": CSRF, "reason": "project ended"})
    assert first.status_code == 200 and gov.revoked == []  # nothing happened yet
    page = first.text
    assert "确认撤销此授权？" in page and "org-a" in page and "population" in page and "0.25 / 1" in page
    assert 'value="project ended"' in page
    token = re.search(r'name="confirm" value="([^"]+)"', page)
    assert token is not None
    done = app.post(
        "/console/operator/grants/8/revoke",
        data={"csrf": CSRF, "reason": "project ended", "confirm": token[1]},
    )
    assert done.status_code == 200 and [i for i, _ in gov.revoked] == ["8"]
    flash = re.search(r'<div class="flash" id="flash">(.*?)</div>', done.text)
    assert flash is not None and "已撤销授权 #8（机构 org-a，数据集 population）" in flash[1]
    assert "Grant #8 (organisation org-a, dataset population) revoked" in flash[1]
    assert "已完成" not in done.text


@pytest.mark.security
def test_a_forged_confirmation_is_never_taken_for_one(client: tuple[TestClient, Gov]) -> None:
    app, gov = client
    page = app.post("/console/operator/grants/8/revoke", data={"csrf": CSRF, "reason": "r"}).text
    token = re.search(r'name="confirm" value="([^"]+)"', page)[1]  # type: ignore[index]
    other_session, _ = serve("another-session")
    other = other_session.post(
        "/console/operator/grants/8/revoke", data={"csrf": "another-session", "reason": "r"}
    )
    other_token = re.search(r'name="confirm" value="([^"]+)"', other.text)[1]  # type: ignore[index]
    forged = [
        {"confirm": "yes"},
        {"confirm": "1"},
        {"confirm": token[:-2] + "AA"},  # tampered
        {"confirm": other_token},  # another session's
    ]
    for extra in forged:
        answer = app.post("/console/operator/grants/8/revoke", data={"csrf": CSRF, "reason": "r", **extra})
        assert answer.status_code == 200 and 'id="confirm-box"' in answer.text
    moved = app.post(
        "/console/operator/grants/16/revoke", data={"csrf": CSRF, "reason": "r", "confirm": token}
    )
    assert 'id="confirm-box"' in moved.text  # grant 8's confirmation does not revoke grant 16
    no_csrf = app.post("/console/operator/grants/8/revoke", data={"reason": "r", "confirm": token})
    assert no_csrf.status_code == 403
    rejected = app.post(
        "/console/operator/applications/41/reject", data={"csrf": CSRF, "reason": "r", "confirm": token}
    )
    assert 'id="confirm-box"' in rejected.text  # a revoke's confirmation does not reject
    assert gov.revoked == [] and gov.rejected == []


def test_rejecting_asks_for_confirmation_and_comes_back_to_the_detail(client: tuple[TestClient, Gov]) -> None:
    app, gov = client
    page = app.post(
        "/console/operator/applications/41/reject", data={"csrf": CSRF, "reason": "no", "back": "detail"}
    ).text
    assert "确认驳回此申请？" in page and gov.rejected == []
    token = re.search(r'name="confirm" value="([^"]+)"', page)[1]  # type: ignore[index]
    assert 'name="back" value="detail"' in page
    done = app.post(
        "/console/operator/applications/41/reject",
        data={"csrf": CSRF, "reason": "no", "confirm": token, "back": "detail"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/operator/applications/41"
    assert gov.rejected == ["41"]


def test_unticking_every_mode_is_refused_and_the_form_keeps_what_was_typed(
    client: tuple[TestClient, Gov],
) -> None:
    app, gov = client
    form = {
        "csrf": CSRF,
        "item": "60",
        "back": "list",
        "modes_field": "1",
        "epsilon": "0.5",
        "note": "小一点",
    }
    answer = app.post("/console/operator/applications/60/approve", data=form)
    assert gov.approved == []
    assert "请至少勾选一种发布方式" in answer.text and "Tick at least one release mode" in answer.text
    row = re.search(r'<tr id="application-60".*?</form>', answer.text, flags=re.S)[0]  # type: ignore[index]
    assert 'name="epsilon" value="0.5"' in row and 'value="小一点"' in row
    assert 'value="dp" checked' not in row and 'value="masked" checked' not in row  # as left
    refused = app.post(
        "/console/operator/applications/60/approve", data={**form, "modes": "dp", "epsilon": "99"}
    )
    assert "ε 超过上限" in refused.text and gov.approved == []
    row = re.search(r'<tr id="application-60".*?</form>', refused.text, flags=re.S)[0]  # type: ignore[index]
    assert 'name="epsilon" value="99"' in row and 'value="dp" checked' in row
    other = re.search(r'<tr id="application-59".*?</form>', refused.text, flags=re.S)[0]  # type: ignore[index]
    assert 'name="epsilon" value="2.0"' in other  # another application's form is not touched
    done = app.post("/console/operator/applications/60/approve", data={**form, "modes": "dp"})
    assert "已批准申请 #60，生成授权 #77（机构 org-a，数据集 population，ε 1，90 天，dp）" in done.text
    assert gov.approved and "modes_field" not in gov.approved[0]


class AnalystGov:
    ENTRY = {
        "name": "population",
        "title": {"zh": "人口", "en": "Population"},
        "description": "",
        "owner": "bureau",
        "update_frequency_label": None,
        "rows": 10,
        "version": 1,
        "updated_at": None,
        "versions": [],
        "release_modes": ["dp", "masked"],
        "k": 5,
        "quasi_identifiers": [],
        "privacy_unit": None,
        "negative_listed": [],
        "held": False,
        "columns": [],
    }

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    def catalogue(self, who: Caller) -> list[dict[str, Any]]:
        return [dict(self.ENTRY), {**self.ENTRY, "name": "utility", "title": {"zh": "水电", "en": "Utility"}}]

    def search_catalogue(self, entries: list[dict[str, Any]], q: Any) -> list[dict[str, Any]]:
        return entries

    def grants(self, who: Caller) -> list[dict[str, Any]]:
        return []

    def applications(self, who: Caller) -> list[dict[str, Any]]:
        return []

    def exports(self, who: Caller, state: Any = None) -> list[dict[str, Any]]:
        return []

    def apply(self, who: Caller, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("epsilon") == "50":
            raise ConfigError("epsilon: at most 10 / ε 最多为 10", reason="invalid-value")
        self.applied.append(body)
        return {"id": 5}


def test_the_apply_form_refuses_no_mode_and_keeps_what_was_typed() -> None:
    gov = AnalystGov()
    session = Session(Caller("ana", "org-a", frozenset({"analyst"})), 2**40, CSRF)
    sessions = SimpleNamespace(read=lambda cookie: session, signer=Signer(b"k" * 32), cookie_path="/")
    console = pages.Console(gov, sessions, "/console")  # type: ignore[arg-type]
    app = FastAPI()
    pages.install(app, console)
    app.include_router(pages.router(console))
    client = TestClient(app, raise_server_exceptions=False)
    typed = {"csrf": CSRF, "modes_field": "1", "dataset": "utility", "purpose": "水费研究", "epsilon": "0.7"}
    page = client.post("/console/analyst/apply", data=typed).text
    assert gov.applied == [] and "请至少勾选一种发布方式" in page  # not silently "dp"
    form = re.search(r'<form id="apply".*?</form>', page, flags=re.S)[0]  # type: ignore[index]
    assert '<option value="utility" selected>' in form and 'value="水费研究"' in form
    assert 'name="epsilon" value="0.7"' in form and "checked" not in form
    page = client.post("/console/analyst/apply", data={**typed, "modes": "masked", "epsilon": "50"}).text
    assert "ε 最多为 10" in page and gov.applied == []
    form = re.search(r'<form id="apply".*?</form>', page, flags=re.S)[0]  # type: ignore[index]
    assert 'value="masked" checked' in form and 'value="dp">' in form and 'name="epsilon" value="50"' in form
    page = client.post("/console/analyst/apply", data={**typed, "modes": "masked"}).text
    assert gov.applied and gov.applied[0]["modes"] == ["masked"] and "modes_field" not in gov.applied[0]
    assert "申请 5 已提交" in page
    fresh = re.search(r'<form id="apply".*?</form>', page, flags=re.S)[0]  # type: ignore[index]
    assert 'value="dp" checked' in fresh and 'value="水费研究"' not in fresh  # after success: a fresh form


def _org(org_id: str, status: str = "active") -> Any:
    from datetime import UTC, datetime

    from lab.registry.organisations import Organisation

    return Organisation(
        org_id, f"{org_id} 公司", f"{org_id} Co.", "91370000MA3C5X0000", "enterprise", "office",
        status=status, created_by="op.li", created_at=datetime(2026, 12, 1, tzinfo=UTC),
        provenance={"audit_seq": 3},
    )  # fmt: skip


class Onboarding:
    def __init__(self) -> None:
        self.orgs = [_org(f"org-{n:02d}") for n in range(30)] + [_org("gone-co", "suspended")]
        self.suspended: list[tuple[str, str]] = []
        self.registry = SimpleNamespace(list_organisations=lambda: list(self.orgs))

    def suspend(self, actor: str, org_id: str, reason: str) -> Any:
        from lab.services.onboarding import Outcome

        self.suspended.append((org_id, reason))
        return Outcome(_org(org_id, "suspended"), revoked=[SimpleNamespace(id=1), SimpleNamespace(id=2)])  # type: ignore[list-item]


def test_organisations_are_paged_and_suspending_asks_first() -> None:
    from lab.gateway import console_orgs

    gov = SimpleNamespace(ledger=SimpleNamespace(list_grants=lambda **kw: [1, 2]))
    session = Session(Caller("op.wang", None, frozenset({"operator"})), 2**40, CSRF)
    sessions = SimpleNamespace(read=lambda cookie: session, signer=Signer(b"k" * 32), cookie_path="/")
    console = pages.Console(gov, sessions, "/console")  # type: ignore[arg-type]
    onboarding = Onboarding()
    app = FastAPI()
    pages.install(app, console)
    app.include_router(console_orgs.router(console, onboarding))  # type: ignore[arg-type]
    client = TestClient(app, raise_server_exceptions=False)
    page = client.get("/console/operator/organisations").text
    assert "第 1 / 2 页 · 共 30 条" in page and 'id="org-gone-co"' not in page  # active ones by default
    assert "已暂停 (1)" in page
    assert (
        'id="org-gone-co"'
        in client.get("/console/operator/organisations", params={"state": "suspended"}).text
    )
    assert client.get("/console/operator/organisations", params={"page": "-1"}).status_code == 400
    url = "/console/operator/organisations/org-03/suspend"
    asked = client.post(url, data={"csrf": CSRF, "reason": "licence withdrawn"})
    assert "确认暂停此机构？" in asked.text and "org-03 公司" in asked.text and onboarding.suspended == []
    forged = client.post(url, data={"csrf": CSRF, "reason": "licence withdrawn", "confirm": "yes"})
    assert 'id="confirm-box"' in forged.text and onboarding.suspended == []
    token = TOKEN.search(asked.text)[1]  # type: ignore[index]
    done = client.post(url, data={"csrf": CSRF, "reason": "licence withdrawn", "confirm": token})
    assert onboarding.suspended == [("org-03", "licence withdrawn")]
    assert "已暂停机构 org-03（org-03 公司），撤销其 2 项授权" in done.text
    unknown = client.post("/console/operator/organisations/nope/suspend", data={"csrf": CSRF, "reason": "x"})
    assert "没有该机构" in unknown.text and onboarding.suspended == [("org-03", "licence withdrawn")]


@pytest.mark.parametrize("reason", ["", "   ", "a\x00b", "x" * 3000])
def test_a_bad_reason_is_refused_before_any_confirmation(client: tuple[TestClient, Gov], reason: str) -> None:
    app, gov = client
    answer = app.post("/console/operator/grants/8/revoke", data={"csrf": CSRF, "reason": reason})
    assert 'id="confirm-box"' not in answer.text
    error = re.search(r'id="flash-error">(.*?)</div>', answer.text, flags=re.S)
    assert error is not None and ("reason" in error[1] or "理由" in error[1]) and gov.revoked == []
