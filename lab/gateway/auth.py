"""Who is calling: Keycloak access tokens checked against the realm's published keys.

A Keycloak token is accepted only if its RS256 signature verifies against the realm's JWKS
(cached, refetched when Keycloak rotates keys), its issuer is realm ``datalab`` on this
lab's Keycloak, its audience includes ``datalab-gateway``, and it has not expired. The
caller's organisation and roles come from the ``org`` and ``roles`` claims that the
realm's ``datalab`` client scope puts in the token, and only as far as Keycloak still
says so now (:class:`lab.directory.Directory`, cached ≤ 20 s): a disabled or deleted
account is refused, an organisation the account has left or a role it lost is dropped.

A JupyterHub API token (not a JWT) is checked by asking the hub who holds it and what
the token is (its own ``/users/<name>/tokens/<id>`` entry). It is refused unless it has
an expiry no further than :data:`HUB_TOKEN_MAX_SECONDS` after its creation and was not
requested by someone else on the owner's behalf. Its holder's organisation and roles
come from Keycloak, never from the hub's groups or admin flag.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from starlette.requests import Request

from lab.directory import Directory, Person
from lab.errors import AccessDenied, NotAuthenticated
from lab.iam import GATEWAY_CLIENT_ID, HUB_TOKEN_MAX_SECONDS
from lab.settings import Settings

ROLES = ("analyst", "operator", "auditor")
_SLACK_SECONDS = 60  # clock skew between a token's created and expires_at stamps
_FOREIGN_NOTES = ("Requested via api by ",)  # JupyterHub's note for a token made for someone else


@dataclass(frozen=True)
class Caller:
    username: str
    org: str | None
    roles: frozenset[str]

    def require(self, *roles: str) -> None:
        """AccessDenied unless the caller holds one of ``roles``."""
        if not self.roles & set(roles):
            raise AccessDenied(
                f"This needs the role {' or '.join(roles)}; {self.username} has "
                f"{', '.join(sorted(self.roles)) or 'none'}. / 需要角色 {' 或 '.join(roles)}。"
            )


ASK_FOR_TOKEN = "Send 'Authorization: Bearer <access token>'. / 请提供访问令牌。"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (any case), or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def request_caller(request: Request) -> Caller:
    """The caller a request's bearer token names (its app's ``state.verifier`` checks it)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise NotAuthenticated(ASK_FOR_TOKEN)
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.caller(token)


def _refused(why: str, reason: str) -> NotAuthenticated:
    return NotAuthenticated(
        f"This JupyterHub token is refused: {why}. Create your own token on the hub's token page "
        f"with an expiry (at most {HUB_TOKEN_MAX_SECONDS // 3600} h), or use your notebook's access "
        f"token. / 此 JupyterHub 令牌不被接受：请在中心的令牌页面自行创建一个有有效期（最长 "
        f"{HUB_TOKEN_MAX_SECONDS // 3600} 小时）的令牌，或使用笔记本中的访问令牌。",
        reason=reason,
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def check_hub_token(model: dict[str, Any], owner: str) -> None:
    """NotAuthenticated unless the hub's token ``model`` is one the gateway accepts for ``owner``."""
    created, expires = _time(model.get("created")), _time(model.get("expires_at"))
    if model.get("user") != owner:
        raise _refused(
            "it does not belong to the user it names (令牌不属于其所称的用户)", "hub-token-foreign"
        )
    if expires is None or created is None:
        raise _refused("it never expires (令牌没有有效期)", "hub-token-no-expiry")
    if (expires - created).total_seconds() > HUB_TOKEN_MAX_SECONDS + _SLACK_SECONDS:
        raise _refused(
            "it lives longer than the lab allows (有效期超过实验室允许的上限)", "hub-token-too-long"
        )
    if str(model.get("note") or "").startswith(_FOREIGN_NOTES):
        raise _refused(
            "it was requested by someone else on its owner's behalf (令牌由他人代为申请)", "hub-token-foreign"
        )


class HubTokenVerifier:
    """Checks a JupyterHub API token by asking the hub who holds it (cached for 30 s)."""

    ttl = 30.0  # a revoked hub token stops working within this many seconds
    max_cached = 1000

    def __init__(self, settings: Settings) -> None:
        self.api = settings.hub_api_url
        self._cache: dict[str, tuple[float, str]] = {}

    def owner(self, token: str) -> str:
        """The name of the token's owner, once the token itself is found acceptable."""
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        headers = {"Authorization": f"token {token}"}
        try:
            response = httpx.get(f"{self.api}/user", headers=headers, timeout=10)
            if response.status_code != 200:
                raise NotAuthenticated("The token is invalid or expired; log in again. / 令牌无效或已过期。")
            who = response.json()
            name, token_id = str(who.get("name") or ""), who.get("token_id")
            if who.get("kind") != "user" or not name or not token_id:
                raise _refused("it is not a user's API token (不是用户的 API 令牌)", "hub-token-kind")
            entry = httpx.get(
                f"{self.api}/users/{quote(name, safe='')}/tokens/{quote(str(token_id), safe='')}",
                headers=headers,
                timeout=10,
            )
        except httpx.HTTPError:
            raise NotAuthenticated(
                "The hub could not be asked about this token; try again. / 暂时无法向 Hub "
                "核实该令牌，请重试。"
            ) from None
        if entry.status_code != 200:
            raise _refused(
                "it cannot show the hub its own expiry (restricted scopes; 权限范围受限，无法核实有效期)",
                "hub-token-opaque",
            )
        check_hub_token(entry.json(), name)
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), name)
        return name


