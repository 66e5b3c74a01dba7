"""Public domains of categorical columns: values anyone may know without seeing the data.

Grouping a DP query by a column listed here uses these values as public keys (pure DP,
no δ spent on releasing keys): Zibo's districts and counties, the sexes, the education
and marital-status categories, GB/T 4754 industry sections, the months of 2024.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from lab.synthetic.codes import REGION_NAMES
from lab.synthetic.population import EDUCATION, MARITAL

MONTHS_2024 = tuple(date(2024, month, 1) for month in range(1, 13))

PUBLIC_KEYS: dict[str, tuple[Any, ...]] = {
    "district": tuple(REGION_NAMES),
    "sex": ("女", "男"),
    "education": EDUCATION,
    "marital_status": MARITAL,
    "month": MONTHS_2024,
}


def public_keys(columns: list[str]) -> dict[str, tuple[Any, ...]]:
    """The public domains of those ``columns`` that have one."""
    return {c: PUBLIC_KEYS[c] for c in columns if c in PUBLIC_KEYS}
