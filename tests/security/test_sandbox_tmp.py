"""A hostile analyst uses the sandbox's private /tmp and /dev/shm (THREAT-MODEL property 1).

Both are tmpfs mounts of the sandbox's own mount namespace. The analyst tries to leave files
for another analyst or on the host, to fill the host's memory through them, and plants
symlinks there pointing at a host file for root-side code to follow when the server stops
and starts again.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from lab.hub.spawner import cgroups
from lab.hub.spawner.spawner import cgroup_name
from lab.settings import Settings
from tests.integration.browser import browser, hub_api, login, run_json  # noqa: F401
from tests.security.sandbox_support import (
    ANALYST,
    analyst,  # noqa: F401
    fingerprint,
    make_victim,
    restart_server,
    victims_dir,
)

pytestmark = [pytest.mark.security, pytest.mark.integration]

OTHER = "chen.jing"  # another analyst (zibo-credit too): same organisation, still not her files
MIB = 1 << 20

WRITE = """
import json, os
out = {{}}
for d in ("/tmp", "/dev/shm"):
    with open(os.path.join(d, {name!r}), "w") as f:
        f.write("left by one analyst\\n")
    fs, info = os.statvfs(d), os.stat(d)
    out[d] = {{"size": fs.f_blocks * fs.f_frsize, "mode": oct(info.st_mode & 0o7777), "dev": info.st_dev}}
print(json.dumps(out))
"""

LOOK = """
import json, os
print(json.dumps({{d: {{"listed": {name!r} in os.listdir(d), "dev": os.stat(d).st_dev}}
                   for d in ("/tmp", "/dev/shm")}}))
"""


@pytest.fixture(scope="module")
def other(browser: Browser, lab_stack: Settings) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    login(page, lab_stack, OTHER)
    page.wait_for_url(f"**/user/{OTHER}/lab**", timeout=90_000)
    yield page
    hub_api(page, "DELETE", f"/users/{OTHER}/server")
    context.close()


def test_tmp_is_private_to_each_sandbox_and_never_the_hosts(analyst: Page, other: Page) -> None:  # noqa: F811
    name = f"left-{secrets.token_hex(6)}"
    written = run_json(analyst, ANALYST, WRITE.format(name=name))
    seen = run_json(other, OTHER, LOOK.format(name=name))
    print("written by", ANALYST, written, "seen by", OTHER, seen)
    for d in ("/tmp", "/dev/shm"):
        assert written[d]["mode"] == "0o1777"  # writable, sticky, like any /tmp
        assert seen[d]["listed"] is False  # the other analyst's sandbox does not have it
        assert seen[d]["dev"] != written[d]["dev"]  # two file systems, not one shared directory
        assert not (Path(d) / name).exists()  # nor the host's /tmp or /dev/shm
        assert written[d]["dev"] != os.stat(d).st_dev
    # Capped (SandboxSpawner.tmp_size / shm_size: half and a quarter of the 2G memory limit).
    assert written["/tmp"]["size"] == 1024 * MIB and written["/dev/shm"]["size"] == 512 * MIB


FILL = """
import json, os
path = "/dev/shm/fill"
with open(path, "wb") as f:
    for _ in range({mib}):
        f.write(os.urandom(1 << 20))
print(json.dumps(os.path.getsize(path)))
"""


def test_what_tmpfs_holds_counts_against_the_servers_memory(analyst: Page, lab_stack: Settings) -> None:  # noqa: F811
    group = cgroups.for_host(cgroup_name(lab_stack, ANALYST), cgroups.detect())
    before = group.memory_used()
    assert run_json(analyst, ANALYST, FILL.format(mib=128)) == 128 * MIB
    grown = group.memory_used() - before
    run_json(analyst, ANALYST, "import json, os; os.unlink('/dev/shm/fill'); print(json.dumps(1))")
    print(f"the sandbox's memory group grew by {grown / MIB:.0f} MiB for 128 MiB in /dev/shm")
    assert grown > 100 * MIB  # charged to the sandbox's memory limit, not to the host


PLANT = """
import json, os
victim, made = {victim!r}, []
for d in ("/tmp", "/dev/shm"):
    for name in ("token", "overrides.json", "jupyter.sock", "matplotlib", "victim"):
        os.symlink(victim, os.path.join(d, name)); made.append(os.path.join(d, name))
    os.symlink(os.path.dirname(victim), os.path.join(d, "victims")); made.append(os.path.join(d, "victims"))
with open("/tmp/kept", "w") as f:
    f.write("should not outlive the server\\n")
print(json.dumps(made))
"""


def test_tmp_ends_with_the_server_and_no_link_planted_there_is_followed(
    analyst: Page,  # noqa: F811
    lab_stack: Settings,
) -> None:
    victim = make_victim(victims_dir(lab_stack, "tmp-links"), "victim.txt")
    before, listing = fingerprint(victim), sorted(os.listdir(victim.parent))
    planted = run_json(analyst, ANALYST, PLANT.format(victim=str(victim)))
    assert len(planted) == 12
    restart_server(analyst, lab_stack)  # root stops the sandbox, cleans up and prepares a new one
    listing_code = "import json, os; print(json.dumps(sorted(os.listdir('/tmp') + os.listdir('/dev/shm'))))"
    after = run_json(analyst, ANALYST, listing_code)
    print("after a restart, /tmp and /dev/shm hold", after)
    assert not {"kept", "token", "victim", "victims", "matplotlib"} & set(after)
    assert fingerprint(victim) == before and sorted(os.listdir(victim.parent)) == listing
