"""The catalogue of synthetic public registers: names, titles, owners and schemas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import polars as pl

from lab.errors import NotFound


@dataclass(frozen=True)
class DatasetInfo:
    """One register in the catalogue."""

    name: str
    title_en: str
    title_zh: str
    owner: str  # the department that owns the register (数据提供部门)
    description: str
    schema: Mapping[str, pl.DataType] = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly description (for ``datalab dataset list --json``)."""
        return {
            "name": self.name,
            "title": {"en": self.title_en, "zh": self.title_zh},
            "owner": self.owner,
            "description": self.description,
            "columns": {column: str(dtype) for column, dtype in self.schema.items()},
        }


def _schema(**columns: pl.DataType) -> Mapping[str, pl.DataType]:
    return MappingProxyType(dict(columns))


_S, _D, _F = pl.String(), pl.Date(), pl.Float64()

DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            DatasetInfo(
                name="population",
                title_en="Population register",
                title_zh="人口库",
                owner="淄博市公安局 (Zibo Public Security Bureau)",
                description="One row per resident: ID number, name, sex, birth date, district, address, "
                "household, phone, education and marital status.",
                schema=_schema(
                    resident_id=_S,
                    name=_S,
                    sex=_S,
                    birth_date=_D,
                    district=_S,
                    street_address=_S,
                    household_id=_S,
                    phone=_S,
                    education=_S,
                    marital_status=_S,
                ),  # fmt: skip
            ),
            DatasetInfo(
                name="legal_entity",
                title_en="Legal-entity register",
                title_zh="法人库",
                owner="淄博市市场监督管理局 (Zibo Market Supervision Administration)",
                description="One row per enterprise, individual business or cooperative: unified social "
                "credit code, name, legal representative, industry (GB/T 4754), capital, founding date.",
                schema=_schema(
                    credit_code=_S,
                    name=_S,
                    legal_rep_id=_S,
                    industry=_S,
                    registered_capital=_F,
                    founded_date=_D,
                    district=_S,
                    status=_S,
                ),  # fmt: skip
            ),
            DatasetInfo(
                name="utility",
                title_en="Utility consumption",
                title_zh="水电气暖",
                owner="淄博市住房和城乡建设局 (Zibo Housing and Urban-Rural Development Bureau)",
                description="One row per utility account and month of 2024: electricity, water, gas and "
                "heat; accounts belong to households or to legal entities.",
                schema=_schema(
                    account_id=_S,
                    account_type=_S,
                    household_id=_S,
                    credit_code=_S,
                    district=_S,
                    supply_node=_S,
                    month=_D,
                    electricity_kwh=_F,
                    water_m3=_F,
                    gas_m3=_F,
                    heat_gj=_F,
                ),  # fmt: skip
            ),
            DatasetInfo(
                name="social_insurance",
                title_en="Social insurance contributions",
                title_zh="社保",
                owner="淄博市人力资源和社会保障局 (Zibo Human Resources and Social Security Bureau)",
                description="One row per insured person, month of 2024 and employer: contribution base "
                "and payment status.",
                schema=_schema(
                    resident_id=_S,
                    month=_D,
                    employer_credit_code=_S,
                    contribution_base=_F,
                    payment_status=_S,
                ),
            ),
        )
    }
)


def dataset(name: str) -> DatasetInfo:
    """The catalogue entry for ``name``, or ``NotFound`` naming the known datasets."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise NotFound(f"unknown dataset {name!r} (未知数据集); known datasets: {known}") from None
