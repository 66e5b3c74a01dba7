"""Public domains (the DP public keys) come from the policy, validated like the rest of it."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from numpy.random import default_rng as rng

from lab import dpextract
from lab.dp import FrameMeta, PrivacyUnit
from lab.dpextract.encode import Categorical, Years
from lab.errors import PolicyError
from lab.policy import Policy, load_policies, load_policy
from lab.rawtables import Table, dp_view
from lab.synthetic import generate
from lab.synthetic.codes import REGION_NAMES
from lab.synthetic.population import AS_OF, EDUCATION, FIRST_BIRTH_DAYS, MARITAL

pytestmark = pytest.mark.unit

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SCHEMA = {"region": pl.String(), "born": pl.Date(), "visits": pl.Int64()}
HEAD = "dataset: survey\nrelease_modes: [masked]\ncolumns:\n" + "".join(
    f"  {c}: {{level: general, pi: none, rule: keep}}\n" for c in SCHEMA
)


def _policy(tmp_path: Path, tail: str) -> Path:
    path = tmp_path / "survey.yaml"
    path.write_text(HEAD + tail)
    return path


def test_the_demo_policies_declare_the_domains_the_synthetic_city_draws_from() -> None:
    policies = load_policies(POLICIES)
    population = policies["population"].domains
    assert population.values["district"] == tuple(REGION_NAMES)
    assert population.values["education"] == EDUCATION and population.values["marital_status"] == MARITAL
    assert population.values["sex"] == ("女", "男")
    first_birth = date(1970, 1, 1) + timedelta(days=FIRST_BIRTH_DAYS)
    assert population.year_span("birth_date") == (first_birth.year, AS_OF.year)
    months = tuple(date(2024, m, 1) for m in range(1, 13))
    assert policies["utility"].domains.values["month"] == months
    assert policies["social_insurance"].domains.values["month"] == months
    assert all(p.domains.reference_date == AS_OF for p in policies.values())
    # Only columns of the DP view get keys, in the policy's order of values.
    assert population.keys(("sex", "resident_id")) == {"sex": ("女", "男")}


def _table(name: str, policies: dict[str, Policy]) -> Table:
    policy = policies[name]
    frame, columns = dp_view(pl.concat(list(generate(name, 2_000, 11))).lazy(), policy)
    meta = FrameMeta.from_lazyframe(frame, policy.domains.keys(columns), max_rows=2_000)
    unit = PrivacyUnit(policy.max_rows, policy.privacy_unit if policy.max_rows > 1 else None)
    return Table(frame, meta, unit, columns, 2_000)


def test_released_keys_and_encodings_are_the_generator_vocabularies() -> None:
    """What a DP table or a DP synthetic extract of the demo data releases is built over the
    same keys, spans and cut-off day as when they were read from the generator (so the
    released figures do not change): the policy is the only source now."""
    policies = load_policies(POLICIES)
    first_birth = (date(1970, 1, 1) + timedelta(days=FIRST_BIRTH_DAYS)).year
    people = _table("population", policies)
    spec = {"kind": "dp-table", "dataset": "population", "epsilon": 1.0, "tables": [
        {"name": "a", "group_by": ["district", "sex"]}, {"name": "b", "group_by": ["birth_year"]},
        {"name": "c", "group_by": ["education", "marital_status", "age_band"]}]}  # fmt: skip
    frames = dict(dpextract.build_tables(spec, people, policies["population"])[0])
    pairs = frames["a"].select("district", "sex").rows()
    assert pairs == [(d, s) for d in REGION_NAMES for s in ("女", "男")]
    assert frames["b"]["birth_year"].to_list() == list(range(first_birth, AS_OF.year + 1))
    assert frames["c"].select("education", "marital_status").unique(maintain_order=True).rows() == [
        (e, m) for e in EDUCATION for m in MARITAL
    ]
    plan = dpextract.plan_synthetic({"epsilon": 1.0}, people, policies["population"])
    encoders = {e.column: e for e in plan.encoders}
    assert encoders["birth_date"] == Years("birth_date", first_birth, AS_OF.year, pl.Date(), AS_OF)
    for column, keys in (("district", tuple(REGION_NAMES)), ("education", EDUCATION), ("sex", ("女", "男"))):
        assert isinstance(encoders[column], Categorical) and encoders[column].keys == keys
    born = encoders["birth_date"].decode(np.tile(np.arange(encoders["birth_date"].size), 200), rng(0))
    assert born.max() <= AS_OF and born.drop_nulls().dt.year().min() == first_birth
    months = tuple(date(2024, m, 1) for m in range(1, 13))
    bills = _table("utility", policies)
    spec = {"kind": "dp-table", "dataset": "utility", "epsilon": 1.0,
            "tables": [{"name": "m", "group_by": ["month"]}]}  # fmt: skip
    assert tuple(dict(dpextract.build_tables(spec, bills, policies["utility"])[0])["m"]["month"]) == months


def test_a_new_register_brings_its_own_domains(tmp_path: Path) -> None:
    path = _policy(tmp_path, "reference_date: 2026-01-31\npublic_domains:\n  region: [北区, 南区]\n"
                   "  born: {years: [1950, 2026]}\n  visits: [0, 1, 2]\n")  # fmt: skip
    domains = load_policy(path, schema=SCHEMA).domains
    assert domains.keys(["region", "visits", "born"]) == {"region": ("北区", "南区"), "visits": (0, 1, 2)}
    assert domains.year_span("born") == (1950, 2026) and domains.reference_date == date(2026, 1, 31)


PD = "public_domains:\n"


@pytest.mark.parametrize(
    ("tail", "line", "message"),
    [
        (PD + "  country: [中国]\n", 8, "public_domains: dataset 'survey' has no column 'country'"),
        (PD + "  region: []\n", 8, "public_domains: column 'region': the list of values is empty"),
        (PD + "  region: [北区, 北区]\n", 8, "public_domains: column 'region': a value is listed twice"),
        (PD + "  region: [北区, 7]\n", 8, "public_domains: column 'region': value 2 is not a text"),
        (
            PD + "  visits: {years: [1, 2]}\n",
            8,
            "public_domains: column 'visits' is number, and only a date has a span",
        ),
        (
            PD + "  born: {years: [2026, 1950]}\n",
            8,
            "public_domains: column 'born': years must be two whole years",
        ),
        ("public_domains: [region]\n", 7, "public_domains must map column names to their values"),
        ("reference_date: soon\n", 7, "reference_date must be a date"),
    ],
)
def test_a_bad_domain_is_refused_naming_file_line_and_column(
    tmp_path: Path, tail: str, line: int, message: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(_policy(tmp_path, tail), schema=SCHEMA)
    assert f"survey.yaml:{line}: {message}" in caught.value.detail


def test_generalising_to_a_district_needs_the_district_names(tmp_path: Path) -> None:
    path = tmp_path / "survey.yaml"
    path.write_text(
        "dataset: survey\nrelease_modes: [dp]\ncolumns:\n"
        "  home: {level: general, pi: pi, rule: generalise, to: district}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(path, schema={"home": pl.String()})
    assert "survey.yaml:4: column 'home': 'to: district' needs the district names" in caught.value.detail
