"""``SandboxSpawner``: one analyst's JupyterLab in a bubblewrap sandbox on this machine.

Start: create the user's home (persisted under the state directory) and the sandbox's
directories, set cgroup limits, start the outside relays (hub API, gateway, S3), write the
analyst's access token beside the relays' sockets, and run ``bwrap`` inside the cgroups.
The server listens on ``/run/notebook/jupyter.sock``; once that socket exists the spawner
locks its directory, and configurable-http-proxy reaches it as an ``http+unix://`` target.
While the server lives, the spawner refreshes the access token (Keycloak tokens live
minutes; a token frozen into the environment at spawn would go stale) with the refresh
token kept in the hub's encrypted auth state.

Root never follows a name the sandbox can write (see ``lab.hub.spawner.rootfs`` and the table
in docs/notebooks.md). Per user, under ``<state>/run/sandbox/<user>/`` (root's, 0755):

- ``relay/`` (``root:<uid>`` 0750, read-only in the sandbox at ``/run/datalab``): the
  outside relays' sockets and ``token`` (``root:<uid>`` 0440, replaced by an ``O_EXCL``
  temporary file and a rename; a unix socket needs no write access to its directory);
  ``jupyterlab/overrides.json`` (the same owner and modes: JupyterLab's defaults with the
  lab's links, ``lab.hub.spawner.labsettings``);
- ``server/`` (the sandbox's until its server has created ``jupyter.sock``, then
  ``root:<uid>`` 0550): the proxy's target, which the sandbox cannot unlink or replace.

Poll: the server is gone when ``bwrap`` has exited; if the kernel OOM-killed anything in
its memory group, the whole sandbox is stopped and reported (exit status 137), so a
notebook never limps on with a dead kernel unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from jupyterhub.spawner import Spawner
from jupyterhub.traitlets import ByteSpecification
from traitlets import Float, Integer, List, Unicode, default, validate

from lab.hub.spawner import cgroups, labsettings, rootfs
from lab.hub.spawner.cgroups import Cgroup
from lab.hub.spawner.sandbox import (
    RUN_DIR,
    SERVER_DIR,
    SandboxLimits,
    SandboxPaths,
    args_blob,
    bwrap_argv,
)
from lab.settings import GATEWAY_PREFIX, Settings, load_settings

OOM_STATUS = 137
SERVER_SOCKET = "jupyter.sock"
CONFIG_DIR = "/opt/datalab/lab/hub/spawner/jupyter_config"  # read-only: enables lab.hub.spawner.guard
DATA_DIR = "/opt/datalab/lab/hub/spawner/jupyter_data"  # read-only: no kernels or extensions from home
LAB_SETTINGS = "jupyterlab"  # relay/jupyterlab/overrides.json: JupyterLab's defaults (labsettings)


def cgroup_name(settings: Settings, username: str) -> str:
    """``<lab>/<user>``: one group tree per lab (state directory), so two labs never share one."""
    return f"{hashlib.sha256(str(settings.home).encode()).hexdigest()[:8]}/{username}"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _signal_group(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class SandboxSpawner(Spawner):
    """Runs each user's single-user server in a bubblewrap sandbox with cgroup limits."""

    uid_base = Integer(20000, config=True, help="Sandbox uid = uid_base + the user's hub id.")
    pids_limit = Integer(512, config=True, help="Most processes and threads one sandbox may run.")
    token_refresh_margin = Float(
        240.0, config=True, help="Refresh the access token when it has fewer seconds than this left."
    )
    token_check_interval = Float(20.0, config=True, help="Seconds between checks of the access token.")
    relay_ports = List(
        [18081, 18010, 19000],
        config=True,
        help="Ports inside the sandbox for the hub API, the gateway and S3 (not the host's ports).",
    )
    bwrap_path = Unicode("bwrap", config=True, help="The bubblewrap executable.")
    tmp_size = ByteSpecification(
        None,
        allow_none=True,
        config=True,
        help="Size cap of the sandbox's private /tmp (a tmpfs; what is written there counts against "
        "mem_limit). Default: half of mem_limit, or 1G without a memory limit.",
    )
    shm_size = ByteSpecification(
        None,
        allow_none=True,
        config=True,
        help="Size cap of the sandbox's private /dev/shm (a tmpfs, counted like /tmp). Default: a "
        "quarter of mem_limit, or 256M without a memory limit.",
    )
    cgroup_root = Unicode(
        "",
        config=True,
        help="A delegated cgroup v2 directory for the sandboxes' limits (e.g. a systemd unit's "
        "Delegate=yes subtree). Empty: chosen from what the host mounts (cgroup v2 where it offers "
        "memory, cpu and pids, else cgroup v1).",
    )

    @default("port")
    def _default_port(self) -> int:
        return 8888  # jupyter_server refuses --sock with a non-default --port

    @validate("relay_ports")
    def _check_relay_ports(self, proposal: Any) -> list[int]:
        ports = list(proposal["value"])
        if len(ports) != 3 or len(set(ports)) != 3:
            raise ValueError("SandboxSpawner.relay_ports needs three different ports: hub API, gateway, S3.")
        return ports

    @validate("tmp_size", "shm_size")
    def _check_tmpfs_size(self, proposal: Any) -> int | None:
        value = proposal["value"]
        if value is not None and value < 1024 * 1024:
            raise ValueError(
                f"SandboxSpawner.{proposal['trait'].name} must be at least 1M (got {value} bytes)."
            )
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = load_settings()
        self.pid: int | None = None
        self.relay_pid: int | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._oom_baseline = 0
        self._exit_status: int | None = None  # why the server ended, kept for every later poll
        self._token_written: str | None = None
        self._hierarchy: cgroups.Hierarchy | None = None

    # -- state kept across hub restarts --------------------------------------------------
    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.pid = state.get("pid")
        self.relay_pid = state.get("relay_pid")

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.pid:
            state.update(pid=self.pid, relay_pid=self.relay_pid)
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.pid = self.relay_pid = None

    # -- places ----------------------------------------------------------------------------
    @property
    def uid(self) -> int:
        return int(self.uid_base + self.user.id)

    @property
    def home_dir(self) -> Path:
        return self.settings.home / "homes" / self.user.name

    @property
    def sandboxes_dir(self) -> Path:
        root = self.settings.run_dir / "sandbox"
        if str(root) != str(root).lower():  # proxy targets are lower-cased by URL parsing
            root = Path("/run/datalab-sandboxes")
        return root

    @property
    def sandbox_dir(self) -> Path:
        """Root's directory of this user's sandbox: holds ``relay/`` and ``server/``."""
        return self.sandboxes_dir / self.user.name

    @property
    def relay_dir(self) -> Path:
        return self.sandbox_dir / "relay"

    @property
    def server_dir(self) -> Path:
        return self.sandbox_dir / "server"

    @property
    def limits(self) -> SandboxLimits:
        """The size caps of the sandbox's /tmp and /dev/shm (tmpfs, inside its memory limit)."""
        memory = int(self.mem_limit or 0)
        tmp = self.tmp_size or (memory // 2 if memory else 1 << 30)
        shm = self.shm_size or (memory // 4 if memory else 256 << 20)
        return SandboxLimits(tmp_bytes=int(tmp), shm_bytes=int(shm))

    @property
    def cgroup(self) -> Cgroup:
        if self._hierarchy is None:
            self._hierarchy = cgroups.detect(v2_root=Path(self.cgroup_root) if self.cgroup_root else None)
        return cgroups.for_host(cgroup_name(self.settings, self.user.name), self._hierarchy)

    def _prepare_dirs(self) -> None:
        """Home kept, sandbox directories made afresh; every step by descriptor (rootfs)."""
        uid = self.uid
        homes = rootfs.root_dir(self.home_dir.parent)
        rootfs.owned_dir(homes, self.user.name, uid=uid, gid=uid, mode=0o700)
        rootfs.root_dir(self.sandboxes_dir)
        rootfs.fresh_dir(self.sandboxes_dir, self.user.name, uid=0, gid=0, mode=0o755)
        rootfs.fresh_dir(self.sandbox_dir, "relay", uid=0, gid=uid, mode=0o750)
        lab_settings = rootfs.fresh_dir(self.relay_dir, LAB_SETTINGS, uid=0, gid=uid, mode=0o750)
        rootfs.write_atomic(
            lab_settings,
            "overrides.json",
            labsettings.overrides_bytes(self.settings.console_url),
            uid=0,
            gid=uid,
            mode=0o440,
        )
        rootfs.fresh_dir(self.sandbox_dir, "server", uid=uid, gid=uid, mode=0o700)
        welcome = self.settings.repo / "notebooks" / "welcome.ipynb"
        if welcome.exists():
            rootfs.copy_new(welcome, self.home_dir, "welcome.ipynb", uid=uid, gid=uid, mode=0o644)

    # -- the access token --------------------------------------------------------------------
    def _write_token(self, token: str) -> None:
        """Replace ``relay/token`` (root's directory; ``root:<uid>`` 0440) if it changed."""
        if token == self._token_written:
            return
        rootfs.write_atomic(self.relay_dir, "token", token.encode(), uid=0, gid=self.uid, mode=0o440)
        self._token_written = token

    async def _fresh_token(self) -> str | None:
        """The analyst's access token, refreshed through Keycloak when it is about to expire."""
        auth_state = await self.user.get_auth_state()
        if not auth_state or not auth_state.get("access_token"):
            return None
        import jwt

        token = str(auth_state["access_token"])
        expires = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
        if expires - time.time() > self.token_refresh_margin or not auth_state.get("refresh_token"):
            return token
        auth = self.authenticator
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.post(
                auth.token_url,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": auth_state["refresh_token"],
                    "client_id": auth.client_id,
                    "client_secret": auth.client_secret,
                },
            )
        if response.status_code != 200:
            self.log.warning(
                "Could not refresh the access token of %s (HTTP %s)", self.user.name, response.status_code
            )
            return token
        fresh = response.json()
        auth_state.update(
            access_token=fresh["access_token"],
            refresh_token=fresh.get("refresh_token", auth_state["refresh_token"]),
        )
        await self.user.save_auth_state(auth_state)
        return str(fresh["access_token"])

    async def _keep_token_fresh(self) -> None:
        while True:
            await asyncio.sleep(self.token_check_interval)
            try:
                token = await self._fresh_token()
                if token:
                    self._write_token(token)
            except Exception:  # keep the loop alive; the reason is logged without the token
                self.log.exception("Token refresh failed for %s", self.user.name)

    # -- start / poll / stop -------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in self.get_env().items() if k.startswith("JUPYTERHUB_") or k.startswith("JPY_")}
        hub_port, gateway_port, s3_port = self.relay_ports
        env.update(
            {
                "HOME": f"/home/{self.user.name}",
                "USER": self.user.name,
                "SHELL": "/bin/bash",
                "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "PYTHONPATH": "/opt/datalab/lab/hub/spawner/stubs:/opt/datalab",
                "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
                "DATALAB_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}{GATEWAY_PREFIX}",
                "DATALAB_S3_ENDPOINT": f"127.0.0.1:{s3_port}",
                "DATALAB_TOKEN_FILE": f"{RUN_DIR}/token",
                # Jupyter's configuration and data come from read-only places only, so code in
                # the sandbox cannot switch the server's guard off or add server extensions.
                "JUPYTER_CONFIG_DIR": CONFIG_DIR,
                "JUPYTER_DATA_DIR": DATA_DIR,
                "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
                "JUPYTERLAB_SETTINGS_DIR": f"/home/{self.user.name}/.jupyter/lab/user-settings",
                "JUPYTERLAB_WORKSPACES_DIR": f"/home/{self.user.name}/.jupyter/lab/workspaces",
            }
        )
        activity = env.get("JUPYTERHUB_ACTIVITY_URL", "")
        if activity:
            env["JUPYTERHUB_ACTIVITY_URL"] = env["JUPYTERHUB_API_URL"] + activity.split("/hub/api", 1)[1]
        return env

    def _command(self) -> list[str]:
        hub_port, gateway_port, s3_port = self.relay_ports
        relays = []
        for port, name in ((hub_port, "hub"), (gateway_port, "gateway"), (s3_port, "s3")):
            relays += ["--tcp", f"{port}={RUN_DIR}/{name}.sock"]
        server = [
            "jupyterhub-singleuser",
            f"--ServerApp.sock={SERVER_DIR}/{SERVER_SOCKET}",
            "--ServerApp.sock_mode=0600",
            f"--ServerApp.root_dir=/home/{self.user.name}",
            # 中文 by default, no news or update checks, the Data Lab menu (labsettings).
            f"--LabApp.app_settings_dir={RUN_DIR}/{LAB_SETTINGS}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *self.get_args(),
        ]
        # -P: the home (the working directory) is not on sys.path; -s: no user site-packages.
        # Both hold for the server only; kernels keep the usual behaviour.
        return [sys.executable, "-P", "-s", "-m", "lab.hub.spawner.inside", *relays, "--", *server]

    async def _start_relays(self) -> None:
        ports = self.settings.ports
        routes = []
        for name, port in (("hub", ports.hub_api), ("gateway", ports.gateway), ("s3", ports.minio)):
            routes += ["--unix", f"{self.relay_dir / name}.sock={self.settings.host}:{port}"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lab.hub.spawner.relay",
            *routes,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(self.settings.repo)},
            stdin=asyncio.subprocess.DEVNULL,
        )
        self.relay_pid = proc.pid
        for name in ("hub", "gateway", "s3"):
            for _ in range(100):
                if rootfs.is_socket(self.relay_dir, f"{name}.sock"):
                    break
                await asyncio.sleep(0.02)

    async def _run_bwrap(self, argv: list[str]) -> int:
        """Start ``argv`` (bubblewrap) in the cgroups with its arguments on a descriptor.

        ``bwrap --args FD`` reads them from a memfd, so the environment (the hub's API token
        among it) never appears in the host's process list (/proc/<pid>/cmdline).
        """
        fd = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
        try:
            options, command = args_blob(argv)
            blob = memoryview(options)
            while blob:
                blob = blob[os.write(fd, blob) :]
            os.lseek(fd, 0, os.SEEK_SET)
            proc = await asyncio.create_subprocess_exec(
                *self.cgroup.join_command([argv[0], "--args", str(fd), *command]),
                start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)
        return proc.pid

    async def _lock_server_dir(self) -> None:
        """Once the server's socket exists, make its directory root's: no one replaces it.

        Until then only the genuine server runs in the sandbox (no kernel starts before the
        hub routes to it), so the socket locked is the one it made.
        """
        deadline = time.monotonic() + float(self.start_timeout)
        while not rootfs.is_socket(self.server_dir, SERVER_SOCKET):
            if not _alive(self.pid) or time.monotonic() > deadline:
                return  # the hub's own start checks report the failure
            await asyncio.sleep(0.02)
        rootfs.lock_dir(self.sandbox_dir, "server", gid=self.uid)

    async def start(self) -> str:
        self._exit_status = None
        self._token_written = None
        self._prepare_dirs()
        cgroup = self.cgroup
        cgroup.create(
            memory_bytes=int(self.mem_limit or 0), cpus=float(self.cpu_limit or 0), pids=self.pids_limit
        )
        self._oom_baseline = cgroup.oom_kills()
        token = await self._fresh_token()
        if token:
            self._write_token(token)
        await self._start_relays()
        venv = Path(sys.prefix)
        runtime = [venv, Path(os.path.realpath(sys.executable)).parent.parent]
        paths = SandboxPaths(
            home=self.home_dir,
            relays=self.relay_dir,
            server=self.server_dir,
            python_runtime=runtime,
            code=self.settings.repo,
        )
        argv = bwrap_argv(
            username=self.user.name,
            uid=self.uid,
            paths=paths,
            limits=self.limits,
            env=self._environment(),
            command=self._command(),
            bwrap=self.bwrap_path,
        )
        self.pid = await self._run_bwrap(argv)
        await self._lock_server_dir()
        self._refresher = asyncio.ensure_future(self._keep_token_fresh())
        return f"http+unix://{quote(str(self.server_dir / SERVER_SOCKET), safe='')}"

    async def poll(self) -> int | None:
        if self.pid is None:
            return 0
        if self.cgroup.oom_kills() > self._oom_baseline:
            # No await between seeing the OOM kill and recording it: every later poll reports 137.
            self._exit_status = OOM_STATUS
            self.log.warning(
                "Server of %s exceeded its memory limit (%s bytes); stopping it",
                self.user.name,
                self.mem_limit,
            )
            _signal_group(self.pid, signal.SIGKILL)
            self.cgroup.kill_all()
            asyncio.ensure_future(self._cleanup())
            return OOM_STATUS
        if not _alive(self.pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            await self._cleanup()
            return 0
        if self._refresher is None:  # the hub restarted while this server ran
            self._refresher = asyncio.ensure_future(self._keep_token_fresh())
        return None

    async def stop(self, now: bool = False) -> None:
        _signal_group(self.pid, signal.SIGTERM)
        for _ in range(0 if now else 50):
            if not _alive(self.pid):
                break
            await asyncio.sleep(0.1)
        _signal_group(self.pid, signal.SIGKILL)
        self.cgroup.kill_all()
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        _signal_group(self.relay_pid, signal.SIGTERM)
        for pid in (self.pid, self.relay_pid):
            if pid:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
        for _ in range(20):
            if not self.cgroup.members():
                break
            await asyncio.sleep(0.05)
        self.cgroup.remove()
        with contextlib.suppress(OSError):
            os.unlink(self.relay_dir / "token")  # root's own directory: nothing to follow
