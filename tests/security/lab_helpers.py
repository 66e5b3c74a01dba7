"""Helpers shared by the security tests: tokens, the gateway's URL, a second gateway process."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from lab.settings import Settings
from lab.stack import procs
from tests.integration import keycloak_test_client as kct


def api(settings: Settings) -> str:
    return f"{settings.hub_url}/services/gateway/api"


def headers(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {kct.access_token(settings, user)}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(settings: Settings, workdir: Path, name: str, **env_extra: str) -> tuple[Path, str]:
    """Start another gateway process on its own loopback port, on the lab's ledger; (pid file, base URL)."""
    port = free_port()
    env: dict[str, Any] = {
        **os.environ,
        "DATALAB_HOME": str(settings.home),
        "DATALAB_GATEWAY_PORT": str(port),
        "PYTHONPATH": str(settings.repo),
        **env_extra,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    pid_file, log_file = workdir / f"{name}.pid", workdir / f"{name}.log"
    argv = [sys.executable, "-m", "uvicorn", "--factory", "lab.gateway.app:app_from_env"]
    procs.spawn(
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=workdir,
        log_file=log_file,
        pid_file=pid_file,
    )
    base = f"http://127.0.0.1:{port}/services/gateway"
    ok = procs.wait_until(
        lambda: procs.http_ok(f"{base}/health"),
        timeout=90,
        alive=lambda: procs.read_pid(pid_file) is not None,
    )
    assert ok, "\n".join(procs.tail(log_file, 40))
    return pid_file, base
