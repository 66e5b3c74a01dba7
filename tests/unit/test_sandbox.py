from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from tornado import web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from lab.hub.spawner import rootfs
from lab.hub.spawner.guard import DownloadGuard
from lab.hub.spawner.proxy import _UNIX_PORT
from lab.hub.spawner.relay import Route, parse, serve
from lab.hub.spawner.sandbox import RUN_DIR, SERVER_DIR, SandboxLimits, SandboxPaths, args_blob, bwrap_argv

pytestmark = pytest.mark.unit

STATE = Path("/srv/lab/.datalab")
LIMITS = SandboxLimits(tmp_bytes=1 << 30, shm_bytes=256 << 20)


def _argv() -> list[str]:
    paths = SandboxPaths(
        home=STATE / "homes" / "li.na",
        relays=STATE / "run" / "sandbox" / "li.na" / "relay",
        server=STATE / "run" / "sandbox" / "li.na" / "server",
        python_runtime=[Path("/opt/venv"), Path("/opt/python3.11")],
        code=Path("/srv/lab"),
    )
    return bwrap_argv(
        username="li.na",
        uid=20001,
        paths=paths,
        limits=LIMITS,
        env={"HOME": "/home/li.na"},
        command=["python", "-m", "lab.hub.spawner.inside"],
    )


def test_sandbox_has_its_own_network_pid_and_uid() -> None:
    argv = _argv()
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent", "--clearenv"):
        assert flag in argv
    tail = argv[argv.index("setpriv") :]
    assert "--reuid=20001" in tail and "--no-new-privs" in tail and "--bounding-set=-all" in tail


def test_only_home_sockets_runtime_and_code_are_mounted() -> None:
    argv = _argv()
    sandbox = STATE / "run" / "sandbox" / "li.na"
    sources = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    assert str(STATE / "homes" / "li.na") in sources and str(sandbox / "relay") in sources
    writable = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    # The relays' directory (sockets + token, which root rewrites) is read-only inside.
    assert writable == [str(STATE / "homes" / "li.na"), str(sandbox / "server")]
    assert str(STATE) not in sources and "/srv/lab" not in sources  # never the state dir or the whole repo
    assert "/srv/lab/lab" in sources
    assert argv[argv.index(str(sandbox / "relay")) + 1] == RUN_DIR
    assert argv[argv.index(str(sandbox / "server")) + 1] == SERVER_DIR


def test_tmp_and_shm_are_private_size_capped_tmpfs_mounts() -> None:
    argv = _argv()
    mounts = {argv[i + 1]: argv[i - 4 : i] for i, a in enumerate(argv) if a == "--tmpfs"}
    # A tmpfs of the sandbox's own mount namespace (never a host directory bound in), world-
    # writable with the sticky bit like any /tmp, and capped: a full /tmp is ENOSPC, not the host's.
    assert mounts == {
        "/dev/shm": ["--perms", "1777", "--size", str(256 << 20)],
        "/tmp": ["--perms", "1777", "--size", str(1 << 30)],
    }
    assert argv.index("/dev/shm") > argv.index("--dev")  # mounted over bwrap's read-only /dev/shm
    sources = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    assert not [s for s in sources if s.startswith(("/tmp", "/dev"))]


def test_tmpfs_caps_follow_the_memory_limit() -> None:
    from lab.hub.spawner.spawner import SandboxSpawner

    assert SandboxSpawner(mem_limit="2G").limits == SandboxLimits(tmp_bytes=1 << 30, shm_bytes=512 << 20)
    assert SandboxSpawner(mem_limit="2G", tmp_size="300M").limits.tmp_bytes == 300 << 20
    assert SandboxSpawner().limits == SandboxLimits(tmp_bytes=1 << 30, shm_bytes=256 << 20)
    with pytest.raises(Exception, match="SandboxSpawner.tmp_size must be at least 1M"):
        SandboxSpawner(tmp_size=10)


