"""Every error the ``datalab`` command can show is in 中文 and English (one string holding both).

A static check of the modules the command runs: any ``LabError`` (or argparse type error) raised
with a literal message must carry Chinese beside its English. A message assembled from
variables only (e.g. ``f"{path}: {why}"`` with a bilingual ``why``) has no words of its own and
is not judged here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lab import errors

pytestmark = pytest.mark.unit
LAB = Path(__file__).resolve().parents[2] / "lab"
SCANNED = [
    "cli",
    "ingest",
    "ledger",
    "registry",
    "services",
    "policy",
    "dpextract",
    "stack",
    "extracts.py",
    "access.py",
    "auditpkg.py",
    "validate.py",
    "directory.py",
    "registers.py",
]
RAISED = {name for name, value in vars(errors).items() if isinstance(value, type)} | {"ArgumentTypeError"}
CJK = re.compile(r"[\u4e00-\u9fff]")
WORD = re.compile(r"[A-Za-z]{3}")


def _literal(node: ast.AST) -> str:
    """The words a message spells out itself (not those inside ``{...}`` or a call)."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else ""
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal(v) for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):
        return _literal(node.left) + _literal(node.right)
    return ""


def _english_only(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        text = _literal(node.args[0])
        if name in RAISED and WORD.search(text) and not CJK.search(text):
            found.append(f"{path.relative_to(LAB.parent)}:{node.lineno}: {text[:80]!r}")
    return found


def test_every_cli_error_is_bilingual() -> None:
    files = [
        p
        for entry in SCANNED
        for p in ([LAB / entry] if entry.endswith(".py") else (LAB / entry).rglob("*.py"))
    ]
    assert len(files) > 40
    problems = [problem for path in files for problem in _english_only(path)]
    assert problems == []
