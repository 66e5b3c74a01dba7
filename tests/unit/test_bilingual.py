"""Every message a user can meet is in Chinese and English (issue 13, "bilingual by construction").

Two places hold the lab's words, and this test reads both:

- error messages: every ``LabError`` (and subclass) raised anywhere in ``lab/`` carries one
  message holding both languages. The test parses the source (no import, no execution) and
  checks each raise whose message is written in the code: a literal, an f-string, or a
  constant of the module or the function. A message passed through from another error
  (``err.message``) was checked where that error was made. ``InvalidInput(field, rule,
  rule_zh)`` takes the two languages as separate arguments. Functions that make errors from
  a message they are given (``FACTORIES``: policy problems, spec errors) are checked at their
  callers.
- the consoles' words: the catalogue ``lab.gateway.i18n.TEXT`` maps each key to
  ``(中文, English)``.

A message counts as bilingual when it contains Chinese characters and an English word.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

LAB = Path(__file__).resolve().parents[2] / "lab"
CJK = re.compile(r"[\u4e00-\u9fff]")
ENGLISH = re.compile(r"[A-Za-z]{2,}")
ROOT = "LabError"

# Messages that are only proper names or codes, shown as they are (a handful at most).
EXCEPTIONS: dict[str, str] = {}

# Functions that turn a message argument (at this position) into an error shown to the user.
FACTORIES = {
    "PolicyProblem": 2,
    "doc.problem": 1,
    "self.problem": 1,
    "source.error": 1,
    "origin.error": 1,
    "_refused": 0,
    "bad": 1,
    "error": 2,
}


def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(LAB.rglob("*.py"))}


def _error_classes(modules: dict[Path, ast.Module]) -> set[str]:
    """``LabError`` and every class in ``lab/`` that derives from it, by name."""
    names = {ROOT}
    grew = True
    while grew:
        grew = False
        for tree in modules.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in names:
                    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                    if bases & names:
                        names.add(node.name)
                        grew = True
    return names


def _bilingual(text: str) -> bool:
    return bool(CJK.search(text) and ENGLISH.search(text))


def _text(node: ast.expr, constants: dict[str, list[ast.expr]]) -> str | None:
    """The words written in ``node`` (interpolations left out), or None if not written here."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_piece(v, constants) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, constants), _text(node.right, constants)
        return None if left is None and right is None else (left or "") + (right or "")
    if isinstance(node, ast.Name) and node.id in constants:
        texts = [_text(value, constants) for value in constants[node.id]]
        if any(text is None for text in texts):
            return None
        return next((text for text in texts if text is not None and not _bilingual(text)), texts[0])
    return None


def _piece(value: ast.expr, constants: dict[str, list[ast.expr]]) -> str:
    """A literal part of an f-string, or of a name it shows that is bound to words here.

    ``{x['zh']}`` and ``{x['en']}`` stand for the two languages of an entry of a message table.
    """
    if isinstance(value, ast.Constant):
        return str(value.value)
    inner = value.value if isinstance(value, ast.FormattedValue) else value
    if isinstance(inner, ast.Name) and inner.id in constants:
        return _text(inner, constants) or ""
    if isinstance(inner, ast.Subscript) and isinstance(inner.slice, ast.Constant):
        return {"zh": "中文", "en": "English"}.get(str(inner.slice.value), "")
    return ""


def _assignments(tree: ast.AST) -> dict[str, list[ast.expr]]:
    """The values each name is bound to in this scope (module or function body)."""
    seen: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    seen.setdefault(target.id, []).append(node.value)
    return seen


def _loop_names(tree: ast.AST) -> set[str]:
    """Names bound by ``for``: items of a list of messages checked where the list was built."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.comprehension):
            names |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return names


def _passed_through(node: ast.expr) -> bool:
    """A message taken from another error, which was checked where it was raised."""
    if isinstance(node, ast.Attribute) and node.attr == "message":
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str"


def _problems() -> list[str]:
    modules = _modules()
    classes = _error_classes(modules)
    problems: list[str] = []
    for path, tree in modules.items():
        module_constants = {
            target.id: [node.value]
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node, scope in _calls(tree):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            factory = ast.unparse(node.func) if ast.unparse(node.func) in FACTORIES else None
            if name not in classes and factory is None:
                continue
            constants = {**module_constants, **_assignments(scope)}
            params = {a.arg for a in scope.args.args + scope.args.kwonlyargs} if scope is not tree else set()
            where = f"{path.relative_to(LAB.parent)}:{node.lineno}"
            if name == "InvalidInput":
                if len(node.args) < 3:
                    problems.append(f"{where}: InvalidInput needs the rule in English and in Chinese")
                    continue
                en, zh = _text(node.args[1], constants), _text(node.args[2], constants)
                if en is not None and not ENGLISH.search(en) or zh is not None and not CJK.search(zh):
                    problems.append(f"{where}: {en!r} / {zh!r}")
                continue
            if factory is not None and name not in classes:
                index = FACTORIES[factory]
                message = node.args[index] if len(node.args) > index else None
            else:
                message = (
                    node.args[0]
                    if node.args
                    else next((k.value for k in node.keywords if k.arg == "message"), None)
                )
            if message is None:
                continue  # the class's default message, checked where the class is defined
            if isinstance(message, ast.BinOp):  # e.g. ``at + message``: the written part counts
                if _passed_through(message.left):
                    continue
                message = message.right if _text(message.left, constants) is None else message
            if isinstance(message, ast.Name) and message.id in _loop_names(scope):
                continue
            shown = {n.id for n in ast.walk(message) if isinstance(n, ast.Name)}
            if shown & params and _makes_errors(scope):
                continue  # a factory's own argument, checked at its callers
            text = _text(message, constants)
            if text is None:
                if not _passed_through(message):
                    problems.append(
                        f"{where}: the message is built elsewhere; write it here, in both languages"
                    )
                continue
            if not _bilingual(text) and text not in EXCEPTIONS:
                problems.append(f"{where}: {text[:90]!r}")
    return problems


def _makes_errors(scope: Any) -> bool:
    """A function of ``FACTORIES`` (by its own name), whose message argument is checked at its callers."""
    return any(key.rsplit(".", 1)[-1] == getattr(scope, "name", None) for key in FACTORIES)


def _calls(tree: ast.Module) -> list[tuple[ast.Call, Any]]:
    """Every call with the innermost function around it (or the module)."""
    found: list[tuple[ast.Call, Any]] = []

    def visit(node: ast.AST, scope: Any) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
            if isinstance(child, ast.Call):
                found.append((child, scope))
            visit(child, inner)

    visit(tree, tree)
    return found


def test_every_error_message_is_in_chinese_and_english() -> None:
    problems = _problems()
    assert not problems, f"{len(problems)} messages lack a language:\n" + "\n".join(problems)


def test_the_exceptions_are_a_handful_of_proper_names() -> None:
    assert len(EXCEPTIONS) <= 5


def test_every_console_word_has_both_languages() -> None:
    from lab.gateway.i18n import TEXT

    def symbol(text: str) -> bool:  # e.g. "—" for "none": the same in both languages
        return not re.search(r"\w", text)

    missing = [
        key
        for key, (zh, en) in TEXT.items()
        if not (symbol(zh) and symbol(en)) and (not CJK.search(zh) or not re.search("[A-Za-z]", en))
    ]
    assert not missing, missing
