"""Pinned versions of every server the lab installs. Change them here only."""

from __future__ import annotations

KEYCLOAK_VERSION = "26.4.7"
KEYCLOAK_ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
# Keycloak 26 runs on OpenJDK 17 and 21 (its supported-configurations page).
KEYCLOAK_JAVA = (17, 21)

# MinIO's community edition is source-only and its repository is archived. Its release
# tags are not semver, and the Go module proxy reachable here serves only the final
# commit of the main branch (2026-02-12, after RELEASE.2025-10-15T17-29-55Z).
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_GO = (1, 24)

# configurable-http-proxy: pinned with its lock file in lab/stack/chp/.
CHP_VERSION = "5.3.0"
CHP_NODE = (20, 0)

# helm, to render the Zero to JupyterHub chart in tests (built from the Go module proxy).
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.0"
HELM_GO = (1, 25)

# The hub image's Python: Zero to JupyterHub 4.4.0 compiles its package set with 3.12.
CHART_HUB_PYTHON = (3, 12)
