"""Two gateway replicas as a cluster runs them (issue 14), against the real lab.

Each replica is a real gateway process (uvicorn) that reaches every service by an address
other than 127.0.0.1: Keycloak, MinIO, the hub API and the public origin are each behind a
small TCP relay this test runs on 127.0.0.2-5, so a service the gateway still looked for
at 127.0.0.1 would show as a relay nobody used. The secrets are the lab's own directory,
bind-mounted read-only in a private mount namespace (as a Kubernetes Secret is mounted),
with ``DATALAB_SECRETS_READONLY=1``. Both replicas share one PostgreSQL ledger and seal
its audit records into MinIO every second: the segments must follow each other without
overlap or gap, and the chain stays one chain.
"""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, delete, select, update

from lab import auditpkg, storage, vault
from lab.ledger import Ledger, db
from lab.settings import GATEWAY_PREFIX, Settings, load_settings
from lab.store.ledgers import open_ledger
from tests.integration import keycloak_test_client as kct
from tests.pg import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

RECORDS_PER_WRITER = 40


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Relay = self.server  # type: ignore[assignment]
        server.connections += 1
        with socket.create_connection(("127.0.0.1", server.target)) as upstream:
            done = threading.Event()

            def pump(src: socket.socket, dst: socket.socket) -> None:
                try:
                    while chunk := src.recv(65536):
                        dst.sendall(chunk)
                except OSError:
                    pass
                finally:
                    done.set()

            threading.Thread(target=pump, args=(upstream, self.request), daemon=True).start()
            pump(self.request, upstream)
            done.wait(timeout=30)


