"""Test-only Keycloak clients that allow the password grant (never created by the lab).

They are confidential (their secret lives in the state directory, ``test-client-secret``):
the realm's public clients, ``admin-cli`` included, refuse the password grant. The main
test client plays the notebook, so it is given the lab's scopes explicitly (a new client
gets none of them by default).
"""

from __future__ import annotations

from typing import Any

import httpx
import jwt

from lab import iam, vault
from lab.settings import Settings

TEST_CLIENT = "datalab-test"


SECRET = "test-client-secret"


def _confidential(settings: Settings, client_id: str, attributes: dict[str, str]) -> dict[str, Any]:
    return {
        "clientId": client_id,
        "publicClient": False,
        "secret": vault.secret(settings, SECRET),
        "directAccessGrantsEnabled": True,
        "standardFlowEnabled": False,
        "attributes": attributes,
    }


def _with_lab_scopes(kc: Any, internal: str) -> None:
    have = {s["name"] for s in kc.get_client_default_client_scopes(internal)}
    for name in (iam.CLAIMS_SCOPE, iam.STORAGE_SCOPE):
        if name not in have:
            scope = kc.get_client_scope_by_name(name)
            kc.add_client_default_client_scope(internal, scope["id"], {})


def _ensure(settings: Settings, client_id: str, attributes: dict[str, str]) -> tuple[Any, str]:
    kc = iam.admin(settings)
    desired = _confidential(settings, client_id, attributes)
    internal = kc.get_client_id(client_id)
    if internal is None:
        internal = kc.create_client(desired)
    elif kc.get_client(internal).get("publicClient"):
        kc.update_client(internal, desired)  # an older lab's public test client
    return kc, str(internal)


def ensure(settings: Settings) -> None:
    kc, internal = _ensure(settings, TEST_CLIENT, {})
    _with_lab_scopes(kc, internal)


def remove(settings: Settings) -> None:
    kc = iam.admin(settings)
    client_id = kc.get_client_id(TEST_CLIENT)
    if client_id:
        kc.delete_client(client_id)


def password_grant(settings: Settings, client_id: str, username: str, password: str) -> httpx.Response:
    """The token endpoint's answer to a password grant (the caller checks the status)."""
    return httpx.post(
        f"{settings.issuer}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "client_secret": vault.secret(settings, SECRET),
            "username": username,
            "password": password,
            "scope": "openid",
        },
    )


def access_token(settings: Settings, username: str) -> str:
    return token_from(settings, TEST_CLIENT, username)


def claims(token: str) -> dict[str, Any]:
    """The token's claims (its signature is checked by the services, not here)."""
    return dict(jwt.decode(token, options={"verify_signature": False}))


def ensure_variant(
    settings: Settings, client_id: str, *, lifespan: int | None = None, without_claims: bool = False
) -> None:
    """Another password-grant test client: short-lived tokens, or tokens without our claims."""
    attributes = {"access.token.lifespan": str(lifespan)} if lifespan else {}
    kc, internal = _ensure(settings, client_id, attributes)
    if not without_claims:
        _with_lab_scopes(kc, internal)


def remove_client(settings: Settings, client_id: str) -> None:
    kc = iam.admin(settings)
    internal = kc.get_client_id(client_id)
    if internal:
        kc.delete_client(internal)


def token_from(settings: Settings, client_id: str, username: str) -> str:
    response = password_grant(settings, client_id, username, vault.secret(settings, "demo-password"))
    assert response.status_code == 200, response.status_code
    return str(response.json()["access_token"])


def cli_login(settings: Settings, username: str) -> None:
    """``datalab login USERNAME`` with the demo password, unless this OS user's cached login is
    already theirs: operator commands then act as them (``lab.cli.login``)."""
    from lab.cli import login

    cached = login._load(login.cache_file(settings))
    if cached is None or cached.username != username:
        login.login(settings, username, vault.secret(settings, "demo-password"))


def operator_argv(settings: Settings, argv: list[str] | tuple[str, ...]) -> list[str]:
    """``argv`` of a ``datalab`` command, after logging in as the operator its ``--as`` names."""
    argv = list(argv)
    if "--as" in argv:
        cli_login(settings, argv[argv.index("--as") + 1])
    return argv
