"""The policy data model: what a loaded, validated policy holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from lab.policy.catalogue import CatalogueInfo

LEVELS = ("core", "important", "general")  # 数据分级: 核心 / 重要 / 一般
PI_CLASSES = ("sensitive", "pi", "none")  # 敏感个人信息 / 个人信息 / 非个人信息
RULES = ("drop", "pseudonym", "generalise", "topcode", "suppress_rare", "keep")
MODES = ("masked", "dp")
HIDDEN_RULES = ("drop", "pseudonym")  # rules that release no value of the column


class PolicyProblem(NamedTuple):
    """One problem in a policy file: where it is and what is wrong."""

    path: str
    line: int  # 1-based; 0 when the problem is about the file or directory as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class ColumnPolicy:
    """Classification and masking rule of one column."""

    name: str
    level: str
    pi: str
    rule: str
    params: Mapping[str, Any] = field(default_factory=dict)
    direct_identifier: bool = False
    watermark: float | None = None  # unit of the per-recipient mark on a numeric column
    line: int = 0

    @property
    def released(self) -> bool:
        """True if a masked extract carries (a transform of) the column's values."""
        return self.rule not in HIDDEN_RULES


LONGITUDINAL_LEVELS = ("month", "quarter", "half", "year")  # finest to coarsest


@dataclass(frozen=True)
class HouseholdLink:
    """The household pseudonym column, released only for the purposes named here."""

    column: str
    purposes: tuple[str, ...] = ()

    def allowed(self, purpose: str | None) -> bool:
        """True if a grant's ``purpose`` is one of ``purposes`` (whole text, or text before ':')."""
        if not purpose:
            return False
        text = purpose.strip().casefold()
        head = text.split(":", 1)[0].strip()
        return any(p.casefold() in (text, head) for p in self.purposes)


@dataclass(frozen=True)
class Longitudinal:
    """Rows of one privacy unit over time: ``time`` is generalised along ``levels`` until
    every trajectory (the periods of one unit ``within`` one value, e.g. an employer) is
    shared by k units; trajectories still below k are suppressed."""

    time: str
    within: str | None = None
    levels: tuple[str, ...] = LONGITUDINAL_LEVELS
    max_suppressed: float = 0.05  # share of spells a level may suppress before the next is tried


@dataclass(frozen=True)
class PublicDomains:
    """What a policy says is public about a dataset's values."""

    values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # column -> its every value
    years: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # date column -> first, last year
    reference_date: date | None = None

    def keys(self, columns: list[str] | tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
        """The public keys of those ``columns`` that have listed values."""
        return {c: self.values[c] for c in columns if c in self.values}

    def year_span(self, column: str) -> tuple[int, int] | None:
        """The first and last year of a date column's public span, or None."""
        return self.years.get(column)


@dataclass(frozen=True)
class Policy:
    """A validated dataset policy."""

    dataset: str
    path: str
    digest: str  # sha256 of the file's bytes, for extract manifests
    columns: Mapping[str, ColumnPolicy]
    release_modes: tuple[str, ...]
    quasi_identifiers: tuple[str, ...] = ()
    k: int = 1
    l: int = 1  # noqa: E741 - the l of l-diversity
    sensitive: tuple[str, ...] = ()  # the l-diversity columns
    privacy_unit: str | None = None  # the column naming the person (DP contribution bounding)
    max_rows: int = 1  # rows one privacy unit may contribute
    negative_listed: frozenset[str] = frozenset()
    budget: Any = None  # lab.policy.budget.BudgetPolicy, or None: no caps across grants
    risk_threshold: float | None = None  # highest re-identification risk a build may release
    household: HouseholdLink | None = None
    longitudinal: Longitudinal | None = None
    linked_datasets: tuple[str, ...] = ()  # datasets whose extracts share pseudonyms with this one
    public_identifiers: tuple[str, ...] = ()  # columns a public register names an entity by
    domains: PublicDomains = field(default_factory=PublicDomains)  # public_domains:, reference_date:
    description: str = ""
    catalogue: CatalogueInfo = field(default_factory=CatalogueInfo)  # title, owner, frequency
    export_reviewers: int | None = None  # distinct approvals an export needs (None: the lab's, 2)

    @property
    def threshold(self) -> float:
        """The policy's risk threshold: ``risk_threshold`` if set, else 1/k."""
        return self.risk_threshold if self.risk_threshold is not None else 1.0 / max(self.k, 1)

    def masked_columns(self) -> list[str]:
        """The columns a masked extract contains, in policy order."""
        return [c.name for c in self.columns.values() if c.rule != "drop"]


@dataclass(frozen=True)
class NegativeList:
    """Columns that never leave the restricted zone (负面清单); dataset ``*`` means every dataset."""

    entries: frozenset[tuple[str, str]] = frozenset()
    path: str = ""
    lines: Mapping[tuple[str, str], int] = field(default_factory=dict, compare=False)

    def covers(self, dataset: str, column: str) -> bool:
        """True if ``dataset.column`` is on the list."""
        return (dataset, column) in self.entries or ("*", column) in self.entries
