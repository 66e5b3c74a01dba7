"""The lab on one machine: install, start, check and stop its servers.

``up`` is idempotent: it installs what is missing (cached), starts each component that
is not already running, waits for its health check, and applies the realm and bucket
set-up. If any step fails, the components that this call started are stopped again,
so nothing is left half-started. ``down`` stops exactly the processes ``up`` started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab import iam, storage, vault
from lab.errors import HealthCheckFailed, NotFound, PortInUse
from lab.settings import Ports, Settings
from lab.stack import install, pins, procs, tools
from lab.stack.components import BY_NAME, COMPONENTS, KEYCLOAK, MINIO, Component, Installed, Launch, launch

__all__ = ["COMPONENTS", "Status", "down", "install_all", "log_file", "status", "up"]
from lab.stack.seed import seed
from lab.stack.ui import Progress


@dataclass(frozen=True)
class Status:
    component: str
    up: bool
    pid: int | None


def install_all(settings: Settings, ui: Progress) -> Installed:
    """Everything the servers need, installed into the cache if missing."""
    java_home, _ = tools.ensure_java(pins.KEYCLOAK_JAVA)
    installed = Installed(
        java_home=java_home,
        keycloak_home=install.keycloak(settings, ui),
        minio=install.minio(settings, ui),
        proxy=install.proxy(settings, ui),
    )
    install.bubblewrap(ui)
    return installed


def _running(component: Component, settings: Settings) -> procs.PidRecord | None:
    return procs.read_pid(component.pid_file(settings))


def _check_ports(component: Component, settings: Settings) -> None:
    for port_name in component.ports:
        port = getattr(settings.ports, port_name)
        if not procs.port_free(settings.host, port):
            raise PortInUse(
                f"{component.title} cannot start: port {port} on {settings.host} is already in use "
                f"by another program. Stop that program, or move {component.title} with "
                f"{Ports.env_name(port_name)}=<free port> (e.g. in .env, then 'make up' again). "
                f"/ 端口 {port} 已被其他程序占用：请停止该程序，或用 {Ports.env_name(port_name)} "
                "指定空闲端口后重新 make up。",
            )


def _start(component: Component, spec: Launch, settings: Settings, ui: Progress) -> None:
    """Start one component and wait for its health check; stop it again if that fails."""
    _check_ports(component, settings)
    with ui.step(f"Starting {component.title}"):
        record = procs.spawn(
            spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            log_file=component.log_file(settings),
            pid_file=component.pid_file(settings),
        )
        healthy = procs.wait_until(
            lambda: procs.http_ok(component.health_url(settings)),
            timeout=component.start_timeout,
            alive=lambda: procs.read_pid(component.pid_file(settings)) == record,
        )
    if not healthy:
        log = component.log_file(settings)
        lines = [vault.scrub(line, settings) for line in procs.tail(log, 15)]
        procs.stop(component.pid_file(settings))
        raise HealthCheckFailed(
            f"{component.title} did not become healthy at {component.health_url(settings)} "
            f"within {component.start_timeout:.0f}s (组件未能在规定时间内正常启动，请查看日志). "
            f"Last lines of {log}:\n  " + "\n  ".join(lines),
        )


def up(settings: Settings, ui: Progress | None = None) -> list[str]:
    """Install, start and set up the whole lab; the names of components started now."""
    ui = ui or Progress()
    for directory in (settings.home, settings.logs_dir, settings.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    settings.home.chmod(0o700)
    installed = install_all(settings, ui)
    started: list[Component] = []
    try:
        for component in COMPONENTS:
            if not (_running(component, settings) and procs.http_ok(component.health_url(settings))):
                procs.stop(component.pid_file(settings))  # a stale or unhealthy earlier run
                _start(component, launch(component, settings, installed), settings, ui)
                started.append(component)
            _apply(component, settings, ui)
    except BaseException:
        for component in reversed(started):
            procs.stop(component.pid_file(settings))
        raise
    return [c.name for c in started]


def _apply(component: Component, settings: Settings, ui: Progress) -> None:
    """The set-up that lives inside a running component (idempotent)."""
    if component is KEYCLOAK:
        with ui.step("Applying the Keycloak realm"):
            for change in iam.bootstrap(settings):
                ui.note(change)
    elif component is MINIO:
        with ui.step("Applying MinIO buckets and policies"):
            for change in storage.bootstrap(settings):
                ui.note(change)
        seed(settings, ui)


def down(settings: Settings) -> list[str]:
    """Stop every component this lab started (latest first); the names stopped."""
    stopped = []
    for component in reversed(COMPONENTS):
        if procs.stop(component.pid_file(settings)):
            stopped.append(component.name)
    return stopped


def status(settings: Settings) -> list[Status]:
    """Each component, up if its health check answers."""
    result = []
    for component in COMPONENTS:
        record = _running(component, settings)
        result.append(
            Status(
                component.name, procs.http_ok(component.health_url(settings)), record.pid if record else None
            )
        )
    return result


def log_file(settings: Settings, name: str) -> Path:
    """The log file of component ``name``."""
    try:
        return BY_NAME[name].log_file(settings)
    except KeyError:
        raise NotFound(
            f"No component {name!r}; choose one of: {', '.join(BY_NAME)}. / 没有该组件，请选择其中之一。"
        ) from None
