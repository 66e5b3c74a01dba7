"""Masked extracts: no identifiers, k-anonymity, per-organisation pseudonyms, tracing."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from lab.errors import AccessDenied, PolicyError
from lab.masking import (
    Fingerprint,
    MaskReport,
    OrgKey,
    mask_frame,
    mask_parquet,
    preview_risk,
    pseudonymise,
    trace,
)
from lab.policy import Policy, load_policies, load_policy
from lab.synthetic import write_parquet

pytestmark = pytest.mark.unit

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ROWS = 20_000
SEED = 3
A = OrgKey("org-a", b"A" * 32)
B = OrgKey("org-b", b"B" * 32)
C = OrgKey("org-c", b"C" * 32)  # never among the candidates: stands for "someone else"
ID_OR_PHONE = re.compile(r"\d{17}[\dXx]|1[3-9]\d{9}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw registers of one city (population, social insurance, utility) as Parquet."""
    root = tmp_path_factory.mktemp("masking")
    for name in ("population", "social_insurance", "utility"):
        write_parquet(name, root / f"{name}.parquet", ROWS, SEED)
    return root


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    return load_policies(POLICIES)


@pytest.fixture(scope="module")
def extracts(
    workdir: Path, policies: dict[str, Policy]
) -> dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]]:
    """Extracts of each register for organisations A, B and C, read back from their files."""
    built = {}
    for name in ("population", "social_insurance", "utility"):
        for key in (A, B, C):
            target = workdir / f"{name}.{key.org}.parquet"
            report = mask_parquet(
                workdir / f"{name}.parquet", target, policies[name], key, purpose="household-study"
            )
            built[(name, key.org)] = (pl.read_parquet(target), report)
    return built


def _strings(frame: pl.DataFrame) -> set[str]:
    return {v for c, t in frame.schema.items() if t == pl.String for v in frame[c].drop_nulls().to_list()}


def test_no_direct_identifier_reaches_the_extract_file(
    workdir: Path, extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]]
) -> None:
    raw = pl.read_parquet(workdir / "population.parquet")
    secrets = (
        set(raw["resident_id"])
        | set(raw["name"])
        | set(raw["street_address"])
        | set(raw["phone"].drop_nulls())
    )
    secrets |= set(raw["household_id"])
    for (name, _), (frame, _) in extracts.items():
        values = _strings(frame)
        assert not [v for v in values if ID_OR_PHONE.search(v)], name
        assert not values & secrets, name
        assert {"name", "phone", "street_address", "supply_node"}.isdisjoint(frame.columns)
    population = extracts[("population", "org-a")][0]
    assert population["resident_id"].str.contains(r"^[a-p]{28}$").all()


def test_k_anonymity_holds_and_the_report_adds_up(
    extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]], policies: dict[str, Policy]
) -> None:
    frame, report = extracts[("population", "org-a")]
    qis = list(policies["population"].quasi_identifiers)
    assert frame.group_by(qis).len()["len"].min() >= 5
    assert report.k_achieved is not None and report.k_achieved >= report.k_required == 5
    assert report.rows_in == ROWS and report.rows_out == frame.height
    assert 0 < report.rows_suppressed == ROWS - frame.height < ROWS * 0.2
    assert frame["birth_date"].str.contains(r"^\d{4}-\d{4}$").all()


def test_k_counts_people_and_l_diversity_holds_per_employer(
    extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]],
) -> None:
    frame, report = extracts[("social_insurance", "org-a")]
    per_employer = frame.group_by("employer_credit_code").agg(
        pl.col("resident_id").n_unique().alias("people"),
        pl.col("contribution_base").n_unique().alias("bands"),
    )
    assert per_employer["people"].min() >= 5 and per_employer["bands"].min() >= 2
    assert report.k_achieved is not None and report.k_achieved >= 5
    assert report.l_achieved is not None and report.l_achieved >= report.l_required == 2
    assert set(frame["contribution_base"].unique().to_list()) <= {float(b) for b in range(0, 21_000, 1000)}


def test_two_organisations_share_no_pseudonym(
    extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]],
) -> None:
    for name, column in (
        ("population", "resident_id"),
        ("population", "household_id"),
        ("utility", "account_id"),
    ):
        mine = set(extracts[(name, "org-a")][0][column].drop_nulls())
        theirs = set(extracts[(name, "org-b")][0][column].drop_nulls())
        assert mine and theirs and not mine & theirs


