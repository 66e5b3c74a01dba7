"""Console page helpers that need no lab: times in Beijing time, the risk report's rendering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lab.gateway import console
from lab.gateway.i18n import translator

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("2026-12-02T12:45:39+00:00", "2026-12-02 20:45:39 (Asia/Shanghai)"),
        ("2026-12-02T12:45:39", "2026-12-02 20:45:39 (Asia/Shanghai)"),  # stored times are UTC
        ("2026-12-31T23:30:00+08:00", "2026-12-31 23:30:00 (Asia/Shanghai)"),
        ("20261202T124458524920Z", "2026-12-02 20:44:58 (Asia/Shanghai)"),  # an extract version
        (datetime(2026, 6, 30, 16, 0, tzinfo=UTC), "2026-07-01 00:00:00 (Asia/Shanghai)"),
        ("not a time", "not a time"),
        (None, ""),
    ],
)
def test_times_are_shown_in_beijing_time_with_the_zone_named(stored: object, shown: str) -> None:
    assert console.local_time(stored) == shown


REPORT = {
    "threshold": 0.2,
    "k_required": 5,
    "l_achieved": None,
    "records": {
        "records": 100,
        "classes": 12,
        "k": 5,
        "prosecutor_max": 0.2,
        "prosecutor_mean": 0.12,
        "journalist_max": 0.1,
        "journalist_mean": 0.05,
        "marketer": 0.04,
        "uniques": 0,
    },
    "household_link": "withheld: purpose not allowed (policy allows: household-study)",
    "household": None,
    "households_suppressed": 0,
    "trajectory": None,
    "joined": [{"datasets": ["population", "social_insurance"], "prosecutor_max": 1.0, "persons": 9}],
    "exceeded": ["joined view population+social_insurance risk 1.000"],
    "passes": False,
    "changes": [{"column": "birth_date", "rule": "generalise", "params": {"to": "band", "years": 5}}],
}


@pytest.mark.parametrize(
    ("lang", "words"), [("zh", ("风险阈值", "将被拒绝")), ("en", ("Risk threshold", "refused"))]
)
def test_a_risk_report_renders_every_measure_and_the_refusal(lang: str, words: tuple[str, ...]) -> None:
    macros = console._TEMPLATES.get_template("_macros.html").make_module({"t": translator(lang)})
    table = str(macros.risk_measures(REPORT))  # type: ignore[attr-defined]
    verdict = str(macros.verdict(REPORT))  # type: ignore[attr-defined]
    assert words[0] in table and words[1] in verdict and 'data-passes="false"' in verdict
    assert "0.200 / 0.1200" in table and "0.100 / 0.0500" in table and "0.0400" in table
    assert "population ⋈ social_insurance: 1.000 (9)" in table
    assert "birth_date: generalise (to=band, years=5)" in table
    assert "withheld: purpose not allowed" in table
    assert "joined view population+social_insurance risk 1.000" in verdict


def test_every_page_imports_the_macros_it_calls() -> None:
    """A macro called but not imported renders as an error page (a 500) only when it is reached."""
    import re
    from pathlib import Path

    folder = Path(console.__file__).with_name("templates")
    defined = set(
        re.findall(r"{%-?\s*macro\s+(\w+)\(", (folder / "_macros.html").read_text(encoding="utf-8"))
    )
    for page in folder.glob("*.html"):
        if page.name == "_macros.html":
            continue
        text = page.read_text(encoding="utf-8")
        imported = set()
        for names in re.findall(
            r'{%\s*from\s+"_macros.html"\s+import\s+([\w\s,]+?)(?:\s+with context)?\s*%}', text
        ):
            imported |= {n.strip() for n in names.split(",")}
        called = {name for name in re.findall(r"(\w+)\(", text) if name in defined}
        assert called <= imported, (page.name, sorted(called - imported))
