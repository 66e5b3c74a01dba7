"""Reading spec files and checking their fields, with errors that name file and line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.dpextract.budget import is_number, to_units
from lab.errors import ConfigError
from lab.policy.yamldoc import Where, YamlDoc


@dataclass(frozen=True)
class Source:
    """Where a spec came from, to name file and line in errors (nothing for a dict spec)."""

    path: str = ""
    lines: Mapping[Where, int] = field(default_factory=dict)

    def at(self, where: Where) -> str:
        """``file:line: `` of ``where`` (or of its nearest enclosing key)."""
        if not self.path:
            return ""
        while where and where not in self.lines:
            where = where[:-1]
        return f"{self.path}:{self.lines.get(where, 1)}: "

    def error(self, where: Where, message: str, reason: str = "dpx-spec") -> ConfigError:
        return ConfigError(self.at(where) + message, reason=reason)


def read_spec(path: str | Path) -> tuple[Any, Source]:
    """Parse a YAML or JSON spec file, remembering the line of every key."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read spec file {file}: {exc.strerror} / 无法读取规格文件", reason="dpx-spec"
        ) from None
    doc = YamlDoc(str(file), text)
    if doc.problems:
        raise ConfigError(str(doc.problems[0]), detail="\n".join(map(str, doc.problems)), reason="dpx-spec")
    return doc.value, Source(str(file), dict(doc.lines))


def epsilon_units(value: Any, source: Source, where: Where, what: str) -> int:
    """``value`` (an ε > 0) in whole ledger units, rounded down; at least one unit."""
    if not is_number(value) or value <= 0:
        raise source.error(
            where,
            f"{what}: epsilon must be a number > 0, got {value!r} (e.g. 0.5) / ε 必须为正数",
            "dp-epsilon",
        )
    units = to_units(float(value))
    if units < 1:
        raise source.error(
            where,
            f"{what}: epsilon {value!r} is below the ledger's resolution of 1e-9 / ε 过小",
            "dp-epsilon",
        )
    return units


def check_keys(
    data: Mapping[str, Any], allowed: Sequence[str], source: Source, where: Where, what: str
) -> None:
    """Every key of ``data`` is one of ``allowed``."""
    for key in data:
        if key not in allowed:
            raise source.error(
                (*where, key), f"{what}: unknown key {key!r}; expected one of {', '.join(allowed)} / 未知的键"
            )


def str_list(value: Any, source: Source, where: Where, what: str) -> tuple[str, ...]:
    """A non-empty list of distinct column names (one name alone is accepted too)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise source.error(
            where, f"{what} must be a list of column names, e.g. [district, sex] / 须为列名列表"
        )
    if len(set(value)) != len(value):
        raise source.error(where, f"{what} names a column twice / 列名重复")
    return tuple(value)


def public_keys(value: Any, source: Source) -> dict[str, tuple[Any, ...]]:
    """``keys:``: column → its public values (declared by the spec's author, never read from data)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise source.error(
            ("keys",), "keys: maps a column to its public values, e.g. {account_type: [居民, 非居民]}"
        )
    keys = {}
    for column, values in value.items():
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise source.error(
                ("keys", column),
                f"keys of '{column}' must be a list of distinct values (须为互不相同的值的列表)",
            )
        keys[str(column)] = tuple(values)
    return keys


def int_at_least(value: Any, source: Source, where: Where, what: str, minimum: int) -> int:
    """An integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise source.error(
            where, f"{what} must be an integer >= {minimum}, got {value!r} (须为不小于 {minimum} 的整数)"
        )
    return value
