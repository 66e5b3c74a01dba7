"""A scan as text for an operator, and as a draft policy a ``lab.policy`` loader accepts.

The draft follows the release rules of ``lab.policy``: columns proposed ``drop`` or
``pseudonym`` release nothing readable; personal quasi-identifiers (date of birth, sex, the
credit code of an individual business) are listed in ``quasi_identifiers`` with ``k: 5``;
credit codes go to ``public_identifiers`` (the enterprise register is public). Release is
``masked`` only: DP needs a privacy unit and its row bound, which an operator sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.discovery.kinds import FREE_TEXT, KINDS, NOTHING
from lab.discovery.scan import ColumnFinding, ScanResult

DRAFT_K = 5
PI_LABELS = {"sensitive": "敏感个人信息 sensitive", "pi": "个人信息 personal", "none": "非个人 none"}
LEVEL_LABELS = {"core": "核心 core", "important": "重要 important", "general": "一般 general"}


def _kind_label(finding: ColumnFinding) -> str:
    if finding.kind is None:
        return f"{NOTHING.zh} {NOTHING.en}"
    kind = KINDS[finding.kind]
    if finding.match == "embedded":
        return f"{FREE_TEXT.zh}（{kind.zh}）free text with {kind.en}s"
    return f"{kind.zh} {kind.en}"


def _rule_label(finding: ColumnFinding) -> str:
    params = ", ".join(f"{k}: {v}" for k, v in finding.params.items())
    return f"{finding.rule} ({params})" if params else finding.rule


def _evidence_label(finding: ColumnFinding) -> str:
    e = finding.evidence
    if e.values == 0:
        return "no values to scan (没有可扫描的值)"
    if finding.kind is None:
        text = f"{e.values:,} values checked, none sensitive (已检查 {e.values:,} 个值，未发现敏感数据)"
        if finding.scores:
            best, share = max(finding.scores.items(), key=lambda item: item[1])
            text += f"; closest: {best} {share:.1%} (below the threshold / 未达阈值)"
        return text
    what = "contain one" if finding.match == "embedded" else "match"
    text = f"{e.share:.1%} of {e.values:,} values {what} ({e.matches:,} 个匹配)"
    if e.distinct is not None:
        text += f", {e.distinct:,} different"
    if e.examples:
        text += "; e.g. " + ", ".join(e.examples)
    return text


def to_text(result: ScanResult) -> str:
    """The scan for a terminal: one block per column, in 中文 and English."""
    encoding = f", {result.encoding.upper()}" if result.encoding else ""
    lines = [
        f"Scanned {result.path} ({result.format}{encoding}, {result.rows:,} rows; up to "
        f"{result.cap:,} values per column) / 已扫描 {result.rows:,} 行",
        "Proposed classification (建议分级分类); review before accepting (请审核后采纳):",
    ]
    for f in result.columns:
        lines += [
            "",
            f"  {f.column}: {_kind_label(f)}",
            f"    identifier (标识符) {f.identifier}; PI (个人信息) {PI_LABELS[f.pi]}; "
            f"level (分级) {LEVEL_LABELS[f.level]}; rule (脱敏规则) {_rule_label(f)}",
            f"    evidence (依据): {_evidence_label(f)}",
        ]
    found = sum(f.identifier == "direct" for f in result.columns)
    lines += ["", f"{found} direct identifier column(s) found (发现 {found} 个直接标识符列)."]
    return "\n".join(lines)


def draft_policy(result: ScanResult, dataset: str) -> dict[str, Any]:
    """A policy document (as ``policies/*.yaml`` holds) proposed from a scan."""
    released = [f for f in result.columns if f.rule not in ("drop", "pseudonym")]
    quasi = [f.column for f in released if f.identifier == "quasi" and f.pi != "none"]
    public = [f.column for f in released if f.kind == "credit_code"]
    doc: dict[str, Any] = {
        "dataset": dataset,
        "description": f"Draft proposed by 'datalab dataset scan' of {Path(result.path).name}.",
        "release_modes": ["masked"],
    }
    if quasi:
        doc["quasi_identifiers"] = quasi
        doc["k"] = DRAFT_K
    doc["columns"] = {f.column: f.policy_entry() for f in result.columns}
    if public:
        doc["public_identifiers"] = public
    return doc


def draft_yaml(result: ScanResult, dataset: str) -> str:
    """``draft_policy`` as YAML, one line per column like the bureau's own policy files."""
    header = (
        f"# Draft policy for {dataset}, proposed by 'datalab dataset scan' (敏感数据识别草案).\n"
        "# Review every column before an operator accepts it (请逐列审核).\n"
    )
    body = yaml.safe_dump(
        draft_policy(result, dataset), allow_unicode=True, sort_keys=False, default_flow_style=None, width=110
    )
    return header + body


__all__ = ["draft_policy", "draft_yaml", "to_text"]
