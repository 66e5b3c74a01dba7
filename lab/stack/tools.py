"""Find the programs the lab builds on, check their versions, install Debian packages.

Each check names the program, the version found and needed, and how to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from lab.errors import InstallFailed, MissingTool

_apt_updated = False


def _version_of(argv: list[str], pattern: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, out.stdout + out.stderr)
    if not match:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _fmt(version: tuple[int, ...] | None) -> str:
    return ".".join(map(str, version)) if version else "none"


def apt_install(*packages: str) -> None:
    """Install Debian packages (as root), running ``apt-get update`` once first."""
    global _apt_updated
    command = f"apt-get update && apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingTool(
            f"{', '.join(packages)} is not installed. Install it as root: {command} "
            "/ 缺少所需软件包，请以 root 身份运行上述命令安装"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [] if _apt_updated else [["apt-get", "update", "-q"]]
    steps.append(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages])
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise InstallFailed(f"'{' '.join(step)}' failed (软件包安装失败):\n  " + "\n  ".join(last))
    _apt_updated = True


def java_home(supported: tuple[int, ...]) -> tuple[Path, tuple[int, ...]]:
    """A JDK whose major version is in ``supported``: (JAVA_HOME, version)."""
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates.extend(sorted(p for p in jvm.iterdir() if p.is_dir() and not p.is_symlink()))
    seen: list[str] = []
    for home in candidates:
        version = _version_of([str(home / "bin" / "java"), "-version"], r'version "(\d+(?:\.\d+)*)')
        if version is None:
            continue
        seen.append(f"Java {_fmt(version)} at {home}")
        if version[0] in supported:
            return home, version
    wanted = " or ".join(map(str, supported))
    found = "; ".join(seen) or "no Java at all"
    raise MissingTool(
        f"Keycloak needs Java {wanted}; found {found}. "
        f"Install OpenJDK {supported[0]} (apt-get install openjdk-{supported[0]}-jre-headless) "
        f"or set JAVA_HOME to a JDK {wanted}. / Keycloak 需要 Java {wanted}，请安装 OpenJDK 或设置 "
        "JAVA_HOME。"
    )


def ensure_java(supported: tuple[int, ...]) -> tuple[Path, tuple[int, ...]]:
    """Like ``java_home``, installing Debian's OpenJDK when none fits and we are root."""
    try:
        return java_home(supported)
    except MissingTool:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise
    apt_install(f"openjdk-{supported[0]}-jre-headless")
    return java_home(supported)


def require(program: str, minimum: tuple[int, ...], *, why: str, how: str) -> tuple[Path, tuple[int, ...]]:
    """``program`` on PATH with at least ``minimum``: (path, version)."""
    patterns = {"go": (["version"], r"go(\d+\.\d+(?:\.\d+)?)"), "node": (["--version"], r"v(\d+\.\d+\.\d+)")}
    args, pattern = patterns[program]
    path = shutil.which(program)
    if program == "go" and path is None and Path("/usr/local/go/bin/go").exists():
        path = "/usr/local/go/bin/go"
    version = _version_of([path, *args], pattern) if path else None
    if path is None or version is None or version < minimum:
        found = f"{program} {_fmt(version)} at {path}" if path else f"no {program} on PATH"
        raise MissingTool(
            f"{why} needs {program} {_fmt(minimum)} or newer; found {found}. {how} "
            f"/ 需要 {program} {_fmt(minimum)} 或更新版本"
        )
    return Path(path), version


def ensure_program(program: str, package: str) -> Path:
    """``program`` on PATH, installing Debian's ``package`` if absent."""
    path = shutil.which(program)
    if path is None:
        apt_install(package)
        path = shutil.which(program)
    if path is None:
        raise InstallFailed(
            f"installed {package} but '{program}' is still not on PATH / 已安装 {package}，但 PATH "
            f"中仍找不到 {program}"
        )
    return Path(path)
