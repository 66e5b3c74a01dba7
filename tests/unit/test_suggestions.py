"""Suggestions ("did you mean") for a mistyped dataset, column, aggregate, operator or extract kind, and a
forbidden column told apart from an unknown one (issue 13).

The attacker: an analyst who types names close to the protected columns of a register
(identifiers, negative-listed, core data) hoping a suggestion or a list confirms what the
policy keeps back. Suggestions and lists name only usable columns; a forbidden column is
named only when the analyst typed it exactly, which the catalogue already shows them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from lab import dp, dpextract
from lab.dp import FrameMeta, PrivacyUnit
from lab.errors import ConfigError, LabError, NotFound, PolicyError
from lab.policy import Policy, column_refusal, dp_columns, load_policies
from lab.rawtables import RawTables, Table, dp_view
from lab.suggest import closest, did_you_mean
from lab.synthetic import generate

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    return load_policies(ROOT / "policies")


def _usable(policy: Policy) -> list[str]:
    return [*dp_columns(policy), "birth_year"] if "birth_date" in policy.columns else dp_columns(policy)


def test_closest_names_are_offered_best_first_and_nothing_far() -> None:
    assert closest("distrct", ["district", "sex", "education"]) == ["district"]
    assert closest("Population", ["population", "utility"]) == ["population"]
    assert closest("zzz", ["district", "sex"]) == [] and did_you_mean("zzz", ["sex"]) == ("", "")
    en, zh = did_you_mean("cout", ["count", "sum"])
    assert en == " Did you mean 'count'?" and zh == "您是不是想用 'count'？"


def test_an_unknown_column_lists_the_usable_ones_and_suggests_the_closest(
    policies: dict[str, Policy],
) -> None:
    population = policies["population"]
    error = column_refusal(population, "distrct", _usable(population), role="group_by")
    assert type(error) is ConfigError and error.reason == "dp-column"
    assert "usable:" in error.message and "Did you mean 'district'?" in error.message
    assert "您是不是想用 'district'" in error.message and "没有列 'distrct'" in error.message


@pytest.mark.parametrize(
    ("dataset", "column", "why"),
    [
        ("population", "phone", "negative list"),
        ("population", "resident_id", "identifies a person"),
        ("population", "name", "identifies a person"),
        ("utility", "supply_node", "core data"),
    ],
)
def test_a_forbidden_column_gets_its_own_message_saying_why(
    policies: dict[str, Policy], dataset: str, column: str, why: str
) -> None:
    policy = policies[dataset]
    error = column_refusal(policy, column, _usable(policy), role="filter")
    assert type(error) is PolicyError and error.reason == "forbidden-column"  # a 400, as DP extracts
    assert (
        why in error.message
        and "不可用于" in error.message
        and "there is no such column" not in error.message
        and "The policy forbids it" in error.message
    )


def _typos(word: str) -> list[str]:
    dropped = [word[:i] + word[i + 1 :] for i in range(len(word))]
    doubled = [word[:i] + word[i] + word[i:] for i in range(len(word))]
    return [*dropped, *doubled, word.upper(), word + "s"]


@pytest.mark.security
@pytest.mark.parametrize("dataset", ["population", "utility", "social_insurance", "legal_entity"])
def test_typos_near_a_protected_column_never_suggest_or_list_it(
    policies: dict[str, Policy], dataset: str
) -> None:
    policy = policies[dataset]
    usable = _usable(policy)
    protected = [c for c in policy.columns if c not in usable]
    assert protected, dataset
    for column in protected:
        for typo in _typos(column):
            if typo in policy.columns:
                continue
            error = column_refusal(policy, typo, usable)
            assert error.reason == "dp-column", (typo, error.message)
            named = {c for c in protected if f"'{c}'" in error.message or f" {c}," in error.message}
            assert not named, (typo, named, error.message)
            assert all(hit in usable for hit in closest(typo, usable))


@pytest.mark.security
def test_the_dp_plan_never_names_the_privacy_unit_identifier_of_the_frame() -> None:
    frame = pl.LazyFrame({"resident_id": ["a"], "district": ["张店区"], "sex": ["女"]})
    meta = FrameMeta.from_lazyframe(frame)
    query = dp.on("population", identifier="resident_id").group_by("resident_d").count(epsilon=1.0)
    with pytest.raises(NotFound) as caught:
        dp.preview(query, meta)
    assert "resident_id" not in caught.value.message and "district" in caught.value.message
    query = dp.on("population", identifier="resident_id").group_by("distrct").count(epsilon=1.0)
    with pytest.raises(NotFound) as caught:
        dp.preview(query, meta)
    assert "Did you mean 'district'?" in caught.value.message


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"aggregate": {"kind": "cuont"}}, "Did you mean 'count'?"),
        ({"aggregate": {"kind": "medain", "column": "x", "bounds": [0, 1]}}, "Did you mean 'median'"),
        ({"filters": [{"column": "sex", "op": "not_in", "value": ["女"]}]}, "Did you mean 'not in'"),
    ],
)
def test_a_mistyped_aggregate_or_operator_suggests_the_right_one(change: dict[str, Any], says: str) -> None:
    body = {"dataset": "population", "aggregate": {"kind": "count"}, "epsilon": 0.5, **change}
    with pytest.raises(ConfigError) as caught:
        dp.Query.from_dict(body)
    assert says in caught.value.message and "/ " in caught.value.message


def test_a_mistyped_dataset_suggests_the_catalogue_name(policies: dict[str, Policy], tmp_path: Path) -> None:
    tables = RawTables(SimpleNamespace(home=tmp_path), policies)  # type: ignore[arg-type]
    with pytest.raises(NotFound) as caught:
        tables.policy("popluation")
    error = caught.value
    assert error.reason == "no-such-dataset" and "Did you mean 'population'?" in error.message
    assert "未知数据集" in error.message


def _table(policy: Policy) -> Table:
    raw = pl.concat(list(generate("population", 500, 3)))
    frame, columns = dp_view(raw.lazy(), policy)
    meta = FrameMeta.from_lazyframe(frame, policy.domains.keys(columns), max_rows=raw.height)
    return Table(frame, meta, PrivacyUnit(1, None), columns, raw.height)


@pytest.mark.parametrize(
    ("group_by", "kind", "says"),
    [
        (["distrct"], ConfigError, "Did you mean 'district'?"),
        (["phone"], LabError, "negative list"),
        (["phon"], ConfigError, "unknown column 'phon'"),
    ],
)
def test_dp_table_specs_suggest_usable_columns_only(
    policies: dict[str, Policy], group_by: list[str], kind: type[LabError], says: str
) -> None:
    policy = policies["population"]
    spec = {"tables": [{"name": "t", "group_by": group_by, "epsilon": 0.5}]}
    with pytest.raises(kind) as caught:
        dpextract.plan_extract("dp-table", spec, _table(policy), policy)
    assert says in caught.value.message
    if group_by == ["phon"]:
        assert "'phone'" not in caught.value.message


def test_a_mistyped_extract_kind_suggests_the_right_one(policies: dict[str, Policy]) -> None:
    policy = policies["population"]
    with pytest.raises(ConfigError) as caught:
        dpextract.plan_extract("dp-synthtic", {}, _table(policy), policy)
    assert "Did you mean 'dp-synthetic'?" in caught.value.message
