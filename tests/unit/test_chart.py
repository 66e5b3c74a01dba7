"""The real Zero to JupyterHub chart (4.4.0) with deploy/ values: rendered by helm, and its
own jupyterhub_config.py loaded with the hub image's package set plus the lab's hub code.

No cluster here: what these tests show is what ``helm install`` would create and how the
hub would configure itself from it, not that a cluster enforces it (deploy/README.md).
The chart's source is third-party material beside the repository
(``../shared/third_party/z2jh-4.4.0``); helm (``lab.stack.install.helm``) and the hub's
virtualenv (``lab.stack.install.chart_hub_env``) are built once into the cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import iam
from lab.hub.auth import OPERATOR_GROUP, OPERATOR_ROLE, subdomain_hook
from lab.hub.servers import STEWARD_SCOPES
from lab.settings import load_settings
from lab.stack import install
from lab.stack.ui import Progress
from tests.unit.helm_support import (
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    documents,
    find,
    helm_fixture,  # noqa: F401  (a fixture)
    helm_run,
    pod_templates,
)

# A cold cache builds helm (about 10 min on 2 busy cores) and the hub's venv (about 4 min)
# inside the first tests' setup: more than the suite's default timeout allows.
pytestmark = [pytest.mark.unit, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
THIRD_PARTY = REPO.parent / "shared" / "third_party" / "z2jh-4.4.0"
CHART = THIRD_PARTY / "jupyterhub"
VALUES = REPO / "deploy" / "helm" / "values.yaml"
GATEWAY_LABELS = {"app.kubernetes.io/name": "datalab-gateway"}
GATEWAY_TOKEN_KEY = "hub.services.gateway.apiToken"  # in hub.existingSecret
GATEWAY_TOKEN = "test-only-gateway-hub-token"


@pytest.fixture(name="chart", scope="module")
def chart_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart as published: its source plus ``values.schema.json``, which z2jh's release
    tooling generates from ``values.schema.yaml`` (helm reads only the JSON file, so the
    source alone renders without any schema check)."""
    assert (CHART / "Chart.yaml").is_file(), (
        f"the Zero to JupyterHub 4.4.0 chart is expected at {CHART} (shared/third_party beside the repo)"
    )
    assert not (CHART / "values.schema.json").exists()
    published = tmp_path_factory.mktemp("chart") / "jupyterhub"
    shutil.copytree(CHART, published)
    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    (published / "values.schema.json").write_text(json.dumps(schema))
    return published


def template(helm: Path, chart: Path, *extra: Path) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the z2jh chart with deploy/ values (and ``extra`` values files)."""
    argv = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    argv += ["--kube-version", KUBE_VERSION, "--values", str(VALUES)]
    for path in extra:
        argv += ["--values", str(path)]
    return helm_run(helm, chart.parent / "helm-home", *argv)


@pytest.fixture(name="objects", scope="module")
def objects_fixture(helm: Path, chart: Path) -> list[dict[str, Any]]:
    """The z2jh chart's objects as rendered with deploy/helm/values.yaml."""
    rendered = template(helm, chart)
    assert rendered.returncode == 0, rendered.stderr
    return documents(rendered.stdout)


# -- rendering and the chart's schema ----------------------------------------------------


