"""``lab.sql`` and ``POST /api/sql`` against the real lab: the same preview and the same charge as
the builder, for this module's own organisation and grant; refused SQL costs nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.errors import ConfigError
from lab.settings import Settings
from tests.integration.org_support import Granted, organisation_with_grant

pytestmark = pytest.mark.integration

BY_DISTRICT = "SELECT district, COUNT(*) FROM population GROUP BY district"


@pytest.fixture(scope="module")
def granted(lab_stack: Settings) -> Iterator[Granted]:
    yield from organisation_with_grant(lab_stack, "sqlint", epsilon=4.0)


def test_lab_sql_previews_what_the_builder_previews_and_charges_nothing(granted: Granted) -> None:
    conn = granted.connection()
    before = granted.spent()
    pending = conn.sql(BY_DISTRICT, epsilon=0.2)
    built = conn.dp("population").group_by("district").count(epsilon=0.2)
    assert pending.query == built.query
    shown, expected = pending.preview(), built.preview()
    assert shown["noise"] == expected["noise"] and shown["epsilon"] == 0.2
    assert shown["query"] == expected["query"]
    assert "cost 花费: ε=0.2" in repr(pending)
    assert granted.spent() == pytest.approx(before, abs=1e-12)  # parsing and preview are free


def test_a_release_through_sql_is_charged_as_the_builder_path(granted: Granted) -> None:
    conn = granted.connection()
    text = "SELECT sex, COUNT(*) FROM population WHERE birth_year BETWEEN 1950 AND 1979 GROUP BY sex"
    before = granted.spent()
    result = conn.sql(text, epsilon=0.15).release()
    by_sql = granted.spent() - before
    assert sorted(result.frame["sex"].to_list()) == ["女", "男"]
    assert result.epsilon == 0.15
    before = granted.spent()
    built = conn.dp("population").filter("birth_year", ">=", 1950).filter("birth_year", "<=", 1979)
    built.group_by("sex").count(epsilon=0.15).release()
    assert by_sql == pytest.approx(granted.spent() - before, abs=1e-12) == pytest.approx(0.15, abs=1e-12)


def test_the_gateway_api_previews_and_releases_sql(granted: Granted) -> None:
    body: dict[str, object] = {
        "sql": "SELECT district, AVG(birth_year) FROM population GROUP BY district",
        "epsilon": 0.2,
        "bounds": [1920, 2025],
    }
    before = granted.spent()
    preview = granted.post("/sql", body)
    assert preview.status_code == 200, preview.text
    answer = preview.json()
    assert answer["query"]["aggregate"] == {"kind": "mean", "column": "birth_year", "bounds": [1920, 2025]}
    assert answer["preview"]["epsilon"] == 0.2 and answer["preview"]["affordable"] is True
    assert granted.spent() == pytest.approx(before, abs=1e-12)
    released = granted.post("/sql", {**body, "release": True})
    assert released.status_code == 200, released.text
    rows = released.json()["rows"]
    assert len(rows) == 8 and {"district", "value", "ci"} <= set(rows[0])
    assert granted.spent() - before == pytest.approx(0.2, abs=1e-12)
    # The same question through /api/queries costs the same.
    before = granted.spent()
    assert granted.post("/queries", answer["query"]).status_code == 200
    assert granted.spent() - before == pytest.approx(0.2, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("SELECT COUNT(*) FROM population p JOIN utility u ON p.household_id = u.household_id", "JOIN"),
        ("SELECT district, COUNT(*) FROM population GROUP BY district HAVING COUNT(*) > 5", "HAVING"),
        ("SELECT district, COUNT(*) FROM population GROUP BY district ORDER BY district", "ORDER BY"),
        ("SELECT COUNT(*) FROM population WHERE sex = '女' OR sex = '男'", "OR"),
        ("SELECT SUM(birth_year) FROM population", "needs bounds"),
        ("SELECT COUNT(* FROM population", "line 1, column 16"),
    ],
)
def test_refused_sql_is_named_and_charges_nothing(granted: Granted, text: str, says: str) -> None:
    before = granted.spent()
    with pytest.raises(ConfigError) as caught:
        granted.connection().sql(text, epsilon=0.1)
    assert says in caught.value.message and "/ SQL" in caught.value.message
    released = granted.post("/sql", {"sql": text, "epsilon": 0.1, "release": True})
    assert released.status_code == 400 and says in released.json()["error"]["message"]
    assert granted.spent() == pytest.approx(before, abs=1e-12)
