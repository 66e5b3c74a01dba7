"""Finding 6 (and the gateway half of 7): storage credentials that outlive the login.

A hostile analyst holds a 5-minute Keycloak access token in the notebook. They ask MinIO's
STS for a year of credentials and presign week-long URLs; the bureau then disables the
account or removes it from the organisation, and access must end within a minute.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from minio import Minio
from minio.error import S3Error

from lab import iam, storage
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.security.identity_support import Snapshot, api, bearer, hub_session

pytestmark = [pytest.mark.integration, pytest.mark.security]

ORG, ANALYST = "qilu-energy", "zhang.wei"  # the demo grants qilu-energy extracts
YEAR = 31_536_000
REVOCATION_LIMIT = 60.0  # seconds: the threat model's bound for disabling / removing from an org


def sts(settings: Settings, token: str, duration: int | None = None) -> dict[str, str]:
    data = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "WebIdentityToken": token}
    if duration is not None:
        data["DurationSeconds"] = str(duration)
    response = httpx.post(f"http://{settings.minio_endpoint}", data=data)
    assert response.status_code == 200, (
        response.status_code,
        re.findall(r"<Code>(\w+)</Code>", response.text),
    )
    fields = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
    return {f: re.search(rf"<{f}>([^<]+)</{f}>", response.text)[1] for f in fields}  # type: ignore[index]


def s3(settings: Settings, creds: dict[str, str]) -> Minio:
    return Minio(
        settings.minio_endpoint,
        access_key=creds["AccessKeyId"],
        secret_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
        secure=False,
        region=storage.REGION,
    )


def lifetime(creds: dict[str, str]) -> float:
    expires = datetime.fromisoformat(creds["Expiration"].replace("Z", "+00:00"))
    return (expires - datetime.now(UTC)).total_seconds()


def an_extract_object(settings: Settings) -> str:
    names = [
        o.object_name
        for o in storage.root_client(settings).list_objects(
            storage.EXTRACTS_BUCKET, prefix=f"{ORG}/", recursive=True
        )
        if o.object_name and o.object_name.endswith("manifest.json")
    ]
    assert names, f"the demo publishes extracts for {ORG}"
    return names[0]


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Iterator[Settings]:
    kct.ensure(lab_stack)
    yield lab_stack


def test_sts_caps_a_year_long_duration_at_fifteen_minutes(lab: Settings) -> None:
    token = kct.access_token(lab, ANALYST)
    token_left = kct.claims(token)["exp"] - time.time()
    asked = sts(lab, token, YEAR)
    plain = sts(lab, token)
    print(
        f"DurationSeconds={YEAR}: credentials live {lifetime(asked):.0f} s; "
        f"without it {lifetime(plain):.0f} s (token {token_left:.0f} s)"
    )
    assert lifetime(asked) <= storage.STS_DURATION_SECONDS + 5 <= 3600
    assert lifetime(plain) <= token_left + 5  # no DurationSeconds: they expire with the token


def test_presigned_urls_die_with_the_credentials_that_signed_them(lab: Settings) -> None:
    name = an_extract_object(lab)
    kct.ensure_variant(lab, "datalab-test-brief", lifespan=20)
    try:
        token = kct.token_from(lab, "datalab-test-brief", ANALYST)
        creds = sts(lab, token)
        week = s3(lab, creds).presigned_get_object(storage.EXTRACTS_BUCKET, name, expires=timedelta(days=7))
        assert httpx.get(week).status_code == 200
        assert lifetime(creds) <= 25
        started = time.monotonic()
        while time.monotonic() - started < 120 and httpx.get(week).status_code == 200:
            time.sleep(2)
        died = time.monotonic() - started
        print(f"a 7-day presigned URL stopped working after {died:.0f} s (credentials lived ≤ 20 s)")
        assert httpx.get(week).status_code == 403
    finally:
        kct.remove_client(lab, "datalab-test-brief")
    # And a year-long DurationSeconds cannot make one last longer than 15 minutes.
    year = sts(lab, kct.access_token(lab, ANALYST), YEAR)
    assert lifetime(year) <= storage.STS_DURATION_SECONDS + 5


def _gateway(settings: Settings, token: str) -> bool:
    """True if ``token`` still lists the organisation's granted datasets at the gateway."""
    response = httpx.get(f"{api(settings)}/datasets", headers=bearer(token))
    return response.status_code == 200 and bool(response.json())


