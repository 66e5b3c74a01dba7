"""Resource limits for one sandbox (memory, CPU, processes), on cgroup v2 or v1.

Which hierarchy is used is decided at run time from what the host mounts
(``/proc/self/mounts``), by :func:`detect`:

- **cgroup v2** when a ``cgroup2`` mount offers the ``memory``, ``cpu`` and ``pids``
  controllers (the default on Debian 12, Ubuntu 22.04+, RHEL 9). The lab's groups live in
  a delegated subtree, ``<base>/datalab/<lab>/<user>``: ``<base>`` is the ``cgroup2``
  mount or a directory given to the spawner (``SandboxSpawner.cgroup_root``, e.g. a systemd
  unit's ``Delegate=yes`` subtree); each level enables the three controllers for the
  next, and the leaf gets ``memory.max`` (with ``memory.swap.max`` 0), ``cpu.max`` and
  ``pids.max``.
- **cgroup v1** otherwise, where the host mounts the three v1 controllers: the groups
  live at ``<controller mount>/datalab/<lab>/<user>`` (``memory.limit_in_bytes``,
  ``cpu.cfs_quota_us``, ``pids.max``). A hybrid host whose ``cgroup2`` mount has no
  controllers (they are bound to v1) uses v1.

A sandbox joins its group(s) before ``bwrap`` runs (``join_command`` writes its own pid
into each ``cgroup.procs``, then execs), so every process in it is counted from the
first instruction.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ConfigError

MOUNTS = Path("/proc/self/mounts")
CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
LAB_LEVEL = "datalab"  # the lab's own directory in each hierarchy


@dataclass(frozen=True)
class Hierarchy:
    """Where the limits go: ``version`` 2 (one ``base``) or 1 (one mount per controller)."""

    version: int
    base: Path | None = None  # v2: the delegated directory holding ``datalab/``
    v1_mounts: tuple[tuple[str, Path], ...] = ()  # v1: (controller, mount point)


def _unescape(field: str) -> str:
    """Mount points in /proc/self/mounts escape space, tab, newline and backslash in octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _words(path: Path) -> set[str]:
    """The words of a cgroup interface file; none if it cannot be read."""
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _v2_controllers(base: Path) -> set[str]:
    return _words(base / "cgroup.controllers")


def _unusable(why: str) -> ConfigError:
    return ConfigError(
        f"Cannot set resource limits for notebook sandboxes: {why}. The local sandbox needs root "
        "and either a cgroup v2 subtree with the memory, cpu and pids controllers (set "
        "SandboxSpawner.cgroup_root to a delegated directory) or the cgroup v1 controllers memory, "
        "cpu and pids. / 无法为笔记本沙箱设置资源限制：需要 root 权限，以及带有 memory、cpu、pids "
        "控制器的 cgroup v2 子树（可用 SandboxSpawner.cgroup_root 指定已委派的目录）"
        "或 cgroup v1 的 memory、cpu、pids 控制器。",
        reason="cgroups",
    )


def detect(mounts: Path = MOUNTS, *, v2_root: Path | None = None) -> Hierarchy:
    """The hierarchy this host offers for memory, cpu and pids limits.

    ``v2_root``, when given, is a delegated cgroup v2 directory to use (it must offer the
    three controllers); otherwise the first ``cgroup2`` mount that offers them, else the v1
    mounts of the three controllers.
    """
    if v2_root is not None:
        missing = set(CONTROLLERS) - _v2_controllers(v2_root)
        if missing:
            raise _unusable(f"{v2_root} does not offer the controllers {', '.join(sorted(missing))}")
        return Hierarchy(2, base=v2_root)
    try:
        lines = mounts.read_text().splitlines()
    except OSError as exc:
        raise _unusable(f"{mounts} cannot be read ({exc.strerror})") from None
    v2: list[Path] = []
    v1: dict[str, Path] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        point, fstype, options = Path(_unescape(parts[1])), parts[2], parts[3].split(",")
        if fstype == "cgroup2":
            v2.append(point)
        elif fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in options:
                    v1.setdefault(controller, point)
    for base in v2:
        if set(CONTROLLERS) <= _v2_controllers(base):
            return Hierarchy(2, base=base)
    if set(CONTROLLERS) <= set(v1):
        return Hierarchy(1, v1_mounts=tuple((c, v1[c]) for c in CONTROLLERS))
    found = ", ".join([f"cgroup2 at {p}" for p in v2] + [f"v1 {c} at {p}" for c, p in sorted(v1.items())])
    raise _unusable(f"this host mounts {found or 'no cgroup hierarchy'}")


