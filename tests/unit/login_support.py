"""A Keycloak login for the ``datalab`` command's unit tests: tokens signed with a test key.

``keys(monkeypatch)`` makes ``lab.gateway.auth.TokenVerifier`` check signatures against
:data:`KEY` (instead of fetching the realm's JWKS); ``log_in(settings, name)`` caches a login
as ``datalab login`` would, through ``lab.cli.login``'s own writer. Keycloak's *current* view
(enabled, roles) stays the test's fake ``lab.directory.Directory``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from lab.cli import login
from lab.iam import CLI_CLIENT_ID, GATEWAY_CLIENT_ID
from lab.settings import Settings

__all__ = ["KEY", "OTHER_KEY", "keys", "log_in", "token"]
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # an attacker's


class _Keys:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_signing_key_from_jwt(self, token: str) -> Any:
        return jwt.PyJWK.from_dict(
            {**jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "alg": "RS256"}
        )


def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lab.gateway.auth.jwt.PyJWKClient", _Keys)


def token(
    settings: Settings,
    username: str,
    *,
    sub: str | None = None,
    roles: tuple[str, ...] = ("operator",),
    expires_in: float = 300,
    key: Any = KEY,
    azp: str = CLI_CLIENT_ID,
    issuer: str | None = None,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer or settings.issuer,
        "aud": [GATEWAY_CLIENT_ID],
        "sub": sub or username,
        "azp": azp,
        "preferred_username": username,
        "roles": list(roles),
        "iat": now - 10,
        "exp": int(now + expires_in),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="RS256")


def log_in(settings: Settings, username: str, *, refresh: str = "refresh-token", **kw: Any) -> None:
    """Cache a login of ``username`` (an access token made by :func:`token` with ``kw``)."""
    login._save(settings, login.Login(username, token(settings, username, **kw), refresh))
