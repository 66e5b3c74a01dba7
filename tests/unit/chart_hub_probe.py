"""Run by tests/unit/test_chart.py with the chart's hub package set (not the lab's venv).

Loads the chart's own ``jupyterhub_config.py`` the way JupyterHub does (the rendered hub
ConfigMap and Secrets mounted at ``/usr/local/etc/jupyterhub``), builds the authenticator
from the result, runs its ``post_auth_hook`` once against a throwaway ledger, and prints
what the test asserts on as one JSON object. Nothing here prints a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import sys
from typing import Any

CONFIG = "/usr/local/etc/jupyterhub/jupyterhub_config.py"


def _digest(value: Any) -> str | None:
    """A token's SHA-256, so the test can tell which Secret it came from without printing it."""
    return hashlib.sha256(value.encode()).hexdigest() if isinstance(value, str) else None


def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _unknown(config: Any, section: str, cls: type) -> list[str]:
    return sorted(set(config[section]) - set(cls.class_traits(config=True))) if section in config else []


def main() -> None:
    import jupyterhub
    import kubespawner
    from jupyterhub.app import JupyterHub
    from jupyterhub.scopes import _check_scopes_exist
    from tornado.httpclient import AsyncHTTPClient
    from traitlets.utils.importstring import import_item

    app = JupyterHub()
    with contextlib.redirect_stdout(io.StringIO()):  # the chart prints what it loads
        app.load_config_file(CONFIG)
    c = app.config
    auth_class = import_item(c.JupyterHub.authenticator_class)
    spawner_class = import_item(c.JupyterHub.spawner_class)
    auth = auth_class(config=c)

    async def make_spawner() -> Any:  # KubeSpawner makes its API client in the hub's event loop
        return spawner_class(config=c, _mock=True)

    spawner = asyncio.run(make_spawner())
    for role in c.JupyterHub.load_roles:
        _check_scopes_exist(role["scopes"], who_for=f"role {role['name']}")

    hook = auth.post_auth_hook
    login = {"name": "li.na", "auth_state": {"oauth_user": {"org": "qilu-energy", "roles": ["analyst"]}}}
    result = hook(auth, None, login)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)

    from lab.ledger import Ledger
    from lab.settings import load_settings

    settings = load_settings()
    with Ledger(settings.ledger_url, anchor_path=settings.ledger_anchor) as ledger:
        records = [
            {"kind": str(r.kind), "actor": r.actor, "organisation": r.organisation, "details": r.details}
            for r in ledger.records()
        ]
    hook_subdomain = c.JupyterHub.subdomain_hook
    out = {
        "versions": {
            "python": "{}.{}".format(*sys.version_info[:2]),
            "jupyterhub": jupyterhub.__version__,
            "kubespawner": kubespawner.__version__,
        },
        "http_client": _name(AsyncHTTPClient.configured_class()),
        "authenticator": {
            "class": _name(auth_class),
            "bases": [_name(b) for b in auth_class.__mro__[1:3]],
            "client_id": auth.client_id,
            "client_secret_set": bool(auth.client_secret),
            "approved_organisations": sorted(auth.approved_organisations),
            "admin_role": auth.admin_role,
            "admin_users": sorted(auth.admin_users),
            "enable_auth_state": auth.enable_auth_state,
            "manage_groups": auth.manage_groups,
            "refused_page_bilingual": "ask your organisation" in auth.custom_403_message
            and "请由所在机构" in auth.custom_403_message,
            "post_auth_hook": _name(hook),
            "hook_returned_login": result is login,
        },
        "unknown_options": {
            "JupyterHub": _unknown(c, "JupyterHub", JupyterHub),
            "Authenticator": _unknown(c, "Authenticator", auth_class),
            "GenericOAuthenticator": _unknown(c, "GenericOAuthenticator", auth_class),
            "LabAuthenticator": _unknown(c, "LabAuthenticator", auth_class),
            "KubeSpawner": _unknown(c, "KubeSpawner", spawner_class),
        },
        "spawner": {
            "class": _name(spawner_class),
            "container_security_context": spawner.container_security_context,
            "allow_privilege_escalation": spawner.allow_privilege_escalation,
            "uid": spawner.uid,
            "cmd": spawner.cmd,
            "default_url": spawner.default_url,
        },
        "hub": {
            "subdomain_host": c.JupyterHub.subdomain_host,
            "subdomain_hook": _name(hook_subdomain),
            "user_host": hook_subdomain("li.na", "lab.example.org", "user"),
            "service_host": hook_subdomain("gateway", "lab.example.org", "service"),
            "token_expires_in_max_seconds": c.JupyterHub.token_expires_in_max_seconds,
            "oauth_token_expires_in": c.JupyterHub.oauth_token_expires_in,
        },
        "services": [
            {k: v for k, v in s.items() if k != "api_token"}
            | {"api_token_set": bool(s.get("api_token")), "api_token_sha256": _digest(s.get("api_token"))}
            for s in c.JupyterHub.services
        ],
        "load_roles": c.JupyterHub.load_roles,
        "ledger": records,
    }
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
