"""Notebook logins in the audit trail: JupyterHub's ``post_auth_hook``.

``lab.hub.configure`` sets ``c.LabAuthenticator.post_auth_hook = record_login``. After
Keycloak has authenticated someone and before the hub lets them in, one ``login``
record (``via: hub``, with organisation and roles from the token's claims) is appended
to the ledger. If the record cannot be written the login fails: a login the auditors
cannot see does not happen. Tokens in the auth state are never copied.
"""

from __future__ import annotations

from typing import Any

from lab.ledger import Kind
from lab.settings import load_settings
from lab.store.ledgers import open_ledger


def record_login(authenticator: Any, handler: Any, authentication: dict[str, Any]) -> dict[str, Any]:
    """Append the ``login`` record; return ``authentication`` unchanged."""
    claims = (authentication.get("auth_state") or {}).get("oauth_user") or {}
    roles = sorted(str(r) for r in claims.get("roles") or [] if isinstance(r, str))
    org = claims.get("org")
    settings = load_settings()
    with open_ledger(settings) as ledger:
        ledger.append(
            Kind.LOGIN,
            actor=str(authentication["name"]),
            organisation=str(org) if org else None,
            details={"via": "hub", "roles": roles},
        )
    return authentication
