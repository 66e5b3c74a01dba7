"""A bureau onboards a new organisation and two registers the lab has never seen, and the new
organisation's analyst uses them (issue 12's acceptance, through the CLI and the gateway API).

The operator adds a fourth organisation and its analyst (``datalab org``); imports one register
from a CSV file (with a policy: published at once) and one from a table in a real PostgreSQL
server the test starts (without a policy: a draft, published by ``dataset accept``). The running
gateway knows both without a restart. The analyst logs in, finds them in the catalogue, applies
for one, is granted by the operator, runs a DP query and loads the masked extract built for the
grant with their own STS credentials. In Chromium, the operator finds both registers in the
console's catalogue and the analyst applies from it, imports a CSV and a PostgreSQL table on the
console's import page, and adds an organisation on its organisations page. Names are unique
per run; records are never deleted.
"""

from __future__ import annotations

import csv
import io
import json
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psycopg
import pytest
from playwright.sync_api import Browser

from lab import storage
from lab.extracts import ledger as open_ledger
from lab.settings import Settings, load_settings
from tests.integration import keycloak_test_client as kct
from tests.integration.browser import browser  # noqa: F401  (the Chromium fixture)
from tests.integration.org_support import create_analyst, credit_code
from tests.integration.test_consoles import console_login
from tests.security.identity_support import api, bearer
from tests.security.test_identity_storage import YEAR, s3, sts

pytestmark = pytest.mark.integration

OPERATOR, REVIEWER = "op.wang", "op.li"
DISTRICTS = ["张店区", "淄川区", "博山区"]
POLICY = """\
dataset: {name}
description: Residents receiving a district allowance (test register).
catalogue:
  title: {{zh: 津贴名册{tag}, en: Allowance roll {tag}}}
  owner: 淄博市民政局 (Zibo Civil Affairs Bureau)
  update_frequency: monthly
  keywords: [津贴, allowance]
release_modes: [masked, dp]
quasi_identifiers: [district, sex, age]
k: 5
privacy_unit: {{column: person_id, max_rows: 1}}
public_domains:
  district: [张店区, 淄川区, 博山区]
  sex: [女, 男]
columns:
  person_id: {{level: important, pi: sensitive, identifier: direct, rule: pseudonym, family: person}}
  district: {{level: general, pi: pi, rule: keep}}
  sex: {{level: general, pi: pi, rule: keep}}
  age: {{level: general, pi: pi, rule: generalise, to: band, width: 20}}
  allowance: {{level: important, pi: pi, rule: drop}}
"""


def datalab(*args: str) -> subprocess.CompletedProcess[str]:
    """``datalab ARGS``; a command with ``--as NAME`` runs logged in as NAME (``datalab login``)."""
    argv = kct.operator_argv(load_settings(), args)
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", *argv], capture_output=True, text=True, timeout=300
    )


