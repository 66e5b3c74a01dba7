"""The bubblewrap command line of one sandbox (a pure function, unit-tested).

What the sandbox sees: a read-only system (``/usr``, ``/etc``), the lab's Python runtime
and the ``lab`` package read-only, its own home (read-write, persisted in the state
directory), a private ``/tmp`` and ``/dev/shm``, its own ``/proc`` (own pid namespace) and
``/dev``, and
``/run/datalab`` (its socket directory: relays and the refreshed access token). It does
not see other homes, the state directory, raw data, secrets or any host process. It has
its own network namespace (only ``lo``), IPC and UTS namespaces, and runs as an
unprivileged uid of its own, with no capabilities and ``no_new_privs``.

``/tmp`` and ``/dev/shm`` are tmpfs mounts made by bubblewrap in the sandbox's own mount
namespace: no other sandbox and no host process sees them, no root-side code ever opens a
name in them, and they vanish with the namespace when the server stops. Each has a size cap
(``SandboxLimits``); their pages are charged to the memory cgroup of the process that
writes them, so they count against the server's memory limit. ``/dev/shm`` is what POSIX
semaphores need (``multiprocessing`` locks, joblib's parallel mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RUN_DIR = "/run/datalab"  # relays and the token: read-only inside
SERVER_DIR = "/run/notebook"  # the server's own socket: writable until the spawner locks it


@dataclass(frozen=True)
class SandboxPaths:
    home: Path  # host directory mounted as the user's home
    relays: Path  # host directory (root's) mounted read-only at /run/datalab
    server: Path  # host directory mounted at /run/notebook (the server's socket)
    python_runtime: Sequence[Path]  # host directories holding the interpreter and its packages
    code: Path  # host directory holding the lab package (mounted at /opt/datalab)


@dataclass(frozen=True)
class SandboxLimits:
    tmp_bytes: int  # size cap of the private /tmp (tmpfs)
    shm_bytes: int  # size cap of the private /dev/shm (tmpfs)


def _parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if str(p) != "/"]


def bwrap_argv(
    *,
    username: str,
    uid: int,
    paths: SandboxPaths,
    limits: SandboxLimits,
    env: Mapping[str, str],
    command: Sequence[str],
    bwrap: str = "bwrap",
) -> list[str]:
    """The full command: bubblewrap, then ``setpriv`` down to ``uid``, then ``command``."""
    home = f"/home/{username}"
    argv = [
        bwrap,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "datalab-notebook",
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--ro-bind",
        "/etc",
        "/etc",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(limits.shm_bytes),
        "--tmpfs",
        "/dev/shm",
        "--perms",
        "1777",
        "--size",
        str(limits.tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--perms",
        "0755",
        "--dir",
        "/home",
    ]
    made: set[Path] = set()
    for runtime in paths.python_runtime:
        for parent in _parents(runtime):
            if parent not in made and not str(parent).startswith("/usr"):
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        argv += ["--ro-bind", str(runtime), str(runtime)]
    argv += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/datalab"]
    argv += ["--ro-bind", str(paths.code / "lab"), "/opt/datalab/lab"]
    argv += ["--perms", "0755", "--dir", "/run"]
    argv += ["--bind", str(paths.home), home, "--ro-bind", str(paths.relays), RUN_DIR]
    argv += ["--bind", str(paths.server), SERVER_DIR, "--chdir", home]
    argv += ["--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    argv += [
        "--",
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--",
        *command,
    ]
    return argv


def args_blob(argv: Sequence[str]) -> tuple[bytes, list[str]]:
    """``argv`` split for ``bwrap --args FD``: its options as NUL-terminated bytes, and the rest.

    bubblewrap reads options (mounts, ``--setenv``) from the descriptor but takes the
    command itself from its own argv, so the command (from ``--`` on, no secret in it)
    stays there.
    """
    for arg in argv:
        if "\0" in arg:
            raise ValueError("a sandbox argument holds a NUL byte")
    split = list(argv).index("--")
    return b"".join(arg.encode() + b"\0" for arg in argv[1:split]), list(argv[split:])
