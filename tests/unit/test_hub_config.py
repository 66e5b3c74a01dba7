from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from lab.hub.config import configure
from lab.settings import load_settings

pytestmark = pytest.mark.unit


def test_hub_logs_in_through_keycloak_realm(tmp_path: Path) -> None:
    settings = load_settings({"DATALAB_HOME": str(tmp_path), "DATALAB_KEYCLOAK_PORT": "8280"})
    c = Config()
    configure(c, settings)
    auth = c.LabAuthenticator
    assert c.JupyterHub.authenticator_class == "lab.hub.auth.LabAuthenticator"
    assert auth.authorize_url == "http://127.0.0.1:8280/realms/datalab/protocol/openid-connect/auth"
    assert "openid" in auth.scope
    assert auth.username_claim == "preferred_username"
    assert auth.manage_groups is True and auth.allow_all is False
    assert auth.approved_organisations == {"qilu-energy", "zibo-credit", "sdu-research"}
    assert auth.enable_auth_state is True and auth.refresh_pre_spawn is True
    assert c.JupyterHub.spawner_class == "lab.hub.spawner.spawner.SandboxSpawner"
    assert c.JupyterHub.proxy_class == "lab.hub.spawner.proxy.UnixSocketProxy"
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000"
    assert c.ConfigurableHTTPProxy.command[0].endswith("configurable-http-proxy")
    assert [s["name"] for s in c.JupyterHub.services] == ["gateway", "idle-culler"]
    assert c.JupyterHub.services[0]["url"] == "http://127.0.0.1:8010"
