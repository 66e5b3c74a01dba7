"""SQL in, the builder's query out: ``lab.dp.sql`` plans exactly what ``lab.dp`` builds.

* For a set of queries (and for generated ones) the SQL's :class:`Query` equals the builder's,
  so its plan and its previewed scales are the same: one engine path, whichever way it is asked.
* Every construct the engine cannot answer is refused by name, with the alternative, in
  中文 and English; syntax errors name the line and column.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import dp as labdp
from lab.dp import plan as dpplan
from lab.dp import sql as dpsql
from lab.dp import sqlgate
from lab.errors import ConfigError

pytestmark = pytest.mark.unit

DISTRICTS = ["张店区", "淄川区", "博山区", "临淄区", "周村区", "桓台县", "高青县", "沂源县"]
SEXES = ["女", "男"]
EPS = 0.2


@pytest.fixture(scope="module")
def meta() -> labdp.FrameMeta:
    rng = np.random.default_rng(3)
    n = 200
    frame = pl.LazyFrame(
        {
            "district": rng.choice(DISTRICTS, n),
            "sex": rng.choice(SEXES, n),
            "birth_year": rng.integers(1930, 2020, n),
            "income": rng.integers(0, 100_000, n),
        }
    )
    return labdp.FrameMeta.from_lazyframe(
        frame, public_keys={"district": DISTRICTS, "sex": SEXES}, max_rows=1_000_000
    )


P = labdp.on("population")
CASES = [
    (
        "SELECT district, COUNT(*) FROM population GROUP BY district",
        {},
        P.group_by("district").count(epsilon=EPS),
    ),
    ("select count(*) from population;", {}, P.count(epsilon=EPS)),
    ("SELECT (COUNT(*)) FROM population", {}, P.count(epsilon=EPS)),
    (
        "SELECT COUNT(*) FROM population WHERE sex = '女' AND birth_year >= 1980",
        {},
        P.filter("sex", "==", "女").filter("birth_year", ">=", 1980).count(epsilon=EPS),
    ),
    (
        "SELECT sex, district, COUNT(*) FROM population WHERE district IN ('张店区', '淄川区') "
        "GROUP BY district, sex",
        {},
        P.filter("district", "in", ["张店区", "淄川区"]).group_by("district", "sex").count(epsilon=EPS),
    ),
    (
        "SELECT COUNT(*) FROM population WHERE birth_year BETWEEN 1950 AND 1959 AND NOT sex = '男'",
        {},
        P.filter("birth_year", ">=", 1950)
        .filter("birth_year", "<=", 1959)
        .filter("sex", "!=", "男")
        .count(epsilon=EPS),
    ),
    (
        "SELECT COUNT(*) FROM population WHERE 1990 > birth_year AND district NOT IN ('博山区')",
        {},
        P.filter("birth_year", "<", 1990).filter("district", "not in", ["博山区"]).count(epsilon=EPS),
    ),
    (
        "SELECT district, SUM(income) FROM population GROUP BY district",
        {"bounds": (0, 50_000)},
        P.group_by("district").sum("income", (0, 50_000), epsilon=EPS),
    ),
    (
        "SELECT AVG(p.income) FROM population AS p WHERE p.sex = '女'",
        {"bounds": {"income": [0, 50_000]}},
        P.filter("sex", "==", "女").mean("income", (0, 50_000), epsilon=EPS),
    ),
    (
        "SELECT MEDIAN(birth_year) FROM population",
        {"bounds": (1920, 2025)},
        P.median("birth_year", bounds=(1920, 2025), epsilon=EPS),
    ),
    (
        "SELECT sex, QUANTILE(income, 0.9) FROM population GROUP BY sex",
        {"candidates": [10_000, 20_000, 40_000, 80_000]},
        P.group_by("sex").quantile("income", 0.9, candidates=[10_000, 20_000, 40_000, 80_000], epsilon=EPS),
    ),
    (
        "SELECT PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY income) FROM population",
        {"bounds": (0, 100_000)},
        P.quantile("income", 0.25, bounds=(0, 100_000), epsilon=EPS),
    ),
    (
        "SELECT district, HISTOGRAM(birth_year, 1940, 1960, 1980, 2000) FROM population GROUP BY district",
        {},
        P.group_by("district").histogram("birth_year", bins=[1940, 1960, 1980, 2000], epsilon=EPS),
    ),
    ("SELECT HISTOGRAM(sex) FROM population", {}, P.histogram("sex", epsilon=EPS)),
    (
        "SELECT HISTOGRAM(sex, '女') FROM population WHERE birth_year < 2000",
        {},
        P.filter("birth_year", "<", 2000).histogram("sex", categories=["女"], epsilon=EPS),
    ),
    (
        'SELECT "district", COUNT(1) FROM "population" GROUP BY "district"',
        {"delta": 0.0},
        P.group_by("district").count(epsilon=EPS),
    ),
]


@pytest.mark.parametrize(("text", "options", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_sql_plans_what_the_builder_plans(
    text: str, options: dict[str, object], expected: labdp.Query, meta: labdp.FrameMeta
) -> None:
    query = dpsql.to_query(text, epsilon=EPS, **options)  # type: ignore[arg-type]
    assert query == expected
    assert query.canonical() == expected.canonical()  # the audit log records the same text
    assert dpplan.resolve(query, meta) == dpplan.resolve(expected, meta)
    assert labdp.preview(query, meta).noise == labdp.preview(expected, meta).noise  # same scales


def test_the_gateway_body_is_the_builder_body() -> None:
    body = dpsql.request_query(
        {
            "sql": "SELECT district, SUM(income) FROM population GROUP BY district",
            "epsilon": 0.3,
            "bounds": [0, 9],
        }
    )
    expected = P.group_by("district").sum("income", (0, 9), epsilon=0.3).to_dict()
    expected.pop("unit")
    assert body == expected


COLUMNS = ["district", "sex", "birth_year"]
CONDITIONS = st.sampled_from(
    [
        ("sex = '女'", ("sex", "==", "女")),
        ("sex <> '男'", ("sex", "!=", "男")),
        ("district IN ('张店区', '博山区')", ("district", "in", ["张店区", "博山区"])),
        ("birth_year >= 1960", ("birth_year", ">=", 1960)),
        ("birth_year < 2001", ("birth_year", "<", 2001)),
        ("2001 >= birth_year", ("birth_year", "<=", 2001)),
        ("income > 100", ("income", ">", 100)),
    ]
)
AGGREGATES = st.sampled_from(["COUNT(*)", "SUM(income)", "AVG(income)", "MEDIAN(income)", "HISTOGRAM(sex)"])


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.sampled_from(["district", "birth_year"]), unique=True, max_size=2),
    conditions=st.lists(CONDITIONS, max_size=3),
    aggregate=AGGREGATES,
    epsilon=st.floats(min_value=0.01, max_value=5),
)
def test_generated_queries_equal_their_builder_calls(
    groups: list[str], conditions: list[tuple[str, tuple[str, str, object]]], aggregate: str, epsilon: float
) -> None:
    where = " WHERE " + " AND ".join(c[0] for c in conditions) if conditions else ""
    group = " GROUP BY " + ", ".join(groups) if groups else ""
    text = f"SELECT {', '.join([*groups, aggregate])} FROM population{where}{group}"
    builder = P
    for _, (column, op, value) in conditions:
        builder = builder.filter(column, op, value)
    if groups:
        builder = builder.group_by(*groups)
    kind = aggregate.split("(")[0]
    expected = {
        "COUNT": lambda: builder.count(epsilon=epsilon),
        "SUM": lambda: builder.sum("income", (0, 1000), epsilon=epsilon),
        "AVG": lambda: builder.mean("income", (0, 1000), epsilon=epsilon),
        "MEDIAN": lambda: builder.median("income", bounds=(0, 1000), epsilon=epsilon),
        "HISTOGRAM": lambda: builder.histogram("sex", epsilon=epsilon),
    }[kind]()
    assert dpsql.to_query(text, epsilon=epsilon, bounds=(0, 1000)) == expected


def _refused(text: str, **options: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        dpsql.to_query(text, epsilon=EPS, **options)  # type: ignore[arg-type]
    message = caught.value.message
    assert " / " in message and re.search(r"[\u4e00-\u9fff]", message), message  # 中文 and English
    return caught.value


UNSUPPORTED = [
    ("SELECT COUNT(*) FROM population p JOIN utility u ON p.household_id = u.household_id", "JOIN"),
    ("SELECT COUNT(*) FROM population, utility", "JOIN"),
    ("SELECT COUNT(*) FROM (SELECT * FROM population)", "subquery"),
    ("SELECT COUNT(*) FROM population WHERE district IN (SELECT district FROM utility)", "subquery"),
    ("SELECT district, ROW_NUMBER() OVER (ORDER BY district) FROM population", "window function"),
    ("SELECT district, COUNT(*) FROM population GROUP BY district HAVING COUNT(*) > 10", "HAVING"),
    ("SELECT district, COUNT(*) FROM population GROUP BY district ORDER BY district", "ORDER BY"),
    ("SELECT COUNT(*) FROM population LIMIT 1", "LIMIT"),
    ("SELECT * FROM population", "SELECT *"),
    ("SELECT DISTINCT district FROM population", "DISTINCT"),
    ("SELECT COUNT(DISTINCT district) FROM population", "COUNT(DISTINCT"),
    ("SELECT district FROM population", "without an aggregate"),
    ("SELECT sex, COUNT(*) FROM population GROUP BY district", "column sex selected without an aggregate"),
    ("SELECT COUNT(*), SUM(income) FROM population", "more than one aggregate"),
    ("SELECT 1, COUNT(*) FROM population", "an expression (LITERAL) in SELECT"),
    ("SELECT COUNT(*) * 2 FROM population", "an expression (MUL) in SELECT"),
    ("SELECT MIN(income) FROM population", "MIN"),
    ("SELECT STDDEV(income) FROM population", "STDDEV"),
    ("SELECT COUNT(income) FROM population", "COUNT(column)"),
    ("SELECT COUNT(*) AS n FROM population", "alias"),
    ("SELECT COUNT(*) FROM population WHERE sex = '女' OR district = '张店区'", "OR"),
    ("SELECT COUNT(*) FROM population WHERE sex LIKE '女%'", "LIKE"),
    ("SELECT COUNT(*) FROM population WHERE sex IS NULL", "IS NULL"),
    ("SELECT COUNT(*) FROM population WHERE birth_year + 1 > 1990", "expression"),
    ("SELECT district, COUNT(*) FROM population GROUP BY 1", "expression"),
    ("SELECT COUNT(*) FROM public.population", "qualified dataset name"),
    ("WITH p AS (SELECT 1) SELECT COUNT(*) FROM p", "WITH"),
    ("SELECT 1 UNION SELECT 2", "UNION"),
    ("SELECT COUNT(*)", "without FROM"),
    ("SELECT COUNT(*) FROM population; DROP TABLE population", "more than one statement"),
    ("DROP TABLE population", "DROP"),
    ("INSERT INTO population VALUES (1)", "INSERT"),
    ("UPDATE population SET sex = '男'", "UPDATE"),
    ("DELETE FROM population", "DELETE"),
    ("CREATE TABLE x (a INT)", "CREATE"),
    ("SELECT COUNT(*) FROM population -- all of it", "comment"),
    ("SELECT COUNT(*) /* hidden */ FROM population", "comment"),
]


@pytest.mark.parametrize(("text", "construct"), UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_unsupported_sql_is_named_with_the_alternative(text: str, construct: str) -> None:
    error = _refused(text)
    assert error.reason == "dp-sql-unsupported"
    assert construct in error.message
    assert "is not supported" in error.message and "不支持" in error.message


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("SELECT COUNT(* FROM population", 1, 16),
        ("SELECT COUNT(*)\nFROM population WHERE sex = '女", 2, 29),
        ("SELECT COUNT(*) FROM population WHERE", 1, 33),
        ("SELEC COUNT(*) FROM population", 1, 1),
    ],
)
def test_a_syntax_error_names_line_and_column(text: str, line: int, col: int) -> None:
    error = _refused(text)
    assert error.reason == "dp-sql-syntax"
    assert f"line {line}, column {col}" in error.message and f"第 {line} 行第 {col} 列" in error.message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("ＳELECT COUNT(*) FROM population", "U+FF33 FULLWIDTH LATIN CAPITAL LETTER S"),
        ("SELECT COUNT(*) FROM pоpulation", "U+043E CYRILLIC SMALL LETTER O"),
        ("SELECT COUNT(*) FROM population WHERE sex ＝ '女'", "U+FF1D FULLWIDTH EQUALS SIGN"),
        ("SELECT COUNT(*) FROM population WHERE sex = '女\u200b'", "U+200B ZERO WIDTH SPACE"),
        ('SELECT COUNT(*) FROM "pоpulation"', "U+043E CYRILLIC SMALL LETTER O"),
    ],
)
def test_look_alike_and_invisible_characters_are_refused_by_name(text: str, shown: str) -> None:
    error = _refused(text)
    assert shown in error.message and "line 1" in error.message


def test_an_enormous_or_deeply_nested_query_is_refused_before_parsing() -> None:
    long = "SELECT COUNT(*) FROM population WHERE district IN (" + ", ".join(["'张店区'"] * 900) + ")"
    assert len(long) > sqlgate.MAX_SQL_CHARS
    assert _refused(long).reason == "dp-sql-too-long"
    nested = "SELECT COUNT(*) FROM population WHERE " + "(" * 50 + "sex = '女'" + ")" * 50
    assert "nested deeper" in _refused(nested).message


def test_bounds_are_asked_for_in_the_call() -> None:
    error = _refused("SELECT SUM(income) FROM population")
    assert error.reason == "dp-bounds" and "bounds=(0, 50000)" in error.message
    assert "candidates or bounds" in _refused("SELECT MEDIAN(income) FROM population").message
    assert "two numbers" in _refused("SELECT SUM(income) FROM population", bounds="0-10").message
    assert "list of increasing numbers" in _refused("SELECT MEDIAN(x) FROM p", candidates=5).message


@pytest.mark.parametrize("value", ["1e400", "'a' || 'b'", "?", "NULL", "income"])
def test_compared_values_are_constants(value: str) -> None:
    _refused(f"SELECT COUNT(*) FROM population WHERE birth_year = {value}")


def test_dates_and_negative_numbers_are_constants() -> None:
    query = dpsql.to_query(
        "SELECT COUNT(*) FROM utility WHERE month = DATE '2024-03-01' AND kwh > -5", epsilon=EPS
    )
    assert query.filters == (labdp.Filter("month", "==", "2024-03-01"), labdp.Filter("kwh", ">", -5))


@pytest.mark.parametrize(
    "text",
    [
        "SELECT COUNT(*) FROM population WHERE birth_year = 1 'secret77'",
        "SELECT COUNT(*) FROM population WHERE birth_year = 1 987654",
        "SELECT COUNT(*) FROM population WHERE sex IN ('secret77' 'b' 987654)",
    ],
)
def test_a_syntax_error_never_repeats_a_value(text: str) -> None:
    error = _refused(text)
    assert error.reason == "dp-sql-syntax" and "line 1, column" in error.message
    assert "secret77" not in error.message and "987654" not in error.message


WORDS = (
    "SELECT FROM WHERE GROUP BY AND OR NOT IN BETWEEN COUNT SUM AVG MEDIAN QUANTILE HISTOGRAM "
    "PERCENTILE_CONT WITHIN ORDER HAVING LIMIT JOIN ON AS DISTINCT NULL IS DATE CASE WHEN THEN END "
    "population district sex birth_year p ( ) , * = <> < >= . ; 1 -2 0.5 '女' 'a''b' \"x\" ? $1 @v {"
)
TOKENS = st.sampled_from(WORDS.split())


@settings(max_examples=400, deadline=None)
@given(tokens=st.lists(TOKENS, min_size=1, max_size=25))
def test_any_text_gives_a_query_or_a_clear_error(tokens: list[str]) -> None:
    text = " ".join(tokens)
    try:
        query = dpsql.to_query(text, epsilon=EPS, bounds=(0, 10))
    except ConfigError as exc:  # never another exception: the gateway would answer 5xx
        assert " / " in exc.message
    else:
        assert isinstance(query, labdp.Query)
