"""Suggestions ("did you mean …?") for a mistyped dataset, column, aggregate, operator or kind.

Only ever called with the names the person may see or use (the caller chooses them), so a
suggestion never reveals a name beyond what the catalogue already shows them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6  # difflib's similarity ratio; below it a name is not offered


def closest(name: object, candidates: Iterable[str], *, n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` closest to ``name`` (case-insensitive), best first."""
    if not isinstance(name, str) or not name or len(name) > 200:
        return []
    pool = sorted(set(candidates))
    folded = {c.casefold(): c for c in pool}
    hits = difflib.get_close_matches(name.casefold(), list(folded), n=n, cutoff=CUTOFF)
    return [folded[h] for h in hits if folded[h] != name]


def did_you_mean(name: object, candidates: Iterable[str]) -> tuple[str, str]:
    """(`` Did you mean 'x'?``, ``您是不是想用 'x'？``) to end the English half (with a leading
    space) and the Chinese half of a message; two empty texts when nothing is close."""
    hits = closest(name, candidates)
    if not hits:
        return "", ""
    return " Did you mean " + " or ".join(f"'{h}'" for h in hits) + "?", (
        "您是不是想用 " + "或".join(f"'{h}'" for h in hits) + "？"
    )