def test_one_organisation_joins_population_and_social_insurance(
    workdir: Path, extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]]
) -> None:
    people = extracts[("population", "org-a")][0]
    insured = extracts[("social_insurance", "org-a")][0]
    joined = insured.join(people, on="resident_id", how="inner")
    assert joined.height > 0.75 * insured.height  # the rest are people suppressed by k-anonymity
    raw_ids = pl.read_parquet(workdir / "population.parquet")["resident_id"]
    assert set(insured["resident_id"]) <= set(pseudonymise(A, "person", raw_ids))
    other = insured.join(extracts[("population", "org-b")][0], on="resident_id", how="inner")
    assert other.height == 0
    homes = extracts[("utility", "org-a")][0].join(people, on="household_id", how="inner")
    assert homes.height > 0


def test_trace_names_the_organisation_from_a_one_percent_sample(
    extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]],
) -> None:
    for (name, org), (frame, _) in extracts.items():
        if org == "org-c":
            continue
        sample = frame.sample(fraction=0.01, seed=42)
        result = trace(sample, [A, B])
        assert result.org == org, (name, org)
        assert result.log10_p is not None and result.log10_p < -9


def test_trace_uses_value_marks_when_pseudonyms_are_removed(
    workdir: Path, extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]]
) -> None:
    frame, report = extracts[("utility", "org-b")]
    stripped = frame.drop("account_id", "household_id").sample(fraction=0.01, seed=1)
    leaked = workdir / "leaked.parquet"
    stripped.write_parquet(leaked)
    result = trace(leaked, [A, B], [extracts[("utility", "org-a")][1].fingerprint, report.fingerprint])
    assert result.org == "org-b"
    assert {e.kind for e in result.evidence if e.org == "org-b" and e.rate == 1.0} == {"value-mark"}
    assert [b.build_id for b in result.builds] == [report.fingerprint.build_id]


def test_trace_names_nobody_for_an_extract_it_never_built(
    workdir: Path, extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]]
) -> None:
    for name in ("population", "social_insurance", "utility"):
        built_for_someone_else = extracts[(name, "org-c")][0]
        assert trace(built_for_someone_else, [A, B]).org is None
        assert trace(pl.read_parquet(workdir / f"{name}.parquet"), [A, B, C]).org is None
    coarse = extracts[("population", "org-a")][0].drop("resident_id", "household_id")
    assert trace(coarse, [A, B]).org is None  # no carrier left: nobody is named, never the wrong one


def test_watermark_moves_values_by_at_most_one_unit(
    workdir: Path, extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]]
) -> None:
    raw = pl.read_parquet(workdir / "utility.parquet")
    masked = extracts[("utility", "org-a")][0]
    assert masked.height == raw.height  # no suppression at this k
    # rows are shuffled per build; each value moving by at most a unit bounds the sorted sequences too
    released = masked["electricity_kwh"].sort()
    difference = (released - raw["electricity_kwh"].clip(upper_bound=100_000).sort()).abs()
    assert difference.max() <= 0.0100001
    assert masked["heat_gj"].null_count() == raw["heat_gj"].null_count()


def test_pseudonyms_are_per_value_whatever_the_batch() -> None:
    values = pl.Series("v", ["a", "370303198705121239", "", None, "张店区" * 9, "b"])
    together = pseudonymise(A, "person", values)
    alone = [pseudonymise(A, "person", pl.Series("v", [v]))[0] for v in values.to_list()]
    assert together.to_list() == alone
    assert together[3] is None and len(set(together.drop_nulls())) == 5
    assert pseudonymise(A, "utility", values)[0] != together[0]


def test_runs_of_one_value_get_the_pseudonym_each_value_gets_alone() -> None:
    # a household's members are adjacent in a register: runs are encrypted once, not differently
    values = pl.Series("household", ["h1"] * 4 + [None, None] + ["h2"] * 3 + ["h1"] + ["h3"] * 5)
    alone = [pseudonymise(A, "person", pl.Series("household", [v]))[0] for v in values.to_list()]
    assert pseudonymise(A, "person", values).to_list() == alone


