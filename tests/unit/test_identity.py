"""Identity rules without services: hub token checks, Keycloak's word over stale claims,
the members sweeper and the operators' hub role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from lab import demo, iam, storage
from lab.directory import Person
from lab.errors import NotAuthenticated
from lab.gateway.auth import Caller, TokenVerifier, check_hub_token
from lab.gateway.revocation import Sweeper
from lab.hub.auth import OPERATOR_GROUP, OPERATOR_ROLE
from lab.hub.config import configure
from lab.registry.organisations import closing_registry, register
from lab.settings import load_settings

pytestmark = pytest.mark.unit


def _model(**over: Any) -> dict[str, Any]:
    return {
        "user": "li.na",
        "created": "2026-01-01T08:00:00.000000Z",
        "expires_at": "2026-01-01T09:00:00.000000Z",
        "note": "Requested via api",
        **over,
    }


def test_hub_tokens_need_an_owner_an_expiry_and_a_short_life() -> None:
    check_hub_token(_model(), "li.na")
    cases = {
        "hub-token-no-expiry": _model(expires_at=None),
        "hub-token-too-long": _model(expires_at="2026-01-31T08:00:00Z"),
        "hub-token-foreign": _model(note="Requested via api by user op.wang"),
    }
    for reason, model in cases.items():
        with pytest.raises(NotAuthenticated) as caught:
            check_hub_token(model, "li.na")
        assert caught.value.reason == reason
        assert "令牌" in caught.value.message
    with pytest.raises(NotAuthenticated):
        check_hub_token(_model(user="zhang.wei"), "li.na")


class FakeDirectory:
    def __init__(self, people: dict[str, Person]) -> None:
        self.people = people

    def person(self, username: str) -> Person | None:
        return self.people.get(username)

    def members(self) -> dict[str, set[str]]:
        return {"qilu-energy": {"id-li"}}


def _verifier(tmp_path: Path, people: dict[str, Person]) -> TokenVerifier:
    settings = load_settings({"DATALAB_HOME": str(tmp_path)})
    return TokenVerifier(settings, directory=FakeDirectory(people))  # type: ignore[arg-type]


def test_keycloak_now_narrows_what_a_token_claimed(tmp_path: Path) -> None:
    li = Person("id-li", "li.na", True, frozenset(), frozenset({"analyst"}))
    verifier = _verifier(tmp_path, {"li.na": li})
    claimed = Caller("li.na", "qilu-energy", frozenset({"analyst", "operator"}))
    assert verifier.current(claimed) == Caller("li.na", None, frozenset({"analyst"}))
    verifier = _verifier(tmp_path, {"li.na": Person("id-li", "li.na", False, frozenset(), frozenset())})
    with pytest.raises(NotAuthenticated) as caught:
        verifier.current(claimed)
    assert caught.value.reason == "account-disabled"
    with pytest.raises(NotAuthenticated):
        _verifier(tmp_path, {}).current(claimed)


def test_the_sweeper_writes_every_organisations_members(tmp_path: Path) -> None:
    settings = load_settings({"DATALAB_HOME": str(tmp_path)})
    written: dict[str, set[str]] = {}

    def apply(_: Any, org: str, subjects: set[str]) -> bool:
        written[org] = set(subjects)
        return org == "qilu-energy"

    with closing_registry(settings) as registry:
        register(registry, demo.DEMO_ORGANISATIONS, by="datalab-bootstrap")
    sweeper = Sweeper(settings, FakeDirectory({}), apply=apply)  # type: ignore[arg-type]
    assert sweeper.sweep() == ["qilu-energy"]
    assert written == {"qilu-energy": {"id-li"}, "zibo-credit": set(), "sdu-research": set()}
    # A suspended organisation's members policy admits nobody, whatever Keycloak says.
    with closing_registry(settings) as registry:
        registry.suspend("qilu-energy", by="op.wang", reason="contract ended")
    sweeper.sweep()
    assert written["qilu-energy"] == set()


def test_members_policy_denies_everyone_else() -> None:
    policy = storage.members_deny_policy(["b", "a"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == ["s3:*"]
    assert statement["Condition"] == {"StringNotEquals": {"jwt:sub": ["a", "b"]}}
    nobody = storage.members_deny_policy([])["Statement"][0]["Condition"]["StringNotEquals"]["jwt:sub"]
    assert nobody == [storage.NOBODY]


def test_operators_get_a_narrow_hub_role_and_tokens_expire(tmp_path: Path) -> None:
    c = Config()
    configure(c, load_settings({"DATALAB_HOME": str(tmp_path)}))
    assert OPERATOR_ROLE in c.JupyterHub.load_roles and OPERATOR_ROLE["groups"] == [OPERATOR_GROUP]
    assert c.JupyterHub.token_expires_in_max_seconds == iam.HUB_TOKEN_MAX_SECONDS
    assert c.JupyterHub.oauth_token_expires_in == iam.HUB_TOKEN_MAX_SECONDS
    scopes = set(OPERATOR_ROLE["scopes"])
    assert "admin-ui" in scopes and "delete:servers" in scopes
    forbidden = {"tokens", "access:servers", "admin:users", "admin:groups", "admin:servers", "groups"}
    assert not scopes & forbidden
    assert all(not role.get("users") for role in c.JupyterHub.load_roles)


def test_lab_scopes_are_given_only_to_the_labs_clients() -> None:
    assert iam.CLIENT_SCOPES[iam.HUB_CLIENT_ID] == (iam.CLAIMS_SCOPE, iam.STORAGE_SCOPE)
    assert iam.CLIENT_SCOPES[iam.GATEWAY_CLIENT_ID] == (iam.CLAIMS_SCOPE,)
    audiences = {
        name: {m["config"].get("included.client.audience") for m in mappers if "audience" in m["name"]}
        for name, (_, mappers) in iam.SCOPES.items()
    }
    assert audiences == {iam.CLAIMS_SCOPE: {iam.GATEWAY_CLIENT_ID}, iam.STORAGE_SCOPE: {iam.MINIO_CLIENT_ID}}
    assert iam.BRUTE_FORCE["bruteForceProtected"] is True and iam.BRUTE_FORCE["failureFactor"] == 10


def test_only_the_command_lines_confidential_client_takes_passwords(tmp_path: Path) -> None:
    """``datalab login`` uses the password grant; no other client of the lab, and no public one."""
    clients = {c["clientId"]: c for c in iam._clients(load_settings({"DATALAB_HOME": str(tmp_path)}))}
    takes = {name for name, c in clients.items() if c["directAccessGrantsEnabled"]}
    assert takes == {iam.CLI_CLIENT_ID}
    cli_client = clients[iam.CLI_CLIENT_ID]
    assert (
        cli_client["publicClient"] is False and cli_client["secret"] and not cli_client["standardFlowEnabled"]
    )
    assert iam.CLIENT_SCOPES[iam.CLI_CLIENT_ID] == (iam.CLAIMS_SCOPE,)


def test_only_keycloak_operators_land_in_the_operator_group() -> None:
    import asyncio

    from lab.hub.auth import LabAuthenticator

    auth = LabAuthenticator(
        approved_organisations={"qilu-energy"}, manage_groups=True, auth_state_groups_key="oauth_user.groups"
    )

    def groups(roles: list[str], claimed: list[str]) -> set[str]:
        state = {"oauth_user": {"roles": roles, "groups": claimed}}
        return asyncio.run(auth.get_user_groups(state))

    assert groups(["operator"], []) == {OPERATOR_GROUP}
    assert groups(["analyst"], ["qilu-energy", OPERATOR_GROUP]) == {"qilu-energy"}
    model = asyncio.run(auth.update_auth_model({"name": "x", "admin": True, "auth_state": {}}))
    assert model["admin"] is False


def test_an_unreachable_keycloak_refuses_rather_than_fails(tmp_path: Path) -> None:
    from lab.directory import Directory

    def broken() -> Any:
        raise ConnectionError("Keycloak is down")

    directory = Directory(load_settings({"DATALAB_HOME": str(tmp_path)}), admin=broken)
    with pytest.raises(NotAuthenticated) as caught:
        directory.person("li.na")
    assert caught.value.reason == "directory-unavailable" and "稍后" in caught.value.message
