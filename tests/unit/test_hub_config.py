from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from lab import demo
from lab.hub.config import configure
from lab.registry.organisations import closing_registry, register
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
    # Approved now = active in the registry (read at login, no hub restart after `datalab org`).
    demo_ids = {org.id for org in demo.DEMO_ORGANISATIONS}
    assert auth.approved_organisations_source(demo_ids) == frozenset()
    with closing_registry(settings) as registry:
        register(registry, demo.DEMO_ORGANISATIONS, by="datalab-bootstrap")
        registry.suspend("zibo-credit", by="op.wang", reason="test")
    auth.approved_organisations_source.__self__.forget()
    assert auth.approved_organisations_source(demo_ids | {"nope"}) == {"qilu-energy", "sdu-research"}
    assert auth.enable_auth_state is True and auth.refresh_pre_spawn is True
    assert c.JupyterHub.spawner_class == "lab.hub.spawner.spawner.SandboxSpawner"
    assert c.JupyterHub.proxy_class == "lab.hub.spawner.proxy.UnixSocketProxy"
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000"
    assert c.ConfigurableHTTPProxy.command[0].endswith("configurable-http-proxy")
    assert [s["name"] for s in c.JupyterHub.services] == ["gateway", "idle-culler"]
    # The gateway's hub token may stop servers (a suspension) and nothing more.
    (steward,) = [r for r in c.JupyterHub.load_roles if r["name"] == "lab-steward"]
    assert steward == {"name": "lab-steward", "scopes": ["list:users", "read:servers", "delete:servers"],
                       "services": ["gateway"]}  # fmt: skip
    assert len(c.JupyterHub.services[0]["api_token"]) >= 32
    assert c.JupyterHub.services[0]["url"] == "http://127.0.0.1:8010"


def test_the_registry_source_survives_the_config_copy(tmp_path: Path) -> None:
    import copy

    c = Config()
    configure(c, load_settings({"DATALAB_HOME": str(tmp_path)}))
    source = copy.deepcopy(c).LabAuthenticator.approved_organisations_source
    assert source({"qilu-energy"}) == frozenset()  # JupyterHub deep-copies its config before it starts