def _with_column(policy: Policy, name: str, **changes: object) -> Policy:
    column = dataclasses.replace(policy.columns[name], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(policy, columns={**policy.columns, name: column})


def test_a_build_that_would_leak_fails_and_writes_nothing(workdir: Path, policies: dict[str, Policy]) -> None:
    source, target = workdir / "population.parquet", workdir / "would-leak.parquet"
    policy = policies["population"]
    with pytest.raises(PolicyError, match="'resident_id' is important data"):
        mask_parquet(source, target, _with_column(policy, "resident_id", rule="keep"), A)
    # Misclassified as harmless general data: the policy gate cannot tell, the value check can.
    mislabelled = _with_column(
        policy, "resident_id", level="general", pi="none", direct_identifier=False, rule="keep"
    )
    with pytest.raises(PolicyError, match="look like ID or phone numbers"):
        mask_parquet(source, target, mislabelled, A)
    with pytest.raises(AccessDenied, match="does not allow masked"):
        mask_parquet(source, target, dataclasses.replace(policy, release_modes=("dp",)), A)
    assert not [p for p in workdir.iterdir() if "would-leak" in p.name]


def test_generalise_topcode_and_rare_value_rules(tmp_path: Path) -> None:
    path = tmp_path / "survey.yaml"
    path.write_text(
        "dataset: survey\nrelease_modes: [masked]\nquasi_identifiers: [home, born]\nk: 2\ncolumns:\n"
        "  home: {level: general, pi: pi, identifier: direct, rule: generalise, to: district,\n"
        "         districts: [淄川区, 张店区, 博山区, 临淄区, 周村区, 桓台县, 高青县, 沂源县]}\n"
        "  born: {level: general, pi: pi, rule: generalise, to: year}\n"
        "  pay: {level: general, pi: pi, rule: generalise, to: band, width: 1000, top: 9000}\n"
        "  job: {level: general, pi: pi, rule: suppress_rare, min_count: 2}\n"
        "  score: {level: general, pi: none, rule: topcode, bottom: 0, top: 10}\n"
    )
    schema = {"home": pl.String, "born": pl.Date, "pay": pl.Float64, "job": pl.String, "score": pl.Float64}
    policy = load_policy(path, schema=schema)
    frame = pl.DataFrame(
        {
            "home": [
                "山东省淄博市张店区车站街道1号",
                "山东省淄博市张店区公园街道2号",
                "淄博市沂源县历山街道3号",
            ],
            "born": [date(1980, 5, 1), date(1980, 9, 9), date(1990, 1, 1)],
            "pay": [5_432.0, 12_000.0, 800.0],
            "job": ["teacher", "teacher", "astronaut"],
            "score": [-3.0, 4.5, 99.0],
        }
    )
    masked, report = mask_frame(frame, policy, A)
    assert masked.sort("pay").to_dicts() == [  # rows are shuffled per build
        {"home": "张店区", "born": 1980, "pay": 5000.0, "job": "teacher", "score": 0.0},
        {"home": "张店区", "born": 1980, "pay": 9000.0, "job": "teacher", "score": 4.5},
    ]
    assert (report.rows_in, report.rows_out, report.groups_suppressed, report.k_achieved) == (3, 2, 1, 2)


def test_fingerprint_round_trips_without_any_secret(
    extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]],
) -> None:
    report = extracts[("utility", "org-a")][1]
    stored = report.fingerprint.to_dict()
    assert Fingerprint.from_dict(stored) == report.fingerprint
    assert stored["key_id"] == A.key_id and stored["watermark_columns"]["gas_m3"] == 0.01
    assert "AAAA" not in repr(report.to_dict()) and "AAAA" not in repr(A)


def _rounded(value: object) -> object:
    """Means summed in another row order differ in the last bits; compare to 12 digits."""
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _measures(report: dict[str, object]) -> object:
    return _rounded({k: v for k, v in report.items() if k not in ("organisation", "scope")})


@pytest.mark.parametrize("name", ["population", "social_insurance", "utility"])
def test_the_risk_dry_run_measures_what_the_build_publishes(
    workdir: Path,
    policies: dict[str, Policy],
    extracts: dict[tuple[str, str], tuple[pl.DataFrame, MaskReport]],
    name: str,
) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    report, counts = preview_risk(workdir / f"{name}.parquet", policies[name], C, purpose="household-study")
    built = extracts[(name, A.org)][1]
    assert built.risk is not None
    assert _measures(report.to_dict()) == _measures(built.risk.to_dict())
    assert counts["rows_in"] == built.rows_in and counts["groups_suppressed"] == built.groups_suppressed
    assert sorted(p.name for p in workdir.iterdir()) == before  # a dry run writes nothing


def test_the_risk_dry_run_reports_what_a_build_would_be_refused_for(
    workdir: Path, policies: dict[str, Policy]
) -> None:
    strict = dataclasses.replace(policies["population"], risk_threshold=0.01)
    report, _ = preview_risk(workdir / "population.parquet", strict, A)
    assert report.exceeded() and "record prosecutor risk" in report.exceeded()[0]
    assert report.household_link.startswith("withheld")  # no purpose: no household link
    with pytest.raises(PolicyError) as refused:
        mask_parquet(workdir / "population.parquet", workdir / "strict.parquet", strict, A)
    assert refused.value.reason == "risk" and not (workdir / "strict.parquet").exists()
