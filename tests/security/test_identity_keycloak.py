"""Finding 9: an outsider against Keycloak — guessing passwords, the public admin-cli client,
and a client created later that would inherit the lab's audiences and claims."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from lab import iam, vault
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.security.identity_support import Snapshot, api, bearer

pytestmark = [pytest.mark.integration, pytest.mark.security]

VICTIM = "zhou.ting"  # an analyst of sdu-research; the test unlocks the account again


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Iterator[Settings]:
    kct.ensure(lab_stack)
    yield lab_stack


def test_ten_wrong_passwords_lock_the_account_for_a_while(lab: Settings) -> None:
    kc = iam.admin(lab)
    user_id = kc.get_user_id(VICTIM)
    assert user_id
    kc.clear_bruteforce_attempts_for_user(user_id)
    realm = kc.get_realm(lab.realm)
    assert realm["bruteForceProtected"] is True and realm["failureFactor"] == iam.FAILURE_FACTOR
    before = Snapshot.take(lab)
    password = vault.secret(lab, "demo-password")
    try:
        answers = [
            kct.password_grant(lab, kct.TEST_CLIENT, VICTIM, f"wrong-{n}-{uuid.uuid4().hex[:6]}").status_code
            for n in range(iam.FAILURE_FACTOR)
        ]
        assert set(answers) == {401}, answers
        # The right password no longer opens the account, and Keycloak says it is locked.
        right = kct.password_grant(lab, kct.TEST_CLIENT, VICTIM, password)
        status = kc.get_bruteforce_detection_status(user_id)
        print(f"after {iam.FAILURE_FACTOR} wrong passwords: right one answered {right.status_code}, {status}")
        assert right.status_code in (400, 401), right.status_code
        assert "access_token" not in right.text
        assert status.get("disabled") is True, status
    finally:
        kc.clear_bruteforce_attempts_for_user(user_id)  # the test unlocks what it locked
    assert kct.password_grant(lab, kct.TEST_CLIENT, VICTIM, password).status_code == 200
    assert Snapshot.take(lab) == before


def test_admin_cli_of_the_lab_realm_refuses_the_password_grant(lab: Settings) -> None:
    before = Snapshot.take(lab)
    response = httpx.post(
        f"{lab.issuer}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": "li.na",
            "password": vault.secret(lab, "demo-password"),
            "scope": "openid",
        },
    )
    print("admin-cli password grant in realm datalab answered", response.status_code)
    assert response.status_code in (400, 401), response.status_code
    assert "access_token" not in response.text
    assert response.json().get("error") == "unauthorized_client"
    # No public client of the realm accepts it.
    public = [c["clientId"] for c in iam.admin(lab).get_clients() if c.get("publicClient")]
    assert public, "Keycloak's built-in public clients were expected"
    for client in iam.admin(lab).get_clients():
        if client.get("publicClient"):
            assert not client.get("directAccessGrantsEnabled"), client["clientId"]
    assert Snapshot.take(lab) == before


def test_a_client_created_later_gets_no_lab_audience_nor_claims(lab: Settings) -> None:
    kc = iam.admin(lab)
    defaults = {s["name"] for s in kc.get_default_default_client_scopes()}
    assert not defaults & {iam.CLAIMS_SCOPE, iam.STORAGE_SCOPE}, defaults
    name = f"someone-elses-app-{uuid.uuid4().hex[:6]}"
    internal = kc.create_client(
        {
            "clientId": name,
            "publicClient": False,
            "secret": vault.secret(lab, kct.SECRET),
            "directAccessGrantsEnabled": True,
            "standardFlowEnabled": False,
        }
    )
    try:
        token = kct.token_from(lab, name, "li.na")
        claims = kct.claims(token)
        aud = claims.get("aud") or []
        aud = [aud] if isinstance(aud, str) else aud
        print("a new client's token carries aud", aud, "and claims", sorted(claims))
        assert iam.GATEWAY_CLIENT_ID not in aud and iam.MINIO_CLIENT_ID not in aud
        assert claims.get("azp") == name
        assert not {"org", "policy", "roles", "groups"} & set(claims)
        # Neither the gateway nor MinIO's STS take it.
        assert httpx.get(f"{api(lab)}/me", headers=bearer(token)).status_code == 401
        sts = httpx.post(
            f"http://{lab.minio_endpoint}",
            data={"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "WebIdentityToken": token},
        )
        assert sts.status_code in (400, 403), sts.status_code
        assert "<SecretAccessKey>" not in sts.text
    finally:
        kc.delete_client(internal)
