"""The disclosure risk an operator sees before approving, and the auditor's risk reports.

On the real lab: an analyst of sdu-research applies in the console for a masked extract of the
social insurance register (a longitudinal register: trajectory risk applies). Before the
operator decides, the approval screen shows the risk the extract would carry (a dry run of
the risk model), says the organisation has no extract of it yet, and says what the approval
brings the organisation's budget total to (its agreement, recorded for this module through
the audited CLI verb). The operator approves; the extract that is then built and published
carries exactly the measures the operator was shown, and the auditor console lists its risk
report with the build time in Beijing time. This module owns sdu-research's grants,
applications, agreement and extracts on social_insurance; nothing else in the tests uses them.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from lab import cli, extracts, storage
from lab.extracts import ledger as open_ledger
from lab.policy import load_policies
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.console_client import console_base, console_login, csrf

pytestmark = pytest.mark.integration

ORG, DATASET, ANALYST = "sdu-research", "social_insurance", "sun.hao"
OPERATOR, AUDITOR = "op.wang", "audit.zhao"
PURPOSE = "Employment spells by employer / 按用人单位的就业轨迹研究"
WAIT_S = 600.0  # a generous deadline for background work, not a performance figure
CELLS = (
    "threshold",
    "k",
    "l",
    "records",
    "prosecutor",
    "journalist",
    "marketer",
    "uniques",
    "trajectory-level",
    "trajectory",
    "spells-suppressed",
)
AGREEMENT = ["--epsilon", "10", "--delta", "1e-4", "--window-days", "365", "--per-grant-epsilon", "5"]


def _clean(settings: Settings) -> None:
    """No grant, pending application or extract of sdu-research on social_insurance."""
    with open_ledger(settings) as book:
        for grant in book.list_grants(organisation=ORG, dataset=DATASET, active=True):
            book.revoke(grant.id, by=OPERATOR, reason="risk console tests: set-up or clean-up")
        for app in book.list_applications(organisation=ORG, state="pending"):
            if app.dataset == DATASET:
                book.reject(app.id, by=OPERATOR, by_org=None, reason="risk console tests: clean-up")
    client = storage.root_client(settings)
    for item in client.list_objects(storage.EXTRACTS_BUCKET, prefix=f"{ORG}/{DATASET}/", recursive=True):
        client.remove_object(storage.EXTRACTS_BUCKET, item.object_name)


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Iterator[Settings]:
    _clean(lab_stack)
    kct.cli_login(lab_stack, OPERATOR)  # the agreement is recorded by the logged-in operator
    agreement = ["budget", "agreement", "set", ORG, DATASET, *AGREEMENT, "--as", OPERATOR]
    assert cli.main([*agreement, "--reason", "risk console tests: the organisation's agreement"]) == 0
    yield lab_stack
    _clean(lab_stack)
    remove = ["budget", "agreement", "remove", ORG, DATASET, "--as", OPERATOR, "--reason", "tests done"]
    assert cli.main(kct.operator_argv(lab_stack, remove)) == 0


def _block(page: str, start: str, end: str) -> str:
    begin = page.index(start)
    stop = page.find(end, begin + len(start))
    return page[begin : stop if stop >= 0 else len(page)]


def _cell(block: str, name: str) -> str:
    found = re.search(rf'<td class="{name}">(.*?)</td>', block, flags=re.S)
    assert found, f"no {name} cell"
    return html.unescape(re.sub(r"<[^>]+>", "", found[1])).strip()


def _risk_row(session: httpx.Client, settings: Settings, app_id: int) -> str:
    """The application's risk row on the operator page once the dry run is done."""
    deadline = time.monotonic() + WAIT_S
    while True:
        page = session.get(f"{console_base(settings)}/operator")
        assert page.status_code == 200
        row = _block(page.text, f'id="risk-{app_id}"', "<h2")
        if 'data-state="computing"' not in row or time.monotonic() > deadline:
            return row
        time.sleep(2)


def _measures(report: dict[str, Any]) -> dict[str, str]:
    """What the page shows for a report, formatted as the templates format it."""
    r = report["records"]
    t = report["trajectory"]
    return {
        "threshold": f"{report['threshold']}",
        "k": f"{report['k_required']} / {r['k']}",
        "l": f"{report['l_achieved']}",
        "records": f"{r['records']} / {r['classes']}",
        "prosecutor": f"{r['prosecutor_max']:.3f} / {r['prosecutor_mean']:.4f}",
        "journalist": f"{r['journalist_max']:.3f} / {r['journalist_mean']:.4f}",
        "marketer": f"{r['marketer']:.4f}",
        "uniques": f"{r['uniques']}",
        "trajectory-level": f"{report['trajectory_level']}",
        "trajectory": f"{t['risk_max']:.3f} / {t['risk_mean']:.4f} ({t['spells']})",
        "spells-suppressed": f"{report['spells_suppressed']}",
    }


