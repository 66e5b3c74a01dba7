"""The object-storage layout is spelled once (``lab.store.layout``) and is what the access
policies assume: an analyst's read policy covers exactly its organisation's extract files,
and uploads in flight and kept DP results sit outside every organisation's prefix."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lab import storage
from lab.store import layout

pytestmark = pytest.mark.unit

LAB = Path(__file__).resolve().parents[2] / "lab"
BUCKETS = {layout.RAW_BUCKET, layout.EXTRACTS_BUCKET, layout.EXPORTS_BUCKET, layout.AUDIT_BUCKET}
FILES = {layout.MANIFEST, layout.RAW_META, layout.MASKED_DATA, layout.RISK_REPORT, layout.SYNTHETIC_DATA}


def test_an_extract_file_is_inside_its_organisations_read_policy_only() -> None:
    name = layout.extract_object("qilu-energy", "population", "20260101T000000Z", layout.MASKED_DATA)
    assert name == "qilu-energy/population/20260101T000000Z/data.parquet"
    assert name.startswith(layout.dataset_prefix("qilu-energy", "population"))
    policy = storage.extracts_read_policy("qilu-energy", ["population"])
    allowed = [r for s in policy["Statement"] if s["Action"] == ["s3:GetObject"] for r in s["Resource"]]
    assert allowed == [f"arn:aws:s3:::{layout.EXTRACTS_BUCKET}/qilu-energy/population/*"]
    assert not name.startswith(layout.org_prefix("qilu-energ"))  # a prefix ends at a whole name
    for outside in (layout.staging_prefix("abc"), layout.released_result("qilu-energy", "0" * 64)):
        assert not outside.startswith(layout.org_prefix("qilu-energy")), outside
    assert layout.raw_object("population") == "population/population.parquet"
    assert layout.audit_segment("ab" * 8, 1, 20).startswith(layout.audit_segments("ab" * 8))


def _spelled(tree: ast.AST) -> list[tuple[int, str]]:
    """Bucket names passed to a call or assigned, and object names anywhere but in prose (docstrings):
    a word such as "extracts" elsewhere is a JSON field or a page label, not a bucket."""
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        given = [*node.args, *(k.value for k in node.keywords)] if isinstance(node, ast.Call) else []
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            given.append(node.value)  # BUCKET = "raw"
        found += [(a.lineno, a.value) for a in given if isinstance(a, ast.Constant) and a.value in BUCKETS]
        text = node.value if isinstance(node, ast.Constant) and id(node) not in prose else None
        if isinstance(text, str) and (text in FILES or any(f"/{f}" in text for f in FILES)):
            found.append((node.lineno, text))
    return found


def test_no_module_outside_the_store_spells_a_bucket_or_object_name() -> None:
    spelled = [
        f"{path.relative_to(LAB.parent)}:{line}: {text!r}"
        for path in sorted(LAB.rglob("*.py"))
        if path.parent.name != "store"
        for line, text in _spelled(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert spelled == [], "use lab.store.layout instead:\n" + "\n".join(spelled)
