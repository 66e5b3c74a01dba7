"""Helpers for tests that onboard organisations: a valid unified social credit code, an analyst,
an organisation of the test module's own with a grant."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

import lab.client
from lab import access, cli, iam, vault
from lab.discovery.checks import credit_code_check, organisation_code_check
from lab.extracts import ledger as open_ledger
from lab.ledger import Ledger
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct


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


@dataclass
class Granted:
    lab: Settings
    book: Ledger
    org: str
    user: str
    grant: int

    def gateway(self) -> str:
        return f"{self.lab.hub_url}/services/gateway"

    def connection(self) -> lab.client.Connection:
        return lab.client.Connection(self.gateway(), lambda: kct.access_token(self.lab, self.user))

    def post(self, path: str, body: dict[str, object]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {kct.access_token(self.lab, self.user)}"}
        return httpx.post(f"{self.gateway()}/api{path}", headers=headers, json=body, timeout=120)

    def spent(self) -> float:
        return self.book.budget(self.grant).epsilon_spent


def organisation_with_grant(lab_stack: Settings, prefix: str, epsilon: float) -> Iterator[Granted]:
    """A new organisation and analyst (the operator's CLI, the real Keycloak), granted ``population``
    in the ledger and provisioned at once; the grant is revoked when the generator is closed."""
    kct.ensure(lab_stack)
    tag = secrets.token_hex(3)
    org, user = f"{prefix}-{tag}", f"an.{prefix}{tag}"
    argv = [
        "org", "add", org, "--name-zh", "SQL 测试研究所", "--name-en", "SQL Test Institute",
        "--credit-code", credit_code(), "--kind", "research", "--contact", "Data office / 数据办",
        "--as", "op.wang",
    ]  # fmt: skip
    assert cli.main(kct.operator_argv(lab_stack, argv)) == 0  # logged in as the operator its --as names
    create_analyst(lab_stack, user)
    assert cli.main(kct.operator_argv(lab_stack, ["org", "add-user", org, user, "--as", "op.wang"])) == 0
    with open_ledger(lab_stack) as book:
        made = book.create_grant(
            organisation=org,
            dataset="population",
            purpose=f"integration test: {prefix}",
            modes=["dp"],
            epsilon=epsilon,
            delta=1e-6,
            expires_at=datetime.now(UTC) + timedelta(hours=3),
            approved_by="op.wang",
        )
        provisioner = access.Provisioner(lab_stack, book)
        provisioner.provision()
        yield Granted(lab_stack, book, org, user, made.id)
        book.revoke(made.id, by="op.wang", reason="test done")
        provisioner.provision()