def _rows(n: int, seed: int) -> list[tuple[str, str, str, int, float]]:
    rng = random.Random(seed)
    return [
        (
            f"P{seed}{i:06d}",
            rng.choice(DISTRICTS),
            rng.choice(["女", "男"]),
            rng.randrange(20, 80),
            rng.uniform(100, 900),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def onboarded(lab_stack: Settings) -> dict[str, str]:
    """A new organisation with a new analyst in it (the operator's CLI, the real Keycloak)."""
    kct.ensure(lab_stack)
    tag = secrets.token_hex(3)
    org = {"id": f"onboard-{tag}", "user": f"an.ob{tag}", "tag": tag}
    add_org(
        lab_stack, org["id"], org["user"], "测试普惠金融有限公司", "Test Inclusive Finance Co.", "enterprise"
    )
    return org


def add_org(lab: Settings, org_id: str, user: str, name_zh: str, name_en: str, kind: str) -> None:
    """``datalab org add`` as the operator, then a new analyst ``user`` joined to it."""
    added = datalab(
        "org", "add", org_id, "--name-zh", name_zh, "--name-en", name_en, "--credit-code", credit_code(),
        "--kind", kind, "--contact", "Data office / 数据办", "--as", OPERATOR,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    create_analyst(lab, user)
    joined = datalab("org", "add-user", org_id, user, "--as", OPERATOR)
    assert joined.returncode == 0, joined.stderr


@pytest.fixture(scope="module")
def registers(
    onboarded: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tag = onboarded["tag"]
    yield {
        "csv": f"allowance-csv-{tag}",
        "pg": f"allowance-pg-{tag}",
        "dir": tmp_path_factory.mktemp("onboard"),
    }


def _entry(name: str) -> dict[str, Any]:
    shown = datalab("dataset", "show", name, "--json")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def test_registers_from_a_csv_and_a_postgresql_table_are_published_and_catalogued(
    lab_stack: Settings, onboarded: dict[str, str], registers: dict[str, Any], postgres_url: str
) -> None:
    folder: Path = registers["dir"]
    # A CSV with its policy: validated, published at once.
    source = folder / "allowance.csv"
    with source.open("w", encoding="gb18030", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", "district", "sex", "age", "allowance"])
        writer.writerows(_rows(3000, seed=1))
    policy = folder / "csv.yaml"
    policy.write_text(POLICY.format(name=registers["csv"], tag=onboarded["tag"]), encoding="utf-8")
    done = datalab(
        "dataset",
        "import",
        str(source),
        "--name",
        registers["csv"],
        "--policy",
        str(policy),
        "--as",
        OPERATOR,
    )
    assert done.returncode == 0, done.stderr
    assert "3,000 rows" in done.stdout and "published" in done.stdout

    # A PostgreSQL table without a policy: a draft; published only once an operator accepts one.
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE allowance (person_id text, district text, sex text, age integer, allowance numeric)"
        )
        with conn.cursor().copy("COPY allowance FROM STDIN") as copy:
            for row in _rows(2000, seed=2):
                copy.write_row(row)
    draft = datalab(
        "dataset", "import", f"{url}&table=allowance", "--name", registers["pg"], "--as", OPERATOR
    )
    assert draft.returncode == 0, draft.stderr
    assert "Not published yet" in draft.stdout
    missing = datalab("dataset", "show", registers["pg"])
    assert missing.returncode == 1 and "no dataset" in missing.stderr
    policy_pg = folder / "pg.yaml"
    policy_pg.write_text(POLICY.format(name=registers["pg"], tag=onboarded["tag"]), encoding="utf-8")
    accepted = datalab("dataset", "accept", registers["pg"], "--policy", str(policy_pg), "--as", REVIEWER)
    assert accepted.returncode == 0, accepted.stderr

    for name, rows in ((registers["csv"], 3000), (registers["pg"], 2000)):
        entry = _entry(name)
        assert entry["source"] == "import" and entry["rows"] == rows and entry["version"] == 1
        assert (
            entry["title"]["zh"] == f"津贴名册{onboarded['tag']}" and entry["update_frequency"] == "monthly"
        )
        assert entry["k"] == 5 and entry["privacy_unit"] == {"column": "person_id", "max_rows": 1}
        columns = {c["name"]: c for c in entry["columns"]}
        assert columns["person_id"]["identifier"] == "direct" and columns["age"]["identifier"] == "quasi"
    found = datalab("dataset", "list", "--search", f"allowance {onboarded['tag']}", "--json")
    assert sorted(e["name"] for e in json.loads(found.stdout)) == sorted([registers["csv"], registers["pg"]])


def test_the_new_analyst_applies_from_the_catalogue_queries_and_loads_the_extract(
    lab_stack: Settings, onboarded: dict[str, str], registers: dict[str, Any]
) -> None:
    name = registers["csv"]
    token = kct.access_token(lab_stack, onboarded["user"])
    headers = bearer(token)
    # The running gateway reads accepted imports again on a miss and every 30 s.
    deadline, listed = time.monotonic() + 45, []
    while time.monotonic() < deadline:
        response = httpx.get(f"{api(lab_stack)}/catalogue", headers=headers, params={"q": "allowance"})
        assert response.status_code == 200, response.text
        listed = [e for e in response.json() if e["name"] == name]
        if listed:
            break
        time.sleep(3)
    assert listed, "the accepted register never reached the gateway's catalogue"
    (entry,) = listed
    assert entry["held"] is False and "holders" not in entry and entry["rows"] == 3000

    applied = httpx.post(
        f"{api(lab_stack)}/applications",
        headers=headers,
        json={"dataset": name, "purpose": "allowance take-up by district", "modes": ["dp", "masked"],
              "epsilon": 1.0, "delta": 1e-6, "term_days": 30},
    )  # fmt: skip
    assert applied.status_code == 200, applied.text
    approved = datalab("application", "approve", str(applied.json()["id"]), "--as", OPERATOR)
    assert approved.returncode == 0, approved.stderr
    assert f"built extracts/{onboarded['id']}/{name}/" in approved.stdout

    query = {
        "dataset": name,
        "aggregate": {"kind": "count"},
        "epsilon": 0.2,
        "group_by": {"columns": ["district"]},
    }
    preview = httpx.post(f"{api(lab_stack)}/queries/preview", headers=headers, json=query)
    assert preview.status_code == 200, preview.text
    released = httpx.post(f"{api(lab_stack)}/queries", headers=headers, json=query)
    assert released.status_code == 200, released.text
    rows = {r["district"]: r for r in released.json()["rows"]}
    assert set(rows) == set(DISTRICTS) and released.json()["budget"]["epsilon_remaining"] == pytest.approx(
        0.8
    )
    held = httpx.get(f"{api(lab_stack)}/catalogue/{name}", headers=headers).json()
    assert held["held"] is True

    # The masked extract, read with the analyst's own STS credentials.
    client = s3(lab_stack, sts(lab_stack, token, YEAR))
    prefix = f"{onboarded['id']}/{name}/"
    objects = [
        o.object_name for o in client.list_objects(storage.EXTRACTS_BUCKET, prefix=prefix, recursive=True)
    ]
    data = next(o for o in objects if o.endswith("/data.parquet"))
    frame = pl.read_parquet(io.BytesIO(client.get_object(storage.EXTRACTS_BUCKET, data).read()))
    assert 0 < frame.height <= 3000 and "allowance" not in frame.columns
    assert not frame["person_id"].str.starts_with("P1").any()  # pseudonyms, not the raw identifiers
    smallest = frame.group_by(["district", "sex", "age"]).len()["len"].min()
    assert smallest is not None and smallest >= 5  # k-anonymous on the policy's quasi-identifiers


def test_in_the_consoles_the_operator_finds_the_register_and_the_analyst_applies_from_the_catalogue(
    lab_stack: Settings,
    onboarded: dict[str, str],
    registers: dict[str, Any],
    browser: Browser,  # noqa: F811
) -> None:
    name, base = registers["pg"], f"{lab_stack.hub_url}/services/gateway/console"
    operator_context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    analyst_context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    try:
        operator = operator_context.new_page()
        console_login(operator, lab_stack, OPERATOR, "operator")
        operator.goto(f"{base}/operator/datasets?q={onboarded['tag']}")
        rows = operator.locator("#catalogue tr[data-dataset]")
        assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.dataset)")) == sorted(
            [registers["csv"], registers["pg"]]
        )
        held = operator.locator(f"#dataset-{registers['csv']} td.holders").inner_text()
        assert onboarded["id"] in held  # the grant of the previous test
        assert "每月" in operator.locator(f"#dataset-{name}").inner_text()

        analyst = analyst_context.new_page()
        console_login(analyst, lab_stack, onboarded["user"], "analyst")
        analyst.fill("#catalogue-search input[name=q]", "津贴")
        analyst.click("#catalogue-search button[type=submit]")
        analyst.wait_for_selector(f"#dataset-{name}")
        assert onboarded["id"] not in analyst.locator("#catalogue").inner_text()  # no holder names
        analyst.locator(f"#dataset-{name} a.apply").click()
        analyst.wait_for_url(f"**/analyst?dataset={name}**")
        assert analyst.locator("#apply select[name=dataset]").input_value() == name
        analyst.fill("#apply input[name=purpose]", "浏览器申请 / applied from the catalogue")
        analyst.click("#apply button[type=submit]")
        analyst.wait_for_selector("#flash")
        row = analyst.locator("#my-applications tr", has_text="浏览器申请").first
        app_id = int(row.locator("td").first.inner_text())
        assert name in row.inner_text() and "待审" in row.inner_text()

        operator.goto(f"{base}/operator")
        operator.locator(f"#application-{app_id} button[value=approve]").click()
        operator.wait_for_selector("#flash")
        analyst.goto(f"{base}/analyst?q={name}")
        assert "✓" in analyst.locator(f"#dataset-{name} td.holders").inner_text()
    finally:
        operator_context.close()
        analyst_context.close()


def _published_in_gateway(settings: Settings, user: str, name: str) -> dict[str, Any]:
    """The gateway's catalogue entry for ``name`` as ``user`` sees it (waits for the re-read)."""
    headers = bearer(kct.access_token(settings, user))
    deadline = time.monotonic() + 45
    while True:
        response = httpx.get(f"{api(settings)}/catalogue/{name}", headers=headers)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return dict(response.json())
        time.sleep(3)


def _granted_and_queried(lab: Settings, user: str, name: str, purpose: str) -> None:
    """``user`` finds ``name`` in the gateway's catalogue, applies for DP, is approved with the CLI
    and releases a count by district."""
    entry = _published_in_gateway(lab, user, name)
    assert entry["held"] is False
    headers = bearer(kct.access_token(lab, user))
    applied = httpx.post(
        f"{api(lab)}/applications",
        headers=headers,
        json={"dataset": name, "purpose": purpose, "modes": ["dp"],
              "epsilon": 0.5, "delta": 1e-6, "term_days": 30},
    )  # fmt: skip
    assert applied.status_code == 200, applied.text
    approved = datalab("application", "approve", str(applied.json()["id"]), "--as", OPERATOR)
    assert approved.returncode == 0, approved.stderr
    query = {"dataset": name, "aggregate": {"kind": "count"}, "epsilon": 0.1,
             "group_by": {"columns": ["district"]}}  # fmt: skip
    released = httpx.post(f"{api(lab)}/queries", headers=headers, json=query)
    assert released.status_code == 200, released.text
    assert {r["district"] for r in released.json()["rows"]} == set(DISTRICTS)


def test_the_operator_imports_a_csv_and_a_postgresql_table_in_the_console(
    lab_stack: Settings,
    onboarded: dict[str, str],
    registers: dict[str, Any],
    postgres_server: Any,
    browser: Browser,  # noqa: F811
) -> None:
    """Upload a CSV (the scanner's draft, edited in the page, then accepted) and import a table
    of a password-protected PostgreSQL role on 127.0.0.1 with its policy (published at once);
    the new analyst is granted the uploaded one and queries it. The password is in no record."""
    tag, folder = onboarded["tag"], registers["dir"]
    upload_name, table_name = f"allowance-up-{tag}", f"allowance-tab-{tag}"
    source = folder / "津贴名册.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", "district", "sex", "age", "allowance"])
        writer.writerows(_rows(1500, seed=3))
    password, database, role = secrets.token_urlsafe(12), f"registers_{tag}", f"importer_{tag}"
    with postgres_server.admin() as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
        admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    owner = postgres_server.url(database).replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE allowance (person_id text, district text, sex text, age integer, allowance numeric)"
        )
        conn.execute(f'GRANT SELECT ON allowance TO "{role}"')
        with conn.cursor().copy("COPY allowance FROM STDIN") as copy:
            for row in _rows(1200, seed=4):
                copy.write_row(row)
    with open_ledger(lab_stack) as book:
        before = book.records(limit=1, newest_first=True)[0].seq

    base = f"{lab_stack.hub_url}/services/gateway/console"
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        console_login(page, lab_stack, OPERATOR, "operator")
        page.click("#nav-imports")
        page.wait_for_selector("#import-file")
        page.fill("#import-file input[name=name]", upload_name)
        page.set_input_files("#import-file input[name=source]", str(source))
        page.click("#import-file button[type=submit]")
        page.wait_for_selector("#flash")
        assert "1,500 行" in page.locator("#flash").inner_text()  # imported, not published
        pending = page.locator(f"#import-{upload_name}-1")
        assert "person_id" in pending.locator("textarea").input_value()  # the scanner's draft
        assert "1,500" in pending.locator("td.rows").inner_text()
        pending.locator("textarea").fill(POLICY.format(name=upload_name, tag=tag))
        pending.locator("button[type=submit]").click()
        page.wait_for_selector("#flash")
        assert "已发布" in page.locator("#flash").inner_text(), page.locator("#flash").inner_text()
        assert page.locator(f"#import-{upload_name}-1").count() == 0

        # A server the bureau did not list is refused before any connection is tried.
        page.fill("#import-pg input[name=name]", table_name)
        page.fill("#import-pg input[name=url]", "postgresql://reader@db.internal.example/x?table=t")
        page.click("#import-pg button[type=submit]")
        page.wait_for_selector("#flash-error")
        assert "DATALAB_IMPORT_PG_HOSTS" in page.locator("#flash-error").inner_text()

        url = f"postgresql://{role}@127.0.0.1:{postgres_server.port}/{database}?table=public.allowance"
        page.fill("#import-pg input[name=name]", table_name)
        page.fill("#import-pg input[name=url]", url)
        page.fill("#import-pg input[name=password]", password)
        page.fill("#import-pg textarea[name=policy]", POLICY.format(name=table_name, tag=tag))
        page.click("#import-pg button[type=submit]")
        page.wait_for_selector("#flash")
        assert "已导入并发布" in page.locator("#flash").inner_text(), page.locator("#flash").inner_text()

        page.goto(f"{base}/operator/datasets?q={upload_name}")
        assert page.locator(f"#dataset-{upload_name}").count() == 1
    finally:
        context.close()

    for name, rows in ((upload_name, 1500), (table_name, 1200)):
        entry = _entry(name)
        assert entry["source"] == "import" and entry["rows"] == rows
    with open_ledger(lab_stack) as book:
        ours = book.records(after_seq=before)
    kinds = {(r.kind, r.dataset, r.actor) for r in ours}
    assert {("dataset-import", upload_name, OPERATOR), ("dataset-accept", upload_name, OPERATOR)} <= kinds
    assert ("dataset-import", table_name, OPERATOR) in kinds
    recorded = json.dumps([r.details for r in ours], ensure_ascii=False)
    gateway_log = (lab_stack.logs_dir / "gateway.log").read_text(errors="replace")
    assert password not in recorded and password not in gateway_log

    _granted_and_queried(lab_stack, onboarded["user"], upload_name, "console import check")


