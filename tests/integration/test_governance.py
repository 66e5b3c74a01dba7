"""Access workflow, withdrawal, export airlock and audit trail, against the real stack.

These tests own the grants of ``sdu-research`` on ``legal_entity`` (test_gateway owns its
``population`` grants) and revoke them at the end, so the organisation is left without
an active grant, as the demo expects.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import httpx
import polars as pl
import pytest
from minio import Minio
from minio.error import S3Error

from lab import iam, storage, vault
from lab.dp.query import canonical_json
from lab.extracts import ledger as open_ledger
from lab.gateway.minio_audit import TOKEN_SECRET
from lab.ledger import Ledger
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.console_client import console_base, console_login, csrf

pytestmark = pytest.mark.integration

ORG, DATASET = "sdu-research", "legal_entity"
ANALYST, OPERATOR, AUDITOR = "zhou.ting", "op.wang", "audit.zhao"
QUERY = {
    "dataset": DATASET,
    "aggregate": {"kind": "count"},
    "epsilon": 0.05,
    "group_by": {"columns": ["district"]},
}
WITHDRAWAL_LIMIT = 60.0


def _api(settings: Settings) -> str:
    return f"{settings.hub_url}/services/gateway/api"


def _h(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {kct.access_token(settings, user)}"}


def _revoke_ours(book: Ledger) -> None:
    for grant in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
        book.revoke(grant.id, by=OPERATOR, reason="governance tests finished")


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Iterator[Settings]:
    kct.ensure(lab_stack)
    with open_ledger(lab_stack) as book:
        _revoke_ours(book)
    yield lab_stack
    with open_ledger(lab_stack) as book:
        _revoke_ours(book)


def apply(settings: Settings, user: str = ANALYST, **over: Any) -> dict[str, Any]:
    body = {
        "dataset": DATASET,
        "purpose": "governance test / 治理测试",
        "modes": ["dp", "masked"],
        "epsilon": 1.0,
        "delta": 1e-6,
        "term_days": 30,
        **over,
    }
    response = httpx.post(f"{_api(settings)}/applications", headers=_h(settings, user), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def approve(settings: Settings, app_id: int, **terms: Any) -> dict[str, Any]:
    url = f"{_api(settings)}/operator/applications/{app_id}/approve"
    response = httpx.post(url, headers=_h(settings, OPERATOR), json=terms, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json()["grant"])


def sts_client(settings: Settings, user: str = ANALYST) -> Minio:
    """An S3 client holding STS credentials issued now (they are never refreshed)."""
    return storage.analyst_client(settings, kct.access_token(settings, user))


def wait_for_extract(client: Minio, timeout: float = 120) -> str:
    """The newest masked extract's data file (a version whose manifest is written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = {
            o.object_name for o in client.list_objects("extracts", prefix=f"{ORG}/{DATASET}/", recursive=True)
        }
        data = sorted(
            n for n in names if n and n.endswith("/data.parquet") and n[:-12] + "manifest.json" in names
        )
        if data:
            return data[-1]
        time.sleep(1)
    raise AssertionError("the masked extract was not built after the approval")


