"""A register gets a new version: the extracts of the earlier one stay readable, and are
rebuilt from the new one when the operator chooses, only for organisations that still hold
a grant (issue 12: "extracts of earlier versions stay readable or are rebuilt, as the
operator chooses").

Two new organisations get a masked grant on a new imported register; one grant is then
revoked. Version 2 is imported: nothing is rebuilt by itself, the CLI says how to, the holder's
analyst still reads the extract of version 1 with their own STS credentials. ``extract rebuild``
then builds the holder's extract from version 2 (recorded, manifest naming the version) and
gives the revoked organisation nothing.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from minio.error import S3Error
from playwright.sync_api import Browser

from lab import storage
from lab.extracts import ledger as open_ledger
from lab.extracts import versions
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.browser import browser  # noqa: F401  (the Chromium fixture)
from tests.integration.test_consoles import console_login
from tests.integration.test_onboarding import OPERATOR, POLICY, _published_in_gateway, _rows, add_org, datalab
from tests.security.identity_support import api, bearer
from tests.security.test_identity_storage import YEAR, s3, sts

pytestmark = pytest.mark.integration


def _org(lab: Settings, tag: str, n: int) -> dict[str, str]:
    org = {"id": f"versions-{tag}-{n}", "user": f"an.v{tag}{n}"}
    add_org(lab, org["id"], org["user"], f"版本测试机构{n}", f"Version test org {n}", "research")
    return org


def _import(folder: Path, name: str, tag: str, rows: int, seed: int, more: tuple[str, ...] = ()) -> str:
    source = folder / f"v{seed}.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", "district", "sex", "age", "allowance"])
        writer.writerows(_rows(rows, seed=seed))
    policy = folder / "policy.yaml"
    policy.write_text(POLICY.format(name=name, tag=tag), encoding="utf-8")
    done = datalab(
        "dataset", "import", str(source), "--name", name, "--policy", str(policy), "--as", OPERATOR, *more
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _granted(lab: Settings, user: str, name: str) -> None:
    _published_in_gateway(lab, user, name)  # the gateway re-reads accepted imports on a miss
    headers = bearer(kct.access_token(lab, user))
    applied = httpx.post(
        f"{api(lab)}/applications",
        headers=headers,
        json={"dataset": name, "purpose": "version check", "modes": ["masked"], "epsilon": 0.5,
              "delta": 1e-6, "term_days": 30},
    )  # fmt: skip
    assert applied.status_code == 200, applied.text
    approved = datalab("application", "approve", str(applied.json()["id"]), "--as", OPERATOR)
    assert approved.returncode == 0, approved.stderr


def _masked(lab: Settings, org: str, name: str) -> list[dict[str, Any]]:
    return [m for m in versions(lab, org, name) if m.get("kind", "masked") == "masked"]


@pytest.mark.security
def test_a_new_version_keeps_the_old_extracts_and_rebuilds_only_for_holders_when_asked(
    lab_stack: Settings,
    tmp_path: Path,
    browser: Browser,  # noqa: F811
) -> None:
    """Attack (an organisation whose grant was revoked): a rebuild after a new version must not
    hand it the new data; the revoked organisation's extract is neither rebuilt nor readable."""
    kct.ensure(lab_stack)
    tag = secrets.token_hex(3)
    name = f"allowance-ver-{tag}"
    assert "published" in _import(tmp_path, name, tag, 1200, seed=5)
    holder, revoked = _org(lab_stack, tag, 1), _org(lab_stack, tag, 2)
    for org in (holder, revoked):
        _granted(lab_stack, org["user"], name)
        assert len(_masked(lab_stack, org["id"], name)) == 1
    with open_ledger(lab_stack) as book:
        (grant,) = book.list_grants(organisation=revoked["id"], dataset=name)
    gone = datalab("grant", "revoke", str(grant.id), "--as", OPERATOR, "--reason", "term ended early")
    assert gone.returncode == 0, gone.stderr

    out = _import(tmp_path, name, tag, 1500, 6, ("--new-version",))
    assert "stay readable" in out and f"datalab extract rebuild {name}" in out
    (first,) = _masked(lab_stack, holder["id"], name)
    assert first["source_version"] == 1  # nothing rebuilt by itself

    # The holder's analyst still reads the extract of version 1.
    client = s3(lab_stack, sts(lab_stack, kct.access_token(lab_stack, holder["user"]), YEAR))
    key = f"{holder['id']}/{name}/{first['version']}/data.parquet"
    old = pl.read_parquet(io.BytesIO(client.get_object(storage.EXTRACTS_BUCKET, key).read()))
    assert 0 < old.height <= 1200

    listed = datalab("extract", "rebuild", name, "--dry-run", "--as", OPERATOR)
    assert listed.returncode == 0, listed.stderr
    assert holder["id"] in listed.stdout and revoked["id"] not in listed.stdout

    with open_ledger(lab_stack) as book:
        before = book.records(limit=1, newest_first=True)[0].seq
    rebuilt = datalab("extract", "rebuild", name, "--as", OPERATOR)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{holder['id']}: rebuilt extracts/{holder['id']}/{name}/" in rebuilt.stdout
    assert revoked["id"] not in rebuilt.stdout + rebuilt.stderr
    built = _masked(lab_stack, holder["id"], name)
    assert [m["source_version"] for m in built] == [1, 2]  # the earlier extract is kept
    assert built[-1]["rows_in"] == 1500 and built[-1]["created_by"] == OPERATOR
    assert [m["source_version"] for m in _masked(lab_stack, revoked["id"], name)] == [1]
    with open_ledger(lab_stack) as book:
        records = [
            r for r in book.records(after_seq=before) if r.kind == "extract-build" and r.dataset == name
        ]
    assert [(r.organisation, r.actor) for r in records] == [(holder["id"], OPERATOR)]

    again = datalab("extract", "rebuild", name, "--as", OPERATOR)
    assert again.returncode == 0 and "built from its published version" in again.stdout

    # The revoked organisation reads neither version (its MinIO policy follows the grants, within
    # the 60 s the threat model promises; the revocation itself rewrote it at once).
    other = s3(lab_stack, sts(lab_stack, kct.access_token(lab_stack, revoked["user"]), YEAR))
    prefix = f"{revoked['id']}/{name}/"
    deadline, listed_objects = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        try:
            listed_objects = [
                o.object_name for o in other.list_objects(storage.EXTRACTS_BUCKET, prefix=prefix)
            ]
        except S3Error as exc:
            assert exc.code == "AccessDenied", exc.code
            break
        time.sleep(2)
    else:
        raise AssertionError(f"the revoked organisation still lists its extracts: {listed_objects}")

    # Version 3 through the console: uploaded without a policy, accepted with "rebuild" ticked.
    source = tmp_path / "v7.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", "district", "sex", "age", "allowance"])
        writer.writerows(_rows(1800, seed=7))
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        console_login(page, lab_stack, OPERATOR, "operator")
        page.click("#nav-imports")
        page.fill("#import-file input[name=name]", name)
        page.check("#import-file input[name=new_version]")
        page.set_input_files("#import-file input[name=source]", str(source))
        page.click("#import-file button[type=submit]")
        page.wait_for_selector("#flash")
        pending = page.locator(f"#import-{name}-3")
        pending.locator("textarea").fill(POLICY.format(name=name, tag=tag))
        pending.locator("input[name=rebuild_extracts]").check()
        pending.locator("button[type=submit]").click()
        page.wait_for_selector("#flash")
        said = page.locator("#flash").inner_text()
        assert "已发布" in said and "重建 1 个机构" in said, said
    finally:
        context.close()
    deadline = time.monotonic() + 120  # built in the gateway's background queue
    while [m["source_version"] for m in _masked(lab_stack, holder["id"], name)] != [1, 2, 3]:
        assert time.monotonic() < deadline, _masked(lab_stack, holder["id"], name)
        time.sleep(2)
    assert _masked(lab_stack, holder["id"], name)[-1]["rows_in"] == 1800
    assert [m["source_version"] for m in _masked(lab_stack, revoked["id"], name)] == [1]