class Relay(socketserver.ThreadingTCPServer):
    """``address:<free port>`` → ``127.0.0.1:target``, counting connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, target: int) -> None:
        super().__init__((address, 0), _Pipe)
        self.target, self.connections = target, 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def relays(lab_stack: Settings) -> Iterator[dict[str, Relay]]:
    ports = lab_stack.ports
    made = {
        "keycloak": Relay("127.0.0.2", ports.keycloak),
        "minio": Relay("127.0.0.3", ports.minio),
        "hub": Relay("127.0.0.4", ports.hub_api),
        "public": Relay("127.0.0.5", ports.hub),
    }
    yield made
    for relay in made.values():
        relay.shutdown()
        relay.server_close()


@pytest.fixture(scope="module")
def ledger_url(postgres_server: PostgresServer) -> Iterator[str]:
    """One PostgreSQL database the replicas share for the whole module."""
    name = f"replicas_{os.getpid()}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    with postgres_server.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def replicas(
    lab_stack: Settings, relays: dict[str, Relay], ledger_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    secrets = lab_stack.secrets_dir
    before = sorted(p.name for p in secrets.iterdir())
    kc = relays["keycloak"].url
    env = {
        **os.environ,
        "DATALAB_DB_URL": ledger_url,
        "DATALAB_SECRETS_DIR": str(secrets),
        "DATALAB_SECRETS_READONLY": "1",
        "DATALAB_KEYCLOAK_URL": kc,
        "DATALAB_KEYCLOAK_ISSUER": f"{kc}/realms/{lab_stack.realm}",  # tokens fetched through the relay
        "DATALAB_MINIO_ENDPOINT": relays["minio"].url.removeprefix("http://"),
        "DATALAB_HUB_API_URL": f"{relays['hub'].url}/hub/api",
        "DATALAB_PUBLIC_URL": relays["public"].url,
        "DATALAB_SEAL_INTERVAL_S": "1",
        "DATALAB_AUDIT_ANCHOR": "object",  # one head for every replica, in the audit archive
    }
    # The secrets directory is read-only inside each replica's own mount namespace.
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    procs, urls = [], []
    for i in range(2):
        home = tmp_path_factory.mktemp(f"replica{i}")
        port = _free_port()
        log = open(home / "gateway.log", "wb")  # noqa: SIM115 (closed with the process)
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(secrets)]
        argv += [sys.executable, "-m", "uvicorn", "--factory", "lab.gateway.app:app_from_env"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        proc = subprocess.Popen(argv, env={**env, "DATALAB_HOME": str(home)}, stdout=log, stderr=log)
        procs.append((proc, log, home))
        urls.append(f"http://127.0.0.1:{port}{GATEWAY_PREFIX}")
    try:
        for (proc, _, home), url in zip(procs, urls, strict=True):
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, (home / "gateway.log").read_text(errors="replace")[-3000:]
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "a replica did not answer /health within 90 s"
                time.sleep(0.5)
        yield urls
    finally:
        for proc, log, home in procs:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
            text = (home / "gateway.log").read_text(errors="replace")
            assert "Read-only file system" not in text, text[-3000:]
        assert sorted(p.name for p in secrets.iterdir()) == before  # nothing was written there


def test_replicas_reach_every_service_by_its_own_name_with_read_only_secrets(
    lab_stack: Settings, relays: dict[str, Relay], replicas: list[str]
) -> None:
    kct.ensure(lab_stack)
    answer = httpx.post(
        f"{relays['keycloak'].url}/realms/{lab_stack.realm}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": kct.TEST_CLIENT,
            "client_secret": vault.secret(lab_stack, kct.SECRET),
            "username": "li.na",
            "password": vault.secret(lab_stack, "demo-password"),
            "scope": "openid",
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text[:300]
    token = answer.json()["access_token"]
    for url in replicas:
        me = httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert me.status_code == 200, me.text[:300]
        # Signed by Keycloak (keys fetched through the relay) and li.na's account looked up there;
        # this fresh ledger registers no organisation, so her token's org claim counts for nothing.
        assert me.json()["username"] == "li.na" and me.json()["org"] is None
        # A hub API token is checked with the hub through its own address (and refused: it is made up).
        hub = httpx.get(f"{url}/api/me", headers={"Authorization": "Bearer not-a-real-hub-token"}, timeout=30)
        assert hub.status_code == 401
        # The console's login sends browsers to the public issuer and back to the public origin.
        login = httpx.get(f"{url}/console/login", timeout=30)
        assert login.status_code in (302, 303, 307)
        assert login.headers["location"].startswith(f"{relays['keycloak'].url}/realms/")
        assert relays["public"].url.replace(":", "%3A").replace("/", "%2F") in login.headers["location"]
    used = {name: relay.connections for name, relay in relays.items()}
    assert used["keycloak"] > 0 and used["minio"] > 0 and used["hub"] > 0, used


def test_two_replicas_on_one_ledger_seal_without_overlap_and_keep_one_chain(
    lab_stack: Settings, replicas: list[str], ledger_url: str
) -> None:
    env = {**os.environ, "DATALAB_DB_URL": ledger_url, "DATALAB_AUDIT_ANCHOR": "object"}
    ledger = open_ledger(load_settings(env))
    try:

        def write(writer: int) -> None:
            for i in range(RECORDS_PER_WRITER):
                ledger.append("test-record", actor=f"writer-{writer}", details={"n": i})
                time.sleep(0.05)

        writing = threading.Event()

        def seal_by_hand() -> None:  # an operator's `datalab audit seal` at the same moments
            while writing.is_set():
                auditpkg.seal(lab_stack, ledger, actor="op.wang")
                time.sleep(0.02)

        writing.set()
        writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
        sealers = [threading.Thread(target=seal_by_hand) for _ in range(3)]
        for t in writers + sealers:
            t.start()
        for t in writers:
            t.join()
        writing.clear()
        for t in sealers:
            t.join()
        deadline = time.monotonic() + 60
        while auditpkg.pending(lab_stack, ledger):
            assert time.monotonic() < deadline, "the replicas left records unsealed for 60 s"
            time.sleep(1)
        client = storage.root_client(lab_stack)
        segments = sorted(auditpkg._segments(client, auditpkg.ledger_id(ledger)))
        assert len(segments) >= 2, segments  # both writers' records arrived over several seconds
        expected = 1
        for first, last, _ in segments:
            assert first == expected, f"segments overlap or leave a gap: {[(f, la) for f, la, _ in segments]}"
            expected = last + 1
        assert ledger.verify().ok
        seals = ledger.records(kind=auditpkg.SEAL)
        assert len(seals) == len(segments)  # one seal record per segment, none written twice
        assert auditpkg.archive_report(lab_stack, ledger).ok
        verified = ledger.verify()
        assert verified.ok and verified.anchored

        # Someone who can write the database drops the last three records and moves the head
        # row back: the chain in the database is consistent again, but the anchor the
        # replicas keep in the object-locked archive still names the old head.
        engine = create_engine(ledger_url)
        with engine.begin() as conn:
            head = conn.execute(select(db.audit_head.c.seq)).scalar_one()
            keep = conn.execute(select(db.audit.c.hash).where(db.audit.c.seq == head - 3)).scalar_one()
            conn.execute(delete(db.audit).where(db.audit.c.seq > head - 3))
            conn.execute(update(db.audit_head).values(seq=head - 3, hash=keep))
        engine.dispose()
        again = open_ledger(load_settings(env))  # a fresh process, e.g. an auditor's verify
        try:
            broken = again.verify()
            assert not broken.ok and broken.anchored, broken
        finally:
            again.close()
    finally:
        ledger.close()


def test_the_seal_lock_is_one_for_every_process_on_the_ledger(postgres_url: str, tmp_path: Path) -> None:
    """The mechanism behind the test above, on PostgreSQL and on an SQLite file."""
    for url in (postgres_url, f"sqlite:///{tmp_path / 'ledger.sqlite'}"):
        first, second = Ledger(url), Ledger(url)
        try:
            with first.exclusive("audit-seal") as mine:
                assert mine
                with second.exclusive("audit-seal", wait=False) as theirs:
                    assert not theirs
            with second.exclusive("audit-seal", wait=False) as theirs:
                assert theirs
        finally:
            first.close()
            second.close()
