"""Deterministic randomness for the generators.

Two kinds, both derived from the user's seed only:

- **block generators**: ``block_rng(seed, label, block)`` is a NumPy generator for one fixed-size
  block of one table. Blocks are independent, so a block's content never depends on how the
  caller chunks the output.
- **counter hashes**: ``uniform(key, index)`` maps an integer index (a person, an entity) to a
  uniform number in [0, 1) through the SplitMix64 finaliser. It gives random access: any table
  can compute "entity 1234's district" without generating entities 0..1233.

None of this is cryptographic; it only has to be reproducible and well spread.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def stream_key(seed: int, label: str) -> np.uint64:
    """A 64-bit key for one named stream of one seed (e.g. ``"entity/district"``)."""
    digest = hashlib.blake2b(f"{seed}/{label}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def hash64(key: np.uint64, index: np.ndarray) -> np.ndarray:
    """SplitMix64 of ``index`` under ``key``: well-mixed 64-bit values, one per index."""
    x = index.astype(np.uint64) * _GOLDEN + key
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def uniform(key: np.uint64, index: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1), one per index, reproducible from ``key`` alone."""
    return (hash64(key, index) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def block_rng(seed: int, label: str, block: int) -> np.random.Generator:
    """The generator for one block of one table."""
    entropy = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, zlib.crc32(label.encode()), block]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def weighted_choice(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Indices drawn from ``weights`` (need not sum to 1), one per uniform in ``u``."""
    cumulative = np.cumsum(weights, dtype=np.float64)
    cumulative /= cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(weights) - 1)


def rowwise_choice(u: np.ndarray, group: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per-row category draws where row ``i`` uses the distribution ``table[group[i]]``."""
    cumulative = np.cumsum(table, axis=1)
    cumulative /= cumulative[:, -1:]
    rows = cumulative[group]
    return np.minimum((u[:, None] >= rows).sum(axis=1), table.shape[1] - 1)
