"""Check characters of Chinese identifier codes, scalar and vectorised (Polars).

Each code carries a check character computed from the others, so a value that matches by
chance is rare; the scanner counts how many values of a column pass and compares that with
the chance rate (``CHANCE``).

Resident identity numbers (公民身份号码), GB 11643-1999
    18 characters: a 6-digit administrative division code (GB/T 2260), the birth date
    ``YYYYMMDD``, a 3-digit order code (odd for men) and a check character computed with
    ISO 7064 MOD 11-2: with weights ``w_i = 2^(17-i) mod 11`` (7 9 10 5 8 4 2 1 6 3 7 9 10 5 8
    4 2 for positions 0..16 and 1 for the check), the weighted sum of all 18 values is 1 mod
    11, where a check ``X`` is worth 10. We also require a real birth date between 1900-01-01
    and today and a first digit 1-8 (the GB/T 2260 regions: 1 north ... 8 Hong Kong, Macao,
    Taiwan). A random 18-digit string passes about 1 time in 11 x 300.

Unified social credit codes (统一社会信用代码), GB 32100-2015
    18 characters from ``0-9 A-H J-N P-R T U W-Y`` (no I, O, S, V, Z): the registration
    authority and type (2), the division code (6 digits), the organisation code (9, GB 11714,
    with its own MOD 11 check character: weights 3 7 9 10 5 8 4 2, check ``11 - sum mod 11``
    where 10 is ``X`` and 11 is ``0``; letters count from A = 10) and a check character: with
    weights ``3^i mod 31`` (1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28) over the charset
    values, the check is ``31 - sum mod 31`` (31 written ``0``). Both checks are required.

Bank card numbers (银行卡号), ISO/IEC 7812-1
    16-19 digits (spaces or dashes between groups allowed) whose Luhn sum is 0 mod 10: from
    the right, every second digit is doubled (minus 9 when above 9). One random number in 10
    passes, so a column is flagged only when far more than a tenth of its values pass; a
    run of one repeated digit (``0000...``) is a placeholder, not a card.

Mobile numbers (手机号码) have no check digit: 11 digits ``1[3-9]x xxxx xxxx`` (YD/T 2285
numbering; an optional ``+86`` / ``0086`` prefix and spaces or dashes are ignored).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(18))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 1
ID_CHECK = "10X98765432"  # check character for (sum of the first 17 weighted digits) mod 11
CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_CREDIT_VALUE = {c: i for i, c in enumerate(CREDIT_CHARSET)}
_ORG_VALUE = {c: int(c) if c.isdigit() else ord(c) - 55 for c in CREDIT_CHARSET}  # GB 11714: A = 10
MIN_BIRTH = date(1900, 1, 1)

# How often a value of the right shape passes by chance (an upper bound): a column is flagged
# only when its share of passing values is far above this (see ``significant``).
CHANCE = {"resident_id": 0.01, "credit_code": 0.01, "bank_card": 0.1, "mobile": 0.1}

ID_SHAPE = r"^[1-8][0-9]{16}[0-9X]$"
CREDIT_SHAPE = r"^[0-9A-HJ-NP-RTUW-Y]{2}[0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}$"
CARD_SHAPE = r"^[0-9]{16,19}$"
MOBILE_SHAPE = r"^1[3-9][0-9]{9}$"


# ---- scalar validators (documentation, tests and single values) ----------------------------


def resident_id_check(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    total = sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS[:17], strict=True))
    return ID_CHECK[total % 11]


def is_resident_id(value: str, today: date | None = None) -> bool:
    """True for an 18-character GB 11643 number: region 1-8, real birth date, right check."""
    value = value.strip().upper()
    if len(value) != 18 or not value[:17].isdigit() or value[0] not in "12345678":
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if not MIN_BIRTH <= born <= (today or date.today()):
        return False
    return resident_id_check(value[:17]) == value[17]


def credit_code_check(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a credit code."""
    total = sum(_CREDIT_VALUE[c] * w for c, w in zip(first17, CREDIT_WEIGHTS, strict=True))
    return CREDIT_CHARSET[(31 - total % 31) % 31]


def organisation_code_check(first8: str) -> str:
    """The GB 11714 check character of an organisation code (positions 9-17 of a credit code)."""
    total = sum(_ORG_VALUE[c] * w for c, w in zip(first8, ORG_WEIGHTS, strict=True))
    value = 11 - total % 11
    return "X" if value == 10 else str(value % 11)


def is_credit_code(value: str) -> bool:
    """True for an 18-character code whose GB 11714 and GB 32100 check characters are right."""
    value = value.strip().upper()
    if len(value) != 18 or any(c not in _CREDIT_VALUE for c in value) or not value[2:8].isdigit():
        return False
    if organisation_code_check(value[8:16]) != value[16]:
        return False
    return credit_code_check(value[:17]) == value[17]