def test_the_operator_adds_an_organisation_in_the_console_and_its_analyst_queries(
    lab_stack: Settings,
    registers: dict[str, Any],
    browser: Browser,  # noqa: F811
) -> None:
    """Onboarding through the console (Chromium): the operator adds the organisation on the
    organisations page; Keycloak and MinIO follow; its analyst, joined in Keycloak, is granted the
    imported register and runs a DP query."""
    tag = secrets.token_hex(3)
    org_id, user = f"console-org-{tag}", f"an.co{tag}"
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        console_login(page, lab_stack, OPERATOR, "operator")
        page.goto(f"{lab_stack.hub_url}/services/gateway/console/operator/organisations")
        page.fill("#add-org input[name=id]", org_id)
        page.fill("#add-org input[name=name_zh]", "控制台测试数据有限公司")
        page.fill("#add-org input[name=name_en]", "Console Test Data Co.")
        page.fill("#add-org input[name=credit_code]", credit_code())
        page.select_option("#add-org select[name=kind]", "research")
        page.fill("#add-org input[name=contact]", "Data office / 数据办")
        page.click("#add-org button[type=submit]")
        page.wait_for_selector("#flash")
        assert page.locator(f"#org-{org_id}").get_attribute("data-status") == "active"
    finally:
        context.close()
    create_analyst(lab_stack, user)
    joined = datalab("org", "add-user", org_id, user, "--as", OPERATOR)
    assert joined.returncode == 0, joined.stderr
    claims = kct.claims(kct.access_token(lab_stack, user))
    assert claims["org"] == org_id and f"extracts-read-{org_id}" in claims["policy"]

    name = registers["csv"]  # the register the first test imported from a CSV
    _granted_and_queried(lab_stack, user, name, "console onboarding check")