def _apply(settings: Settings) -> int:
    with closing(console_login(settings, ANALYST)) as analyst:
        token = csrf(analyst.get(f"{console_base(settings)}/analyst").text)
        form = {
            "csrf": token,
            "dataset": DATASET,
            "purpose": PURPOSE,
            "modes": ["masked", "dp"],
            "epsilon": "1.5",
            "delta": "1e-6",
            "term_days": "30",
        }
        done = analyst.post(f"{console_base(settings)}/analyst/apply", data=form)
        assert done.status_code == 200 and 'id="flash-error"' not in done.text and 'id="flash"' in done.text
    with open_ledger(settings) as book:
        pending = book.list_applications(organisation=ORG, state="pending")
    (app,) = [a for a in pending if a.dataset == DATASET]
    return app.id


def test_the_operator_sees_the_risk_before_approving_and_the_extract_carries_it(lab: Settings) -> None:
    policy = load_policies(lab.policies_dir)[DATASET]
    app_id = _apply(lab)
    with closing(console_login(lab, OPERATOR)) as operator:
        row = _risk_row(operator, lab, app_id)  # Chinese by default
        assert 'data-state="ready"' in row, row[:2000]
        assert "披露风险" in row and "检察官风险" in row and "轨迹风险" in row and "(Asia/Shanghai)" in row
        assert 'data-built="false"' in row and "尚未生成" in row
        assert 'data-passes="true"' in row and "通过" in row
        operator.get(f"{console_base(lab)}/lang/en", params={"next": "/services/gateway/console/operator"})
        page = operator.get(f"{console_base(lab)}/operator").text
        row = _block(page, f'id="risk-{app_id}"', "<h2")
        preview = _block(row, 'class="risk-preview"', 'class="risk-published"')
        assert "Prosecutor risk" in preview and "Passes: every measure is within the threshold" in preview
        assert "Not yet built: this organisation has no masked extract of this dataset." in row
        shown = {name: _cell(preview, name) for name in CELLS}
        changes = _cell(preview, "changes")
        for column in policy.columns.values():
            if column.rule != "keep":
                assert f"{column.name}: {column.rule}" in changes
        assert _cell(preview, "withheld")  # classes below k, with the rows they hold
        # The budget total this approval brings the organisation to, from its recorded agreement.
        form = _block(page, f'/operator/applications/{app_id}/approve"', "</form>")
        line = html.unescape(_block(form, 'class="budget-total', "</p>"))
        expected = f"brings {ORG}'s ε on {DATASET} to 1.5 of ε=10.0 (rolling 365 days; 0.0 committed before)"
        assert expected in line

        token = csrf(page)
        approve = {"csrf": token, "modes": ["masked", "dp"], "epsilon": "1.5", "delta": "1e-6"}
        done = operator.post(f"{console_base(lab)}/operator/applications/{app_id}/approve", data=approve)
        assert done.status_code == 200 and 'id="flash-error"' not in done.text
    with open_ledger(lab) as book:
        (grant,) = book.list_grants(organisation=ORG, dataset=DATASET, active=True)
    manifest = _published(lab, grant.id)
    report = extracts.risk_report(lab, ORG, DATASET, manifest["version"])
    # What was published carries exactly the measures shown before the approval.
    assert shown == _measures(report)
    assert report["trajectory"] is not None and not report["exceeded"]

    with closing(console_login(lab, AUDITOR)) as auditor:
        auditor.get(f"{console_base(lab)}/lang/en", params={"next": "/services/gateway/console/auditor"})
        page = auditor.get(f"{console_base(lab)}/auditor").text
    start = f'<tr class="risk-report" data-organisation="{ORG}" data-dataset="{DATASET}" '
    listed = _block(page, f'{start}data-version="{manifest["version"]}">', "</tr>\n<tr")
    r = report["records"]
    assert _cell(listed, "prosecutor") == f"{r['prosecutor_max']:.3f} / {r['prosecutor_mean']:.4f}"
    assert _cell(listed, "marketer") == f"{r['marketer']:.4f}" and _cell(listed, "k") == f"{r['k']}"
    assert 'data-passes="true"' in listed
    built = datetime.fromisoformat(manifest["created_at"]).astimezone(ZoneInfo("Asia/Shanghai"))
    assert f"{built:%Y-%m-%d %H:%M:%S} (Asia/Shanghai)" in listed


def _published(settings: Settings, grant_id: int) -> dict[str, Any]:
    """The manifest of the extract the approval built for the grant (built in the background)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        built = [m for m in extracts.versions(settings, ORG, DATASET) if m.get("grant") == grant_id]
        if built:
            return built[-1]
        time.sleep(2)
    raise AssertionError(f"no extract was published for grant {grant_id}")
