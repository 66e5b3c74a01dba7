"""Keyed, vectorised primitives: pseudonyms, pseudonym tags and value marks.

Key hierarchy, from one secret per organisation (``OrgKey.secret``, kept by the bureau)::

    S_org                                   32 random bytes per organisation
    K_family = HMAC-SHA256(S_org, "datalab/v1/pseudonym/<scope>/<family>")   one per (scope, family, org)
    K_shuffle = HMAC-SHA256(S_org, "datalab/v1/shuffle/<build>")[:8]   the row order of one build
    K_tag    = HMAC-SHA256(S_org, "datalab/v1/tag")
    K_mark   = HMAC-SHA256(S_org, "datalab/v1/mark")
    key_id   = HMAC-SHA256(S_org, "datalab/v1/key-id")[:8]           public, for the ledger

The **scope** is the pseudonym family an extract belongs to: by default one grant
(``grant/<id>``), so two extracts join on pseudonyms only when a policy links their datasets
(``link/<datasets>``); the empty scope is the family of keys before scoping (tests, bench).

**Pseudonym** of a value ``v`` (UTF-8 bytes) under ``K_family``: AES-256 EMAC (CBC-MAC over
``len(v) as 8 bytes || v || zero padding``, then one more AES under a second key; both keys
derived from ``K_family``). Prepending the length makes the encoding prefix-free, so CBC-MAC
is a secure PRF on it, and EMAC (ISO/IEC 9797-1 MAC algorithm 2) adds a final encryption on
top. The first 10 bytes (80 bits) are the pseudonym core; then a 4-byte **tag**
``AES(K_tag, core || pad)`` that anyone holding ``K_tag`` can check from the pseudonym alone.
The 14 bytes are written as 28 letters ``a``..``p`` (no digits, so no pseudonym ever looks
like an ID or phone number).

Why AES and not HMAC-SHA256 per value: all values of a batch go through one AES-ECB call per
16-byte block position (OpenSSL, AES-NI), about 60 M blocks/s on one core, instead of a
Python loop of HMAC calls (about 0.5 M/s). The construction is a standard PRF; only the key
derivation uses HMAC-SHA256.

**Value mark** of a number ``q`` (an integer count of the watermark unit): one pseudo-random
bit ``AES(K_mark, (q >> 1) || "dlmark01")[0] & 1`` that becomes the lowest bit of ``q``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from lab.errors import ConfigError

SCHEME = "aes256-emac-tag32-mark1/v1"
PSEUDONYM_LETTERS = 28
_CORE = 10
_TAG = 4
_TAG_PAD = np.frombuffer(b"dltag\x01", dtype=np.uint8)
_MARK_PAD = np.frombuffer(b"dlmark01", dtype=np.uint8)
# byte -> its two letters (high nibble first) as one little-endian uint16
_LETTER_PAIRS = np.array([(97 + (b >> 4)) | ((97 + (b & 15)) << 8) for b in range(256)], dtype="<u2")


def _derive(secret: bytes, label: str) -> bytes:
    return hmac.new(secret, f"datalab/v1/{label}".encode(), hashlib.sha256).digest()


def _ecb(key: bytes, blocks: np.ndarray) -> np.ndarray:
    """AES-256 of every 16-byte row of ``blocks`` (an ``N x 16`` uint8 matrix)."""
    data = np.ascontiguousarray(blocks, dtype=np.uint8)
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    # straight into a NumPy buffer: no bytes copy of the input or the output
    out = np.empty(data.size + 15, dtype=np.uint8)
    written = encryptor.update_into(data.data, out.data)
    encryptor.finalize()
    return out[:written].reshape(-1, 16)


@dataclass(frozen=True)
class OrgKey:
    """An organisation's secret. ``secret`` must be at least 16 random bytes (32 recommended)."""

    org: str
    secret: bytes = field(repr=False)
    scope: str = ""  # the pseudonym family: "grant/<id>", "link/<a>+<b>", or "" (unscoped)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < 16:
            raise ConfigError(
                f"the key of organisation {self.org!r} must be at least 16 random bytes "
                f"/ 机构 {self.org!r} 的密钥至少需要 16 个随机字节"
            )

    @cached_property
    def key_id(self) -> str:
        """A public identifier of the secret (safe to store in the ledger and manifests)."""
        return _derive(self.secret, "key-id")[:8].hex()

    def family_key(self, family: str) -> bytes:
        """The pseudonym key of one (family, organisation)."""
        return _derive(
            self.secret, f"pseudonym/{self.scope}/{family}" if self.scope else f"pseudonym/{family}"
        )

    def scoped(self, scope: str) -> OrgKey:
        """The same organisation's key in another pseudonym scope."""
        return OrgKey(self.org, self.secret, scope)

    def shuffle_seed(self, build_id: str) -> int:
        """A 64-bit seed for the row order of one build (secret; differs per build and org)."""
        return int.from_bytes(_derive(self.secret, f"shuffle/{build_id}")[:8], "little")

    @cached_property
    def tag_key(self) -> bytes:
        return _derive(self.secret, "tag")

    @cached_property
    def mark_key(self) -> bytes:
        return _derive(self.secret, "mark")


def _large_strings(array: pa.Array) -> pa.Array:
    """``array`` as Arrow large strings. Polars hands text over as large strings already, and a
    cast would import ``pyarrow.compute`` (tens of milliseconds in a fresh process)."""
    return array if array.type == pa.large_string() else array.cast(pa.large_string())