def test_the_chart_renders_with_the_values_and_its_schema_checks_them(
    helm: Path, chart: Path, objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"] == "5.5.0"
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in (("Deployment", "hub"), ("Deployment", "proxy"), ("Ingress", "jupyterhub")):
        assert expected in kinds
    for policy in ("hub", "proxy", "singleuser"):
        assert ("NetworkPolicy", policy) in kinds
    hub = find(objects, "Deployment", "hub")["spec"]["template"]["spec"]["containers"][0]
    assert hub["image"] == "registry.example.org/datalab/hub:0.1.0"

    # helm validates every values file against the chart's values.schema.yaml while rendering:
    # a misspelt flag would otherwise leave the chart's default (internet egress) in place.
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(
        yaml.safe_dump({"singleuser": {"networkPolicy": {"egressAllowRules": {"nonPrivateIP": False}}}})
    )
    refused = template(helm, chart, misspelt)
    assert refused.returncode != 0
    assert "values don't meet the specifications of the schema" in refused.stderr
    assert "nonPrivateIP" in refused.stderr


# -- network policies --------------------------------------------------------------------


def _peers(
    rules: list[dict[str, Any]], direction: str
) -> set[tuple[str, tuple[tuple[str, str], ...], str, Any]]:
    """(namespace, pod labels, protocol, port) for every peer and port of ``rules``."""
    out = set()
    for rule in rules:
        # A rule without peers allows every address, one without ports every port.
        assert rule.get(direction) and rule.get("ports"), rule
        for peer in rule[direction]:
            assert "ipBlock" not in peer, peer
            pods = peer.get("podSelector", {}).get("matchLabels")
            assert pods, peer  # an empty or missing podSelector selects every pod
            namespace = NAMESPACE
            if "namespaceSelector" in peer:
                namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for port in rule["ports"]:
                out.add((namespace, tuple(sorted(pods.items())), port.get("protocol", "TCP"), port["port"]))
    return out


def _selects(labels: dict[str, str], pods: tuple[tuple[str, str], ...]) -> bool:
    return all(labels.get(k) == v for k, v in pods)


def test_notebook_egress_admits_only_the_hub_proxy_gateway_minio_and_dns(
    objects: list[dict[str, Any]],
) -> None:
    policy = find(objects, "NetworkPolicy", "singleuser")["spec"]
    assert policy["podSelector"]["matchLabels"]["component"] == "singleuser-server"
    assert "Egress" in policy["policyTypes"]
    templates = pod_templates(objects)

    def pods_in_release(pods: tuple[tuple[str, str], ...]) -> set[str]:
        return {name for name, labels in templates.items() if _selects(labels, pods)}

    named: dict[str, set[tuple[str, Any]]] = {}
    for namespace, pods, protocol, port in _peers(policy["egress"], "to"):
        labels = dict(pods)
        # In the release's namespace a peer is named by the chart's pods it selects.
        selected = pods_in_release(pods) if namespace == NAMESPACE else set()
        if selected in ({"Deployment/hub"}, {"Deployment/proxy"}):
            name = selected.pop().partition("/")[2]
        elif namespace == NAMESPACE and labels == GATEWAY_LABELS and not selected:
            name = "gateway"  # its own Deployment (deploy/README.md), not in this chart
        elif namespace == NAMESPACE and labels.get("component") == "autohttps" and not selected:
            name = "autohttps"  # the chart's Let's Encrypt front of the proxy: not deployed here
        elif namespace == "minio-datalab" and labels == {"v1.min.io/tenant": "datalab"}:
            name = "minio"
        elif namespace == "kube-system" and labels == {"k8s-app": "kube-dns"}:
            name = "dns"
        else:
            raise AssertionError(f"notebooks may reach {namespace}/{labels}:{port}")
        named.setdefault(name, set()).add((protocol, port))
    assert named == {
        "hub": {("TCP", 8081)},
        "proxy": {("TCP", 8000)},
        "autohttps": {("TCP", 8080), ("TCP", 8443)},
        "gateway": {("TCP", 8010)},
        "minio": {("TCP", 9000)},
        "dns": {("UDP", 53), ("TCP", 53)},
    }


def test_the_hubs_ingress_admits_the_gateway(objects: list[dict[str, Any]]) -> None:
    policy = find(objects, "NetworkPolicy", "hub")["spec"]
    hub_ports = {
        p["name"]: p["containerPort"]
        for p in find(objects, "Deployment", "hub")["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    admitted = set()
    for rule in policy["ingress"]:
        for peer in rule.get("from", []):
            labels = peer.get("podSelector", {}).get("matchLabels")
            if labels == GATEWAY_LABELS and "namespaceSelector" not in peer:
                admitted |= {hub_ports.get(p["port"], p["port"]) for p in rule["ports"]}
    assert admitted == {hub_ports["http"]} == {8081}


# -- the chart's jupyterhub_config.py with the hub image's packages ----------------------


@pytest.fixture(scope="module")
def hub_python() -> Path:
    return install.chart_hub_env(load_settings(), Progress(quiet=True))


def _data(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Secret":
        plain = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return plain | dict(obj.get("stringData") or {})
    return dict(obj["data"])


@pytest.fixture(scope="module")
def loaded(
    objects: list[dict[str, Any]], hub_python: Path, chart: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The chart's config as the hub pod loads it: ConfigMap ``hub`` at config/, Secret ``hub``
    at secret/, the operator's ``hub.existingSecret`` at existing-secret/ (mounted over
    /usr/local/etc in a private mount namespace), the Kubernetes service variables set."""
    root = tmp_path_factory.mktemp("hub-pod")
    etc = root / "etc" / "jupyterhub"
    config = _data(find(objects, "ConfigMap", "hub"))
    assert config["jupyterhub_config.py"] == (CHART / "files" / "hub" / "jupyterhub_config.py").read_text()
    for where, data in (("config", config), ("secret", _data(find(objects, "Secret", "hub")))):
        (etc / where).mkdir(parents=True)
        for key, value in data.items():
            (etc / where / key).write_text(value)
    (etc / "jupyterhub_config.py").write_text(config["jupyterhub_config.py"])
    (etc / "z2jh.py").write_text(config["z2jh.py"])
    (etc / "existing-secret").mkdir()
    existing = {"hub": {"config": {"GenericOAuthenticator": {"client_secret": "test-only-client-secret"}}}}
    (etc / "existing-secret" / "values.yaml").write_text(yaml.safe_dump(existing))
    # The gateway's hub token: operator-provided, the key the gateway chart mounts too.
    (etc / "existing-secret" / GATEWAY_TOKEN_KEY).write_text(GATEWAY_TOKEN)
    # KubeSpawner reads a cluster's address when it is made; nothing here connects to it.
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "none", "user": {}}],
        "contexts": [
            {"name": "none", "context": {"cluster": "none", "user": "none", "namespace": NAMESPACE}}
        ],
        "current-context": "none",
    }
    (root / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    state = root / "state"
    env = {
        "KUBECONFIG": str(root / "kubeconfig"),
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "HOME": str(root),
        "DATALAB_HOME": str(state),  # the login hook's ledger: SQLite in a throwaway state dir
        "POD_NAMESPACE": NAMESPACE,
        "HUB_SERVICE_PORT": "8081",
        "PROXY_API_SERVICE_PORT": "8001",
        "PROXY_PUBLIC_SERVICE_PORT": "80",
    }
    probe = Path(__file__).with_name("chart_hub_probe.py")
    script = 'mount --bind "$1" /usr/local/etc && shift && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    argv += [str(root / "etc"), str(hub_python), "-P", str(probe)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    yield json.loads(result.stdout.strip().splitlines()[-1])


def test_the_hub_runs_the_charts_jupyterhub_with_its_curl_client(loaded: dict[str, Any]) -> None:
    required = (THIRD_PARTY / "images" / "hub" / "requirements.txt").read_text()
    assert (REPO / "images" / "hub" / "requirements.txt").read_text() == required  # the image's copy
    assert loaded["versions"]["jupyterhub"] == "5.5.0" and "jupyterhub==5.5.0" in required.split()
    assert loaded["versions"]["kubespawner"] == "7.0.0"
    assert loaded["http_client"] == "tornado.curl_httpclient.CurlAsyncHTTPClient"  # pycurl is there


def test_the_lab_authenticator_is_configured_from_the_values(loaded: dict[str, Any]) -> None:
    auth = loaded["authenticator"]
    assert auth["class"] == "lab.hub.auth.LabAuthenticator"
    assert auth["bases"][0] == "oauthenticator.generic.GenericOAuthenticator"
    assert auth["client_id"] == iam.HUB_CLIENT_ID and auth["client_secret_set"]
    assert auth["approved_organisations"] and auth["admin_role"] == "operator"
    assert auth["admin_users"] == [] and auth["enable_auth_state"] and auth["manage_groups"]
    assert auth["refused_page_bilingual"]
    # Every option means something to the classes that read it (traitlets ignores the rest).
    assert loaded["unknown_options"] == dict.fromkeys(loaded["unknown_options"], [])


def test_every_notebook_login_is_recorded_by_the_post_auth_hook(loaded: dict[str, Any]) -> None:
    auth = loaded["authenticator"]
    assert auth["post_auth_hook"] == "lab.hub.login.record_login" and auth["hook_returned_login"]
    assert [(r["kind"], r["actor"], r["organisation"], r["details"]) for r in loaded["ledger"]] == [
        ("login", "li.na", "qilu-energy", {"via": "hub", "roles": ["analyst"]})
    ]


def test_notebook_pods_are_unprivileged(loaded: dict[str, Any]) -> None:
    spawner = loaded["spawner"]
    assert spawner["class"] == "kubespawner.spawner.KubeSpawner"
    context = spawner["container_security_context"]
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]} and context["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert spawner["allow_privilege_escalation"] is False and spawner["uid"] == 1000
    assert spawner["cmd"] == ["jupyterhub-singleuser"] and spawner["default_url"] == "/lab/tree/welcome.ipynb"


def test_operators_tokens_and_hosts_as_on_one_machine(loaded: dict[str, Any]) -> None:
    roles = {r["name"]: r for r in loaded["load_roles"]}
    operator = roles[OPERATOR_ROLE["name"]]
    assert set(operator["scopes"]) == set(OPERATOR_ROLE["scopes"]) and operator["groups"] == [OPERATOR_GROUP]
    assert not {"tokens", "access:servers", "admin:users", "admin:groups", "admin:auth_state"} & set(
        operator["scopes"]
    )
    hub = loaded["hub"]
    assert hub["token_expires_in_max_seconds"] == hub["oauth_token_expires_in"] == iam.HUB_TOKEN_MAX_SECONDS
    assert hub["subdomain_host"] == "https://lab.example.org"
    assert hub["subdomain_hook"] == "lab.hub.auth.subdomain_hook"
    # The same hosts as the one-machine hub (JupyterHub 6.1.1) computes: a user's own subdomain
    # (an IDNA-safe label for a name that is not one), services on the hub's host.
    assert hub["user_host"] == subdomain_hook("li.na", "lab.example.org", "user") != "lab.example.org"
    assert hub["user_host"].endswith(".lab.example.org") and hub["service_host"] == "lab.example.org"


def test_the_services_are_the_gateway_and_the_culler(loaded: dict[str, Any]) -> None:
    services = {s["name"]: s for s in loaded["services"]}
    assert set(services) == {"gateway", "jupyterhub-idle-culler"}
    gateway = services["gateway"]
    assert gateway["url"] == "http://lab-gateway:8010"
    # Its token is the one in hub.existingSecret (which the gateway mounts), not one the chart made.
    assert gateway["api_token_sha256"] == hashlib.sha256(GATEWAY_TOKEN.encode()).hexdigest()
    roles = {r["name"]: r for r in loaded["load_roles"]}
    # lab.hub.config's lab-steward, bound to the gateway: stop servers, nothing more.
    steward = roles["lab-steward"]
    assert steward["services"] == ["gateway"] and steward.get("users", []) == steward.get("groups", []) == []
    assert sorted(steward["scopes"]) == sorted(STEWARD_SCOPES)
    culler = roles["jupyterhub-idle-culler"]
    assert culler["services"] == ["jupyterhub-idle-culler"] and "admin:users" not in culler["scopes"]
