"""A hostile analyst plants links where the root-side spawner works, and swaps the socket
the proxy targets. Root must never write, create or chown through what the sandbox can
write, and the proxy must keep reaching the genuine server (THREAT-MODEL property 1)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Page

from lab.settings import Settings
from tests.integration.browser import browser, run_json  # noqa: F401
from tests.security.sandbox_support import (
    ANALYST,
    analyst,  # noqa: F401
    fetch,
    fingerprint,
    host_path_of,
    make_victim,
    restart_server,
    sandbox_root,
    victims_dir,
)

pytestmark = [pytest.mark.security, pytest.mark.integration]

TOKEN_NAMES = [".token.tmp", "token", ".token", "token.tmp", ".token.new"]
SOCKET_NAMES = ["hub.sock", "gateway.sock", "s3.sock", "jupyter.sock"]

PLANT = """
import errno, glob, json, os
victim, names = {victim!r}, {names!r}
token_dir = os.path.dirname(os.environ["DATALAB_TOKEN_FILE"])
server_sock = next(arg.split("=", 1)[1] for p in glob.glob("/proc/[0-9]*/cmdline")
                   for arg in open(p, "rb").read().decode(errors="replace").split("\\0")
                   if arg.startswith("--ServerApp.sock="))
out = {{"planted": {{}}}}
for directory in sorted({{token_dir, os.path.dirname(server_sock)}}):
    for name in names:
        path = os.path.join(directory, name)
        try:
            os.symlink(victim, path + ".link")
            os.replace(path + ".link", path)
            out["planted"][path] = "planted"
        except OSError as e:
            out["planted"][path] = errno.errorcode.get(e.errno, str(e))
info = os.stat(os.environ["DATALAB_TOKEN_FILE"], follow_symlinks=False)
out["token"] = [info.st_ino, info.st_dev]
print(json.dumps(out))
"""


def _token_host_path(page: Page, settings: Settings) -> Path:
    inode, device = run_json(
        page,
        ANALYST,
        "import json, os; i = os.stat(os.environ['DATALAB_TOKEN_FILE'])\n"
        "print(json.dumps([i.st_ino, i.st_dev]))",
    )
    path = host_path_of(inode, device, sandbox_root(settings))
    assert path is not None, "the token the sandbox reads is not under the user's sandbox directory"
    return path


def _wait_for_token_write(path: Path, before: int) -> None:
    """Until root has written the token again (its inode changes), at most 200 s."""
    deadline = time.monotonic() + 200  # tokens live 300 s and are renewed with 240 s left
    while os.stat(path, follow_symlinks=False).st_ino == before:
        assert time.monotonic() < deadline, "the spawner wrote no fresh token within 200 s"
        time.sleep(2)


def test_token_refresh_never_writes_through_links_planted_from_the_sandbox(
    analyst: Page,  # noqa: F811
    lab_stack: Settings,
) -> None:
    victim = make_victim(victims_dir(lab_stack, "token"), "ledger-like.db")
    before = fingerprint(victim)
    token = _token_host_path(analyst, lab_stack)
    out = run_json(analyst, ANALYST, PLANT.format(victim=str(victim), names=TOKEN_NAMES))
    _wait_for_token_write(token, os.stat(token, follow_symlinks=False).st_ino)
    assert fingerprint(victim) == before  # bytes, owner, mode, mtime, link count
    token_dir = os.path.dirname(next(p for p in out["planted"] if p.endswith("/token")))
    in_token_dir = {p: r for p, r in out["planted"].items() if os.path.dirname(p) == token_dir}
    assert set(in_token_dir.values()) <= {"EROFS", "EACCES", "EPERM"}, in_token_dir
    datasets = "import json, lab.client as lab; print(json.dumps(lab.datasets().height))"
    assert run_json(analyst, ANALYST, datasets) > 0


def test_spawn_never_follows_links_planted_in_the_home_or_sandbox_dirs(
    analyst: Page,  # noqa: F811
    lab_stack: Settings,
) -> None:
    where = victims_dir(lab_stack, "spawn")
    victim = make_victim(where, "secrets-like")
    hard = make_victim(where, "hard-linked")
    before, before_hard = fingerprint(victim), fingerprint(hard)
    created = where / "created-by-root"
    created.unlink(missing_ok=True)
    # From inside: welcome.ipynb becomes a dangling link to a host path, and every socket and
    # token name the spawner uses becomes a link to the victim, where the sandbox can write.
    run_json(
        analyst,
        ANALYST,
        f"import os; os.remove('welcome.ipynb')\nos.symlink({str(created)!r}, 'welcome.ipynb')\nprint(1)",
    )
    run_json(analyst, ANALYST, PLANT.format(victim=str(victim), names=TOKEN_NAMES + SOCKET_NAMES))
    # From outside, as a stand-in for what protected_hardlinks keeps the sandbox from doing:
    # hard links to a host file at the same names in every directory of the user's sandbox.
    for directory in [Path(p) for p, _, _ in os.walk(sandbox_root(lab_stack))]:
        for name in TOKEN_NAMES + SOCKET_NAMES:
            if not os.path.lexists(directory / name):
                os.link(hard, directory / name)
    home = lab_stack.home / "homes" / ANALYST
    try:
        restart_server(analyst, lab_stack)
        assert not os.path.lexists(created), "root created a file through the dangling welcome.ipynb link"
        assert fingerprint(victim) == before
        assert replace(fingerprint(hard), nlink=1) == replace(before_hard, nlink=1)  # links: ours
        assert run_json(analyst, ANALYST, "print(6 * 7)") == 42
    finally:
        os.unlink(home / "welcome.ipynb")  # give the analyst her welcome notebook back
        restart_server(analyst, lab_stack)
    assert (home / "welcome.ipynb").is_file() and not (home / "welcome.ipynb").is_symlink()
    assert fingerprint(victim) == before


SWAP = """
import errno, glob, json, os, subprocess, sys, time
server_sock = next(arg.split("=", 1)[1] for p in glob.glob("/proc/[0-9]*/cmdline")
                   for arg in open(p, "rb").read().decode(errors="replace").split("\\0")
                   if arg.startswith("--ServerApp.sock="))
