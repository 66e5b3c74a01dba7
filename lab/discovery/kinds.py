"""What the scanner can detect, the policy it proposes for each, and how examples are masked.

The proposals use the vocabulary of ``lab.policy`` (``level`` core / important / general,
``pi`` sensitive / pi / none, ``rule`` and its parameters) and follow the bureau's own
policies (``policies/population.yaml``): resident ID numbers are sensitive personal
information (PIPL art. 28 lists identity and financial accounts) kept only as a keyed
pseudonym of the ``person`` family; phone numbers, names, addresses and e-mail are direct
identifiers and dropped; dates of birth are quasi-identifiers generalised to 5-year bands.
A proposal is a draft: an operator reviews and accepts it (``datalab dataset import``).

The scanner's ``identifier`` role is ``direct`` (names one person), ``quasi`` (names one in
combination with others: date of birth, sex, employer) or ``none``. A policy writes
``identifier: direct`` on the column and lists quasi-identifiers in ``quasi_identifiers``.

Examples in the evidence never show a value: only the first characters that say what kind
of value it is (province digits, mobile carrier prefix, surname, the decade of a date).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.discovery.checks import normalise_mobile
from lab.policy.model import LEVELS, PI_CLASSES, RULES

IDENTIFIER_ROLES = ("direct", "quasi", "none")


def _keep(first: int, width: int | None = None) -> Callable[[str], str]:
    def mask(value: str) -> str:
        value = value.strip()
        return value[:first] + "*" * max((width or len(value)) - first, 3)

    return mask


def _mask_mobile(value: str) -> str:
    return normalise_mobile(value)[:3] + "*" * 8


def _mask_card(value: str) -> str:
    digits = value.replace(" ", "").replace("-", "")
    return digits[:2] + "*" * (len(digits) - 2)


def _mask_email(value: str) -> str:
    tld = value.rsplit(".", 1)[-1] if "." in value.rsplit("@", 1)[-1] else ""
    return f"{value[:1]}***@***.{tld}"


def _mask_address(value: str) -> str:
    head = value.strip()[:4]
    for marker in ("省", "市"):
        if marker in head:
            return head[: head.index(marker) + 1] + "*" * 6
    return head[:2] + "*" * 6


def _mask_date(value: str) -> str:
    return value.strip()[:3] + "*-**-**"


def _mask_name(value: str) -> str:
    value = value.strip()
    return value[:1] + "*" * (len(value) - 1)


def _as_is(value: str) -> str:
    return value.strip()


@dataclass(frozen=True)
class Kind:
    """One kind of sensitive value and the policy proposed for a column of it."""

    name: str
    zh: str
    en: str
    level: str
    pi: str
    identifier: str
    rule: str
    mask: Callable[[str], str]
    params: Mapping[str, Any] = field(default_factory=dict)
    threshold: float = 0.5  # share of a column's values that must match

    def __post_init__(self) -> None:
        assert self.level in LEVELS and self.pi in PI_CLASSES and self.rule in RULES, self.name
        assert self.identifier in IDENTIFIER_ROLES, self.name


_KINDS = (
    Kind("resident_id", "居民身份证号", "resident ID number", "important", "sensitive", "direct",
         "pseudonym", _keep(2, 18), {"family": "person"}),
    Kind("credit_code", "统一社会信用代码", "unified social credit code", "general", "none", "quasi",
         "keep", _keep(2, 18)),
    Kind("bank_card", "银行卡号", "bank card number", "important", "sensitive", "direct", "drop", _mask_card),
    Kind("mobile", "手机号码", "mobile number", "important", "pi", "direct", "drop", _mask_mobile),
    Kind("email", "电子邮箱", "e-mail address", "important", "pi", "direct", "drop", _mask_email),
    Kind("licence_plate", "车牌号码", "licence plate", "important", "pi", "direct", "pseudonym",
         _keep(2, 7), {"family": "vehicle"}),
    Kind("person_name", "姓名", "personal name", "important", "pi", "direct", "drop", _mask_name,
         threshold=0.6),
    Kind("address", "地址", "address", "important", "pi", "direct", "drop", _mask_address),
    Kind("birth_date", "出生日期", "date of birth", "general", "pi", "quasi", "generalise", _mask_date,
         {"to": "band", "years": 5}, threshold=0.8),
    Kind("sex", "性别", "sex", "general", "pi", "quasi", "keep", _as_is, threshold=0.9),
    Kind("date", "日期", "date", "general", "none", "none", "keep", _mask_date, threshold=0.8),
)  # fmt: skip
KINDS: Mapping[str, Kind] = {k.name: k for k in _KINDS}
"""Every kind, in the order ties are broken (check characters first)."""

ID_KINDS = ("resident_id", "credit_code", "bank_card", "mobile", "email", "licence_plate", "person_name")
"""Kinds that name a person or entity: a column of these is an identifier column."""

EMBEDDED = ("resident_id", "mobile", "email")
"""Kinds the scanner also finds inside free text (a remark with a phone number in it)."""

FREE_TEXT = Kind(
    "free_text",
    "含标识符的自由文本",
    "free text with identifiers",
    "important",
    "pi",
    "direct",
    "drop",
    _as_is,
)
"""The proposal for free text that contains identifiers: it cannot be masked in place."""

NOTHING = Kind("none", "未发现", "nothing found", "general", "none", "none", "keep", _as_is)
"""The proposal for a column where nothing sensitive was found (an operator still reviews it)."""

__all__ = ["EMBEDDED", "FREE_TEXT", "IDENTIFIER_ROLES", "ID_KINDS", "KINDS", "NOTHING", "Kind"]