def _string_matrix(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Encode strings as ``len (8 bytes LE) || bytes || zero pad``: the matrix and block counts."""
    array = _large_strings(array)
    rows = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + rows + 1]
    data_buffer = array.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    blocks = (8 + lengths + 15) // 16
    matrix = np.zeros((rows, int(blocks.max(initial=1)) * 16), dtype=np.uint8)
    matrix[:, :8] = lengths.astype("<u8").view(np.uint8).reshape(rows, 8)
    start = int(offsets[0]) if rows else 0
    if rows and (lengths == lengths[0]).all():
        width = int(lengths[0])
        matrix[:, 8 : 8 + width] = data[start : start + rows * width].reshape(rows, width)
    elif rows:
        row = np.repeat(np.arange(rows), lengths)
        position = np.arange(len(row)) - np.repeat(offsets[:-1] - start, lengths)
        matrix[row, 8 + position] = data[start : int(offsets[-1])]
    return matrix, blocks


def emac(key: bytes, array: pa.Array) -> np.ndarray:
    """AES-256 EMAC of every string of ``array``: an ``N x 16`` matrix of MACs."""
    matrix, blocks = _string_matrix(array)
    k1, k2 = _derive(key, "cbc"), _derive(key, "final")
    state = np.zeros((len(blocks), 16), dtype=np.uint8)
    for j in range(matrix.shape[1] // 16):
        encrypted = _ecb(k1, state ^ matrix[:, 16 * j : 16 * j + 16])
        active = blocks > j
        state = encrypted if active.all() else np.where(active[:, None], encrypted, state)
    return _ecb(k2, state)


def tags(key: OrgKey, cores: np.ndarray) -> np.ndarray:
    """The 4-byte tags of ``N x 10`` pseudonym cores under an organisation's tag key."""
    padded = np.concatenate([cores, np.broadcast_to(_TAG_PAD, (len(cores), 6))], axis=1)
    return _ecb(key.tag_key, padded)[:, :_TAG]


def letters(raw: np.ndarray, valid: np.ndarray | None) -> pl.Series:
    """``N x B`` bytes as strings of ``2B`` letters a..p (nulls where ``valid`` is False)."""
    rows, width = raw.shape
    out = _LETTER_PAIRS[raw].view(np.uint8).reshape(rows, 2 * width)
    offsets = np.arange(0, (rows + 1) * 2 * width, 2 * width, dtype=np.int64)
    # Arrow's validity bitmap, least significant bit first (``pa.array`` on a NumPy array would
    # import pandas: over 0.1 s in a fresh process)
    validity = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    array = pa.LargeStringArray.from_buffers(
        rows, pa.py_buffer(offsets), pa.py_buffer(out), validity, null_count=-1 if valid is not None else 0
    )
    series = pl.from_arrow(array)
    assert isinstance(series, pl.Series)
    return series


def unletters(values: pl.Series) -> np.ndarray:
    """The bytes of pseudonyms (non-null strings of 28 letters a..p) as an ``N x 14`` matrix."""
    array = values.to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = _large_strings(array)
    start = int(np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset])
    size = len(array) * PSEUDONYM_LETTERS
    raw = np.frombuffer(array.buffers()[2], dtype=np.uint8)[start : start + size]
    nibbles = (raw.reshape(len(array), PSEUDONYM_LETTERS) - ord("a")).astype(np.uint8)
    return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]


def pseudonymise(key: OrgKey, family: str, values: pl.Series) -> pl.Series:
    """Keyed pseudonyms of ``values`` (any type, compared as text) for one organisation.

    Runs of equal values (a household's members are adjacent in a register) are encrypted once
    and repeated: the same pseudonyms, a fraction of the AES work.
    """
    runs = values.rle_id()
    count = int(runs[-1]) + 1 if len(runs) else 0
    if count < 0.8 * len(values):
        firsts = values.filter(runs != runs.shift(1, fill_value=-1))
        return _pseudonyms(key, family, firsts).gather(runs).alias(values.name)
    return _pseudonyms(key, family, values)


def _pseudonyms(key: OrgKey, family: str, values: pl.Series) -> pl.Series:
    text = values.cast(pl.String)
    array = text.to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    cores = emac(key.family_key(family), array)[:, :_CORE]
    raw = np.concatenate([cores, tags(key, cores)], axis=1)
    valid = None if text.null_count() == 0 else text.is_not_null().to_numpy()
    return letters(raw, valid).alias(values.name)


def mark_bits(key: OrgKey, high: np.ndarray) -> np.ndarray:
    """One keyed pseudo-random bit (0/1, int64) per integer of ``high``."""
    blocks = np.empty((len(high), 16), dtype=np.uint8)
    blocks[:, :8] = high.astype("<i8").view(np.uint8).reshape(-1, 8)
    blocks[:, 8:] = _MARK_PAD
    return (_ecb(key.mark_key, blocks)[:, 0] & 1).astype(np.int64)


def watermark(key: OrgKey, values: pl.Series, unit: float) -> pl.Series:
    """Round ``values`` to ``unit`` and set the last unit's parity to the organisation's mark."""
    decimals = max(0, int(np.ceil(-np.log10(unit) - 1e-9)))
    filled = values.cast(pl.Float64).fill_null(0.0).to_numpy()
    q = np.rint(filled / unit).astype(np.int64)
    marked = (q >> 1) * 2 + mark_bits(key, q >> 1)
    result = pl.Series(values.name, np.round(marked * unit, decimals))
    if values.null_count():
        result = pl.select(pl.when(values.is_null()).then(None).otherwise(result)).to_series()
    return result.alias(values.name)
