"""Identifier codes: resident ID numbers (GB 11643) and unified social credit codes (GB 32100).

Vectorised builders turn NumPy arrays into Polars string Series in one pass (an ``N x 18``
byte matrix handed to Arrow), and scalar validators check single values in tests and tools.

Zibo's region codes (GB/T 2260) for its five districts and three counties are in ``REGIONS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
import pyarrow as pa


@dataclass(frozen=True)
class Region:
    """One of Zibo's county-level divisions."""

    code: int
    name: str
    population: int  # rough resident population, used only as a sampling weight
    urban: bool  # served by district heating in the synthetic city


REGIONS: tuple[Region, ...] = (
    Region(370302, "淄川区", 700_000, True),
    Region(370303, "张店区", 1_100_000, True),
    Region(370304, "博山区", 430_000, True),
    Region(370305, "临淄区", 640_000, True),
    Region(370306, "周村区", 390_000, True),
    Region(370321, "桓台县", 500_000, False),
    Region(370322, "高青县", 360_000, False),
    Region(370323, "沂源县", 530_000, False),
)
REGION_CODES = np.array([r.code for r in REGIONS], dtype=np.int64)
REGION_NAMES = [r.name for r in REGIONS]
REGION_WEIGHTS = np.array([r.population for r in REGIONS], dtype=np.float64)

_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = b"10X98765432"
_ID_PATTERN = re.compile(r"^(\d{6})(\d{8})(\d{3})([\dX])$")

CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100: no I, O, S, V, Z
_CREDIT_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)
_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)  # GB 11714 organisation code
_CREDIT_ASCII = np.frombuffer(CREDIT_CHARSET.encode(), dtype=np.uint8)
# GB 11714 values of the credit charset: digits are themselves, letters count from A = 10.
_ORG_VALUES = np.array([int(c) if c.isdigit() else ord(c) - 55 for c in CREDIT_CHARSET], dtype=np.int64)
_CREDIT_INDEX = {c: i for i, c in enumerate(CREDIT_CHARSET)}
ORG_BODY_SPACE = 31**6  # distinct organisation-code bodies: "MA" + six charset characters


def fixed_width_strings(matrix: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """A Polars String Series from an ``N x W`` matrix of ASCII bytes (one string per row)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.uint8)
    rows, width = matrix.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int64)
    validity = None if valid is None else pa.array(valid, type=pa.bool_()).buffers()[1]
    null_count = -1 if valid is not None else 0
    array = pa.LargeStringArray.from_buffers(
        rows, pa.py_buffer(offsets), pa.py_buffer(matrix), validity, null_count=null_count
    )
    series = pl.from_arrow(array)
    assert isinstance(series, pl.Series)
    return series


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """``N x width`` decimal digits of non-negative integers, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers[None, :]) % 10


def resident_ids(region: np.ndarray, birth_ymd: np.ndarray, sequence: np.ndarray) -> pl.Series:
    """18-digit resident ID numbers with GB 11643 check characters.

    ``region`` holds 6-digit codes, ``birth_ymd`` integers like 19870512, ``sequence`` the 3-digit
    order code (odd for men, even for women).
    """
    body = np.concatenate([_digits(region, 6), _digits(birth_ymd, 8), _digits(sequence, 3)], axis=1)
    check = (body @ _ID_WEIGHTS) % 11
    matrix = np.empty((len(region), 18), dtype=np.uint8)
    matrix[:, :17] = body + ord("0")
    matrix[:, 17] = np.frombuffer(_ID_CHECK, dtype=np.uint8)[check]
    return fixed_width_strings(matrix)


def resident_id_check(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    total = sum(int(d) * int(w) for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return chr(_ID_CHECK[total % 11])


def is_valid_resident_id(value: str, regions: tuple[int, ...] | None = None) -> bool:
    """True if ``value`` is a well-formed ID number: real birth date, right check character."""
    match = _ID_PATTERN.match(value)
    if not match:
        return False
    if regions is not None and int(match.group(1)) not in regions:
        return False
    ymd = match.group(2)
    try:
        date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:]))
    except ValueError:
        return False
    return resident_id_check(value[:17]) == value[17]


def _base31(values: np.ndarray, width: int) -> np.ndarray:
    """``N x width`` base-31 digits (indices into the credit charset), most significant first."""
    powers = 31 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers[None, :]) % 31


def credit_codes(category: np.ndarray, region: np.ndarray, body: np.ndarray) -> pl.Series:
    """Unified social credit codes with valid check characters.

    ``category`` is the two-character registration-and-type prefix as an integer (91 enterprise,
    92 individual business, 93 farmers' cooperative); ``region`` the 6-digit region code;
    ``body`` a distinct integer in ``[0, ORG_BODY_SPACE)`` per entity, which becomes the
    organisation code ``MA`` + six characters + its GB 11714 check character.
    """
    rows = len(category)
    values = np.empty((rows, 17), dtype=np.int64)
    values[:, :2] = _digits(category, 2)
    values[:, 2:8] = _digits(region, 6)
    values[:, 8] = _CREDIT_INDEX["M"]
    values[:, 9] = _CREDIT_INDEX["A"]
    values[:, 10:16] = _base31(body, 6)
    org = 11 - (_ORG_VALUES[values[:, 8:16]] @ _ORG_WEIGHTS) % 11  # 1..11
    values[:, 16] = np.where(org == 10, _CREDIT_INDEX["X"], org % 11)  # 11 -> "0"
    check = (31 - (values @ _CREDIT_WEIGHTS) % 31) % 31
    matrix = np.empty((rows, 18), dtype=np.uint8)
    matrix[:, :17] = _CREDIT_ASCII[values]
    matrix[:, 17] = _CREDIT_ASCII[check]
    return fixed_width_strings(matrix)


def credit_code_check(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a credit code."""
    total = sum(_CREDIT_INDEX[c] * int(w) for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return CREDIT_CHARSET[(31 - total % 31) % 31]


def is_valid_credit_code(value: str) -> bool:
    """True if ``value`` is an 18-character credit code with the right check characters."""
    if len(value) != 18 or any(c not in _CREDIT_INDEX for c in value):
        return False
    org = value[8:17]
    if not _org_check_ok(org):
        return False
    return credit_code_check(value[:17]) == value[17]


def _org_check_ok(org: str) -> bool:
    """GB 11714 check of a 9-character organisation code."""
    total = sum(
        (int(c) if c.isdigit() else ord(c) - 55) * int(w) for c, w in zip(org[:8], _ORG_WEIGHTS, strict=True)
    )
    expected = 11 - total % 11
    char = "X" if expected == 10 else str(expected % 11)
    return org[8] == char
