"""The gateway's own Helm chart (deploy/gateway-chart) beside the Zero to JupyterHub values.

Rendered and linted by helm (``helm_support``), its values checked against its
``values.schema.json``, and its NetworkPolicy evaluated together with the z2jh chart's
(``netpol``): who may call the gateway, what the gateway may call, and what a notebook
cannot reach. No cluster here: this is what ``helm install`` would create and what a CNI
that enforces NetworkPolicy would allow (deploy/README.md).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from lab.errors import ConfigError
from lab.gateway import minio_audit, sessions
from lab.hub import servers
from lab.settings import GATEWAY_PREFIX, Ports, load_settings
from tests.unit.helm_support import (
    KUBE_VERSION,
    NAMESPACE,
    documents,
    find,
    helm_fixture,  # noqa: F401  (a fixture)
    helm_run,
    pod_templates,
)
from tests.unit.netpol import Pod, allowed
from tests.unit.test_chart import (
    GATEWAY_TOKEN_KEY,
    chart_fixture,  # noqa: F401  (a fixture: the z2jh chart as published)
    objects_fixture,  # noqa: F401  (a fixture: the z2jh chart rendered with deploy/ values)
    template,
)
from tests.unit.test_deploy import secret_findings

pytestmark = [pytest.mark.unit, pytest.mark.timeout(2400)]  # a cold cache builds helm first

REPO = Path(__file__).resolve().parents[2]
GATEWAY_CHART = REPO / "deploy" / "gateway-chart"
GATEWAY_VALUES = yaml.safe_load((GATEWAY_CHART / "values.yaml").read_text())
SCHEMA = json.loads((GATEWAY_CHART / "values.schema.json").read_text())
Z2JH_VALUES = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
HEALTH = f"{GATEWAY_PREFIX}/health"
# The secrets the gateway's code reads through lab.vault (besides one org-key-<org> each).
GATEWAY_SECRETS = {
    sessions.KEY_SECRET,  # gateway-session-key: every replica signs sessions with it
    "gateway-client-secret",  # lab.gateway.sessions: the console's Keycloak client
    minio_audit.TOKEN_SECRET,  # minio-audit-token: MinIO's audit webhook
    "minio-root-password",  # lab.storage: buckets and per-organisation policies
    "keycloak-admin-password",  # lab.iam (onboarding, suspension: end sessions)
    servers.TOKEN_SECRET,  # gateway-hub-token: the hub service token (role lab-steward)
}


def render(helm: Path, home: Path, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    argv = ["template", "datalab-gateway", str(GATEWAY_CHART), "--namespace", NAMESPACE]
    argv += ["--kube-version", KUBE_VERSION]
    if overrides:
        extra = home / "overrides.yaml"
        extra.write_text(yaml.safe_dump(overrides))
        argv += ["--values", str(extra)]
    result = helm_run(helm, home, *argv)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


@pytest.fixture(name="gateway", scope="module")
def gateway_fixture(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, tmp_path_factory.mktemp("gateway-helm"))


def _pod(gateway: list[dict[str, Any]]) -> dict[str, Any]:
    return find(gateway, "Deployment", "datalab-gateway")["spec"]["template"]


# -- rendering, lint, schema -------------------------------------------------------------


def test_the_chart_lints_and_renders_a_deployment_service_and_policy(
    helm: Path, gateway: list[dict[str, Any]], tmp_path: Path
) -> None:
    lint = helm_run(helm, tmp_path, "lint", "--strict", str(GATEWAY_CHART), "--namespace", NAMESPACE)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "0 chart(s) failed" in lint.stdout
    chart = yaml.safe_load((GATEWAY_CHART / "Chart.yaml").read_text())
    assert chart["name"] == "datalab-gateway" and chart["version"] == "0.1.0"
    assert sorted((o["kind"], o["metadata"]["name"]) for o in gateway) == [
        ("Deployment", "datalab-gateway"),
        ("NetworkPolicy", "datalab-gateway"),
        ("Service", "lab-gateway"),
    ]
    # One replica needs no disruption budget; two or more get one that keeps one serving.
    scaled = render(helm, tmp_path, {"replicas": 3})
    assert find(scaled, "Deployment", "datalab-gateway")["spec"]["replicas"] == 3
    budget = find(scaled, "PodDisruptionBudget", "datalab-gateway")["spec"]
    assert budget["minAvailable"] == 1
    labels = _pod(scaled)["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()  # it covers the gateway's pods


def test_the_values_pass_the_charts_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert list(jsonschema.Draft7Validator(SCHEMA).iter_errors(GATEWAY_VALUES)) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"replicaCount": 2}, "replicaCount"),  # misspelt: replicas would stay 1 unnoticed
        ({"networkPolicy": {"enabled": False}}, "enabled"),
        # null removes the key (helm merges maps, so {} would keep the chart's labels)
        ({"networkPolicy": {"egress": {"postgresql": {"podLabels": None}}}}, "podLabels"),
        ({"networkPolicy": {"egress": {"internet": {"podLabels": {"a": "b"}, "ports": []}}}}, "internet"),
        ({"service": {"name": "datalab-gateway"}}, "name"),
        ({"endpoints": {"hubApiUrl": "http://hub:8081/"}}, "hubApiUrl"),
    ],
)
def test_helm_refuses_values_the_schema_forbids(
    helm: Path, tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(yaml.safe_dump(change))
    argv = [
        "template",
        "datalab-gateway",
        str(GATEWAY_CHART),
        "--namespace",
        NAMESPACE,
        "--values",
        str(values),
    ]
    refused = helm_run(helm, tmp_path, *argv)
    assert refused.returncode != 0
    assert "values don't meet the specifications of the schema" in refused.stderr
    assert named in refused.stderr


def test_the_chart_holds_no_secret() -> None:
    assert secret_findings(GATEWAY_VALUES) == []
    leak = copy.deepcopy(GATEWAY_VALUES)
    leak["secrets"]["database"] = "postgresql+psycopg://datalab:hunter2@pg/datalab"
    assert secret_findings(leak)
    for path in (GATEWAY_CHART / "templates").iterdir():
        text = path.read_text()
        assert "kind: Secret\n" not in text and "stringData" not in text, path.name


# -- the pod -----------------------------------------------------------------------------


def test_the_gateway_runs_non_root_on_a_read_only_root_with_read_only_secrets(
    gateway: list[dict[str, Any]],
) -> None:
    pod = _pod(gateway)["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False  # no Kubernetes API token in the pod
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": HEALTH, "port": "http"}, probe
    assert '@router.get("/health")' in (REPO / "lab" / "gateway" / "app.py").read_text()

    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e for e in container["env"]}
    secrets_dir = env["DATALAB_SECRETS_DIR"]["value"]
    assert env["DATALAB_SECRETS_READONLY"]["value"] == "1"
    assert env["DATALAB_AUDIT_ANCHOR"]["value"] == "object"  # replicas share the chain's head
    # DATALAB_HOME's secrets/ (what lab.vault reads today) is the read-only mount.
    assert secrets_dir == env["DATALAB_HOME"]["value"] + "/secrets"
    assert mounts[secrets_dir]["readOnly"] is True
    # Everything else the gateway writes is a volume of its own (nothing on the image's root).
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/srv/datalab", "/srv/datalab/gateway/raw-cache", "/tmp"}
    assert all("emptyDir" in volumes[mounts[p]["name"]] for p in writable)

    projected = volumes[mounts[secrets_dir]["name"]]["projected"]
    assert projected["defaultMode"] == 0o440
    sources = {
        s["secret"]["name"]: {i["key"]: i["path"] for i in s["secret"]["items"]} for s in projected["sources"]
    }
    files = {path for items in sources.values() for path in items.values()}
    orgs = {f"org-key-{org}" for org in GATEWAY_VALUES["secrets"]["organisations"]}
    assert files == GATEWAY_SECRETS | orgs
    # The hub service token: the very key of hub.existingSecret that the hub reads.
    assert Z2JH_VALUES["hub"]["existingSecret"] == "datalab-hub-secret"
    assert sources["datalab-hub-secret"] == {GATEWAY_TOKEN_KEY: servers.TOKEN_SECRET}
    # The ledger's PostgreSQL URL from a Secret, never a value in the chart.
    assert env["DATALAB_DB_URL"] == {
        "name": "DATALAB_DB_URL",
        "valueFrom": {"secretKeyRef": {"name": "datalab-gateway-env", "key": "DATALAB_DB_URL"}},
    }
    assert not any(
        "127.0.0.1" in str(e.get("value", "")) or "localhost" in str(e.get("value", "")) for e in env.values()
    )


def _service_links(name: str, ports: list[dict[str, Any]]) -> set[str]:
    """The variables Kubernetes sets in every pod of the namespace for the Service ``name``."""
    prefix = name.upper().replace("-", "_")
    out = {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
    for port in ports:
        if "name" in port:
            out.add(f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
        tcp = f"{prefix}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
        out |= {tcp, f"{tcp}_PROTO", f"{tcp}_PORT", f"{tcp}_ADDR"}
    return out


def test_no_service_link_variable_can_shadow_a_lab_setting(
    gateway: list[dict[str, Any]], objects: list[dict[str, Any]]
) -> None:
    """Kubernetes gives every pod of the namespace <SERVICE>_PORT=tcp://ip:port for each Service;
    a Service named datalab-gateway would set DATALAB_GATEWAY_PORT, which load_settings refuses:
    the hub's login hook (lab.hub.login, in the z2jh hub pod, links on) would fail every login."""
    with pytest.raises(ConfigError, match="DATALAB_GATEWAY_PORT"):
        load_settings({"DATALAB_GATEWAY_PORT": "tcp://10.96.0.12:8010"})
    read = {Ports.env_name(p) for p in vars(Ports())}
    for path in (REPO / "lab").rglob("*.py"):
        read |= set(re.findall(r"DATALAB_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    services = [o for o in gateway + objects if o["kind"] == "Service"]
    links = {name for o in services for name in _service_links(o["metadata"]["name"], o["spec"]["ports"])}
    # CloudNativePG's Services for the ledger's cluster datalab-pg (step 2) are in the namespace too.
    for suffix in ("rw", "ro", "r"):
        links |= _service_links(f"datalab-pg-{suffix}", [{"port": 5432, "name": "postgres"}])
    assert "LAB_GATEWAY_PORT" in links and read & links == set()
    assert _pod(gateway)["spec"]["enableServiceLinks"] is False
    # The z2jh values name the same Service for the hub's route and the notebooks.
    service = find(gateway, "Service", GATEWAY_VALUES["service"]["name"])
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    assert Z2JH_VALUES["hub"]["services"]["gateway"]["url"] == f"http://{name}:{port}"
    assert Z2JH_VALUES["singleuser"]["extraEnv"]["DATALAB_GATEWAY_URL"] == (
        f"http://{name}.{NAMESPACE}.svc.cluster.local:{port}{GATEWAY_PREFIX}"
    )


# -- network policies, evaluated ---------------------------------------------------------

GATEWAY_PORT = 8010
# A notebook pod as KubeSpawner labels it under these values: the chart's common labels
# (jupyterhub_config.py), KubeSpawner's component and singleuser.extraLabels' default.
NOTEBOOK_LABELS = {
    "app": "jupyterhub",
    "app.kubernetes.io/name": "jupyterhub",
    "release": "datalab",
    "app.kubernetes.io/instance": "datalab",
    "app.kubernetes.io/managed-by": "kubespawner",
    "component": "singleuser-server",
    "hub.jupyter.org/network-access-hub": "true",
}
POSTGRES = Pod("datalab", {"cnpg.io/cluster": "datalab-pg", "cnpg.io/instanceRole": "primary"}, "10.244.3.9")
KEYCLOAK = Pod(
    "keycloak",
    {
        "app": "keycloak",
        "app.kubernetes.io/instance": "keycloak",
        "app.kubernetes.io/managed-by": "keycloak-operator",
    },
    "10.244.2.5",
    {"http": 8080, "https": 8443, "management": 9000},
)
MINIO = Pod("minio-datalab", {"v1.min.io/tenant": "datalab", "v1.min.io/pool": "pool-0"}, "10.244.4.3")
DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, "10.244.0.10")
INTERNET = Pod("elsewhere", {}, "93.184.216.34")


@pytest.fixture(name="policies", scope="module")
def policies_fixture(objects: list[dict[str, Any]], gateway: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every NetworkPolicy of both releases, in the namespace they are installed in."""
    return _in_namespace(objects + gateway)


def _in_namespace(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for o in objects:
        if o["kind"] == "NetworkPolicy":
            o = copy.deepcopy(o)
            o["metadata"].setdefault("namespace", NAMESPACE)
            out.append(o)
    return out


@pytest.fixture(name="pods", scope="module")
def pods_fixture(objects: list[dict[str, Any]], gateway: list[dict[str, Any]]) -> dict[str, Pod]:
    """The hub, proxy and gateway pods as rendered (labels, named ports), and a notebook."""

    def pod(obj: dict[str, Any], ip: str) -> Pod:
        ports = {
            p["name"]: p["containerPort"]
            for c in obj["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
            if "name" in p
        }
        return Pod(NAMESPACE, obj["spec"]["template"]["metadata"]["labels"], ip, ports)

    templates = pod_templates(objects)
    assert {"Deployment/hub", "Deployment/proxy", "Deployment/user-scheduler"} <= set(templates)
    return {
        "hub": pod(find(objects, "Deployment", "hub"), "10.244.1.2"),
        "proxy": pod(find(objects, "Deployment", "proxy"), "10.244.1.3"),
        "scheduler": pod(find(objects, "Deployment", "user-scheduler"), "10.244.1.4"),
        "gateway": pod(find(gateway, "Deployment", "datalab-gateway"), "10.244.1.5"),
        "notebook": Pod(NAMESPACE, NOTEBOOK_LABELS, "10.244.5.6", {"notebook-port": 8888}),
    }


def test_the_gateway_is_called_only_by_the_hub_proxy_notebooks_and_minio(
    policies: list[dict[str, Any]], pods: dict[str, Pod]
) -> None:
    gateway = pods["gateway"]
    callers = {"hub": pods["hub"], "proxy": pods["proxy"], "notebook": pods["notebook"], "minio": MINIO}
    for name, caller in callers.items():
        assert allowed(policies, caller, gateway, GATEWAY_PORT), name
        assert not allowed(policies, caller, gateway, 8011), name  # its port only
    for name, stranger in {
        "user-scheduler": pods["scheduler"],
        "postgresql": POSTGRES,
        "keycloak": KEYCLOAK,
        "another namespace": Pod(
            "elsewhere", {"app": "jupyterhub", "component": "hub", "release": "datalab"}
        ),
    }.items():
        assert not allowed(policies, stranger, gateway, GATEWAY_PORT), name
    # The policy's peers, exactly: each names a namespace and a non-empty pod selector.
    spec = find(policies, "NetworkPolicy", "datalab-gateway")["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "datalab-gateway"
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}] and gateway.ports["http"] == GATEWAY_PORT
    assert all(
        p["podSelector"]["matchLabels"] and p["namespaceSelector"]["matchLabels"] for p in rule["from"]
    )
    assert len(rule["from"]) == len(callers)


def test_the_gateway_reaches_only_keycloak_minio_the_hub_postgresql_and_dns(
    policies: list[dict[str, Any]], pods: dict[str, Pod]
) -> None:
    gateway = pods["gateway"]
    # The hub's own policy (z2jh values) must admit the gateway too: its hub-token check.
    reaches = [
        (pods["hub"], 8081, "TCP"),
        (KEYCLOAK, 8080, "TCP"),
        (MINIO, 9000, "TCP"),
        (POSTGRES, 5432, "TCP"),
        (DNS, 53, "UDP"),
        (DNS, 53, "TCP"),
    ]
    for destination, port, protocol in reaches:
        assert allowed(policies, gateway, destination, port, protocol), (destination.namespace, port)
    for destination, port in [
        (KEYCLOAK, 9000),  # Keycloak's management port
        (pods["proxy"], 8001),  # the proxy's API
        (pods["notebook"], 8888),
        (INTERNET, 443),
        (Pod("kube-system", {"component": "kube-apiserver"}, "10.96.0.1"), 443),
        (Pod("datalab", {"cnpg.io/cluster": "another-pg"}, "10.244.3.10"), 5432),
    ]:
        assert not allowed(policies, gateway, destination, port), (destination.labels, port)
    spec = find(policies, "NetworkPolicy", "datalab-gateway")["spec"]
    assert len(spec["egress"]) == 5
    assert all(r["to"] and r["ports"] for r in spec["egress"])  # no rule without peers or ports
    assert not any("ipBlock" in peer for r in spec["egress"] for peer in r["to"])


def test_the_hub_admits_the_gateway_and_the_labelled_pods_only(
    policies: list[dict[str, Any]], pods: dict[str, Pod]
) -> None:
    hub = pods["hub"]
    assert allowed(policies, pods["gateway"], hub, 8081)
    assert allowed(policies, pods["proxy"], hub, 8081) and allowed(policies, pods["notebook"], hub, 8081)
    assert not allowed(policies, pods["scheduler"], hub, 8081)
    assert not allowed(policies, Pod(NAMESPACE, {"app.kubernetes.io/name": "other"}), hub, 8081)
    assert not allowed(policies, pods["gateway"], hub, 8001)


def test_notebooks_reach_only_the_hub_proxy_gateway_minio_and_dns(
    policies: list[dict[str, Any]], pods: dict[str, Pod]
) -> None:
    notebook = pods["notebook"]
    for destination, port, protocol in [
        (pods["hub"], 8081, "TCP"),
        (pods["proxy"], 8000, "TCP"),
        (pods["gateway"], GATEWAY_PORT, "TCP"),
        (MINIO, 9000, "TCP"),
        (DNS, 53, "UDP"),
    ]:
        assert allowed(policies, notebook, destination, port, protocol), destination.labels
    for destination, port in [
        (INTERNET, 443),
        (Pod("kube-system", {"k8s-app": "metrics-server"}, "10.244.0.11"), 443),
        (Pod("datalab", {"app": "whatever"}, "10.244.1.9"), 53),
        (pods["proxy"], 8001),
        (pods["scheduler"], 10251),
        (Pod("elsewhere", {}, "169.254.169.254"), 80),  # the cloud metadata server
    ]:
        assert not allowed(policies, notebook, destination, port), (destination.labels, port)


@pytest.mark.security
def test_a_notebook_cannot_reach_postgresql_or_keycloak(
    policies: list[dict[str, Any]], pods: dict[str, Pod], helm: Path, chart: Path, tmp_path: Path
) -> None:
    """The attacker runs code in a notebook and dials the ledger's database and Keycloak
    (its admin API and management port) directly, past the gateway's checks."""
    notebook = pods["notebook"]
    targets = [(POSTGRES, 5432), (KEYCLOAK, 8080), (KEYCLOAK, 8443), (KEYCLOAK, 9000)]
    for destination, port in targets:
        assert not allowed(policies, notebook, destination, port), (destination.namespace, port)
    # The same pods under the chart's default egress rules (private IPs allowed): the
    # evaluator sees the hole these values close.
    defaults = tmp_path / "chart-defaults.yaml"
    rules = dict.fromkeys(Z2JH_VALUES["singleuser"]["networkPolicy"]["egressAllowRules"], True)
    defaults.write_text(yaml.safe_dump({"singleuser": {"networkPolicy": {"egressAllowRules": rules}}}))
    rendered = template(helm, chart, defaults)
    assert rendered.returncode == 0, rendered.stderr
    open_policies = _in_namespace(documents(rendered.stdout))
    for destination, port in targets:
        assert allowed(open_policies, notebook, destination, port), (destination.namespace, port)
