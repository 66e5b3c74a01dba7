"""The digests the lab keeps: a file's SHA-256, and the canonical JSON that records are hashed as."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of the file at ``path``, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys and no NaN: the same value always gives the same text
    (the one serialisation used for hashing, for the audit chain and for stored details)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
