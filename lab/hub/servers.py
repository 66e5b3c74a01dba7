"""Stopping users' notebook servers through the hub's REST API (for a suspension).

The gateway is a JupyterHub service; its token (``gateway-hub-token`` in the state directory)
holds the role ``lab-steward`` with only ``list:users``, ``read:servers`` and ``delete:servers``
(``lab.hub.config``): it can stop servers, never open them, read their files or make tokens.
A user the hub has never seen has no server (404 counts as nothing to stop).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

import httpx

from lab import vault
from lab.settings import Settings

TOKEN_SECRET = "gateway-hub-token"
STEWARD_SCOPES = ("list:users", "read:servers", "delete:servers")


def stop_servers(settings: Settings, usernames: Iterable[str], *, timeout: float = 30.0) -> list[str]:
    """Ask the hub to stop each user's default server; the users whose server was stopping or
    stopped by this call (a user without one is skipped). Raises on any other answer."""
    token = vault.secret(settings, TOKEN_SECRET)
    api = settings.hub_api_url
    stopped = []
    with httpx.Client(timeout=timeout, headers={"Authorization": f"token {token}"}) as client:
        for name in sorted(set(usernames)):
            user = client.get(f"{api}/users/{quote(name, safe='')}")
            if user.status_code == 404:
                continue
            user.raise_for_status()
            server = user.json().get("servers", {}).get("", {})
            if not (server.get("ready") or server.get("pending")):
                continue
            answer = client.delete(f"{api}/users/{quote(name, safe='')}/server")
            if answer.status_code not in (202, 204, 404):
                answer.raise_for_status()
            stopped.append(name)
    return stopped
