"""What every ``--json`` of the ``datalab`` command prints: one JSON document on stdout.

The keys of each command are documented in docs/cli.md and kept stable; times are ISO-8601
with their offset (``2026-12-04T02:05:00+00:00``); nothing secret (no token, key or password)
is ever part of a document.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("a time without a time zone cannot be printed as JSON")
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def print_json(value: Any) -> None:
    """``value`` as indented JSON, Chinese kept as is."""
    print(json.dumps(value, ensure_ascii=False, indent=2, default=_default))