def until_refused(check: Callable[[], bool], limit: float) -> float:
    """Seconds until ``check()`` says access is refused; fails after ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"access was still granted after {limit} s")


def minio_refused(client: Minio, name: str) -> bool:
    try:
        client.get_object("extracts", name).read()
    except S3Error as exc:
        return exc.code == "AccessDenied"
    return False


def gateway_refused(settings: Settings, headers: dict[str, str]) -> tuple[bool, str]:
    response = httpx.post(f"{_api(settings)}/queries", headers=headers, json=QUERY, timeout=60)
    return response.status_code == 403, response.json().get("error", {}).get("reason", "")


def test_approve_then_revoke_withdraws_gateway_and_minio(lab: Settings) -> None:
    headers = _h(lab, ANALYST)
    app = apply(lab)
    assert app["state"] == "pending" and app["organisation"] == ORG
    grant = approve(lab, app["id"], epsilon=0.5, term_days=10)
    assert grant["budget"]["epsilon"] == 0.5 and grant["modes"] == ["dp", "masked"]
    try:
        ran = httpx.post(f"{_api(lab)}/queries", headers=headers, json=QUERY, timeout=60)
        assert ran.status_code == 200, ran.text
        assert ran.json()["budget"]["epsilon_remaining"] == pytest.approx(0.45)
        s3 = sts_client(lab)
        data = wait_for_extract(s3)
        assert pl.read_parquet(io.BytesIO(s3.get_object("extracts", data).read())).height > 100
    finally:
        revoked = httpx.post(
            f"{_api(lab)}/operator/grants/{grant['id']}/revoke",
            headers=_h(lab, OPERATOR),
            json={"reason": "test: access withdrawn"},
        )
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    gateway_s = until_refused(lambda: gateway_refused(lab, headers)[0], WITHDRAWAL_LIMIT)
    minio_s = until_refused(lambda: minio_refused(s3, data), WITHDRAWAL_LIMIT)
    assert gateway_refused(lab, headers) == (True, "grant-revoked")
    print(
        f"withdrawn after revocation: gateway {gateway_s:.1f} s, MinIO (same STS credentials) {minio_s:.1f} s"
    )
    with open_ledger(lab) as book:
        records = book.records(organisation=ORG)
    ids = {(r.kind, r.details.get("application"), r.details.get("grant")) for r in records}
    assert ("application", app["id"], None) in ids and ("revoke", None, grant["id"]) in ids
    assert ("grant", app["id"], grant["id"]) in ids and ("decision", app["id"], grant["id"]) in ids


def test_expiry_withdraws_access_and_is_recorded(lab: Settings) -> None:
    headers = _h(lab, ANALYST)
    grant = approve(lab, apply(lab, term_days=12 / 86400)["id"])
    listed = httpx.get(f"{_api(lab)}/grants", headers=headers, params={"active": True}).json()
    mine = next(g for g in listed if g["id"] == grant["id"])
    assert (
        mine["reminder"] is not None
        and "expires" in mine["reminder"]["en"]
        and "到期" in mine["reminder"]["zh"]
    )
    s3 = sts_client(lab)
    data = wait_for_extract(s3)
    assert not minio_refused(s3, data)
    assert not gateway_refused(lab, headers)[0]
    expires = datetime.fromisoformat(grant["expires_at"])
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()))
    gateway_s = until_refused(lambda: gateway_refused(lab, headers)[0], WITHDRAWAL_LIMIT)
    minio_s = until_refused(lambda: minio_refused(s3, data), WITHDRAWAL_LIMIT)
    assert gateway_refused(lab, headers) == (True, "grant-expired")
    assert minio_s <= WITHDRAWAL_LIMIT  # MinIO follows at the next sweep (every 15 s)
    print(f"withdrawn after expiry: gateway {gateway_s:.1f} s, MinIO {minio_s:.1f} s")
    with open_ledger(lab) as book:
        assert any(
            r.details.get("grant") == grant["id"] for r in book.records(kind="expire", organisation=ORG)
        )


@pytest.fixture
def dual_role_user(lab: Settings) -> Iterator[str]:
    """A person who is both analyst of sdu-research and operator: the case the rule exists for."""
    kc = iam.admin(lab)
    name = f"gov-dual-{uuid.uuid4().hex[:6]}"
    user_id = kc.create_user(
        {
            "username": name,
            "enabled": True,
            "emailVerified": True,
            "firstName": "Dual",
            "lastName": "Role",
            "email": f"{name}@demo.datalab.invalid",
            "credentials": [
                {"type": "password", "value": vault.secret(lab, "demo-password"), "temporary": False}
            ],
        }
    )
    kc.assign_realm_roles(user_id, [kc.get_realm_role("analyst"), kc.get_realm_role("operator")])
    kc.group_user_add(user_id, kc.get_group_by_path(f"/{ORG}")["id"])
    yield name
    kc.delete_user(user_id)


def test_self_approval_is_refused_by_the_server(lab: Settings, dual_role_user: str) -> None:
    app = apply(lab, user=dual_role_user)
    url = f"{_api(lab)}/operator/applications/{app['id']}/approve"
    refused = httpx.post(url, headers=_h(lab, dual_role_user), json={})
    assert refused.status_code == 403 and refused.json()["error"]["reason"] == "self-approval"
    rejected = httpx.post(
        f"{_api(lab)}/operator/applications/{app['id']}/reject",
        headers=_h(lab, dual_role_user),
        json={"reason": "x"},
    )
    assert rejected.status_code == 403
    queue = httpx.get(f"{_api(lab)}/operator/applications", headers=_h(lab, OPERATOR)).json()
    assert next(a for a in queue if a["id"] == app["id"])["state"] == "pending"
    closed = httpx.post(
        f"{_api(lab)}/operator/applications/{app['id']}/reject",
        headers=_h(lab, OPERATOR),
        json={"reason": "test: self-approval attempt"},
    )
    assert closed.status_code == 200 and closed.json()["state"] == "rejected"


def _role_routes(settings: Settings) -> list[tuple[str, str]]:
    schema = httpx.get(f"{settings.hub_url}/services/gateway/openapi.json").json()
    routes = []
    for path, ops in schema["paths"].items():
        if any(
            part in path
            for part in (
                "/api/operator/",
                "/api/auditor/",
                "/api/audit/",
                "/console/operator",
                "/console/auditor",
            )
        ):
            routes += [(method.upper(), path) for method in ops]
    return routes


HAND_CRAFTED: list[dict[str, Any]] = [
    {"ids": "1", "json": {}},
    {"ids": "999999", "json": {"epsilon": 1e9, "term_days": 1e9, "modes": ["dp", "masked"]}},
    {"ids": "1%20OR%201=1", "content": b"not json", "params": {"limit": "x", "since": "yesterday"}},
    {"ids": "-1", "json": ["a", "list"], "params": {"organisation": "qilu-energy", "state": "pending"}},
]


def test_analyst_gets_403_on_every_operator_and_auditor_call(lab: Settings) -> None:
    routes = _role_routes(lab)
    # The route table is read from the app itself; these counts only guard against finding none.
    assert (
        len([r for r in routes if "/api/" in r[1]]) >= 14
        and len([r for r in routes if "/console/" in r[1]]) >= 7
    )
    bearer = _h(lab, ANALYST)
    session = console_login(lab, ANALYST)
    token = csrf(session.get(f"{console_base(lab)}/analyst").text)
    seen = []
    try:
        for method, path in routes:
            for crafted in HAND_CRAFTED:
                url = lab.hub_url + re.sub(r"\{[^}]+\}", crafted["ids"], path)
                kwargs = {k: v for k, v in crafted.items() if k in ("json", "content", "params")}
                if "/console/" in path:
                    form = {"csrf": token, "reason": "x", "decision": "approve"}
                    response = session.request(
                        method, url, data=form if method == "POST" else None, params=crafted.get("params")
                    )
                else:
                    response = httpx.request(method, url, headers=bearer, **kwargs)
                seen.append((method, path, response.status_code))
                assert response.status_code == 403, (method, url, response.status_code, response.text[:200])
    finally:
        session.close()
    # Cross-role: operators are not auditors and auditors are not operators.
    for user, other in ((OPERATOR, "/api/auditor/verify"), (AUDITOR, "/api/operator/grants")):
        assert httpx.get(f"{lab.hub_url}/services/gateway{other}", headers=_h(lab, user)).status_code == 403
    print(f"{len(seen)} hand-crafted analyst requests, all 403")


def test_forged_or_missing_console_session_is_not_accepted(lab: Settings) -> None:
    session = console_login(lab, ANALYST)
    cookie = session.cookies.get("datalab_console")
    session.close()
    payload, mac = cookie.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["r"] = ["analyst", "operator", "auditor"]
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=") + "." + mac
    for cookies in ({"datalab_console": forged}, {}):
        with httpx.Client(cookies=cookies, follow_redirects=False) as client:
            page = client.get(f"{console_base(lab)}/operator")
            # A browser sends the console's Origin with the form; without it the answer is 403 first.
            post = client.post(
                f"{console_base(lab)}/operator/grants/1/revoke",
                data={"reason": "x"},
                headers={"Origin": lab.public_url},
            )
        assert page.status_code == 303 and "/console/login" in page.headers["location"]
        assert post.status_code == 401


@pytest.fixture(scope="module")
def dp_grant(lab: Settings) -> Iterator[dict[str, Any]]:
    grant = approve(lab, apply(lab, modes=["dp"], term_days=1)["id"])
    yield grant
    httpx.post(
        f"{_api(lab)}/operator/grants/{grant['id']}/revoke",
        headers=_h(lab, OPERATOR),
        json={"reason": "tests done"},
    )


def _export(settings: Settings, name: str, data: bytes, **extra: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "purpose": "report for the board",
        "content_b64": base64.b64encode(data).decode(),
        **extra,
    }
    response = httpx.post(f"{_api(settings)}/exports", headers=_h(settings, ANALYST), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _csv(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    return buffer.getvalue()


def test_export_with_a_small_cell_is_held_with_the_reason_shown(lab: Settings) -> None:
    table = pl.DataFrame({"district": ["张店区", "淄川区", "博山区"], "count": [240, 7, 88]})
    export = _export(lab, "by_district.csv", _csv(table), dataset=DATASET)
    assert export["state"] == "held" and not export["downloadable"]
    (reason,) = [f["message"] for f in export["checks"]["findings"] if f["severity"] == "fail"]
    assert "fewer than 10" in reason and "rows 2" in reason
    refused = httpx.get(f"{_api(lab)}/exports/{export['id']}/download", headers=_h(lab, ANALYST))
    assert refused.status_code == 403 and refused.json()["error"]["reason"] == "export-held"
    with closing(console_login(lab, OPERATOR)) as operator:
        listed = operator.get(f"{console_base(lab)}/operator/exports").text
        page = operator.get(f"{console_base(lab)}/operator/exports/{export['id']}").text  # a recorded view
    assert f'id="export-{export["id"]}"' in listed and 'data-state="held"' in listed
    assert "fewer than 10" in page and "张店区" in page
    approve_held = httpx.post(
        f"{_api(lab)}/operator/exports/{export['id']}/review",
        headers=_h(lab, OPERATOR),
        json={"decision": "approve"},
    )
    assert approve_held.status_code == 400 and approve_held.json()["error"]["reason"] == "held"


def test_dp_result_passes_straight_through(lab: Settings, dp_grant: dict[str, Any]) -> None:
    ran = httpx.post(f"{_api(lab)}/queries", headers=_h(lab, ANALYST), json=QUERY, timeout=60)
    assert ran.status_code == 200, ran.text
    payload = json.dumps(ran.json()).encode()
    export = _export(lab, "counts.json", payload)
    assert (export["state"], export["kind"], export["dataset"]) == ("released", "dp-result", DATASET)
    got = httpx.get(f"{_api(lab)}/exports/{export['id']}/download", headers=_h(lab, ANALYST))
    # What leaves is regenerated from the result the gateway kept, not the uploaded bytes.
    assert got.status_code == 200 and got.content == canonical_json(ran.json()).encode()
    edited = json.loads(payload)
    edited["rows"][0]["value"] += 100
    tampered = _export(lab, "counts.json", json.dumps(edited).encode())
    assert tampered["state"] == "held"
    assert "not exactly a result released" in tampered["checks"]["findings"][0]["message"]


def test_revoked_export_can_no_longer_be_downloaded(lab: Settings) -> None:
    table = pl.DataFrame({"district": ["张店区", "淄川区"], "count": [240, 31]})
    data = _csv(table)
    export = _export(lab, "big_cells.csv", data, dataset=DATASET)
    assert export["state"] == "pending"
    operator = _h(lab, OPERATOR)
    for checker, state in ((OPERATOR, "pending"), ("op.li", "approved")):  # two distinct checkers
        headers = _h(lab, checker)
        assert httpx.get(f"{_api(lab)}/operator/exports/{export['id']}", headers=headers).status_code == 200
        reviewed = httpx.post(
            f"{_api(lab)}/operator/exports/{export['id']}/review",
            headers=headers,
            json={"decision": "approve"},
        )
        assert reviewed.status_code == 200 and reviewed.json()["state"] == state
    url = f"{_api(lab)}/exports/{export['id']}/download"
    assert httpx.get(url, headers=_h(lab, ANALYST)).content == data
    other_org = httpx.get(url, headers=_h(lab, "li.na"))
    assert other_org.status_code == 404
    revoked = httpx.post(
        f"{_api(lab)}/operator/exports/{export['id']}/revoke", headers=operator, json={"reason": "wrong file"}
    )
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    for user in (ANALYST, OPERATOR):
        gone = httpx.get(url, headers=_h(lab, user))
        assert gone.status_code == 403 and gone.json()["error"]["reason"] == "export-revoked"
    with closing(console_login(lab, ANALYST)) as analyst:
        page = analyst.get(f"{console_base(lab)}/exports/{export['id']}/download")
    assert page.status_code == 403


def test_minio_audit_webhook_appends_download_records(lab: Settings) -> None:
    url = f"{lab.hub_url}/services/gateway/minio/audit"
    request_id = uuid.uuid4().hex
    entry = {
        "api": {
            "name": "GetObject",
            "bucket": "extracts",
            "object": f"{ORG}/{DATASET}/v/data.parquet",
            "statusCode": 200,
            "tx": 1234,
        },
        "accessKey": "TEMPORARYKEY",
        "parentUser": "someone",
        "requestClaims": {"preferred_username": ANALYST, "org": ORG},
        "requestID": request_id,
    }
    assert httpx.post(url, content=json.dumps(entry)).status_code == 401
    assert (
        httpx.post(url, content=json.dumps(entry), headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    token = {"Authorization": f"Bearer {vault.secret(lab, TOKEN_SECRET)}"}
    assert httpx.post(url, content=json.dumps(entry), headers=token).json() == {"recorded": 1}
    assert httpx.post(url, content=json.dumps(entry), headers=token).json() == {"recorded": 0}  # a retry
    records = httpx.get(
        f"{_api(lab)}/auditor/records",
        headers=_h(lab, AUDITOR),
        params={"kind": "download", "actor": ANALYST},
    ).json()
    record = next(r for r in records if r["details"].get("request") == request_id)
    assert (
        record["organisation"] == ORG and record["dataset"] == DATASET and record["details"]["bytes"] == 1234
    )
    assert "TEMPORARYKEY" not in json.dumps(record)


def _webhook_configured(settings: Settings) -> bool:
    text = storage._admin(settings).config_get("audit_webhook")  # holds a token: never printed
    return "enable=on" in text or "ENABLE_DATALAB=on" in text


def test_real_extract_download_is_recorded_via_minio(lab: Settings) -> None:
    assert _webhook_configured(lab), "MinIO runs without MINIO_AUDIT_WEBHOOK_*_DATALAB (lab.stack.components)"
    s3 = sts_client(lab, "li.na")
    name = next(
        o.object_name
        for o in s3.list_objects("extracts", prefix="qilu-energy/population/", recursive=True)
        if o.object_name and o.object_name.endswith("manifest.json")
    )
    s3.get_object("extracts", name).read()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open_ledger(lab) as book:
            found = [
                r for r in book.records(kind="download", actor="li.na") if r.details["object"].endswith(name)
            ]
        if found:
            break
        time.sleep(1)
    assert found and found[-1].details["outcome"] == "ok"
