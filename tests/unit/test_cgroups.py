"""The sandbox's resource limits on cgroup v2 and v1 (``lab.hub.spawner.cgroups``).

Most tests run against a temporary directory shaped like a cgroupfs (the files the kernel
would create are made by the test). The last ones use this host's real hierarchies: the
limits are enforced for real in whatever hierarchy ``detect`` picks here, and cgroup v2
limits are enforced for real where the host's ``cgroup2`` mount offers the controllers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.hub.spawner import cgroups
from lab.hub.spawner.cgroups import CgroupV1, CgroupV2, Hierarchy, detect, for_host

pytestmark = pytest.mark.unit

HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 {unified} cgroup2 rw,relatime 0 0
"""


def _v2_tree(root: Path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("\n")
    return root


def _mounts(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mounts"
    path.write_text(text)
    return path


# -- which hierarchy ---------------------------------------------------------------------


def test_a_v2_host_gets_v2(tmp_path: Path) -> None:
    base = _v2_tree(tmp_path / "fs")
    mounts = _mounts(tmp_path, f"cgroup2 {base} cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n")
    assert detect(mounts) == Hierarchy(2, base=base)


def test_a_hybrid_host_whose_v2_mount_has_no_controllers_keeps_v1(tmp_path: Path) -> None:
    unified = _v2_tree(tmp_path / "unified", controllers="hugetlb")  # what this machine shows
    hierarchy = detect(_mounts(tmp_path, HYBRID.format(unified=unified)))
    assert hierarchy.version == 1
    assert dict(hierarchy.v1_mounts) == {
        "memory": Path("/sys/fs/cgroup/memory"),
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),  # a joint mount is found by its options
        "pids": Path("/sys/fs/cgroup/pids"),
    }


def test_a_hybrid_host_whose_v2_mount_offers_the_controllers_gets_v2(tmp_path: Path) -> None:
    unified = _v2_tree(tmp_path / "with space", controllers="memory pids cpu")
    text = HYBRID.format(unified=str(unified).replace(" ", "\\040"))  # as the kernel escapes it
    assert detect(_mounts(tmp_path, text)) == Hierarchy(2, base=unified)


def test_a_delegated_directory_is_used_when_given_and_must_offer_the_controllers(tmp_path: Path) -> None:
    delegated = _v2_tree(tmp_path / "system.slice" / "datalab.service", controllers="memory pids cpu")
    assert detect(tmp_path / "no-such-file", v2_root=delegated) == Hierarchy(2, base=delegated)
    (delegated / "cgroup.controllers").write_text("memory cpu\n")
    with pytest.raises(ConfigError) as error:
        detect(v2_root=delegated)
    assert "pids" in str(error.value) and "cgroup_root" in str(error.value)


def test_a_host_without_usable_controllers_is_refused_in_both_languages(tmp_path: Path) -> None:
    unified = _v2_tree(tmp_path / "unified", controllers="")
    mounts = _mounts(tmp_path, f"cgroup2 {unified} cgroup2 rw 0 0\ncgroup /m cgroup rw,memory 0 0\n")
    with pytest.raises(ConfigError) as error:
        detect(mounts)
    message = str(error.value)
    assert f"cgroup2 at {unified}" in message and "v1 memory at /m" in message
    assert "无法为笔记本沙箱设置资源限制" in message
    assert error.value.reason == "cgroups"


# -- cgroup v2 against a cgroupfs-shaped directory ---------------------------------------


def test_v2_limits_go_into_a_delegated_subtree(tmp_path: Path) -> None:
    base = _v2_tree(tmp_path / "fs")
    group = for_host("abcd1234/li.na", Hierarchy(2, base=base))
    assert isinstance(group, CgroupV2)
    group.path.mkdir(parents=True)
    (group.path / "memory.swap.max").write_text("max\n")  # the kernel makes it where swap is accounted
    group.create(memory_bytes=2 * 1024**3, cpus=1.5, pids=512)

    for level in (base, base / "datalab", base / "datalab" / "abcd1234"):
        assert (level / "cgroup.subtree_control").read_text().split() == ["+memory", "+cpu", "+pids"]
    assert (group.path / "memory.max").read_text() == str(2 * 1024**3)
    assert (group.path / "memory.swap.max").read_text() == "0"
    assert (group.path / "cpu.max").read_text() == "150000 100000"
    assert (group.path / "pids.max").read_text() == "512"
    assert not list((group.path).glob("*limit_in_bytes")) and not list(group.path.glob("cpu.cfs*"))

    argv = group.join_command(["bwrap", "--args", "3"])
    assert argv[argv.index("--") - 1 : argv.index("--")] == [str(group.path / "cgroup.procs")]
    assert argv[argv.index("--") + 1 :] == ["bwrap", "--args", "3"]


def test_v2_without_limits_writes_max(tmp_path: Path) -> None:
    base = _v2_tree(tmp_path / "fs")
    group = CgroupV2("lab/u", base)
    group.create(memory_bytes=0, cpus=0, pids=0)
    assert (group.path / "memory.max").read_text() == "max"
    assert (group.path / "cpu.max").read_text() == "max 100000"
    assert (group.path / "pids.max").read_text() == "max"
    assert not (group.path / "memory.swap.max").exists()  # not made where the kernel has none


def test_v2_controllers_already_enabled_are_not_written_again(tmp_path: Path) -> None:
    base = _v2_tree(tmp_path / "fs")
    (base / "cgroup.subtree_control").write_text("cpu memory pids\n")
    CgroupV2("lab/u", base).create(memory_bytes=1, cpus=1, pids=1)
    assert (base / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_v2_oom_kills_members_kill_and_removal(tmp_path: Path) -> None:
    base = _v2_tree(tmp_path / "fs")
    group = CgroupV2("lab/u", base)
    group.create(memory_bytes=1, cpus=1, pids=1)
    assert group.oom_kills() == 0
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert group.oom_kills() == 2
    (group.path / "cgroup.procs").write_text("")
    assert group.members() == []
    (group.path / "cgroup.kill").write_text("")
    group.kill_all()
    assert (group.path / "cgroup.kill").read_text() == "1"  # the kernel's one-write kill of the group

    for level in (group.path, group.path.parent):  # a real cgroupfs drops its files with the directory
        for name in list(level.glob("*.*")):
            name.unlink()
    group.remove()
    assert not (base / "datalab" / "lab").exists()


def test_v2_failure_names_the_place_and_is_a_config_error(tmp_path: Path) -> None:
    base = _v2_tree(tmp_path / "fs")
    (base / "datalab").write_text("not a directory")
    with pytest.raises(ConfigError) as error:
        CgroupV2("lab/u", base).create(memory_bytes=1, cpus=1, pids=1)
    assert str(base / "datalab") in str(error.value) and error.value.reason == "cgroups"


# -- cgroup v1 against a cgroupfs-shaped directory ---------------------------------------


def test_v1_limits_in_each_controllers_hierarchy(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in cgroups.CONTROLLERS}
    group = for_host("abcd1234/li.na", Hierarchy(1, v1_mounts=tuple(mounts.items())))
    assert isinstance(group, CgroupV1)
    group.create(memory_bytes=2 * 1024**3, cpus=1.0, pids=512)
    leaf = Path("datalab") / "abcd1234" / "li.na"
    assert (tmp_path / "memory" / leaf / "memory.limit_in_bytes").read_text() == str(2 * 1024**3)
    assert (tmp_path / "cpu" / leaf / "cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "cpu" / leaf / "cpu.cfs_quota_us").read_text() == "100000"
    assert (tmp_path / "pids" / leaf / "pids.max").read_text() == "512"
    argv = group.join_command(["bwrap"])
    assert argv[argv.index("sh") + 1 : argv.index("--")] == [
        str(tmp_path / c / leaf / "cgroup.procs") for c in ("memory", "cpu", "pids")
    ]
    oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    (tmp_path / "memory" / leaf / "memory.oom_control").write_text(oom)
    assert group.oom_kills() == 3


# -- this host's real hierarchies --------------------------------------------------------

FORK = """
import json, os, time
children, failed = [], None
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        children.append(pid)
except OSError as e:
    failed = e.errno
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "errno": failed}))
"""
HOG = "x = bytearray(256 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); print('survived')"


def _run_inside(group: cgroups.Cgroup, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        group.join_command([sys.executable, "-c", code]), capture_output=True, text=True, timeout=120
    )


def _enforces(group: cgroups.Cgroup) -> None:
    """A fork loop stops at the pids limit; a 256 MiB allocation dies at a 64 MiB limit."""
    try:
        group.create(memory_bytes=64 * 1024**2, cpus=0.5, pids=20)
        forked = _run_inside(group, FORK)
        assert forked.returncode == 0, forked.stderr
        result = json.loads(forked.stdout)
        assert result["errno"] == 11 and result["forked"] < 20, result  # EAGAIN at pids.max
        hog = _run_inside(group, HOG)
        assert hog.returncode == -9 and "survived" not in hog.stdout, (hog.returncode, hog.stderr)
        assert group.oom_kills() >= 1
    finally:
        group.kill_all()
        deadline = time.monotonic() + 10
        while group.members() and time.monotonic() < deadline:
            time.sleep(0.1)
        group.remove()


def _v2_mounts() -> list[Path]:
    return [
        Path(parts[1])
        for line in cgroups.MOUNTS.read_text().splitlines()
        if len(parts := line.split()) > 2 and parts[2] == "cgroup2"
    ]


@pytest.fixture
def root_only() -> None:
    if os.geteuid() != 0:
        pytest.fail("the local sandbox (and these tests) run as root: cgroups need it")


def test_limits_are_enforced_in_the_hierarchy_this_host_offers(root_only: None) -> None:
    hierarchy = detect()
    offered = {m: cgroups._v2_controllers(m) for m in _v2_mounts()}
    usable = [m for m, found in offered.items() if set(cgroups.CONTROLLERS) <= found]
    assert hierarchy.version == (2 if usable else 1), offered
    _enforces(for_host(f"test-{uuid.uuid4().hex[:8]}/probe", hierarchy))


def test_cgroup_v2_limits_are_enforced_where_the_host_offers_them(root_only: None) -> None:
    offered = {m: cgroups._v2_controllers(m) for m in _v2_mounts()}
    usable = [m for m, found in offered.items() if set(cgroups.CONTROLLERS) <= found]
    if not usable:
        pytest.skip(
            "this host cannot enforce cgroup v2 limits: its cgroup2 mounts offer "
            + "; ".join(f"{m}: {' '.join(sorted(f)) or 'no controller'}" for m, f in offered.items())
            + " (memory, cpu and pids are bound to cgroup v1)"
        )
    _enforces(CgroupV2(f"test-{uuid.uuid4().hex[:8]}/probe", usable[0]))


def test_cgroup_v2_membership_and_kill_on_the_real_v2_tree(root_only: None) -> None:
    """What v2 needs no controller for, on the real cgroup2 mount: join, list, kill, remove."""
    mounts = _v2_mounts()
    assert mounts, "this host mounts no cgroup2 tree"
    group = CgroupV2(f"test-{uuid.uuid4().hex[:8]}/probe", mounts[0])
    group.path.mkdir(parents=True)
    try:
        child = subprocess.Popen(group.join_command(["sleep", "60"]))
        deadline = time.monotonic() + 10
        while child.pid not in group.members() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group.members() == [child.pid]  # the shell exec'd sleep in the group
        group.kill_all()
        assert child.wait(timeout=10) == -9
        while group.members() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group.members() == []
    finally:
        group.remove()
    assert not group.path.exists() and not group.path.parent.exists()
