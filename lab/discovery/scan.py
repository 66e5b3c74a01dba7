"""The column classifier: which kind of value a column holds, judged by its values.

For every column of a sample (``lab.discovery.source``) each detector counts the values
that match it as a whole (``match: whole``). A kind is proposed when

- its share of the column's non-empty values reaches the kind's threshold (``Kind.threshold``:
  half for codes with a check character, 60 % for names, 80 % for dates, 90 % for sex), and
- for codes that can pass by chance (``checks.CHANCE``), the count is far beyond chance: the
  Chernoff bound ``exp(-n KL(share || chance))`` of a chance result is below one in a
  million (seven random numbers all passing Luhn are needed before a card column is named);
- for names, the matching values are many different ones (``MIN_DISTINCT_NAMES``), so a
  category such as 高中 / 初中 is not taken for names; other patterns need three matches.

The highest share wins (ties in ``KINDS`` order). A column where no kind wins is searched for
identifiers inside free text (``match: embedded``): mobile numbers, resident ID numbers
(check character verified) and e-mail addresses. One is enough (``EMBEDDED_MIN``): a phone
number in one remark of a hundred thousand is still a leak. Plain numbers are not free text
(an amount is not searched for phone numbers). Such a column is proposed for ``drop``.

Nothing here prints or logs a value: evidence examples are masked by ``Kind.mask``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from lab.discovery import checks, patterns
from lab.discovery.kinds import EMBEDDED, FREE_TEXT, KINDS, NOTHING, Kind
from lab.discovery.source import DEFAULT_CAP, Sample, read_sample

MIN_DISTINCT_NAMES = 50  # or half the matching values, whichever is smaller
EMBEDDED_MIN = 1  # identifiers found inside a free-text column before it is flagged
CHANCE_BOUND = math.log(1e6)  # n KL(share || chance) at least this: chance below 1e-6
EXAMPLES = 3


@dataclass(frozen=True)
class Evidence:
    """Why a kind was proposed: how many sampled values matched, and masked examples."""

    values: int  # non-empty values in the sample
    matches: int
    examples: tuple[str, ...] = ()  # masked, never a value
    distinct: int | None = None  # different matching values (names)
    contains: tuple[str, ...] = ()  # kinds found inside free text

    @property
    def share(self) -> float:
        return self.matches / self.values if self.values else 0.0


@dataclass(frozen=True)
class ColumnFinding:
    """One column: what was detected and the policy proposed for it."""

    column: str
    dtype: str
    kind: str | None
    match: str | None  # "whole", "embedded" or None
    level: str
    pi: str
    identifier: str  # direct / quasi / none
    rule: str
    params: Mapping[str, Any]
    evidence: Evidence
    empty: int = 0  # null or blank values in the whole file
    scores: Mapping[str, float] = field(default_factory=dict)  # share of each kind that matched at all

    def policy_entry(self) -> dict[str, Any]:
        """The column's entry in a policy file (``lab.policy`` vocabulary)."""
        entry: dict[str, Any] = {"level": self.level, "pi": self.pi}
        if self.identifier == "direct":
            entry["identifier"] = "direct"
        entry["rule"] = self.rule
        entry.update(self.params)
        return entry

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of the column."""
        e = self.evidence
        return {
            "column": self.column,
            "kind": self.kind,
            "match": self.match,
            "identifier": self.identifier,
            "pi": self.pi,
            "level": self.level,
            "rule": self.rule,
            "params": dict(self.params),
            "policy": self.policy_entry(),
            "evidence": {
                "values": e.values,
                "matches": e.matches,
                "share": round(e.share, 4),
                "examples": list(e.examples),
                "distinct": e.distinct,
                "contains": list(e.contains),
            },
            "empty": self.empty,
            "dtype": self.dtype,
            "scores": dict(self.scores),
        }


@dataclass(frozen=True)
class ScanResult:
    """The findings of one file."""

    path: str
    format: str
    encoding: str | None
    rows: int
    cap: int
    columns: tuple[ColumnFinding, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.columns]


def scan_source(path: str | Path, cap: int = DEFAULT_CAP, today: date | None = None) -> ScanResult:
    """Scan a CSV or Parquet file: one finding per column, from up to ``cap`` values each."""
    sample = read_sample(path, cap)
    return scan_sample(sample, cap, today)


def scan_sample(sample: Sample, cap: int = DEFAULT_CAP, today: date | None = None) -> ScanResult:
    """Classify every column of a sample."""
    findings = tuple(
        classify(name, values, sample.dtypes.get(name, "String"), sample.empty.get(name, 0), today)
        for name, values in sample.values.items()
    )
    return ScanResult(sample.path, sample.format, sample.encoding, sample.rows, cap, findings)


def _filter(values: pl.Series, predicate: Callable[[pl.Expr], pl.Expr]) -> pl.Series:
    mask = values.to_frame("v").select(predicate(pl.col("v")).alias("m")).to_series()
    return values.filter(mask)


def _whole_matches(values: pl.Series, today: date | None) -> dict[str, pl.Series]:
    """Per kind, the values that match it as a whole (pre-filtered by length for speed)."""
    length = values.str.len_chars()
    eighteen = values.filter(length == 18).str.to_uppercase()
    cards = values.filter(length.is_between(16, 23) & values.str.contains(r"^[0-9][0-9 \-]+$"))
    return {
        "resident_id": eighteen.filter(checks.resident_id_mask(eighteen, today)),
        "credit_code": eighteen.filter(checks.credit_code_mask(eighteen)),
        "bank_card": cards.filter(checks.luhn_mask(checks.card_digits(cards))),
        "mobile": _filter(
            values.filter(length.is_between(11, 17) & values.str.contains(r"^[0-9+][0-9 \-]+$")),
            checks.mobile_expr,
        ),
        "email": _filter(values.filter(values.str.contains("@", literal=True)), patterns.email_expr),
        "licence_plate": _filter(values.filter(length.is_between(7, 9)), patterns.plate_expr),
        "person_name": _filter(values.filter(length.is_between(2, 21)), patterns.name_expr),
        "address": _filter(values.filter(length >= 6), patterns.address_expr),
        "sex": _filter(values.filter(length <= 2), patterns.sex_expr),
        "date": _filter(
            values.filter(length.is_between(8, 11)), lambda v: patterns.date_expr(v).is_not_null()
        ),
    }


def _kl(share: float, chance: float) -> float:
    """Kullback-Leibler divergence of Bernoulli(share) from Bernoulli(chance)."""
    if share <= chance:
        return 0.0
    low = 0.0 if share == 1.0 else (1 - share) * math.log((1 - share) / (1 - chance))
    return share * math.log(share / chance) + low


def _wins(kind: Kind, matched: pl.Series, n: int) -> bool:
    share = matched.len() / n
    if share < kind.threshold:
        return False
    chance = checks.CHANCE.get(kind.name)
    if chance is not None:
        return n * _kl(share, chance) >= CHANCE_BOUND
    if kind.name == "person_name":
        return matched.n_unique() >= min(MIN_DISTINCT_NAMES, matched.len() / 2)
    return matched.len() >= min(3, n)


def _examples(kind: Kind, matched: pl.Series) -> tuple[str, ...]:
    """Up to ``EXAMPLES`` different masked forms of the first matching values."""
    masked = (kind.mask(v) for v in matched.unique(maintain_order=True).head(50 * EXAMPLES).to_list())
    return tuple(dict.fromkeys(masked))[:EXAMPLES]


def classify(
    column: str, values: pl.Series, dtype: str = "String", empty: int = 0, today: date | None = None
) -> ColumnFinding:
    """The finding for one column from a sample of its non-empty values (as strings)."""
    n = values.len()
    if n == 0:
        return _finding(column, dtype, None, None, NOTHING, Evidence(0, 0), empty, {})
    whole = _whole_matches(values, today)
    scores = {k: round(m.len() / n, 4) for k, m in whole.items() if m.len()}
    winners = [name for name, kind in KINDS.items() if name in whole and _wins(kind, whole[name], n)]
    if winners:
        name = max(winners, key=lambda k: whole[k].len())  # max keeps the first of equals
        matched = whole[name]
        if name == "date":
            dates = matched.to_frame("v").select(patterns.date_expr(pl.col("v"))).to_series()
            name = "birth_date" if patterns.birth_like(column, dates, today) else "date"
        kind = KINDS[name]
        evidence = Evidence(
            n,
            matched.len(),
            _examples(kind, matched),
            matched.n_unique() if name == "person_name" else None,
        )
        finding = _finding(column, dtype, name, "whole", kind, evidence, empty, scores)
        if name == "credit_code" and (matched.str.slice(0, 2) == "92").mean() >= 0.5:  # type: ignore[operator]
            # Individual businesses (个体工商户, category 92) are named after their owner.
            finding = replace(finding, pi="pi")
        return finding
    return _embedded(column, dtype, values, empty, scores, today)


def _embedded(
    column: str, dtype: str, values: pl.Series, empty: int, scores: dict[str, float], today: date | None
) -> ColumnFinding:
    n = values.len()
    text = values.filter(values.str.contains(r"[^0-9.\-+eE ]"))  # not a plain number
    found: dict[str, pl.Series] = {}
    if text.len():
        ids = text.str.extract(patterns.ID_IN_TEXT, 1).str.to_uppercase().drop_nulls()
        found["resident_id"] = ids.filter(checks.resident_id_mask(ids, today))
        found["mobile"] = text.str.extract(r"(1[3-9][0-9](?:[ \-]?[0-9]{4}){2})", 1).filter(
            text.str.contains(patterns.MOBILE_IN_TEXT)
        )
        found["email"] = text.str.extract(f"({patterns.EMAIL_IN_TEXT})", 1).drop_nulls()
    hits = {k: found[k] for k in EMBEDDED if k in found and found[k].len() >= EMBEDDED_MIN}
    for k, m in found.items():
        if m.len():
            scores[f"{k}_in_text"] = round(m.len() / n, 4)
    if not hits:
        return _finding(column, dtype, None, None, NOTHING, Evidence(n, 0), empty, scores)
    name = max(hits, key=lambda k: hits[k].len())
    examples = tuple(f"…{e}…" for e in _examples(KINDS[name], hits[name]))
    evidence = Evidence(n, hits[name].len(), examples, contains=tuple(hits))
    finding = _finding(column, dtype, name, "embedded", FREE_TEXT, evidence, empty, scores)
    return replace(finding, pi="sensitive") if "resident_id" in hits else finding


def _finding(
    column: str,
    dtype: str,
    name: str | None,
    match: str | None,
    kind: Kind,
    evidence: Evidence,
    empty: int,
    scores: dict[str, float],
) -> ColumnFinding:
    return ColumnFinding(
        column=column,
        dtype=dtype,
        kind=name,
        match=match,
        level=kind.level,
        pi=kind.pi,
        identifier=kind.identifier,
        rule=kind.rule,
        params=dict(kind.params),
        evidence=evidence,
        empty=empty,
        scores=scores,
    )


__all__ = ["ColumnFinding", "Evidence", "ScanResult", "classify", "scan_sample", "scan_source"]
