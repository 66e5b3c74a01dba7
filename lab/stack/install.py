"""Install what the lab's servers need, once, into the cache (``~/.cache/datalab``).

Every artefact lands under a versioned name and appears there only when complete
(built or unpacked beside it, then renamed), so an interrupted install is redone, never
half-used. A second run finds everything and downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from lab.errors import InstallFailed
from lab.settings import Settings
from lab.stack import pins, tools
from lab.stack.ui import Progress

CHP_SPEC = Path(__file__).parent / "chp"
REPO = Path(__file__).resolve().parents[2]
# The hub image's package set: the chart's own (a copy of its images/hub/requirements.txt)
# plus what the lab's hub-side code needs on top.
CHART_HUB_REQUIREMENTS = (
    REPO / "images" / "hub" / "requirements.txt",
    REPO / "images" / "hub" / "requirements-lab.txt",
)


def _run(argv: list[str], *, env: dict[str, str], what: str, log: Path, cwd: Path | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        result = subprocess.run(argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        last = log.read_text(errors="replace").strip().splitlines()[-8:]
        raise InstallFailed(
            f"{what} failed (exit {result.returncode}) / 安装步骤失败，请查看完整日志; full log: {log}\n  "
            + "\n  ".join(last)
        )


def _publish_dir(partial: Path, final: Path) -> Path:
    if final.exists():
        shutil.rmtree(partial, ignore_errors=True)
        return final
    os.replace(partial, final)
    return final


def keycloak(settings: Settings, ui: Progress) -> Path:
    """The unpacked Keycloak distribution (downloaded from Maven Central with mvn)."""
    root = settings.cache / "keycloak"
    home = root / f"keycloak-{pins.KEYCLOAK_VERSION}"
    if (home / "bin" / "kc.sh").exists():
        return home
    mvn = tools.ensure_program("mvn", "maven")
    archive = root / f"keycloak-quarkus-dist-{pins.KEYCLOAK_VERSION}.zip"
    with ui.step(f"Downloading Keycloak {pins.KEYCLOAK_VERSION} (≈160 MB, first run only)"):
        if not archive.exists():
            _run(
                [
                    str(mvn),
                    "-q",
                    "-B",
                    f"-Dmaven.repo.local={settings.cache / 'm2'}",
                    "dependency:copy",
                    f"-Dartifact={pins.KEYCLOAK_ARTIFACT}",
                    f"-DoutputDirectory={root}",
                ],
                env=dict(os.environ),
                what="Downloading Keycloak with mvn",
                log=settings.cache / "logs" / "keycloak-download.log",
                cwd=root if root.exists() else None,
            )
        partial = root / f".keycloak-{pins.KEYCLOAK_VERSION}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(partial)
        inner = partial / f"keycloak-{pins.KEYCLOAK_VERSION}"
        for script in (inner / "bin").glob("*.sh"):
            script.chmod(0o755)
        _publish_dir(inner, home)
        shutil.rmtree(partial, ignore_errors=True)
    return home


def minio(settings: Settings, ui: Progress) -> Path:
    """The MinIO server binary, built from source with ``go install`` (cached)."""
    return _go_tool(
        settings,
        ui,
        "minio",
        pins.MINIO_MODULE,
        pins.MINIO_VERSION,
        pins.MINIO_GO,
        "Building the MinIO server",
        "Building MinIO from source (first run only, ≈5 min on 2 cores)",
    )


def _go_tool(
    settings: Settings,
    ui: Progress,
    name: str,
    module: str,
    version: str,
    min_go: tuple[int, int],
    why: str,
    step: str,
) -> Path:
    """``<cache>/<name>/<version>/<name>``, built once with ``go install module@version``."""
    target = settings.cache / name / version / name
    if target.exists():
        return target
    go, _ = tools.require(
        "go",
        min_go,
        why=why,
        how="Install Go from the machine image (/usr/local/go) or put a newer go first on PATH.",
    )
    with ui.step(step):
        _go_install(settings, go, f"{module}@{version}", target, name)
    return target


def _go_install(settings: Settings, go: Path, module: str, target: Path, name: str) -> None:
    """``go install module`` into ``target``'s directory, published only when complete."""
    partial = target.parent.with_name(target.parent.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cache = settings.cache
    env = {
        **os.environ,
        "GOPATH": str(cache / "go"),
        "GOMODCACHE": str(cache / "go" / "pkg" / "mod"),
        "GOCACHE": str(cache / "go-build"),
        "GOBIN": str(partial),
        "CGO_ENABLED": "0",
        "GOFLAGS": "-buildvcs=false",
        "GOTOOLCHAIN": "local",
        "PATH": f"{go.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    _run(
        [str(go), "install", module],
        env=env,
        what=f"Building {name} with go install",
        log=cache / "logs" / f"{name}-build.log",
    )
    _publish_dir(partial, target.parent)


def helm(settings: Settings, ui: Progress) -> Path:
    """The helm binary (v3, pinned), built from the Go module proxy with ``go install`` (cached)."""
    return _go_tool(
        settings,
        ui,
        "helm",
        pins.HELM_MODULE,
        pins.HELM_VERSION,
        pins.HELM_GO,
        f"Building helm {pins.HELM_VERSION}",
        f"Building helm {pins.HELM_VERSION} from source (first run only, ≈8 min on 2 cores)",
    )


def _chart_hub_python() -> Path:
    """A Python of the hub image's version (pyenv's or on PATH), else this one."""
    major, minor = pins.CHART_HUB_PYTHON
    found = shutil.which(f"python{major}.{minor}")
    candidates = [Path(found)] if found else []
    candidates += sorted(Path.home().glob(f".pyenv/versions/{major}.{minor}.*/bin/python{major}.{minor}"))
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "-c", "import venv"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return Path(sys.executable)


def chart_hub_env(settings: Settings, ui: Progress) -> Path:
    """The Python of a virtualenv with the chart's hub-image package set plus the lab's hub-side
    needs (``CHART_HUB_REQUIREMENTS``), cached and keyed by those files and the Python version.
    ``lab`` itself is not installed: put the checkout on ``PYTHONPATH``, as the hub image does."""
    python = _chart_hub_python()
    version = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    digest = hashlib.sha256(version.encode())
    for path in CHART_HUB_REQUIREMENTS:
        digest.update(path.read_bytes())
    home = settings.cache / "z2jh-hub" / f"py{version}-{digest.hexdigest()[:12]}"
    env_python = home / "bin" / "python"
    complete = home / ".datalab-complete"
    if complete.exists():
        return env_python
    # psycopg2 (in the chart's set) has no wheel: it builds against libpq with a C compiler.
    tools.ensure_program("pg_config", "libpq-dev")
    tools.ensure_program("gcc", "gcc")
    env = {**os.environ, "PIP_CACHE_DIR": str(settings.cache / "pip"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    log = settings.cache / "logs" / "z2jh-hub-env.log"
    with ui.step(f"Installing the chart's hub package set (Python {version}, first run only)"):
        # Made in place (a venv's scripts name its path); used only once marked complete.
        _run(
            [str(python), "-m", "venv", "--clear", str(home)], env=env, what="Creating the hub venv", log=log
        )
        requirements = [arg for path in CHART_HUB_REQUIREMENTS for arg in ("-r", str(path))]
        _run(
            [str(env_python), "-m", "pip", "install", "-q", *requirements],
            env=env,
            what="Installing the chart's hub package set",
            log=log,
        )
        _run([str(env_python), "-m", "pip", "check"], env=env, what="pip check", log=log)
        complete.write_text(version + "\n")
    return env_python


def proxy_binary(settings: Settings) -> Path:
    """Where ``proxy`` installs configurable-http-proxy (keyed by the lock file)."""
    spec = hashlib.sha256(
        (CHP_SPEC / "package.json").read_bytes() + (CHP_SPEC / "package-lock.json").read_bytes()
    ).hexdigest()[:12]
    home = settings.cache / "node" / f"chp-{pins.CHP_VERSION}-{spec}"
    return home / "node_modules" / ".bin" / "configurable-http-proxy"


def proxy(settings: Settings, ui: Progress) -> Path:
    """configurable-http-proxy from npm, installed from the pinned lock file."""
    tools.require(
        "node",
        pins.CHP_NODE,
        why=f"configurable-http-proxy {pins.CHP_VERSION}",
        how="Install Node.js 20 or newer (the machine image ships it as /usr/bin/node).",
    )
    binary = proxy_binary(settings)
    if binary.exists():
        return binary
    npm = tools.ensure_program("npm", "npm")
    home = binary.parent.parent.parent
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(CHP_SPEC / name, partial / name)
    with ui.step(f"Installing configurable-http-proxy {pins.CHP_VERSION} from npm"):
        _run(
            [str(npm), "ci", "--no-audit", "--no-fund", "--cache", str(settings.cache / "npm")],
            env=dict(os.environ),
            cwd=partial,
            what="npm ci configurable-http-proxy",
            log=settings.cache / "logs" / "chp-install.log",
        )
        _publish_dir(partial, home)
    return binary


def bubblewrap(ui: Progress) -> Path:
    """bubblewrap from Debian (the notebook sandbox)."""
    with ui.step("Checking bubblewrap"):
        return tools.ensure_program("bwrap", "bubblewrap")
