"""Policy files: the shipped ones are valid; bad ones are rejected with file, line and reason."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import polars as pl
import pytest

from lab.errors import AccessDenied, ConfigError, PolicyError
from lab.policy import (
    NegativeList,
    check_policies,
    dp_columns,
    load_negative_list,
    load_policies,
    load_policy,
    require_release,
)
from lab.registry.catalogue import DATASETS

pytestmark = pytest.mark.unit

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A writable copy of the shipped policies."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def _edit(path: Path, old: str, new: str) -> int:
    """Replace ``old`` by ``new`` in ``path``; return the 1-based line where ``new`` starts."""
    text = path.read_text()
    assert old in text, old
    text = text.replace(old, new, 1)
    path.write_text(text)
    return text[: text.index(new)].count("\n") + 1 if new else 0


def _line_of(path: Path, fragment: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


def test_shipped_policies_are_valid_and_cover_every_dataset() -> None:
    assert check_policies(POLICIES, DATASETS) == []
    policies = load_policies(POLICIES)
    assert set(policies) == set(DATASETS)
    population = policies["population"]
    assert population.k >= 2 and "birth_date" in population.quasi_identifiers
    assert {"name", "phone", "street_address"}.isdisjoint(population.masked_columns())
    assert population.negative_listed == {"phone", "street_address"}
    assert policies["social_insurance"].l == 2 and policies["social_insurance"].max_rows == 12
    assert "supply_node" not in policies["utility"].masked_columns()


def test_every_column_is_classified_with_level_pi_and_rule() -> None:
    for name, policy in load_policies(POLICIES).items():
        assert list(policy.columns) == list(DATASETS[name].schema)
        for column in policy.columns.values():
            assert column.level in ("core", "important", "general")
            assert column.pi in ("sensitive", "pi", "none")


def test_missing_column_is_reported_with_file_and_line(policies: Path) -> None:
    path = policies / "population.yaml"
    _edit(path, "  sex:            {level: general, pi: pi, rule: keep}\n", "")
    problems = [p for p in check_policies(policies) if "'sex'" in p.reason and "not classified" in p.reason]
    assert problems and problems[0].path == str(path)
    assert problems[0].line == _line_of(path, "columns:")
    assert str(problems[0]).startswith(f"{path}:{problems[0].line}: ")


def test_unknown_rule_names_the_line_of_the_rule(policies: Path) -> None:
    path = policies / "population.yaml"
    old = "education:      {level: general, pi: pi, rule: keep}"
    line = _edit(path, old, "education: {level: general, pi: pi, rule: blur}")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:{line}: column 'education': unknown rule 'blur'")
    assert caught.value.reason == "policy" and isinstance(caught.value, ConfigError)


def test_core_column_released_in_masked_extract_is_rejected(policies: Path) -> None:
    path = policies / "utility.yaml"
    line = _edit(path, "{level: core, pi: none, rule: drop}", "{level: core, pi: none, rule: keep}")
    problems = check_policies(policies)
    assert [(p.path, p.line) for p in problems] == [(str(path), line)]
    assert "core data" in problems[0].reason and "rule: drop" in problems[0].reason


def test_negative_listed_column_cannot_be_released(policies: Path) -> None:
    path = policies / "population.yaml"
    old = "phone:          {level: important, pi: pi, identifier: direct, rule: drop}"
    line = _edit(path, old, "phone:          {level: general, pi: none, rule: keep}")
    problems = check_policies(policies)
    assert len(problems) == 1 and problems[0].line == line
    assert "negative list" in problems[0].reason


def test_sensitive_pi_is_dp_only(policies: Path) -> None:
    path = policies / "social_insurance.yaml"
    old = "rule: pseudonym, family: person}"
    line = _edit(path, old, "rule: keep}")
    problems = check_policies(policies)
    assert [(p.line, "DP" in p.reason) for p in problems] == [(line, True)]


def test_direct_identifier_and_unprotected_pi_are_rejected(policies: Path) -> None:
    path = policies / "population.yaml"
    _edit(path, "name:           {level: important, pi: pi, identifier: direct, rule: drop}",
          "name:           {level: general, pi: pi, identifier: direct, rule: keep}")  # fmt: skip
    _edit(path, "quasi_identifiers: [sex, birth_date, district, education, marital_status]\nk: 5\n", "")
    reasons = [p.reason for p in check_policies(policies)]
    assert any("'name'" in r and "direct identifier" in r for r in reasons)
    assert any("k-anonymity" in r for r in reasons)


def test_malformed_yaml_and_duplicate_keys_name_their_line(policies: Path) -> None:
    broken = policies / "legal_entity.yaml"
    broken.write_text("dataset: legal_entity\ncolumns: [credit_code\n")
    duplicated = policies / "utility.yaml"
    line = _edit(duplicated, "k: 5\n", "k: 5\nk: 6\n") + 1
    problems = {p.path: p for p in check_policies(policies)}
    assert problems[str(broken)].line == 3 and "malformed YAML" in problems[str(broken)].reason
    assert problems[str(duplicated)].line == line and "duplicate key 'k'" in problems[str(duplicated)].reason


def test_check_collects_all_problems_one_line_each(policies: Path) -> None:
    _edit(policies / "utility.yaml", "rule: drop}", "rule: keep}")
    _edit(policies / "population.yaml", "rule: keep}", "rule: smudge}")
    _edit(policies / "legal_entity.yaml", "status:", "state:")
    problems = check_policies(policies, DATASETS)
    assert len({p.path for p in problems}) == 3
    assert all("\n" not in str(p) and str(p).count(":") >= 2 for p in problems)
    with pytest.raises(PolicyError) as caught:
        load_policies(policies)
    assert "more)" in caught.value.message and len(caught.value.detail.splitlines()) == len(problems)


def test_unknown_dataset_and_columns_against_an_explicit_schema(tmp_path: Path) -> None:
    path = tmp_path / "survey.yaml"
    path.write_text(
        "dataset: survey\nrelease_modes: [masked]\ncolumns:\n"
        "  answer: {level: general, pi: none, rule: keep}\n  extra: {level: general, pi: none, rule: keep}\n"
    )
    with pytest.raises(PolicyError, match=r"survey.yaml:1: unknown dataset 'survey'"):
        load_policy(path)
    with pytest.raises(PolicyError, match=r"survey.yaml:5: column 'extra' is not in dataset 'survey'"):
        load_policy(path, schema=["answer"])
    assert load_policy(path, schema=["answer", "extra"]).masked_columns() == ["answer", "extra"]


def test_rule_parameters_are_checked_against_column_types(tmp_path: Path) -> None:
    path = tmp_path / "survey.yaml"
    path.write_text(
        "dataset: survey\nrelease_modes: [masked]\ncolumns:\n"
        "  born: {level: general, pi: none, rule: generalise, to: district}\n"
        "  pay: {level: general, pi: none, rule: topcode}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(path, schema={"born": pl.Date(), "pay": pl.Float64()})
    assert "survey.yaml:4: column 'born': cannot generalise date to 'district'" in caught.value.detail
    assert "survey.yaml:5: column 'pay': topcode needs 'top:'" in caught.value.detail


def test_release_gate_checks_modes_and_leaks() -> None:
    policies = load_policies(POLICIES)
    require_release(policies["population"], "masked")
    dp_only = dataclasses.replace(policies["population"], release_modes=("dp",))
    with pytest.raises(AccessDenied, match="does not allow masked"):
        require_release(dp_only, "masked")
    assert "name" not in dp_columns(policies["population"]) and "sex" in dp_columns(policies["population"])
    assert "supply_node" not in dp_columns(policies["utility"])


def test_negative_list_entries_and_errors(tmp_path: Path) -> None:
    negative = load_negative_list(POLICIES / "negative-list.yaml")
    assert negative.covers("utility", "supply_node") and negative.covers("anything", "phone")
    assert not negative.covers("population", "sex") and not NegativeList().covers("x", "y")
    bad = tmp_path / "negative-list.yaml"
    bad.write_text("entries:\n  - dataset: utility\n    colum: supply_node\n")
    with pytest.raises(PolicyError, match="negative-list.yaml:2: each entry needs 'dataset' and 'column'"):
        load_negative_list(bad)
