"""Dataset policies: classification of every column, masking rules, and what may be released.

One YAML file per dataset in ``policies/`` plus ``policies/negative-list.yaml`` (负面清单)::

    dataset: population
    release_modes: [masked, dp]          # masked extracts and/or DP results
    quasi_identifiers: [sex, birth_date, district]
    k: 5                                 # k-anonymity of masked extracts
    l_diversity: {l: 2, columns: [marital_status]}
    privacy_unit: {column: resident_id, max_rows: 1}   # rows one person may contribute (DP)
    columns:
      resident_id: {level: important, pi: sensitive, identifier: direct, rule: pseudonym, family: person}
      birth_date:  {level: general, pi: pi, rule: generalise, to: band, years: 5}

Disclosure risk over the release universe (``lab.risk``, docs/risk.md)::

    risk_threshold: 0.2                  # highest re-identification risk released (default 1/k)
    household_link: {column: household_id, purposes: [household-study]}
    longitudinal: {time: month, within: employer_credit_code, generalise: [month, quarter, year]}
    linked_datasets: [social_insurance]  # extracts that share pseudonyms (both sides; default none)
    public_identifiers: [credit_code, name]   # a public register names the entity by these
    export_reviewers: 3                  # distinct operators who approve an export (default 2)

Per column: ``level`` core / important / general (数据分级), ``pi`` sensitive / pi / none
(个人信息类别), optional ``identifier: direct`` (直接标识符), and the masking ``rule``:

==================  ========================================================================
``drop``            the column is not in the extract
``pseudonym``       keyed pseudonym; ``family`` names the key family: one organisation's
                    extracts join on pseudonyms of the same family
``generalise``      dates ``to: year | month | band`` (``years: 5``); text ``to: district``;
                    numbers ``to: band`` with ``width`` (optional ``top`` / ``bottom`` first)
``topcode``         clip numbers to ``bottom`` / ``top``
``suppress_rare``   values seen fewer than ``min_count`` times become ``replacement`` (null)
``keep``            released as is
==================  ========================================================================

A kept or top-coded number may carry ``watermark: <unit>``: the extract builder marks its
last unit per recipient (see ``lab.masking``).

Release rules for masked extracts (DESIGN.md), checked whenever ``masked`` is a release mode:
core data and negative-listed columns never leave (rule must be ``drop``); important data and
sensitive PI reach analysts only through DP (``drop`` or ``pseudonym``); direct identifiers are
dropped, pseudonymised or generalised to a district; other PI is released only under
k-anonymity (``k >= 2`` on declared quasi-identifiers); general data may be kept as is.

Every problem names file, line and reason. ``load_policy`` raises ``PolicyError`` (first
problem in the message, all in ``detail``); ``check_policies`` returns every problem of a
directory, one line each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lab.errors import AccessDenied, ConfigError, LabError, PolicyError
from lab.policy.model import (
    LEVELS,
    MODES,
    PI_CLASSES,
    RULES,
    ColumnPolicy,
    HouseholdLink,
    Longitudinal,
    NegativeList,
    Policy,
    PolicyProblem,
)
from lab.policy.rules import Schema, build_policy, release_problems
from lab.policy.yamldoc import YamlDoc
from lab.suggest import did_you_mean

__all__ = [
    "LEVELS",
    "MODES",
    "NEGATIVE_LIST_FILE",
    "PI_CLASSES",
    "RULES",
    "ColumnPolicy",
    "HouseholdLink",
    "Longitudinal",
    "NegativeList",
    "Policy",
    "PolicyProblem",
    "check_policies",
    "column_refusal",
    "dp_columns",
    "load_negative_list",
    "load_policies",
    "load_policy",
    "load_policy_bytes",
    "require_release",
]

NEGATIVE_LIST_FILE = "negative-list.yaml"


def _read(path: Path) -> tuple[str, bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path} (无法读取策略文件): {exc.strerror}") from None
    return data.decode("utf-8", errors="replace"), data


def _raise(problems: Sequence[PolicyProblem]) -> None:
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    raise PolicyError(str(problems[0]) + more, detail="\n".join(map(str, problems)))


def load_negative_list(path: str | Path) -> NegativeList:
    """Read a negative list; ``PolicyError`` with file and line if it is malformed."""
    negative, problems = _parse_negative_list(Path(path))
    if problems:
        _raise(problems)
    return negative


def _parse_negative_list(path: Path) -> tuple[NegativeList, list[PolicyProblem]]:
    text, _ = _read(path)
    doc = YamlDoc(str(path), text)
    value = doc.value
    entries = value.get("entries") if isinstance(value, dict) else None
    if not doc.problems and not isinstance(entries, list):
        doc.problem(
            (),
            "a negative list needs 'entries:', a list of {dataset, column, reason} "
            "(负面清单需要 entries: 列表，每项含 dataset、column、reason)",
        )
    found: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        extra = sorted(set(entry) - {"dataset", "column", "reason"}) if isinstance(entry, dict) else []
        if not isinstance(entry, dict) or not {"dataset", "column"} <= entry.keys():
            doc.problem(
                ("entries", i),
                "each entry needs 'dataset' and 'column' (and a 'reason') (每项需要 dataset 和 column)",
            )
        elif extra:
            doc.problem(("entries", i, extra[0]), f"unknown key {extra[0]!r} (未知的键)")
        else:
            found[(str(entry["dataset"]), str(entry["column"]))] = doc.line(("entries", i))
    return NegativeList(frozenset(found), str(path), found), doc.problems


def load_policy(
    path: str | Path, schema: Schema | None = None, negative_list: NegativeList | None = None
) -> Policy:
    """Read and validate one policy file.

    ``schema`` (column names, or names to Polars types) defaults to the catalogue schema of the
    dataset the file names. ``PolicyError`` names file, line and reason of the first problem.
    """
    policy, problems = _parse_policy(Path(path), schema, negative_list or NegativeList())
    if problems or policy is None:
        _raise(problems)
    assert policy is not None
    return policy


def load_policy_bytes(
    data: bytes, label: str, schema: Schema | None, negative_list: NegativeList | None = None
) -> Policy:
    """Validate a policy kept elsewhere than in a file (an imported register's, in the raw
    bucket); ``label`` names it in problems as a path would."""
    policy, problems = _parse_data(label, data, schema, negative_list or NegativeList())
    if problems or policy is None:
        _raise(problems)
    assert policy is not None
    return policy


def _parse_policy(
    path: Path, schema: Schema | None, negative: NegativeList
) -> tuple[Policy | None, list[PolicyProblem]]:
    _, data = _read(path)
    return _parse_data(str(path), data, schema, negative)


def _parse_data(
    label: str, data: bytes, schema: Schema | None, negative: NegativeList
) -> tuple[Policy | None, list[PolicyProblem]]:
    doc = YamlDoc(label, data.decode("utf-8", errors="replace"))
    if not doc.problems and not isinstance(doc.value, dict):
        doc.problem((), "a policy is a mapping with 'dataset:' and 'columns:' (策略格式错误)")
    if doc.problems:
        return None, doc.problems
    policy = build_policy(doc, doc.value, schema, negative, hashlib.sha256(data).hexdigest())
    return (policy if not doc.problems else None), doc.problems


def load_policies(directory: str | Path) -> dict[str, Policy]:
    """Every policy in ``directory`` by dataset name; ``PolicyError`` if any file has a problem."""
    policies, problems = _parse_directory(Path(directory))
    if problems:
        _raise(problems)
    return policies


def check_policies(
    directory: str | Path, expected: Iterable[str] = (), imported: Mapping[str, Policy] | None = None
) -> list[PolicyProblem]:
    """Every problem of the policy files in ``directory``; empty when all are valid.

    ``expected`` names datasets that must have a policy (e.g. ``lab.registry.catalogue.DATASETS``);
    ``imported`` are the accepted policies of imported registers (``lab.registry.datasets``), which
    a negative-list entry may name too. A negative-list entry naming a dataset that has no policy
    here or there, or a column its dataset lacks, is a problem (with the closest name).
    """
    directory = Path(directory)
    policies, problems = _parse_directory(directory)
    broken = {p.path for p in problems}
    for name in expected:
        if name not in policies and not any(Path(path).stem == name for path in broken):
            problems.append(
                PolicyProblem(str(directory), 0, f"dataset {name!r} has no policy file (缺少策略)")
            )
    negative_path = directory / NEGATIVE_LIST_FILE
    if negative_path.exists():
        negative, _ = _parse_negative_list(negative_path)
        others = {k: v for k, v in (imported or {}).items() if k not in policies}
        problems += _negative_entry_problems(negative, others)  # the directory's were checked above
        known = {*policies, *(imported or {}), *(Path(path).stem for path in broken)}
        for dataset, column in sorted(negative.entries):
            if dataset != "*" and dataset not in known:
                en, zh = did_you_mean(dataset, known)
                reason = (
                    f"negative list names dataset {dataset!r}, which has no policy and no accepted "
                    f"import;{en} correct the name / 负面清单中的数据集 {dataset} 不存在，{zh}请改正名称"
                )
                line = negative.lines.get((dataset, column), 0)
                problems.append(PolicyProblem(negative.path, line, reason))
    return problems


def _parse_directory(directory: Path) -> tuple[dict[str, Policy], list[PolicyProblem]]:
    if not directory.is_dir():
        raise ConfigError(f"policy directory {directory} does not exist (策略目录不存在)")
    problems: list[PolicyProblem] = []
    negative = NegativeList()
    negative_path = directory / NEGATIVE_LIST_FILE
    if negative_path.exists():
        negative, found = _parse_negative_list(negative_path)
        problems += found
    policies: dict[str, Policy] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        if path.name == NEGATIVE_LIST_FILE:
            continue
        policy, found = _parse_policy(path, None, negative)
        problems += found
        if policy is not None and policy.dataset in policies:
            other = policies[policy.dataset].path
            problems.append(
                PolicyProblem(
                    str(path),
                    1,
                    f"dataset {policy.dataset!r} also has a policy in {other} (同一数据集有两个策略文件)",
                )
            )
        elif policy is not None:
            policies[policy.dataset] = policy
    return policies, problems + _negative_entry_problems(negative, policies) + _link_problems(policies)


def _link_problems(policies: Mapping[str, Policy]) -> list[PolicyProblem]:
    """A link must be declared on both sides, so both extracts share one pseudonym family."""
    problems = []
    for policy in policies.values():
        for name in policy.linked_datasets:
            other = policies.get(name)
            if other is None:
                reason = (
                    f"linked_datasets names {name!r}, which has no policy in this directory "
                    "(关联的数据集没有策略)"
                )
            elif set(other.linked_datasets) | {other.dataset} != set(policy.linked_datasets) | {
                policy.dataset
            }:
                reason = (
                    f"linked_datasets: {name!r} must declare the same linked datasets "
                    f"({', '.join(sorted({*policy.linked_datasets, policy.dataset}))}) in {other.path} "
                    "(关联须在双方声明一致)"
                )
            else:
                continue
            problems.append(PolicyProblem(policy.path, _line_of(policy.path, "linked_datasets"), reason))
    return problems


def _line_of(path: str, key: str) -> int:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    return next((i for i, line in enumerate(lines, 1) if line.startswith(f"{key}:")), 0)


def _negative_entry_problems(negative: NegativeList, policies: Mapping[str, Policy]) -> list[PolicyProblem]:
    problems = []
    for dataset, column in sorted(negative.entries):
        policy = policies.get(dataset)
        if policy is not None and column not in policy.columns:
            en, zh = did_you_mean(column, policy.columns)
            reason = (
                f"negative list names column {column!r}, which dataset {dataset!r} does not have;{en} "
                f"correct the name / 负面清单中的字段 {column} 在数据集 {dataset} 中不存在，{zh}请改正名称"
            )
            problems.append(PolicyProblem(negative.path, negative.lines.get((dataset, column), 0), reason))
    return problems


def require_release(policy: Policy, mode: str) -> None:
    """The gate before any release: may ``policy`` release its dataset in ``mode``?

    Raises ``AccessDenied`` if the dataset does not allow the mode, ``PolicyError`` if a masked
    extract would release a core, negative-listed, DP-only or identifying column.
    """
    if mode not in MODES:
        raise ConfigError(
            f"unknown release mode {mode!r}; use one of: {', '.join(MODES)} "
            f"/ 未知的发布方式 {mode!r}，请使用：{', '.join(MODES)}"
        )
    if mode not in policy.release_modes:
        allowed = ", ".join(policy.release_modes) or "none"
        raise AccessDenied(
            f"dataset {policy.dataset!r} does not allow {mode} releases (不允许此发布方式); "
            f"allowed: {allowed}"
        )
    if mode == "masked":
        problems = release_problems(policy)
        if problems:
            _raise([PolicyProblem(policy.path, line, reason) for line, reason in problems])


def dp_columns(policy: Policy) -> list[str]:
    """Columns DP queries may use: not core, not negative-listed, not direct identifiers."""
    return [
        c.name
        for c in policy.columns.values()
        if c.level != "core" and c.name not in policy.negative_listed and not c.direct_identifier
    ]


def _why_forbidden(policy: Policy, column: str) -> tuple[str, str] | None:
    """Why the policy keeps ``column`` out of DP releases (English, 中文), or None if it does not.
    The catalogue shows every column with its grading and flags, so naming the reason reveals
    nothing an analyst cannot read there."""
    col = policy.columns.get(column)
    if col is None:
        return None
    if col.level == "core":
        return "it is core data and never leaves the restricted zone", "属于核心数据，不得离开受限区"
    if column in policy.negative_listed:
        return "it is on the negative list and never leaves", "列入负面清单，不得流出"
    if col.direct_identifier or column == policy.privacy_unit:
        return "it identifies a person or account directly", "属于直接标识符"
    return None


def column_refusal(policy: Policy, column: str, usable: Sequence[str], *, role: str = "") -> LabError:
    """The error for a column a DP query may not use: ``PolicyError`` (reason
    ``forbidden-column``, a 400 like the DP extracts' refusals) saying why the policy forbids
    it, or ``ConfigError`` (``dp-column``) for one that is not there at all, with a suggestion
    taken from the usable columns only."""
    column = column[:64]  # as typed, shortened: never a long value in a message
    where = f" ({role})" if role else ""
    listed = ", ".join(usable)
    why = _why_forbidden(policy, column)
    if why is not None:
        return PolicyError(
            f"Column '{column}'{where} cannot be used in DP queries on {policy.dataset}; usable: {listed}. "
            f"The policy forbids it: {why[0]}; use another column. "
            f"/ 列 '{column}' 不可用于 {policy.dataset} 的差分隐私查询：{why[1]}，策略禁止使用；"
            f"请改用其他列（可用：{listed}）。",
            reason="forbidden-column",
        )
    en, zh = did_you_mean(column, usable)
    return ConfigError(
        f"Column '{column}'{where} cannot be used in DP queries on {policy.dataset}: there is no such "
        f"column; usable: {listed}.{en} / {policy.dataset} 中没有列 '{column}'，可用的列：{listed}。{zh}",
        reason="dp-column",
    )