def luhn_ok(digits: str) -> bool:
    """True if a string of digits has a valid Luhn (ISO/IEC 7812-1) check digit."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def is_bank_card(value: str) -> bool:
    """True for 16-19 digits (spaces/dashes allowed) passing Luhn, not one repeated digit."""
    digits = value.strip().replace(" ", "").replace("-", "")
    if not (digits.isdigit() and 16 <= len(digits) <= 19) or len(set(digits)) == 1:
        return False
    return luhn_ok(digits)


def normalise_mobile(value: str) -> str:
    """A phone number without spaces, dashes and the +86 / 0086 country prefix."""
    digits = value.strip().replace(" ", "").replace("-", "")
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == 11 + len(prefix):
            return digits[len(prefix) :]
    return digits


def is_mobile(value: str) -> bool:
    """True for an 11-digit mainland mobile number ``1[3-9]xxxxxxxxx``."""
    digits = normalise_mobile(value)
    return len(digits) == 11 and digits.isdigit() and digits[0] == "1" and digits[1] in "3456789"


# ---- vectorised validators over a String Series (NumPy on fixed-width byte matrices) -------


def _matrix(values: pl.Series, width: int) -> np.ndarray:
    """An ``N x width`` matrix of the bytes of ASCII strings that are all ``width`` long."""
    if values.len() == 0:
        return np.zeros((0, width), dtype=np.int64)
    joined = values.str.join("").item().encode("ascii")
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, width).astype(np.int64)


def _scatter(shape: pl.Series, ok: np.ndarray) -> pl.Series:
    """The full-length mask: True where ``shape`` holds and the check ``ok`` passed."""
    result = np.zeros(shape.len(), dtype=bool)
    result[np.flatnonzero(shape.to_numpy())] = ok
    return pl.Series(result)


def resident_id_mask(values: pl.Series, today: date | None = None) -> pl.Series:
    """Per (upper-cased) value: a valid GB 11643 number (shape, birth date, check)."""
    shape = values.str.contains(ID_SHAPE).fill_null(False)
    chosen = values.filter(shape)
    m = _matrix(chosen, 18) - ord("0")
    m[:, 17] = np.where(m[:, 17] == ord("X") - ord("0"), 10, m[:, 17])
    checked = (m @ np.array(ID_WEIGHTS)) % 11 == 1
    born = chosen.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)
    dated = born.is_between(MIN_BIRTH, today or date.today()).fill_null(False).to_numpy()
    return _scatter(shape, checked & dated)


_CREDIT_TABLE = np.full(128, -1, dtype=np.int64)
_ORG_TABLE = np.full(128, -1, dtype=np.int64)
for _char, _value in _CREDIT_VALUE.items():
    _CREDIT_TABLE[ord(_char)] = _value
    _ORG_TABLE[ord(_char)] = _ORG_VALUE[_char]


def credit_code_mask(values: pl.Series) -> pl.Series:
    """Per (upper-cased) value: passes the GB 11714 and GB 32100 check characters."""
    shape = values.str.contains(CREDIT_SHAPE).fill_null(False)
    raw = _matrix(values.filter(shape), 18)
    credit, org = _CREDIT_TABLE[raw], _ORG_TABLE[raw]
    check = (31 - (credit[:, :17] @ np.array(CREDIT_WEIGHTS)) % 31) % 31
    org_check = 11 - (org[:, 8:16] @ np.array(ORG_WEIGHTS)) % 11  # 10 is X, 11 is 0
    org_ok = np.where(org_check == 10, raw[:, 16] == ord("X"), org[:, 16] == org_check % 11)
    return _scatter(shape, (credit[:, 17] == check) & org_ok)


def card_digits(values: pl.Series) -> pl.Series:
    """The values without spaces and dashes (card numbers are often written in groups of 4)."""
    return values.str.replace_all(r"[ \-]", "")


def luhn_mask(digits: pl.Series) -> pl.Series:
    """Per string of digits: 16-19 digits passing Luhn, not one repeated digit."""
    shape = digits.str.contains(CARD_SHAPE).fill_null(False)
    chosen = digits.filter(shape)
    ok = np.zeros(chosen.len(), dtype=bool)
    lengths = chosen.str.len_bytes().to_numpy()
    for width in range(16, 20):
        rows = np.flatnonzero(lengths == width)
        if not rows.size:
            continue
        m = _matrix(chosen.gather(rows), width)[:, ::-1] - ord("0")  # rightmost digit first
        doubled = m[:, 1::2] * 2
        total = m[:, ::2].sum(axis=1) + (doubled - 9 * (doubled > 9)).sum(axis=1)
        repeated = (m == m[:, :1]).all(axis=1)
        ok[rows] = (total % 10 == 0) & ~repeated
    return _scatter(shape, ok)


def mobile_digits_expr(s: pl.Expr) -> pl.Expr:
    """The value without spaces, dashes and a +86 / 0086 / 86 prefix."""
    digits = s.str.replace_all(r"[ \-]", "")
    return digits.str.replace(r"^(?:\+86|0086|86)(1[3-9][0-9]{9})$", "$1")


def mobile_expr(s: pl.Expr) -> pl.Expr:
    """Boolean expression: an 11-digit mainland mobile number (after normalising)."""
    return mobile_digits_expr(s).str.contains(MOBILE_SHAPE).fill_null(False)


__all__ = [
    "CHANCE",
    "CREDIT_CHARSET",
    "card_digits",
    "credit_code_check",
    "credit_code_mask",
    "is_bank_card",
    "is_credit_code",
    "is_mobile",
    "is_resident_id",
    "luhn_mask",
    "luhn_ok",
    "mobile_expr",
    "normalise_mobile",
    "organisation_code_check",
    "resident_id_check",
    "resident_id_mask",
]
