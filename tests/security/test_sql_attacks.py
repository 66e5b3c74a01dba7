"""An analyst attacks the SQL front door (``POST /api/sql``, ``lab.sql``) of the real lab.

Each attack asks for release (``"release": true``), the only way SQL could spend budget or
return data: raw rows, a forbidden column (a dropped name, the privacy-unit identifier), a
dataset the organisation holds no grant on, comments and stacked statements, enormous and
deeply nested text, and look-alike or invisible characters. Every one is refused with a
message in 中文 and English that names the problem, with a 4xx (never a 5xx), nothing is
charged, and the text of the refused SQL appears in no audit record and no gateway log.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import pytest

from lab.settings import Settings
from tests.integration.org_support import Granted, organisation_with_grant

pytestmark = [pytest.mark.security, pytest.mark.integration]


@pytest.fixture(scope="module")
def attacker(lab_stack: Settings) -> Iterator[Granted]:
    yield from organisation_with_grant(lab_stack, "sqlsec", epsilon=1.0)


def _refused(attacker: Granted, body: dict[str, object], status: int, says: str) -> str:
    before = attacker.spent()
    response = attacker.post("/sql", {"epsilon": 0.5, "release": True, **body})
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert re.search(says, message), message
    assert " / " in message and re.search(r"[\u4e00-\u9fff]", message), message
    assert attacker.spent() == pytest.approx(before, abs=1e-12)
    return str(message)


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("SELECT * FROM population", r"SELECT \* \(raw rows are never returned\)"),
        ("SELECT population.* FROM population", r"SELECT \*"),
        ("SELECT resident_id FROM population", "raw values are never returned"),
        ("SELECT name, district FROM population", "raw values are never returned"),
        ("SELECT district, resident_id, COUNT(*) FROM population GROUP BY district", "resident_id selected"),
        ("SELECT COUNT(*) FROM population LIMIT 1", "LIMIT"),
    ],
)
def test_raw_rows_cannot_be_selected(attacker: Granted, sql: str, says: str) -> None:
    _refused(attacker, {"sql": sql}, 400, says)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name, COUNT(*) FROM population GROUP BY name",
        "SELECT resident_id, COUNT(*) FROM population GROUP BY resident_id",
        "SELECT COUNT(*) FROM population WHERE phone = '13800000000'",
        "SELECT household_id, COUNT(*) FROM population GROUP BY household_id",
        "SELECT MEDIAN(street_address) FROM population",
    ],
)
def test_a_forbidden_column_is_refused(attacker: Granted, sql: str) -> None:
    _refused(
        attacker,
        {"sql": sql, "candidates": [1, 2]},
        400,
        "cannot be used in DP queries on population; usable: ",
    )


def test_a_dataset_not_granted_is_refused(attacker: Granted) -> None:
    _refused(attacker, {"sql": "SELECT district, COUNT(*) FROM utility GROUP BY district"}, 403, "utility")
    _refused(attacker, {"sql": "SELECT COUNT(*) FROM secret_register"}, 404, "secret_register")
    _refused(attacker, {"sql": "SELECT COUNT(*) FROM Population"}, 400, "dataset")


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("SELECT COUNT(*) FROM population; DROP TABLE population", "more than one statement"),
        ("SELECT COUNT(*) FROM population;; ", "more than one statement"),
        ("SELECT COUNT(*) FROM population; SELECT * FROM population", "more than one statement"),
        ("SELECT COUNT(*) FROM population -- ' OR 1=1", "comment"),
        ("SELECT COUNT(*) FROM population /* */ WHERE sex = '女'", "comment"),
        ("SELECT COUNT(*) FROM population # x", "comment"),
        ("DELETE FROM population", "DELETE"),
        ("DROP TABLE population", "DROP"),
        ("UPDATE population SET district = '张店区'", "UPDATE"),
        ("COPY population TO '/tmp/x.csv'", "COPY"),
        ("ATTACH '/work/x.db' AS x", "ATTACH"),
    ],
)
def test_comments_stacked_statements_and_writes_are_refused(attacker: Granted, sql: str, says: str) -> None:
    _refused(attacker, {"sql": sql}, 400, says)


def test_enormous_and_deeply_nested_queries_are_refused(attacker: Granted) -> None:
    values = ", ".join(f"'{i}'" for i in range(1200))
    _refused(
        attacker, {"sql": f"SELECT COUNT(*) FROM population WHERE sex IN ({values})"}, 400, "more than 4000"
    )
    _refused(attacker, {"sql": "SELECT COUNT(*) FROM population " + " " * 50_000}, 400, "at most 10000")
    nested = "SELECT COUNT(*) FROM population WHERE " + "(" * 1500 + "sex = '女'" + ")" * 1500
    _refused(attacker, {"sql": nested}, 400, "(more than 4000|nested deeper)")
    _refused(
        attacker,
        {"sql": "SELECT COUNT(*) FROM population WHERE " + "(" * 9 + "sex = '女'" + ")" * 9},
        400,
        "nested deeper than 8",
    )


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("ＳＥＬＥＣＴ COUNT(*) FROM population", "U\\+FF33 FULLWIDTH LATIN CAPITAL LETTER S"),
        ("SELECT COUNT(*) FROM pоpulation", "U\\+043E CYRILLIC SMALL LETTER O"),
        ("SELECT dіstrict, COUNT(*) FROM population GROUP BY dіstrict", "U\\+0456 CYRILLIC"),
        ("SELECT COUNT(*) FROM population WHERE sex ＝ '女'", "U\\+FF1D FULLWIDTH EQUALS SIGN"),
        ("SELECT COUNT(*) FROM population WHERE sex = '女\u200b'", "U\\+200B ZERO WIDTH SPACE|format"),
        ("SELECT COUNT(*) FROM population WHERE sex = '\u202e女'", "U\\+202E|format"),
        ('SELECT COUNT(*) FROM "populatіon"', "U\\+0456"),
    ],
)
def test_look_alike_and_invisible_characters_are_refused(attacker: Granted, sql: str, says: str) -> None:
    _refused(attacker, {"sql": sql}, 400, says)


def test_malformed_bodies_are_refused(attacker: Granted) -> None:
    _refused(
        attacker, {"sql": ["SELECT COUNT(*) FROM population"]}, 400, "sql: must be the text of one SELECT"
    )
    _refused(attacker, {"sql": "SELECT COUNT(*) FROM population", "release": "yes"}, 400, "release")
    _refused(attacker, {"sql": "SELECT COUNT(*) FROM population", "epsilon": "1"}, 400, "epsilon")
    _refused(attacker, {"sql": "SELECT COUNT(*) FROM population", "epsilon": -1}, 400, "epsilon")
    _refused(
        attacker, {"sql": "SELECT MEDIAN(birth_year) FROM population", "candidates": 5}, 400, "candidates"
    )
    body = {"sql": "SELECT SUM(birth_year) FROM population", "bounds": {"birth_year": "wide"}}
    _refused(attacker, body, 400, "bounds")


def test_the_refused_text_is_in_no_audit_record_and_no_log(attacker: Granted) -> None:
    marker = f"marker{secrets.token_hex(6)}"
    for sql in (
        f"SELECT * FROM population WHERE district = '{marker}'",
        f"SELECT COUNT(*) FROM population WHERE phone = '{marker}'",
        f"SELECT COUNT(*) FROM population -- {marker}",
        f"SELECT COUNT(*) FROM population WHERE district = '{marker}\u200b'",
        f"SELECT COUNT(*) FROM population WHERE district = '张店区' '{marker}' x",
        f"SELECT COUNT(*) FROM population WHERE birth_year = 1 '{marker}'",
    ):
        response = attacker.post("/sql", {"sql": sql, "epsilon": 0.5, "release": True})
        assert response.status_code == 400
        assert marker not in response.text  # the message names the construct, never echoes values
    records = attacker.book.records(organisation=attacker.org, limit=500)
    assert marker not in json.dumps([r.as_dict() for r in records], default=str, ensure_ascii=False)
    logs = attacker.lab.home / "logs"
    for log in (logs / "gateway.log", logs / "hub.log"):
        assert marker not in log.read_text(errors="replace"), log
