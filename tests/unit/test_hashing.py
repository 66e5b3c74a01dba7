"""Helpers written once: the file digest, canonical JSON, the bearer header."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lab.hashing import BLOCK, file_sha256

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("size", [0, 1, BLOCK, BLOCK + 1, 2 * BLOCK + 7])
def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path) == file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def test_canonical_json_is_one_text_per_value() -> None:
    from lab.dp.query import canonical_json as dp_json
    from lab.hashing import canonical_json
    from lab.ledger import canonical_json as ledger_json

    assert dp_json is ledger_json is canonical_json
    assert canonical_json({"b": 1, "a": ["区", 2.5]}) == '{"a":["区",2.5],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"), ("Bearer", None),
     ("Bearer   ", None), ("Basic abc", None), ("abc", None), ("", None), (None, None)],
)  # fmt: skip
def test_one_reading_of_a_bearer_header(header: str | None, token: str | None) -> None:
    from lab.gateway.auth import bearer_token

    assert bearer_token(header) == token
