"""No secret in any host process's argv while a sandbox runs (THREAT-MODEL property 10).

/proc/<pid>/cmdline is readable by every local user; the hub's API token used to travel
to the sandbox as ``bwrap … --setenv JUPYTERHUB_API_TOKEN <token>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from lab import vault
from lab.settings import Settings
from tests.integration.browser import browser, run_json  # noqa: F401
from tests.security.sandbox_support import ANALYST, analyst  # noqa: F401

pytestmark = [pytest.mark.security, pytest.mark.integration]

TOKENS = """
import json, os
print(json.dumps({"hub": os.environ.get("JUPYTERHUB_API_TOKEN", ""),
                  "keycloak": open(os.environ["DATALAB_TOKEN_FILE"]).read().strip()}))
"""


def _argv_of_every_process() -> dict[int, bytes]:
    argv = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv[int(proc.name)] = (proc / "cmdline").read_bytes()
            except OSError:
                continue  # the process ended meanwhile
    return argv


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def test_no_token_or_lab_secret_in_any_host_process_argv(analyst: Page, lab_stack: Settings) -> None:  # noqa: F811
    tokens = run_json(analyst, ANALYST, TOKENS)
    secrets = [tokens["hub"], tokens["keycloak"], *vault.known_secrets(lab_stack)]
    assert len(tokens["hub"]) >= 16 and tokens["keycloak"].count(".") == 2  # the sandbox got both
    needles = [s.encode() for s in secrets if len(s) >= 8]
    # The variable's name too, in this lab's processes (other labs on a shared machine may run
    # other code; this lab's tokens and secrets are looked for in every process).
    ours = [str(lab_stack.home).encode(), str(lab_stack.repo).encode()]
    leaking = sorted(
        f"{pid} ({_name(pid)})"
        for pid, cmdline in _argv_of_every_process().items()
        if any(needle in cmdline for needle in needles)
        or (b"JUPYTERHUB_API_TOKEN" in cmdline and any(mark in cmdline for mark in ours))
    )
    assert leaking == [], f"processes whose argv holds a token or lab secret: {leaking}"  # pids, never values
