"""The risk model's measures on hand-made tables, and the new policy fields' validation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from lab.errors import PolicyError
from lab.policy import HouseholdLink, Longitudinal, check_policies, load_policies, load_policy
from lab.risk import (
    household_risk,
    joined_view,
    l_diversity,
    plan_households,
    plan_trajectories,
    record_risk,
    refuse_if_exceeded,
    trajectory_risk,
)
from lab.risk.measures import household_key, household_risk_of, household_table, member_tuple
from lab.risk.report import RiskReport

pytestmark = pytest.mark.unit

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_prosecutor_journalist_and_marketer_risk_follow_their_definitions() -> None:
    # classes: a (3 records), b (1 record); population sizes: a 6, b 4
    sample = pl.DataFrame({"q": ["a", "a", "a", "b"]})
    population = pl.DataFrame({"q": ["a", "b"], "__F": [6, 4]})
    risk = record_risk(sample, ["q"], population=population)
    assert risk.k == 1 and risk.classes == 2 and risk.records == 4 and risk.uniques == 1
    assert risk.prosecutor_max == 1.0
    assert risk.prosecutor_mean == pytest.approx(2 / 4)  # classes / records
    assert risk.journalist_max == pytest.approx(1 / 4)
    assert risk.journalist_mean == pytest.approx((3 / 6 + 1 / 4) / 4)
    assert risk.marketer == pytest.approx((3 / 6 + 1 / 4) / 4)  # sum f/F over n
    assert risk.journalist_max <= risk.prosecutor_max and risk.marketer <= risk.prosecutor_mean


def test_classes_count_privacy_units_and_a_unit_takes_its_rarest_class() -> None:
    sample = pl.DataFrame({"p": [1, 1, 2, 3], "q": ["a", "b", "a", "a"]})
    risk = record_risk(sample, ["q"], unit="p")
    assert risk.records == 3 and risk.k == 1
    assert risk.prosecutor_mean == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)  # person 1 is alone in b


def test_l_diversity_is_the_fewest_distinct_sensitive_values() -> None:
    sample = pl.DataFrame({"q": ["a", "a", "b", "b"], "s": [1, 2, 3, 3]})
    assert l_diversity(sample, ["q"], ["s"]) == 1
    assert l_diversity(sample, ["q"], []) is None


def test_household_signature_is_the_multiset_of_members() -> None:
    # households 1 and 2 have the same members in another order; 3 is alone
    sample = pl.DataFrame(
        {"h": [1, 1, 2, 2, 3, None], "sex": ["F", "M", "M", "F", "F", "F"], "age": [30, 40, 40, 30, 30, 30]}
    )
    risk = household_risk(sample, "h", ["sex", "age"], k=2)
    assert risk.households == 3 and risk.members == 5 and risk.signatures == 2
    assert risk.below_k == 1 and risk.risk_max == 1.0
    assert risk.risk_mean == pytest.approx((4 * 0.5 + 1) / 5)  # mean over members of 1/g
    assert risk.sdc_household_mean == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)  # 1 - prod(1 - 1/f)
    plan = plan_households(sample.lazy(), HouseholdLink("h", ("study",)), ["sex", "age"], 2, "study: x")
    lone = sample.filter(pl.col("h") == 3).select(household_key("h"))["h"].to_list()
    assert plan.released and plan.suppressed["h"].to_list() == lone
    withheld = plan_households(sample.lazy(), HouseholdLink("h", ("study",)), ["sex", "age"], 2, "marketing")
    assert not withheld.released and "not allowed" in withheld.why


def test_trajectories_are_generalised_until_they_reach_k() -> None:
    months = [date(2024, m, 1) for m in (1, 2, 3)]
    rows = {
        "p": [1, 1, 2, 2, 3, 3, 3],
        "e": ["x"] * 7,
        "m": [months[0], months[1], months[0], months[2], months[0], months[1], months[2]],
    }
    sample = pl.DataFrame(rows)
    monthly = trajectory_risk(sample, "p", "e", "m", k=2)
    assert monthly.spells == 3 and monthly.unique == 3 and monthly.risk_max == 1.0
    plan = plan_trajectories(sample.lazy(), Longitudinal("m", "e", ("month", "quarter"), 0.0), "p", k=2)
    assert plan.level == "quarter" and plan.below_k == {"month": 3, "quarter": 0}
    assert plan.spells_suppressed == 0


def test_a_joined_view_with_a_public_register_singles_people_out() -> None:
    policies = load_policies(POLICIES)
    people = pl.DataFrame(
        {
            "resident_id": ["p1", "p2", "p3"],
            "sex": ["F"] * 3,
            "birth_date": ["1980-1984"] * 3,
            "district": ["张店区"] * 3,
            "education": ["本科"] * 3,
            "marital_status": ["已婚"] * 3,
        }
    )
    firms = pl.DataFrame({"legal_rep_id": ["p1", "p2"], "credit_code": ["c1", "c2"], "name": ["A", "B"]})
    view = joined_view([(people, policies["population"]), (firms, policies["legal_entity"])])
    assert view["datasets"] == ["population", "legal_entity"] and view["persons"] == 2
    assert view["prosecutor_max"] == 1.0  # the public name of the firm names its representative


def test_a_release_above_the_threshold_is_refused_with_the_measure() -> None:
    records = record_risk(pl.DataFrame({"q": ["a", "b"]}), ["q"])
    report = RiskReport("population", "org-a", "grant/1", 0.2, 5, records)
    with pytest.raises(PolicyError) as caught:
        refuse_if_exceeded(report)
    assert caught.value.reason == "risk"
    assert "prosecutor risk 1.000" in str(caught.value) and "重识别风险" in str(caught.value)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("risk_threshold: 2", "risk_threshold must be a number in (0, 1]"),
        ("household_link: {column: sex, purposes: [x]}", "must be a pseudonymised column"),
        ("household_link: {column: household_id, purposes: x}", "purposes must be a list"),
        ("longitudinal: {time: district}", "must be a released monthly date column"),
        ("linked_datasets: [population]", "cannot be linked with itself"),
        ("public_identifiers: [name]", "public identifier 'name' has rule 'drop'"),
    ],
)
def test_new_policy_fields_are_checked_with_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    base = (POLICIES / "population.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
    key = line.split(":", 1)[0]
    text = "".join(b for b in base if not b.startswith(f"{key}:")) + line + "\n"
    path = tmp_path / "population.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    last = len(text.splitlines())
    assert needle in str(caught.value) and f"{path}:{last}:" in str(caught.value)


def test_a_link_must_be_declared_on_both_sides(tmp_path: Path) -> None:
    for name in ("population", "social_insurance", "negative-list"):
        text = (POLICIES / f"{name}.yaml").read_text(encoding="utf-8")
        if name == "population":
            text += "linked_datasets: [social_insurance]\n"
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    problems = check_policies(tmp_path)
    assert any(
        p.path.endswith("population.yaml") and "must declare the same linked datasets" in p.reason and p.line
        for p in problems
    )


def test_household_risk_with_a_unique_member_and_given_classes_is_the_same() -> None:
    # household 3's only member is unique in the release: its sdcMicro risk is 1
    sample = pl.DataFrame(
        {"h": [1, 1, 2, 2, 3, None], "sex": ["F", "M", "M", "F", "G", "F"], "age": [30, 40, 40, 30, 30, 30]}
    )
    risk = household_risk(sample, "h", ["sex", "age"], k=2)
    assert risk.sdc_household_mean == pytest.approx((0.75 + 0.75 + 1.0) / 3)
    classes = sample.filter(pl.col("h").is_not_null()).group_by("sex", "age").agg(pl.len().alias("__f"))
    classes = classes.select(member_tuple(["sex", "age"]), "__f")
    assert household_risk_of(household_table(sample, "h", ["sex", "age"], classes), 2) == risk


def test_household_risk_is_the_same_whatever_the_row_order() -> None:
    # measures are sums over millions of classes: a build and a later re-measure of the same
    # rows in another order must print the same figures, to the last bit
    rows = 20_000
    sample = pl.DataFrame(
        {
            "h": [i // 3 for i in range(rows)],
            "sex": ["F" if i % 7 else "M" for i in range(rows)],
            "age": [(i * 37) % 11 for i in range(rows)],
        }
    )
    first = household_risk(sample, "h", ["sex", "age"], k=2)
    shuffled = household_risk(sample.sample(fraction=1.0, shuffle=True, seed=5), "h", ["sex", "age"], k=2)
    assert first == shuffled
    assert 0 < first.sdc_household_mean < 1
