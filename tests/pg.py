"""A throwaway PostgreSQL 15 cluster for tests, started once per session.

Fixtures:

- ``postgres_server`` (session): runs ``initdb`` and ``postgres`` from Debian's packages
  (``/usr/lib/postgresql/15/bin``, or ``$DATALAB_PG_BINDIR``) in a fresh temporary
  directory, listening on a unix socket in that directory (trusted) and on a free port of
  127.0.0.1 (a password is required there: ``scram-sha-256``, for roles a test creates with
  one), and stops it and removes the directory at the end. PostgreSQL refuses to run as root, so
  under root the server runs as ``nobody`` through ``setpriv``.
- ``postgres_url`` (function): a new, empty database on that server for one test, as an
  SQLAlchemy URL (``postgresql+psycopg://…``); dropped after the test.

Missing binaries make these fixtures *fail* (never skip) with the command to fix it.
Make the fixtures visible from ``tests/conftest.py``::

    from tests.pg import postgres_server, postgres_url  # noqa: F401  (fixtures)

or load the module as a plugin (``-p tests.pg``), which also registers the ``postgres``
marker through :func:`pytest_configure`.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["postgres_server", "postgres_url", "pytest_configure", "PostgresServer"]

DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
START_TIMEOUT_S = 60.0
_counter = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``postgres`` marker."""
    config.addinivalue_line(
        "markers", "postgres: runs against the throwaway PostgreSQL cluster (tests/pg.py)"
    )


@dataclass
class PostgresServer:
    """A running throwaway cluster."""

    root: Path
    socket_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int  # of 127.0.0.1, and the name of the socket file

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL of one database on this server."""
        return f"postgresql+psycopg://postgres@/{dbname}?host={self.socket_dir}&port={self.port}"

    def admin(self) -> Any:
        """An autocommit psycopg connection to the ``postgres`` database."""
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def _missing(bindir: Path) -> list[str]:
    return [name for name in ("initdb", "postgres") if not (bindir / name).is_file()]


def _bindir() -> Path:
    """The server binaries; Debian's ``postgresql`` package is installed if they are absent."""
    bindir = Path(os.environ.get("DATALAB_PG_BINDIR", DEFAULT_BINDIR))
    if _missing(bindir) and "DATALAB_PG_BINDIR" not in os.environ:
        from lab.errors import StackError
        from lab.stack.tools import apt_install

        try:
            apt_install("postgresql")
        except StackError as exc:
            pytest.fail(f"PostgreSQL is not installed and installing it failed: {exc}", pytrace=False)
    missing = _missing(bindir)
    if missing:
        pytest.fail(
            f"PostgreSQL 15 server binaries ({', '.join(missing)}) not found in {bindir}: "
            "run `apt-get install postgresql` (Debian/Ubuntu), or set DATALAB_PG_BINDIR "
            "to the directory holding initdb and postgres",
            pytrace=False,
        )
    return bindir


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail(
            "the PostgreSQL driver is missing: install it with `pip install 'psycopg[binary]==3.3.9'`",
            pytrace=False,
        )


def _unprivileged(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as ``nobody`` when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root needs `setpriv` (package util-linux) to start PostgreSQL as nobody")
    # setpriv execs the command (no intermediate process), so signals reach postgres directly.
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *cmd]


def _make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="datalab-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    return root


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}", pytrace=False
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(bindir: Path, root: Path) -> PostgresServer:
    data, socket_dir, log_path = root / "data", root / "sock", root / "server.log"
    _run(
        _unprivileged([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                       "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"]),
        "initdb",
    )  # fmt: skip
    _run(_unprivileged(["mkdir", "-m", "0755", str(socket_dir)]), "creating the socket directory")
    port = _free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(socket_dir),
        "port": str(port),
        "max_connections": "200",
        "fsync": "off",  # a throwaway cluster: durability is not what we test here
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    args = [str(bindir / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(_unprivileged(args), stdout=log, stderr=subprocess.STDOUT)
    server = PostgresServer(root=root, socket_dir=socket_dir, process=process, log_path=log_path, port=port)
    _wait_ready(server)
    return server


def _wait_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            pytest.fail(
                f"postgres exited with {server.process.returncode}:\n{server.log_tail()}", pytrace=False
            )
        try:
            server.admin().close()
            return
        except Exception as exc:  # psycopg.OperationalError until the socket accepts
            if time.monotonic() > deadline:
                _stop(server)
                pytest.fail(f"postgres did not accept connections: {exc}\n{server.log_tail()}", pytrace=False)
            time.sleep(0.1)


def _stop(server: PostgresServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)  # "fast" shutdown
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL 15 cluster on a private unix socket for the whole session."""
    bindir = _bindir()
    _require_psycopg()
    root = _make_root()
    try:
        server = _start(bindir, root)
        try:
            yield server
        finally:
            _stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database for one test, dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        with postgres_server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
