"""JupyterHub's configuration, as a function of ``Settings``.

``hub_config.py`` at the repository root only calls ``configure(c, load_settings())``;
everything else is here, testable against a bare ``traitlets.config.Config()``.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

from lab import iam, vault
from lab.hub import pages, servers
from lab.hub.auth import OPERATOR_ROLE, REFUSED, subdomain_hook
from lab.hub.login import record_login
from lab.registry.organisations import Statuses
from lab.settings import Settings
from lab.stack.install import proxy_binary

GATEWAY_SERVICE = "gateway"
IDLE_TIMEOUT = 3600  # seconds of inactivity before the culler stops a notebook server
TOKEN_MAX_SECONDS = iam.HUB_TOKEN_MAX_SECONDS  # every hub API and OAuth token expires within this


def user_url(settings: Settings, name: str) -> str:
    """Where a browser reaches ``name``'s server: ``http://<name>.<domain>:<port>/user/<name>/``."""
    host = subdomain_hook(name, settings.domain, "user")
    return f"http://{host}:{settings.ports.hub}/user/{quote(name, safe='@~')}/"


def configure(c: Any, settings: Settings) -> None:
    """Set JupyterHub's traits on config object ``c``."""
    hub_dir = settings.home / "hub"
    # The proxy listens on 127.0.0.1; browsers reach the hub at settings.public_url and each
    # user's server on its own subdomain of it (host routing in the proxy).
    c.JupyterHub.bind_url = settings.bind_url
    c.JupyterHub.subdomain_host = settings.subdomain_host
    c.JupyterHub.subdomain_hook = subdomain_hook
    c.JupyterHub.hub_bind_url = settings.url("hub_api")
    c.JupyterHub.db_url = f"sqlite:///{hub_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret = bytes.fromhex(vault.secret(settings, "hub-cookie-secret", nbytes=32))
    # Sandboxes die with the hub (bwrap --die-with-parent); stopping the hub stops them cleanly.
    c.JupyterHub.cleanup_servers = True

    c.JupyterHub.proxy_class = "lab.hub.spawner.proxy.UnixSocketProxy"
    c.ConfigurableHTTPProxy.api_url = settings.url("proxy_api")
    c.ConfigurableHTTPProxy.auth_token = vault.secret(settings, "proxy-auth-token")
    c.ConfigurableHTTPProxy.command = [str(proxy_binary(settings))]
    c.ConfigurableHTTPProxy.pid_file = str(hub_dir / "proxy.pid")

    # The hub's own pages branded and in 中文 and English (lab.hub.pages, lab/hub/templates).
    c.JupyterHub.template_paths = [str(pages.TEMPLATES)]
    c.JupyterHub.template_vars = pages.template_vars(settings)

    _authenticator(c, settings)
    _spawner(c, settings)

    c.JupyterHub.services = [
        {
            "name": GATEWAY_SERVICE,
            "url": settings.url("gateway"),
            # its token stops a suspended organisation's servers (role lab-steward below)
            "api_token": vault.secret(settings, servers.TOKEN_SECRET),
            "display": True,
            "info": {"description": "Data Lab gateway / 数据网关"},
        },
        {
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={IDLE_TIMEOUT}"],
        },
    ]
    c.JupyterHub.load_roles = [
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        },
        {"name": "lab-steward", "scopes": list(servers.STEWARD_SCOPES), "services": [GATEWAY_SERVICE]},
        # Operators (hub group filled from Keycloak's operator role at login): no tokens,
        # no access:servers, no user or group administration.
        dict(OPERATOR_ROLE),
    ]


def _authenticator(c: Any, settings: Settings) -> None:
    """Log in through Keycloak (OpenID Connect, realm ``datalab``)."""
    oidc, internal = settings.oidc_public, settings.oidc_internal  # browsers' and the hub's own
    c.JupyterHub.authenticator_class = "lab.hub.auth.LabAuthenticator"
    auth = c.LabAuthenticator
    auth.client_id = iam.HUB_CLIENT_ID
    auth.client_secret = vault.secret(settings, "hub-client-secret")
    auth.oauth_callback_url = f"{settings.hub_url}/hub/oauth_callback"
    auth.authorize_url = f"{oidc}/auth"
    auth.token_url = f"{internal}/token"
    auth.userdata_url = f"{internal}/userinfo"
    auth.logout_redirect_url = f"{oidc}/logout?client_id={iam.HUB_CLIENT_ID}"
    auth.scope = ["openid", "profile", "email"]
    auth.username_claim = "preferred_username"
    auth.login_service = "Keycloak · 统一身份认证"
    auth.manage_groups = True
    auth.auth_state_groups_key = "oauth_user.groups"
    auth.enable_auth_state = True
    auth.allow_all = False
    # The registry's active organisations, re-read every few seconds: one added or suspended
    # with `datalab org` counts at the next login, without restarting the hub.
    auth.approved_organisations_source = Statuses(settings).active_among
    auth.custom_403_message = REFUSED
    auth.auto_login = True
    auth.refresh_pre_spawn = True
    auth.post_auth_hook = record_login  # every notebook login is an audit record
    # Nobody is a hub admin; operators get the hub role lab-operator (lab.hub.auth).
    auth.admin_users = set()
    c.JupyterHub.token_expires_in_max_seconds = TOKEN_MAX_SECONDS
    c.JupyterHub.oauth_token_expires_in = TOKEN_MAX_SECONDS


def _spawner(c: Any, settings: Settings) -> None:
    """Each analyst's JupyterLab in a bubblewrap sandbox (lab.hub.spawner)."""
    c.JupyterHub.spawner_class = "lab.hub.spawner.spawner.SandboxSpawner"
    spawner = c.SandboxSpawner
    spawner.default_url = "/lab/tree/welcome.ipynb"
    spawner.mem_limit = "2G"
    spawner.cpu_limit = 1.0
    spawner.pids_limit = 512
    spawner.poll_interval = 5
    spawner.start_timeout = 60
    spawner.http_timeout = 30
    # Show the (bilingual) progress page at once rather than a browser spinner for up to 10 s.
    c.JupyterHub.slow_spawn_timeout = 0
