"""No production module imports the synthetic city (``lab.synthetic``).

Only ``lab.stack.demodata`` imports it, and only the two entry points that make demo data
import that: ``datalab dataset generate`` (``lab.cli.main``) and the seeding of
``datalab up`` (``lab.stack.seed``), both inside the function that needs it. Everything
else — gateway, services, hub, dp, masking, dpextract, policy, ledger, store, registry and
the top-level modules — neither imports it nor loads it through what it imports at import
time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "lab"
GENERATOR = "lab.synthetic"
MAY_IMPORT = {GENERATOR: {"lab.stack.demodata"}, "lab.stack.demodata": {"lab.cli.main", "lab.stack.seed"}}
ENTRY_POINTS = ("lab.cli", "lab.stack")  # may load the generator when they run a demo command


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(LAB.rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The lab modules a module imports (with their parent packages, which Python runs too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST] = list(ast.iter_child_nodes(tree)) if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports at module level, also inside try / if (not TYPE_CHECKING)
        stack, nodes = nodes, []
        while stack:
            node = stack.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Try | ast.If | ast.With):
                stack += list(ast.iter_child_nodes(node))
            nodes.append(node)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    with_parents = {".".join(n.split(".")[: i + 1]) for n in found for i in range(n.count(".") + 1)}
    return {n for n in with_parents if n in MODULES}


def test_only_the_demo_data_entry_points_import_the_generator() -> None:
    for target, allowed in MAY_IMPORT.items():
        importers = {
            name
            for name, path in MODULES.items()
            if not _within(name, GENERATOR)
            and any(_within(i, target) for i in _imports(path, top_level_only=False))
        }
        assert importers <= allowed, f"{sorted(importers - allowed)} import {target}"


def test_no_production_module_loads_the_generator_when_imported() -> None:
    graph = {name: _imports(path, top_level_only=True) for name, path in MODULES.items()}
    loading = []
    for name in MODULES:
        if _within(name, GENERATOR) or any(_within(name, e) for e in ENTRY_POINTS):
            continue
        seen, todo = {name}, [name]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        if any(_within(s, GENERATOR) for s in seen):
            loading.append(name)
    assert loading == []


def test_the_gateway_and_the_hub_really_start_without_it() -> None:
    code = (
        "import sys, lab.gateway.app, lab.hub.config, lab.services.governance, lab.extracts, lab.registers; "
        f"sys.exit({GENERATOR!r} in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
