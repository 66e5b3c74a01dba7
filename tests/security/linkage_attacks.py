"""Linkage attacks on masked extracts, as an adversary with the register's public structure.

Every attack returns the *expected re-identification rate*: the attacker picks uniformly
among the candidates its knowledge leaves, and the rate is the mean probability of landing
on the right person (the prosecutor risk an attacker realises), over the extract's rows,
households or spells. ``unique`` is the share singled out with one candidate that is right
(the figure the issue counted). Ground truth comes from the organisation's key: the test
pseudonymises the raw identifiers itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from lab.masking import OrgKey, pseudonymise
from lab.masking.transform import value_expr
from lab.policy import Policy


@dataclass(frozen=True)
class Attack:
    name: str
    rate: float  # expected share re-identified
    unique: float  # share singled out by a unique, correct candidate
    targets: int

    def line(self) -> str:
        return f"{self.name}: rate {self.rate:.4f}, unique {self.unique:.4f} over {self.targets:,} targets"


def _pseudonyms(key: OrgKey, values: pl.Series) -> pl.Series:
    return pseudonymise(key, "person", values)


def released_qis(raw: pl.DataFrame, policy: Policy) -> pl.DataFrame:
    """The raw rows with their quasi-identifiers generalised as the policy releases them."""
    return raw.with_columns(value_expr(policy.columns[q], {}).alias(q) for q in policy.quasi_identifiers)


def _tuple(columns: list[str]) -> pl.Expr:
    return pl.concat_str([pl.col(c).cast(pl.String).fill_null("∅") for c in columns], separator="|")


def _signature(frame: pl.DataFrame, household: str, qis: list[str]) -> pl.DataFrame:
    return (
        frame.with_columns(_tuple(qis).alias("__t"))
        .group_by(household)
        .agg(pl.col("__t").sort().str.join(";").alias("sig"), pl.len().alias("size"))
    )


def household_signature(raw: pl.DataFrame, extract: pl.DataFrame, policy: Policy, key: OrgKey) -> Attack:
    """Target: a resident whose household's members (and their QIs) the attacker knows."""
    qis = list(policy.quasi_identifiers)
    if "household_id" not in extract.columns or extract["household_id"].null_count() == extract.height:
        return Attack("household signature", 0.0, 0.0, extract.height)
    linked = extract.filter(pl.col("household_id").is_not_null())
    ext_sig = _signature(linked, "household_id", qis)
    sig_count = ext_sig.group_by("sig").agg(pl.len().alias("n_sig"))
    # members of the true household sharing the target's tuple
    members = (
        linked.with_columns(_tuple(qis).alias("__t"))
        .group_by("household_id", "__t")
        .agg(pl.len().alias("n_same"))
    )
    truth = released_qis(raw, policy).with_columns(
        _pseudonyms(key, raw["household_id"]).alias("hh_p"), _pseudonyms(key, raw["resident_id"]).alias("p")
    )
    raw_sig = _signature(truth, "household_id", qis).rename({"sig": "raw_sig"}).drop("size")
    targets = (
        truth.with_columns(_tuple(qis).alias("__t"))
        .join(raw_sig, on="household_id")
        .join(extract.select(pl.col("resident_id").alias("p")), on="p", how="semi")
        .join(ext_sig.rename({"household_id": "hh_p"}), on="hh_p", how="left")
        .join(sig_count, on="sig", how="left")
        .join(members.rename({"household_id": "hh_p"}), on=["hh_p", "__t"], how="left")
    )
    hit = (pl.col("sig") == pl.col("raw_sig")).fill_null(False)
    p = pl.when(hit).then(1.0 / pl.col("n_sig") / pl.col("n_same")).otherwise(0.0)
    unique = hit & (pl.col("n_sig") == 1) & (pl.col("n_same") == 1)
    out = targets.select(p.sum().alias("r"), unique.sum().alias("u"))
    return Attack(
        "household signature", out["r"][0] / extract.height, out["u"][0] / extract.height, extract.height
    )


def person_join(
    people: pl.DataFrame, other: pl.DataFrame, policy: Policy, extra: list[str], name: str
) -> Attack:
    """Join two extracts of one organisation on the person pseudonym; QIs + ``extra`` columns."""
    on = "resident_id"
    right = other.rename({c: c for c in other.columns})
    if on not in right.columns and "legal_rep_id" in right.columns:
        right = right.rename({"legal_rep_id": on})
    joined = people.select(on, *policy.quasi_identifiers).join(right.select(on, *extra).unique(), on=on)
    if joined.height == 0:
        return Attack(name, 0.0, 0.0, 0)
    keys = [*policy.quasi_identifiers, *extra]
    sizes = joined.group_by(keys).agg(pl.col(on).n_unique().alias("f"))
    view = joined.join(sizes, on=keys, how="left", nulls_equal=True)
    persons = view.group_by(on).agg(pl.col("f").min())  # the attacker uses the rarest record
    rate = float((1.0 / persons["f"]).mean())  # type: ignore[arg-type]
    return Attack(name, rate, float((persons["f"] == 1).mean()), persons.height)  # type: ignore[arg-type]


