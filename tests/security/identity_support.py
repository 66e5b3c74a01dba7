"""Helpers for the identity and credential attacks: hub sessions without a browser, and
snapshots of what must not change (grants, budgets, applications, the audit chain)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from lab import iam, vault
from lab.extracts import ledger as open_ledger
from lab.settings import Settings
from tests.integration.console_client import browser_like_client

_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"')


def api(settings: Settings) -> str:
    return f"{settings.hub_url}/services/gateway/api"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class HubSession:
    """A person logged in to JupyterHub through Keycloak's real login form (httpx, no browser)."""

    def __init__(self, settings: Settings, username: str) -> None:
        self.settings = settings
        self.username = username
        self.client = browser_like_client(follow_redirects=True, timeout=120)
        page = self.client.get(f"{settings.hub_url}/hub/login", params={"next": "/hub/home"})
        match = _ACTION.search(page.text)
        assert match, f"no Keycloak login form (HTTP {page.status_code})"
        for cookie in self.client.cookies.jar:  # Keycloak marks them Secure; 127.0.0.1 counts as secure
            cookie.secure = False
        done = self.client.post(
            html.unescape(match[1]),
            data={
                "username": username,
                "password": vault.secret(settings, "demo-password"),
                "credentialId": "",
            },
        )
        assert done.status_code == 200, done.status_code
        assert "/hub/" in str(done.url), "the hub did not take the login"

    def hub_api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The hub's REST API with the session cookie and the hub's XSRF token."""
        xsrf = self.client.cookies.get("_xsrf", path="/hub/") or self.client.cookies.get("_xsrf") or ""
        headers = {"X-XSRFToken": xsrf, "Referer": f"{self.settings.hub_url}/hub/home"}
        return self.client.request(
            method, f"{self.settings.hub_url}/hub/api{path}", headers=headers, **kwargs
        )

    def close(self) -> None:
        self.client.close()


@contextmanager
def hub_session(settings: Settings, username: str) -> Iterator[HubSession]:
    session = HubSession(settings, username)
    try:
        yield session
    finally:
        session.close()


@dataclass(frozen=True)
class Snapshot:
    """What an attack must leave as it was: grants with their budgets, applications, the chain."""

    grants: tuple[Any, ...]
    applications: tuple[Any, ...]
    chain_ok: bool

    @staticmethod
    def take(settings: Settings) -> Snapshot:
        with open_ledger(settings) as book:
            grants = tuple(
                (g.id, g.organisation, g.dataset, g.revoked_at, book.budget(g.id).epsilon_spent)
                for g in book.list_grants()
            )
            applications = tuple((a.id, a.state, a.decided_by) for a in book.list_applications())
            return Snapshot(grants, applications, book.verify().ok)


def keycloak_user(settings: Settings, username: str) -> dict[str, Any]:
    kc = iam.admin(settings)
    user_id = kc.get_user_id(username)
    assert user_id, username
    return dict(kc.get_user(user_id))