def _current(person: Person | None, username: str) -> Person:
    if person is None or not person.enabled:
        raise NotAuthenticated(
            f"The account {username} is disabled or no longer exists; ask the data bureau. "
            "/ 该账号已停用或不存在，请联系数据局。",
            reason="account-disabled",
        )
    return person


class TokenVerifier:
    """Checks Keycloak access tokens (and JupyterHub API tokens) for the gateway."""

    def __init__(self, settings: Settings, directory: Directory | None = None) -> None:
        self.issuer = settings.issuer
        self._jwks = jwt.PyJWKClient(f"{settings.oidc_internal}/certs", lifespan=300)
        self.hub = HubTokenVerifier(settings)
        self.directory = directory or Directory(settings)

    def claims(self, token: str) -> dict[str, Any]:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            return dict(
                jwt.decode(
                    token,
                    key.key,
                    algorithms=["RS256"],
                    audience=GATEWAY_CLIENT_ID,
                    issuer=self.issuer,
                    options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                )
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated(
                "Your login has expired; log in again. / 登录已过期，请重新登录。", reason="token-expired"
            ) from None
        except jwt.InvalidAudienceError:
            raise NotAuthenticated(
                "This token was not issued for the Data Lab gateway; log in again. "
                "/ 此令牌并非为本实验室签发。",
                reason="token-audience",
            ) from None
        except jwt.InvalidIssuerError:
            raise NotAuthenticated(
                f"This token was not issued by {self.issuer}; log in again. "
                "/ 此令牌并非由本实验室的统一身份认证签发。",
                reason="token-issuer",
            ) from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError):
            raise NotAuthenticated(
                "The token is invalid (bad signature or format); log in again. "
                "/ 令牌无效（签名或格式错误），请重新登录。",
                reason="token-invalid",
            ) from None

    def caller(self, token: str) -> Caller:
        if token.count(".") != 2:  # not a JWT: a JupyterHub API token
            name = self.hub.owner(token)
            person = _current(self.directory.person(name), name)
            return Caller(person.username, person.org if "analyst" in person.roles else None, person.roles)
        claims = self.claims(token)
        username = str(claims.get("preferred_username") or claims["sub"])
        person = _current(self.directory.person(username), username)
        if person.id != claims["sub"]:
            raise NotAuthenticated(
                "This token's subject is not the account of that name; log in again. "
                "/ 令牌与账号不符，请重新登录。",
                reason="token-subject",
            )
        org = claims.get("org")
        return self.current(Caller(username, str(org) if org else None, frozenset(claims.get("roles", []))))

    def current(self, caller: Caller) -> Caller:
        """``caller`` as far as Keycloak still agrees now: refused if disabled, lost org/roles dropped."""
        person = _current(self.directory.person(caller.username), caller.username)
        roles = frozenset(r for r in caller.roles if r in ROLES) & person.roles
        org = caller.org if caller.org in person.orgs else None
        return Caller(caller.username, org, roles)
