"""The ``budget:`` section of a dataset policy: caps across grants.

::

    budget:
      per_grant: {epsilon: 5, delta: 1.0e-5}          # what one approval may grant at most
      organisation: {epsilon: 6, delta: 1.0e-5, window_days: 365}   # per organisation, all grants
      agreements:                                      # organisations with their own total
        some-org: {epsilon: 20, delta: 0.0001, window_days: 365}

``organisation`` (and each agreement) caps what one organisation may hold on the dataset
across all its grants: what it spent in the window (``window_days``; omitted = lifetime)
plus what its active grants could still spend. The ledger enforces it at approval and at
every reservation (see :mod:`lab.ledger.totals`). An agreement replaces the default total
and per-grant cap for that organisation (its ``per_grant`` is optional). Operators also record
agreements in the ledger (``datalab budget agreement set``), which take precedence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.policy.yamldoc import Where, YamlDoc

_CAP_KEYS = {"epsilon", "delta", "window_days"}
_GRANT_KEYS = {"epsilon", "delta"}
_KEYS = {"per_grant", "organisation", "agreements"}


@dataclass(frozen=True)
class Caps:
    """A total (ε, δ) over a rolling window (``window_days``) or a lifetime (None)."""

    epsilon: float | None = None
    delta: float | None = None
    window_days: float | None = None


@dataclass(frozen=True)
class BudgetPolicy:
    """Per-grant caps, the default per-organisation total, and organisations' agreements."""

    per_grant: Caps = field(default_factory=Caps)
    organisation: Caps = field(default_factory=Caps)
    agreements: Mapping[str, tuple[Caps, Caps]] = field(default_factory=dict)  # org -> (total, per grant)


def _amount(doc: YamlDoc, at: Where, value: Any, name: str, upper: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        doc.problem(at, f"budget {name} must be a number >= 0 (预算须为非负数), got {value!r}")
        return None
    if upper is not None and value >= upper:
        doc.problem(at, f"budget {name} must be below {upper:g} (预算须小于 {upper:g}), got {value!r}")
        return None
    return float(value)


def _caps(doc: YamlDoc, at: Where, value: Any, keys: set[str]) -> Caps:
    if not isinstance(value, dict) or not value:
        doc.problem(at, f"expected a mapping with {', '.join(sorted(keys))} (预算格式错误)")
        return Caps()
    for key in value:
        if key not in keys:
            doc.problem((*at, key), f"unknown key {key!r} (未知的键); expected: {', '.join(sorted(keys))}")
    window = value.get("window_days")
    if window is not None and (
        isinstance(window, bool)
        or not isinstance(window, int | float)
        or not math.isfinite(window)
        or window <= 0
    ):
        doc.problem(
            (*at, "window_days"),
            f"window_days must be a number of days > 0 (窗口天数须大于 0), got {window!r}",
        )
        window = None
    return Caps(
        _amount(doc, (*at, "epsilon"), value.get("epsilon"), "epsilon", None),
        _amount(doc, (*at, "delta"), value.get("delta"), "delta", 1.0),
        None if window is None else float(window),
    )


def parse_budget(doc: YamlDoc, value: Any) -> BudgetPolicy | None:
    """The budget section, recording problems (file, line) in ``doc``; None if absent."""
    if value is None:
        return None
    at: Where = ("budget",)
    if not isinstance(value, dict):
        doc.problem(at, "budget must be a mapping with per_grant, organisation, agreements (预算格式错误)")
        return None
    for key in value:
        if key not in _KEYS:
            doc.problem((*at, key), f"unknown key {key!r} (未知的键); expected: {', '.join(sorted(_KEYS))}")
    per_grant = (
        _caps(doc, (*at, "per_grant"), value["per_grant"], _GRANT_KEYS) if "per_grant" in value else Caps()
    )
    organisation = (
        _caps(doc, (*at, "organisation"), value["organisation"], _CAP_KEYS)
        if "organisation" in value
        else Caps()
    )
    agreements: dict[str, tuple[Caps, Caps]] = {}
    raw = value.get("agreements") or {}
    if not isinstance(raw, dict):
        doc.problem((*at, "agreements"), "agreements maps an organisation to its total (协议额度)")
        raw = {}
    for org, spec in raw.items():
        where = (*at, "agreements", org)
        if not isinstance(org, str) or not org:
            doc.problem(where, "agreements are keyed by organisation id (协议须以机构编号为键)")
            continue
        spec = spec if isinstance(spec, dict) else {}
        grant_spec = spec.get("per_grant")
        total = _caps(doc, where, {k: v for k, v in spec.items() if k != "per_grant"} or spec, _CAP_KEYS)
        grant = (
            _caps(doc, (*where, "per_grant"), grant_spec, _GRANT_KEYS) if grant_spec is not None else Caps()
        )
        agreements[org] = (total, grant)
    return BudgetPolicy(per_grant, organisation, agreements)
