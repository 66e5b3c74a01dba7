"""The genuine notebook server cannot be subverted from the sandbox it serves.

Kernels and terminals run as the same uid as the server. A hostile analyst tries to
attach to it (ptrace, /proc/<pid>/mem) and to have it run her code at its next start
(a shadowing package in the home, a user site-packages hook, a Jupyter config file that
switches the download guard off). None may work: the guard is what keeps data on the
one way out (THREAT-MODEL properties 1 and 2).
"""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import Page

from lab.settings import Settings
from tests.integration.browser import browser, run_json  # noqa: F401
from tests.security.sandbox_support import ANALYST, analyst, fetch, restart_server  # noqa: F401

pytestmark = [pytest.mark.security, pytest.mark.integration]

FIND_SERVER = """
import glob
def _argv(p):
    return open(p, "rb").read().split(b"\\0")
server = next(int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*/cmdline")
              if _argv(p)[0].rsplit(b"/", 1)[-1].startswith(b"python")
              and b"lab.hub.spawner.inside" in _argv(p))
"""

ATTACH = (
    FIND_SERVER
    + """
import ctypes, errno, json, os
out = {}
try:
    open(f"/proc/{server}/mem", "rb").close(); out["mem"] = "opened"
except OSError as e:
    out["mem"] = errno.errorcode[e.errno]
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, server, 0, 0) == 0:  # PTRACE_ATTACH
    os.waitpid(server, 0)
    libc.ptrace(17, server, 0, 0)  # PTRACE_DETACH: leave it running
    out["ptrace"] = "attached"
else:
    out["ptrace"] = errno.errorcode[ctypes.get_errno()]
print(json.dumps(out))
"""
)


def test_kernels_cannot_trace_or_read_the_server(analyst: Page) -> None:  # noqa: F811
    assert run_json(analyst, ANALYST, ATTACH) == {"mem": "EACCES", "ptrace": "EPERM"}
    assert run_json(analyst, ANALYST, "print(6 * 7)") == 42


PLANT = """
import os
marker = os.path.expanduser("~/.ran-in")
def hook(tag):
    return (f"import os\\nwith open({marker!r}, 'a') as f:\\n    f.write({tag!r} + ' ' + "
            "open('/proc/self/cmdline', 'rb').read().replace(b'\\\\0', b' ').decode() + '\\\\n')\\n")
os.makedirs(os.path.expanduser("~/jupyterhub"), exist_ok=True)
shadow = hook("shadow package:") + '''import importlib, sys
home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != home]
del sys.modules["jupyterhub"]
sys.modules["jupyterhub"] = importlib.import_module("jupyterhub")
'''
open(os.path.expanduser("~/jupyterhub/__init__.py"), "w").write(shadow)
site = os.path.expanduser("~/.local/lib/python3.11/site-packages")
os.makedirs(site, exist_ok=True)
open(os.path.join(site, "usercustomize.py"), "w").write(hook("user site:"))
os.makedirs(os.path.expanduser("~/.jupyter"), exist_ok=True)
open(os.path.expanduser("~/.jupyter/jupyter_server_config.py"), "w").write(
    hook("home config:") + "c.ServerApp.jpserver_extensions = {'lab.hub.spawner.guard': False}\\n")
open("x.csv", "w").write("a,b\\n1,2\\n")
if os.path.exists(marker):
    os.remove(marker)
print(1)
"""

RAN_IN = """
import json, os
path = os.path.expanduser("~/.ran-in")
print(json.dumps(open(path).read().splitlines() if os.path.exists(path) else []))
"""


def test_code_planted_in_the_home_does_not_run_in_the_server(
    analyst: Page,  # noqa: F811
    lab_stack: Settings,
) -> None:
    run_json(analyst, ANALYST, PLANT)
    try:
        restart_server(analyst, lab_stack)
        ran_in = run_json(analyst, ANALYST, RAN_IN)
        in_server = [line for line in ran_in if "lab.hub.spawner.inside" in line]
        assert in_server == [], in_server  # neither shadow package, user site nor home config ran
        refused = fetch(analyst, f"/user/{ANALYST}/files/x.csv")
        assert 400 <= refused["status"] < 500, refused["status"]  # the guard is still on
    finally:  # from the host: the server may not even start with the plants in place
        home = lab_stack.home / "homes" / ANALYST
        shutil.rmtree(home / "jupyterhub", ignore_errors=True)
        for planted in (
            ".local/lib/python3.11/site-packages/usercustomize.py",
            ".jupyter/jupyter_server_config.py",
            ".ran-in",
            "x.csv",
        ):
            (home / planted).unlink(missing_ok=True)
        restart_server(analyst, lab_stack)