def legal_rep_link(people: pl.DataFrame, entities: pl.DataFrame) -> Attack:
    """Legal representatives named by the public enterprise register, found in the population extract."""
    if "legal_rep_id" not in entities.columns:
        return Attack("legal representative link", 0.0, 0.0, 0)
    reps = entities.filter(pl.col("legal_rep_id").is_not_null()).select("legal_rep_id").unique()
    public = {"credit_code", "name"} & set(entities.columns)
    found = reps.join(
        people.select(pl.col("resident_id").alias("legal_rep_id")), on="legal_rep_id", how="semi"
    )
    rate = found.height / max(reps.height, 1) if public else 0.0
    return Attack("legal representative link", rate, rate, reps.height)


def position_alignment(a: pl.DataFrame, b: pl.DataFrame, raw_a: pl.Series, raw_b: pl.Series) -> Attack:
    """Two organisations line their extracts up row by row; ``raw_*`` are each row's true person."""
    n = min(a.height, b.height)
    same = (raw_a.head(n) == raw_b.head(n)).sum()
    return Attack("two-org alignment by position", same / max(n, 1), same / max(n, 1), n)


def true_persons(extract: pl.DataFrame, raw: pl.DataFrame, key: OrgKey) -> pl.Series:
    """The raw resident behind each extract row (ground truth from the organisation's key)."""
    lookup = raw.select(pl.col("resident_id").alias("truth"), _pseudonyms(key, raw["resident_id"]).alias("p"))
    return extract.select(pl.col("resident_id").alias("p")).join(
        lookup, on="p", how="left", maintain_order="left"
    )["truth"]


def signature_alignment(
    a: pl.DataFrame, b: pl.DataFrame, truth_a: pl.Series, truth_b: pl.Series, qis: list[str]
) -> Attack:
    """Two organisations match households by their members' QIs (no shared pseudonym)."""
    if any("household_id" not in f.columns or f["household_id"].null_count() == f.height for f in (a, b)):
        return Attack("two-org alignment by household signature", 0.0, 0.0, a.height)
    fa = a.with_columns(truth_a.alias("truth")).filter(pl.col("household_id").is_not_null())
    fb = b.with_columns(truth_b.alias("truth")).filter(pl.col("household_id").is_not_null())
    sa = _signature(fa, "household_id", qis)
    sb = _signature(fb, "household_id", qis)
    nb = sb.group_by("sig").agg(pl.len().alias("n"))
    # a household is the same when its first member (by true id) is the same person
    first_a = fa.group_by("household_id").agg(pl.col("truth").min().alias("who"))
    first_b = fb.group_by("household_id").agg(pl.col("truth").min().alias("who"))
    pair = (
        sa.join(first_a, on="household_id")
        .join(first_b.rename({"household_id": "hb"}), on="who", how="left")
        .join(
            sb.select(pl.col("household_id").alias("hb"), pl.col("sig").alias("sig_b")), on="hb", how="left"
        )
        .join(nb, on="sig", how="left")
    )
    hit = (pl.col("sig") == pl.col("sig_b")).fill_null(False)
    out = pair.select(
        (pl.when(hit).then(pl.col("size") / pl.col("n")).otherwise(0.0)).sum().alias("r"),
        (pl.when(hit & (pl.col("n") == 1)).then(pl.col("size")).otherwise(0)).sum().alias("u"),
    )
    return Attack(
        "two-org alignment by household signature", out["r"][0] / a.height, out["u"][0] / a.height, a.height
    )


def trajectory(raw: pl.DataFrame, extract: pl.DataFrame, key: OrgKey) -> Attack:
    """Target: a person whose employer and months insured the attacker knows (one spell)."""
    spell = ["resident_id", "employer_credit_code"]
    released = (
        extract.group_by(spell)
        .agg(pl.col("month").unique().sort().cast(pl.String).str.join(",").alias("path"))
        .with_columns(pl.col("path").alias("released"))
    )
    # what the attacker knows, mapped to the released periods: the months → the extract's periods
    periods = extract["month"].unique().sort()
    known = raw.group_by(spell).agg(pl.col("month").unique().sort().alias("months"))
    known = known.with_columns(_pseudonyms(key, known["resident_id"]).alias("p"))
    exploded = known.explode("months").sort("months")
    mapped = exploded.join_asof(
        pl.DataFrame({"period": periods}).sort("period"),
        left_on="months",
        right_on="period",
        strategy="backward",
    )
    known_path = mapped.group_by("p", "employer_credit_code").agg(
        pl.col("period").unique().sort().cast(pl.String).str.join(",").alias("path")
    )
    counts = released.group_by("employer_credit_code", "path").agg(pl.len().alias("n"))
    targets = known_path.join(
        released.select(pl.col("resident_id").alias("p"), "employer_credit_code", "released"),
        on=["p", "employer_credit_code"],
    ).join(counts, on=["employer_credit_code", "path"], how="left")
    hit = (pl.col("path") == pl.col("released")).fill_null(False)
    out = targets.select(
        pl.when(hit).then(1.0 / pl.col("n")).otherwise(0.0).sum().alias("r"),
        (hit & (pl.col("n") == 1)).sum().alias("u"),
    )
    return Attack("trajectory", out["r"][0] / released.height, out["u"][0] / released.height, released.height)
