"""Helpers for tests that onboard organisations: a valid unified social credit code, an analyst."""

from __future__ import annotations

import secrets

from lab import iam, vault
from lab.discovery.checks import credit_code_check, organisation_code_check
from lab.settings import Settings


def credit_code() -> str:
    body = (
        "913701"
        + "".join(secrets.choice("0123456789") for _ in range(2))
        + "MA3"
        + secrets.token_hex(3)[:5].upper()
    )
    body = body.replace("I", "1").replace("O", "0").replace("S", "5").replace("V", "4").replace("Z", "2")
    body += organisation_code_check(body[8:16])
    return body + credit_code_check(body)


def create_analyst(lab: Settings, username: str) -> None:
    kc = iam.admin(lab)
    kc.create_user(
        {
            "username": username,
            "enabled": True,
            "emailVerified": True,
            "firstName": "Test",
            "lastName": "Analyst",
            "email": f"{username}@example.org",
            "credentials": [
                {"type": "password", "value": vault.secret(lab, "demo-password"), "temporary": False}
            ],
        }
    )
    user_id = kc.get_user_id(username)
    kc.assign_realm_roles(user_id, [kc.get_realm_role("analyst")])
