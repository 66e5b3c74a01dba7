"""Who is who right now, asked of Keycloak itself (its admin API), briefly cached.

Claims in an access token are what Keycloak said when it issued the token; an account
disabled or moved out of its organisation since then still holds a valid token for a
few minutes, and a JupyterHub API token says nothing about organisations at all. The
gateway therefore asks :class:`Directory` on every call (answers are cached for
:data:`TTL_SECONDS`), and the sweeper in ``lab.gateway.revocation`` uses
:meth:`Directory.members` to keep MinIO's members policies current.

Organisations are the realm's groups named after the *active* organisations of the
registry (``lab.registry.organisations``, re-read every ``Statuses.ttl`` seconds): a
suspended organisation's analysts belong to no organisation here. Roles are the realm
roles ``analyst``, ``operator``, ``auditor``. Nothing here reads JupyterHub's
groups or admin flag: those can be edited by others than Keycloak's administrators.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab import demo
from lab.errors import NotAuthenticated
from lab.registry.organisations import Statuses
from lab.settings import Settings

TTL_SECONDS = 20.0  # a change in Keycloak reaches the gateway within this many seconds
ROLES = frozenset(demo.ROLES)


@dataclass(frozen=True)
class Person:
    """One Keycloak account as it is now."""

    id: str
    username: str
    enabled: bool
    orgs: frozenset[str]
    roles: frozenset[str]

    @property
    def org(self) -> str | None:
        """The person's organisation if they belong to exactly one, else None."""
        return next(iter(self.orgs)) if len(self.orgs) == 1 else None


class Directory:
    """Keycloak's current view of people and organisations, cached for ``ttl`` seconds."""

    def __init__(
        self,
        settings: Settings,
        *,
        ttl: float = TTL_SECONDS,
        admin: Callable[[], Any] | None = None,
        statuses: Statuses | None = None,
    ) -> None:
        self.settings = settings
        self.ttl = ttl
        self._make_admin = admin
        self._kc: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Person | None]] = {}
        self.statuses = statuses or Statuses(settings)

    def _admin(self) -> Any:
        if self._kc is None:
            if self._make_admin is not None:
                self._kc = self._make_admin()
            else:
                from lab import iam  # python-keycloak is only needed once someone is looked up

                self._kc = iam.admin(self.settings)
        return self._kc

    def person(self, username: str) -> Person | None:
        """The account named ``username``, or None if Keycloak has none."""
        now = time.monotonic()
        cached = self._cache.get(username)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        with self._lock:
            try:
                found = self._lookup(username)
            except Exception as exc:  # Keycloak unreachable or refusing: fail closed, never a 5xx
                self._kc = None  # log in again next time
                raise NotAuthenticated(
                    "Keycloak could not be asked who you are; try again in a minute. "
                    "/ 暂时无法向统一身份认证确认您的身份，请稍后重试。",
                    detail=f"directory lookup failed: {type(exc).__name__}",
                    reason="directory-unavailable",
                ) from None
            if len(self._cache) > 5000:
                self._cache.clear()
            self._cache[username] = (time.monotonic(), found)
        return found

    def _lookup(self, username: str) -> Person | None:
        kc = self._admin()
        users = kc.get_users({"username": username, "exact": True})
        user = next((u for u in users if u.get("username") == username.lower()), None)
        if user is None:
            return None
        groups = {str(g.get("name")) for g in kc.get_user_groups(user["id"])}
        roles = {str(r.get("name")) for r in kc.get_realm_roles_of_user(user["id"])}
        return Person(
            id=str(user["id"]),
            username=str(user["username"]),
            enabled=bool(user.get("enabled")),
            orgs=self.statuses.active_among(groups),
            roles=frozenset(roles & ROLES),
        )

    def members(self, role: str = "analyst") -> dict[str, set[str]]:
        """For every active organisation, the ids of its enabled accounts holding ``role`` (uncached)."""
        with self._lock:
            kc = self._admin()
            holders = {str(u["id"]) for u in kc.get_realm_role_members(role, {"max": 100000})}
            found: dict[str, set[str]] = {}
            for org in sorted(self.statuses.active()):
                group = kc.get_group_by_path(f"/{org}")
                if not group or "id" not in group:
                    found[org] = set()
                    continue
                users = kc.get_group_members(group["id"], {"max": 100000})
                found[org] = {str(u["id"]) for u in users if u.get("enabled") and str(u["id"]) in holders}
            return found

    def forget(self) -> None:
        """Drop every cached answer (tests, or after a change made here)."""
        self._cache.clear()
        self.statuses.forget()
