"""The four servers of the lab on one machine: how each is started and checked.

Order matters: Keycloak first (MinIO asks it for its OpenID configuration at start),
then MinIO, the gateway, and JupyterHub (which starts configurable-http-proxy itself).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lab import vault
from lab.iam import KEYCLOAK_ADMIN_USER, MINIO_CLIENT_ID
from lab.settings import GATEWAY_PREFIX, Settings
from lab.storage import MINIO_ROOT_USER, STS_DURATION


@dataclass(frozen=True)
class Installed:
    """Where the installers put each server."""

    java_home: Path
    keycloak_home: Path
    minio: Path
    proxy: Path


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class Component:
    name: str
    title: str
    ports: tuple[str, ...]
    health_path: str
    health_port: str
    start_timeout: float

    def health_url(self, settings: Settings) -> str:
        return settings.url(self.health_port, self.health_path)

    def log_file(self, settings: Settings) -> Path:
        return settings.logs_dir / f"{self.name}.log"

    def pid_file(self, settings: Settings) -> Path:
        return settings.run_dir / f"{self.name}.pid"


KEYCLOAK = Component(
    "keycloak", "Keycloak", ("keycloak", "keycloak_management"), "/health/ready", "keycloak_management", 240.0
)
MINIO = Component("minio", "MinIO", ("minio",), "/minio/health/live", "minio", 90.0)
GATEWAY = Component("gateway", "Gateway", ("gateway",), f"{GATEWAY_PREFIX}/health", "gateway", 60.0)
HUB = Component("hub", "JupyterHub + proxy", ("hub", "hub_api", "proxy_api"), "/hub/health", "hub", 90.0)

COMPONENTS = (KEYCLOAK, MINIO, GATEWAY, HUB)
BY_NAME = {c.name: c for c in COMPONENTS}


def _base_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KC_", "MINIO_", "JUPYTERHUB_"))}
    env["DATALAB_HOME"] = str(settings.home)
    env["DATALAB_CACHE"] = str(settings.cache)
    env["PYTHONPATH"] = str(settings.repo)  # the servers run this checkout's code
    return env


def launch(component: Component, settings: Settings, installed: Installed) -> Launch:
    """The command line, environment and working directory of ``component``."""
    env = _base_env(settings)
    ports = settings.ports
    home = settings.home
    if component is KEYCLOAK:
        env["JAVA_HOME"] = str(installed.java_home)
        env["KC_BOOTSTRAP_ADMIN_USERNAME"] = KEYCLOAK_ADMIN_USER
        env["KC_BOOTSTRAP_ADMIN_PASSWORD"] = vault.secret(settings, "keycloak-admin-password")
        db = home / "keycloak" / "h2" / "keycloakdb"
        argv = [
            str(installed.keycloak_home / "bin" / "kc.sh"),
            "start-dev",
            f"--http-host={settings.host}",
            f"--http-port={ports.keycloak}",
            f"--http-management-port={ports.keycloak_management}",
            "--health-enabled=true",
            "--db=dev-file",
            f"--db-url=jdbc:h2:file:{db};NON_KEYWORDS=VALUE",
        ]
        return Launch(argv, env, home / "keycloak")
    if component is MINIO:
        audit_token = vault.secret(settings, "minio-audit-token", nbytes=32)
        env.update(
            {
                "MINIO_ROOT_USER": MINIO_ROOT_USER,
                "MINIO_ROOT_PASSWORD": vault.secret(settings, "minio-root-password"),
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                "MINIO_IDENTITY_OPENID_CONFIG_URL": f"{settings.keycloak_url}/realms/{settings.realm}"
                "/.well-known/openid-configuration",
                "MINIO_IDENTITY_OPENID_CLIENT_ID": MINIO_CLIENT_ID,
                "MINIO_IDENTITY_OPENID_CLIENT_SECRET": vault.secret(settings, "minio-client-secret"),
                "MINIO_IDENTITY_OPENID_CLAIM_NAME": "policy",
                "MINIO_IDENTITY_OPENID_SCOPES": "openid",
                # Replaces any DurationSeconds an STS caller asks for (up to 365 days otherwise).
                "MINIO_STS_DURATION": STS_DURATION,
                # Every S3 request is reported to the gateway, which records extract downloads.
                "MINIO_AUDIT_WEBHOOK_ENABLE_DATALAB": "on",
                "MINIO_AUDIT_WEBHOOK_ENDPOINT_DATALAB": f"{settings.gateway_url}/minio/audit",
                "MINIO_AUDIT_WEBHOOK_AUTH_TOKEN_DATALAB": "Bearer " + audit_token,
            }
        )
        argv = [
            str(installed.minio),
            "server",
            str(home / "minio" / "data"),
            "--address",
            f"{settings.host}:{ports.minio}",
            "--quiet",
        ]
        return Launch(argv, env, home / "minio")
    if component is GATEWAY:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "lab.gateway.app:app_from_env",
            "--host",
            settings.host,
            "--port",
            str(ports.gateway),
            "--no-access-log",
        ]
        return Launch(argv, env, home / "gateway")
    if component is HUB:
        env["PATH"] = f"{installed.proxy.parent}{os.pathsep}{env.get('PATH', '')}"
        env["JUPYTERHUB_CRYPT_KEY"] = vault.secret(settings, "hub-crypt-key", nbytes=32)
        argv = [sys.executable, "-m", "jupyterhub", "-f", str(settings.repo / "hub_config.py")]
        return Launch(argv, env, home / "hub")
    raise ValueError(component.name)