def test_sandbox_arguments_travel_on_a_descriptor_not_argv() -> None:
    argv = bwrap_argv(
        username="li.na",
        uid=20001,
        paths=SandboxPaths(Path("/h"), Path("/r"), Path("/s"), [Path("/v")], Path("/c")),
        limits=LIMITS,
        env={"JUPYTERHUB_API_TOKEN": "secret-token-value"},
        command=["python"],
    )
    blob, command = args_blob(argv)
    split = argv.index("--")
    assert blob.split(b"\0")[:-1] == [a.encode() for a in argv[1:split]] and blob.endswith(b"\0")
    assert command == argv[split:] and command[1] == "setpriv" and "secret-token-value" not in command
    assert b"secret-token-value" in blob
    with pytest.raises(ValueError):
        args_blob(["bwrap", "a\0b"])


def test_proxy_strips_the_port_hub_adds_to_unix_targets() -> None:
    target = "http+unix://%2Fsrv%2Flab%2Fjupyter.sock:80/user/li.na/"
    assert _UNIX_PORT.sub(r"\1", target) == "http+unix://%2Fsrv%2Flab%2Fjupyter.sock/user/li.na/"
    assert _UNIX_PORT.sub(r"\1", "http://127.0.0.1:8080/") == "http://127.0.0.1:8080/"


def test_relay_pair_carries_bytes_both_ways(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"echo:" + await reader.read())
            await writer.drain()
            writer.close()

        upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        sock = str(tmp_path / "svc.sock")
        routes = [*parse([f"{sock}=127.0.0.1:{port}"], []), Route(("tcp", "127.0.0.1", "0"), ("unix", sock))]
        outside, inside = await serve(routes)
        inner_port = inside.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", inner_port)
        writer.write(b"ping")
        writer.write_eof()
        reply = await reader.read()  # to EOF: the relays may pass the bytes on in pieces
        for server in (outside, inside, upstream):
            server.close()
        return reply

    assert asyncio.run(scenario()) == b"echo:ping"


def _victim(tmp_path: Path) -> tuple[Path, tuple[bytes, int, int]]:
    victim = tmp_path / "victim"
    victim.write_bytes(b"host file")
    os.chmod(victim, 0o640)
    info = victim.stat()
    return victim, (victim.read_bytes(), info.st_mode, info.st_mtime_ns)


