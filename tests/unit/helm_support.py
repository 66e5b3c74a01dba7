"""What the chart tests share: helm (built once into the cache), ``helm template`` and
``helm lint`` with no user configuration, and look-ups in the rendered objects.

Used by ``test_chart.py`` (the Zero to JupyterHub chart) and ``test_gateway_chart.py``
(the gateway's own chart, ``deploy/gateway-chart``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.settings import load_settings
from lab.stack import install
from lab.stack.ui import Progress

__all__ = [
    "KUBE_VERSION",
    "NAMESPACE",
    "RELEASE",
    "documents",
    "find",
    "helm_fixture",
    "helm_run",
    "pod_templates",
]

RELEASE = NAMESPACE = "datalab"
KUBE_VERSION = "1.28.0"  # the lowest the z2jh chart accepts (kubeVersion >= 1.28)


@pytest.fixture(name="helm", scope="module")
def helm_fixture() -> Path:
    """The helm binary (``lab.stack.install.helm``: ``go install``, cached)."""
    return install.helm(load_settings(), Progress(quiet=True))


def helm_run(helm: Path, home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``helm <argv>`` with a private HOME, so no user-level helm configuration applies."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
    env |= {"HELM_CACHE_HOME": str(home), "HELM_CONFIG_HOME": str(home), "HELM_DATA_HOME": str(home)}
    return subprocess.run([str(helm), *argv], capture_output=True, text=True, env=env, timeout=300)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """``Kind/name`` of every workload and the labels of its pods."""
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    }


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]