evil = '''
import errno, json, os, socket, sys
sock_path, report = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "done"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e))
s = socket.socket(socket.AF_UNIX)
here = os.path.join(os.path.dirname(sock_path), "evil.sock")
attempt("bind_beside", lambda: s.bind(here))
if out["bind_beside"] != "done":
    here = os.path.expanduser("~/evil.sock")
    if os.path.lexists(here):
        os.unlink(here)
    s.bind(here)
s.listen(16)
attempt("rename_over", lambda: os.rename(here, sock_path))
if out["rename_over"] != "done":
    attempt("unlink", lambda: os.unlink(sock_path))
    attempt("symlink_beside", lambda: os.symlink(here, sock_path + ".x"))
json.dump(out, open(report, "w"))
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\\\\r\\\\nContent-Length: 11\\\\r\\\\nConnection: close"
              b"\\\\r\\\\n\\\\r\\\\nEVIL-SERVER")
    c.close()
'''
report = os.path.expanduser("~/.swap-report.json")
if os.path.exists(report):
    os.remove(report)
errors = open(os.path.expanduser("~/.swap-errors.txt"), "wb")
child = subprocess.Popen([sys.executable, "-c", evil, server_sock, report], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=errors, stderr=errors)
for _ in range(1200):
    if os.path.exists(report) or child.poll() is not None:
        break
    time.sleep(0.05)
time.sleep(0.5)
if not os.path.exists(report):
    raise RuntimeError(open(os.path.expanduser("~/.swap-errors.txt")).read()[-500:])
print(json.dumps(json.load(open(report))))
"""


def test_the_proxy_target_cannot_be_replaced_from_the_sandbox(
    analyst: Page,  # noqa: F811
    lab_stack: Settings,
) -> None:
    attempts = run_json(analyst, ANALYST, SWAP)
    try:
        # EXDEV: a socket made elsewhere (the home) cannot be renamed onto another mount either.
        assert set(attempts.values()) <= {"EACCES", "EPERM", "EROFS", "EXDEV"}, json.dumps(attempts)
        status = fetch(analyst, f"/user/{ANALYST}/api/kernelspecs")  # (api/status races kernel shutdowns)
        assert status["status"] == 200 and "EVIL-SERVER" not in status["head"], status
        welcome = fetch(analyst, f"/user/{ANALYST}/api/contents/welcome.ipynb?content=0")
        assert welcome["status"] == 200 and '"welcome.ipynb"' in welcome["head"], welcome
    finally:
        restart_server(analyst, lab_stack)  # whatever happened, the next test gets a genuine server
        for name in ("evil.sock", ".swap-report.json", ".swap-errors.txt"):
            (lab_stack.home / "homes" / ANALYST / name).unlink(missing_ok=True)