class Cgroup:
    """One sandbox's group(s); :func:`for_host` picks the version."""

    version = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def create(self, *, memory_bytes: int, cpus: float, pids: int) -> None:
        """Create the group(s) and set their limits (0 or less means unlimited)."""
        raise NotImplementedError

    def procs_files(self) -> list[Path]:
        raise NotImplementedError

    def join_command(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside the group(s)."""
        files = [str(p) for p in self.procs_files()]
        script = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'
        return ["/bin/sh", "-c", script, "sh", *files, "--", *argv]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit."""
        raise NotImplementedError

    def memory_used(self) -> int:
        """Bytes the group's memory controller charges now (tmpfs pages its processes wrote too)."""
        raise NotImplementedError

    def members(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in self.procs_files()[-1].read_text().split()]
        return []

    def kill_all(self) -> None:
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        raise NotImplementedError

    def _failed(self, exc: OSError, where: Path) -> ConfigError:
        return _unusable(f"{where}: {exc.strerror or exc}")


def _read_key(path: Path, key: str) -> int:
    """The value of ``key`` in a flat-keyed cgroup file (``key value`` per line), or 0."""
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


class CgroupV1(Cgroup):
    """``<mount>/datalab/<name>`` in the v1 memory, cpu and pids hierarchies."""

    version = 1

    def __init__(self, name: str, mounts: dict[str, Path]) -> None:
        super().__init__(name)
        self.paths = {c: mounts[c] / LAB_LEVEL / name for c in CONTROLLERS}

    def create(self, *, memory_bytes: int, cpus: float, pids: int) -> None:
        path = self.paths["memory"]
        try:
            for path in self.paths.values():
                path.mkdir(parents=True, exist_ok=True)
            if memory_bytes > 0:
                path = self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
            path = self._write("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US))
            quota = int(cpus * CPU_PERIOD_US) if cpus > 0 else -1
            path = self._write("cpu", "cpu.cfs_quota_us", str(quota))
            path = self._write("pids", "pids.max", str(pids) if pids > 0 else "max")
        except OSError as exc:
            raise self._failed(exc, path) from None

    def _write(self, controller: str, name: str, value: str) -> Path:
        path = self.paths[controller] / name
        path.write_text(value)
        return path

    def procs_files(self) -> list[Path]:
        return [self.paths[c] / "cgroup.procs" for c in ("memory", "cpu", "pids")]

    def oom_kills(self) -> int:
        return _read_key(self.paths["memory"] / "memory.oom_control", "oom_kill")

    def memory_used(self) -> int:
        return int((self.paths["memory"] / "memory.usage_in_bytes").read_text())

    def remove(self) -> None:
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                path.rmdir()
                path.parent.rmdir()  # the lab's own level, once its last sandbox is gone


class CgroupV2(Cgroup):
    """``<base>/datalab/<name>`` in one cgroup v2 tree, the controllers delegated level by level."""

    version = 2

    def __init__(self, name: str, base: Path) -> None:
        super().__init__(name)
        self.base = base
        self.path = base / LAB_LEVEL / name

    def _levels(self) -> list[Path]:
        """``base`` and every directory between it and the leaf (each must delegate)."""
        levels, path = [], self.path.parent
        while path != self.base:
            levels.append(path)
            path = path.parent
        return [self.base, *reversed(levels)]

    def create(self, *, memory_bytes: int, cpus: float, pids: int) -> None:
        where = self.base
        try:
            for level in self._levels():
                where = level
                level.mkdir(exist_ok=True)
                enabled = _words(level / "cgroup.subtree_control")
                wanted = [f"+{c}" for c in CONTROLLERS if c not in enabled]
                if wanted:
                    (level / "cgroup.subtree_control").write_text(" ".join(wanted))
            where = self.path
            self.path.mkdir(exist_ok=True)
            self._write("memory.max", str(memory_bytes) if memory_bytes > 0 else "max")
            if (self.path / "memory.swap.max").exists():  # the limit is on memory, not memory + swap
                self._write("memory.swap.max", "0" if memory_bytes > 0 else "max")
            quota = str(int(cpus * CPU_PERIOD_US)) if cpus > 0 else "max"
            self._write("cpu.max", f"{quota} {CPU_PERIOD_US}")
            self._write("pids.max", str(pids) if pids > 0 else "max")
        except OSError as exc:
            raise self._failed(exc, where) from None

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def procs_files(self) -> list[Path]:
        return [self.path / "cgroup.procs"]

    def oom_kills(self) -> int:
        return _read_key(self.path / "memory.events", "oom_kill")

    def memory_used(self) -> int:
        return int((self.path / "memory.current").read_text())

    def kill_all(self) -> None:
        kill = self.path / "cgroup.kill"  # Linux 5.14+: the whole group at once, no pid races
        if kill.exists():
            with contextlib.suppress(OSError):
                kill.write_text("1")
                return
        super().kill_all()

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()
            self.path.parent.rmdir()  # the lab's own level, once its last sandbox is gone


def for_host(name: str, hierarchy: Hierarchy) -> Cgroup:
    """The group ``name`` (``<lab>/<user>``) in ``hierarchy`` (see :func:`detect`)."""
    if hierarchy.version == 2:
        assert hierarchy.base is not None
        return CgroupV2(name, hierarchy.base)
    return CgroupV1(name, dict(hierarchy.v1_mounts))