def _state(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mode, info.st_mtime_ns


def test_new_files_are_never_written_through_planted_links(tmp_path: Path) -> None:
    victim, before = _victim(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    source = tmp_path / "welcome.ipynb"
    source.write_text("{}")
    (home / "dangling").symlink_to(tmp_path / "created")
    (home / "link").symlink_to(victim)
    os.link(victim, home / "hard")
    for name in ("dangling", "link", "hard"):
        assert rootfs.copy_new(source, home, name, uid=os.getuid(), gid=os.getgid(), mode=0o644) is False
    assert not (tmp_path / "created").exists() and _state(victim) == before
    assert rootfs.copy_new(source, home, "fresh", uid=os.getuid(), gid=os.getgid(), mode=0o644)
    assert (home / "fresh").read_text() == "{}" and stat.S_IMODE((home / "fresh").stat().st_mode) == 0o644
    (tmp_path / "swapped").symlink_to(home)
    with pytest.raises(rootfs.UnsafePath):
        rootfs.copy_new(source, tmp_path / "swapped", "x", uid=0, gid=0, mode=0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned directories need root")
def test_token_is_written_only_in_roots_own_directory(tmp_path: Path) -> None:
    victim, before = _victim(tmp_path)
    os.chmod(tmp_path, 0o755)
    relay = rootfs.fresh_dir(tmp_path, "relay", uid=0, gid=20001, mode=0o750)
    for name in (".token.tmp", ".token", "token.tmp"):
        (relay / name).symlink_to(victim)
    rootfs.write_atomic(relay, "token", b"t1", uid=0, gid=20001, mode=0o440)
    rootfs.write_atomic(relay, "token", b"t2", uid=0, gid=20001, mode=0o440)
    info = (relay / "token").stat()
    assert (relay / "token").read_bytes() == b"t2" and (info.st_uid, info.st_gid) == (0, 20001)
    assert stat.S_IMODE(info.st_mode) == 0o440 and _state(victim) == before
    server = rootfs.fresh_dir(tmp_path, "server", uid=20001, gid=20001, mode=0o700)
    os.chown(server, 20001, 20001)
    with pytest.raises(rootfs.UnsafePath):  # a directory the sandbox owns gets no token
        rootfs.write_atomic(server, "token", b"t", uid=0, gid=0, mode=0o400)
    rootfs.lock_dir(tmp_path, "server", gid=20001)
    info = server.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o550)
    (relay / "tree").mkdir()
    (relay / "tree" / "link").symlink_to(victim)
    rootfs.fresh_dir(tmp_path, "relay", uid=0, gid=0, mode=0o755)  # emptied without following links
    assert os.listdir(relay) == [] and _state(victim) == before


def _request(path: str) -> HTTPServerRequest:
    start = RequestStartLine("GET", path, "HTTP/1.1")
    return HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": "localhost"}))


def test_guard_refuses_downloads_before_routing() -> None:
    guard = DownloadGuard()
    base = "/user/li.na/"
    for path in (
        "/user/li.na/files/x.csv",
        "/user/li.na//files/x.csv",
        "/user/li.na/view/x.csv",
        "/user/li.na/nbconvert/html/a.ipynb",
        "/user/li.na/api/contents/a.ipynb?download=1",
        "/user/li.na/lab/tree/x?download",
    ):
        assert guard.refusal(_request(path), base) is not None, path
    for path in ("/user/li.na/api/contents/a.ipynb", "/user/li.na/lab", "/user/li.na/api/kernels"):
        assert guard.refusal(_request(path), base) is None, path
    assert guard.serves_home(web.StaticFileHandler, {"path": "/home/li.na"}, "/home/li.na")
    assert guard.serves_home(web.StaticFileHandler, {"path": "/"}, "/home/li.na")
    assert not guard.serves_home(web.StaticFileHandler, {"path": "/opt/venv/share"}, "/home/li.na")
    assert not guard.serves_home(web.RequestHandler, {"path": "/home/li.na"}, "/home/li.na")


def test_guard_sends_notebooks_up_to_the_cap_and_no_file_bodies() -> None:
    guard = DownloadGuard(max_notebook_bytes=1000)
    guard.check_model({"type": "directory", "content": [{"name": "x.csv", "content": None}]})
    guard.check_model({"type": "file", "content": None, "path": "x.csv"})
    guard.check_model({"type": "notebook", "content": {"cells": []}, "path": "a.ipynb"})
    for model, status, says in (
        ({"type": "file", "format": "text", "content": "a,b\n1,2", "path": "x.csv"}, 403, "airlock"),
        ({"type": "file", "format": "base64", "content": "YSxi", "path": "x.bin"}, 403, "airlock"),
        ({"type": "notebook", "content": {"cells": ["x" * 2000]}, "path": "big.ipynb"}, 413, "outputs"),
    ):
        with pytest.raises(web.HTTPError) as refused:
            guard.check_model(model)
        assert refused.value.status_code == status and says in str(refused.value.log_message)


def test_server_does_not_listen_without_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_server.serverapp import ServerApp

    from lab.hub.spawner import guard, inside

    calls: list[str] = []
    monkeypatch.setattr(ServerApp, "init_httpserver", lambda self: calls.append("bound"))
    inside._require_guard()
    monkeypatch.setattr(guard, "_loaded", False)
    with pytest.raises(SystemExit, match="guard did not load"):
        ServerApp.init_httpserver(object())  # type: ignore[arg-type]
    assert calls == []
    monkeypatch.setattr(guard, "_loaded", True)
    ServerApp.init_httpserver(object())  # type: ignore[arg-type]
    assert calls == ["bound"]