def _revoked_within(
    settings: Settings, name: str, probes: dict[str, Callable[[], bool]], limit: float = 120
) -> dict[str, float]:
    """Seconds until each probe stops succeeding (polled; bounded by ``limit``)."""
    started = time.monotonic()
    ended: dict[str, float] = {}
    while time.monotonic() - started < limit and len(ended) < len(probes):
        for probe, works in probes.items():
            if probe not in ended and not works():
                ended[probe] = time.monotonic() - started
        time.sleep(1)
    print(f"{name}: access ended after " + ", ".join(f"{p} {s:.1f} s" for p, s in sorted(ended.items())))
    assert set(ended) == set(probes), f"still working after {limit:.0f} s: {set(probes) - set(ended)}"
    return ended


def _probes(settings: Settings, hub_token: str) -> tuple[dict[str, Callable[[], bool]], Any]:
    """S3 GET with year-long STS credentials, and gateway calls with a JWT and a hub token."""
    name = an_extract_object(settings)
    jwt = kct.access_token(settings, ANALYST)
    client = s3(settings, sts(settings, jwt, YEAR))

    def s3_get() -> bool:
        try:
            client.stat_object(storage.EXTRACTS_BUCKET, name)
            return True
        except S3Error:
            return False

    probes = {
        "s3": s3_get,
        "gateway-jwt": lambda: _gateway(settings, jwt),
        "gateway-hub-token": lambda: _gateway(settings, hub_token),
    }
    assert all(works() for works in probes.values()), {p: w() for p, w in probes.items()}
    return probes, client


def _own_hub_token(settings: Settings) -> str:
    with hub_session(settings, ANALYST) as hub:
        made = hub.hub_api(
            "POST", f"/users/{ANALYST}/tokens", json={"expires_in": 3600, "note": "security test"}
        )
        assert made.status_code == 201, made.status_code
        return str(made.json()["token"])


def _restored(settings: Settings, probe: Callable[[], bool], limit: float = 120) -> None:
    started = time.monotonic()
    while time.monotonic() - started < limit and not probe():
        time.sleep(2)
    assert probe(), "access did not come back after the account was restored"


def test_disabling_an_account_ends_its_s3_and_gateway_access_within_a_minute(lab: Settings) -> None:
    hub_token = _own_hub_token(lab)
    probes, _ = _probes(lab, hub_token)
    before = Snapshot.take(lab)
    kc = iam.admin(lab)
    user_id = kc.get_user_id(ANALYST)
    assert user_id
    kc.update_user(user_id, {"enabled": False})
    try:
        ended = _revoked_within(lab, "disabled account", probes)
    finally:
        kc.update_user(user_id, {"enabled": True})
    assert max(ended.values()) <= REVOCATION_LIMIT, ended
    assert Snapshot.take(lab) == before
    _restored(lab, lambda: _gateway(lab, kct.access_token(lab, ANALYST)))


def test_removal_from_the_organisation_ends_its_s3_and_gateway_access_within_a_minute(lab: Settings) -> None:
    hub_token = _own_hub_token(lab)
    probes, _ = _probes(lab, hub_token)
    before = Snapshot.take(lab)
    kc = iam.admin(lab)
    user_id = kc.get_user_id(ANALYST)
    group = kc.get_group_by_path(f"/{ORG}")
    assert user_id and group
    kc.group_user_remove(user_id, group["id"])
    try:
        ended = _revoked_within(lab, "removed from the organisation", probes)
        # The gateway still knows who they are, but no longer as an analyst of the organisation.
        me = httpx.get(f"{api(lab)}/me", headers=bearer(hub_token))
        assert me.status_code == 200 and me.json()["org"] is None
    finally:
        kc.group_user_add(user_id, group["id"])
    assert max(ended.values()) <= REVOCATION_LIMIT, ended
    assert Snapshot.take(lab) == before
    _restored(lab, lambda: _gateway(lab, hub_token))
