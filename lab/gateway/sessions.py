"""Console login: OpenID Connect authorisation-code flow with Keycloak, and a signed session.

``/console/login`` sends the browser to Keycloak (client ``datalab-gateway``,
confidential, PKCE S256, ``state`` and ``nonce``), remembering them in a short-lived
signed cookie. ``/console/callback`` exchanges the code with the client secret, checks
the access token exactly as the API does (:class:`~lab.gateway.auth.TokenVerifier`:
signature, issuer, audience, expiry) and the ID token's nonce, and then sets the
session cookie.

The session cookie holds who the person is (username, organisation, roles), when the
session ends and a CSRF token, signed with HMAC-SHA256 under a key kept in the state
directory; it holds no Keycloak token. It is ``HttpOnly``, ``SameSite=Lax`` and scoped
to ``/services/gateway/console``. Sessions last :data:`SESSION_SECONDS`; on every request the
session's organisation and roles are narrowed to what Keycloak says now (cached ≤ 20 s),
and a disabled account's session ends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from lab import vault
from lab.errors import NotAuthenticated
from lab.gateway.auth import Caller, TokenVerifier
from lab.iam import GATEWAY_CLIENT_ID
from lab.settings import Settings

SESSION_COOKIE = "datalab_console"
FLOW_COOKIE = "datalab_oidc"
LANG_COOKIE = "datalab_lang"
SESSION_SECONDS = 3600
FLOW_SECONDS = 600
KEY_SECRET = "gateway-session-key"


@dataclass(frozen=True)
class Session:
    caller: Caller
    expires: int
    csrf: str


class Signer:
    """HMAC-SHA256 signed, expiring JSON values for cookies."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> str:
        return (
            base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest())
            .decode()
            .rstrip("=")
        )

    def dumps(self, value: dict[str, Any], ttl: int) -> str:
        body = json.dumps({**value, "exp": int(time.time()) + ttl}, separators=(",", ":")).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._mac(payload.encode())}"

    def loads(self, token: str | None) -> dict[str, Any] | None:
        if not token or token.count(".") != 1:
            return None
        payload, mac = token.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload.encode()).encode()):
            return None
        try:
            value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        if not isinstance(value, dict) or int(value.get("exp", 0)) < time.time():
            return None
        return value


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Sessions:
    """The OIDC flow and the session cookie of the consoles."""

    def __init__(self, settings: Settings, verifier: TokenVerifier, console_path: str) -> None:
        self.settings = settings
        self.verifier = verifier
        self.signer = Signer(bytes.fromhex(vault.secret(settings, KEY_SECRET, nbytes=32)))
        self.console_url = f"{settings.public_url}{console_path}"
        self.cookie_path = console_path.rstrip("/") or "/"
        self.oidc = settings.oidc_public  # where browsers are sent
        self.oidc_internal = settings.oidc_internal  # where the gateway itself asks

    @property
    def redirect_uri(self) -> str:
        return f"{self.console_url}/callback"

    # --- the authorisation-code flow --------------------------------------------------

    def start(self, next_path: str) -> tuple[str, str]:
        """The Keycloak URL to send the browser to, and the signed flow cookie."""
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)  # PKCE wants 43-128 characters
        flow = self.signer.dumps(
            {"state": state, "nonce": nonce, "pkce": verifier, "next": next_path}, FLOW_SECONDS
        )
        query = {
            "client_id": GATEWAY_CLIENT_ID,
            "response_type": "code",
            "scope": "openid",
            "redirect_uri": self.redirect_uri,
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
        return f"{self.oidc}/auth?{urlencode(query)}", flow

    def finish(self, flow_cookie: str | None, state: str | None, code: str | None) -> tuple[Caller, str]:
        """Exchange the code; the caller and the path to return to. NotAuthenticated if anything is off."""
        flow = self.signer.loads(flow_cookie)
        if (
            flow is None
            or not state
            or not code
            or not hmac.compare_digest(str(flow["state"]).encode(), state.encode())
        ):
            raise NotAuthenticated(
                "The login did not complete (state mismatch or expired); log in again. "
                "/ 登录未完成（状态不匹配或已过期），请重新登录。"
            )
        response = httpx.post(
            f"{self.oidc_internal}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": flow["pkce"],
            },
            auth=(GATEWAY_CLIENT_ID, vault.secret(self.settings, "gateway-client-secret")),
            timeout=30,
        )
        if response.status_code != 200:
            error = (
                response.json().get("error")
                if response.headers.get("content-type", "").startswith("application/json")
                else None
            )
            raise NotAuthenticated(
                "Keycloak refused the login code; log in again. / Keycloak 拒绝了登录码，请重新登录。",
                detail=f"token endpoint answered HTTP {response.status_code} ({error})",
            )
        tokens = response.json()
        caller = self.verifier.caller(str(tokens.get("access_token", "")))
        id_claims = self.verifier.claims(str(tokens.get("id_token", "")))
        if not hmac.compare_digest(str(id_claims.get("nonce", "")), str(flow["nonce"])):
            raise NotAuthenticated(
                "The login's nonce does not match; log in again. / 登录校验值不匹配，请重新登录。"
            )
        return caller, str(flow.get("next") or "")

    # --- the session cookie -------------------------------------------------------------

    def issue(self, caller: Caller) -> str:
        value = {
            "u": caller.username,
            "o": caller.org,
            "r": sorted(caller.roles),
            "c": secrets.token_urlsafe(24),
        }
        return self.signer.dumps(value, SESSION_SECONDS)

    def read(self, cookie: str | None) -> Session | None:
        """The session in a session cookie; None for anything else (another signed cookie, e.g.
        the login flow's or a flash message, is signed with the same key but is no session)."""
        value = self.signer.loads(cookie)
        if value is None:
            return None
        user, org, roles, csrf, exp = (value.get(k) for k in ("u", "o", "r", "c", "exp"))
        if not (
            isinstance(user, str)
            and user
            and (org is None or isinstance(org, str))
            and isinstance(roles, list)
            and all(isinstance(r, str) for r in roles)
            and isinstance(csrf, str)
            and csrf
            and isinstance(exp, int)
        ):
            return None
        caller = Caller(user, org, frozenset(roles))
        try:  # as far as Keycloak still agrees now (a disabled account's session ends)
            caller = self.verifier.current(caller)
        except NotAuthenticated:
            return None
        return Session(caller, exp, csrf)

    def logout_url(self) -> str:
        return f"{self.oidc}/logout?{urlencode({'client_id': GATEWAY_CLIENT_ID})}"
