"""The registers that hang off the population: legal entities, utility use, social insurance.

All three are generated while walking the population's blocks (see ``population``), so every
person they mention exists in the population register of the same seed and row count:

- **legal entities**: the population is cut into strata of ``STRATUM`` persons; stratum ``e``
  founds entity ``e`` and its legal representative is an adult of that stratum. There are
  ``entity_count(rows)`` entities.
- **credit codes** are a pure function of (seed, entity index) (``entity_credit_codes``), so a
  register can name employer ``e`` without generating the legal-entity table.
- **utility**: one account per household and per entity of the block, 12 monthly rows each.
- **social insurance**: every employed working-age person of the block, one row per month of
  2024 worked, with an employer drawn (skewed towards large employers) from all entities.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from lab.synthetic.codes import ORG_BODY_SPACE, REGION_CODES, REGION_WEIGHTS, REGIONS, credit_codes
from lab.synthetic.pools import pick, pools
from lab.synthetic.population import AS_OF_DAYS, BLOCK, PersonBlock
from lab.synthetic.rng import block_rng, stream_key, uniform, weighted_choice

STRATUM = 16  # persons per legal entity; divides BLOCK so strata never straddle blocks
YEAR = 2024  # the year covered by the monthly registers
assert BLOCK % STRATUM == 0

_STATUS = ("存续", "吊销", "注销", "迁出")
_STATUS_P = np.array([0.85, 0.04, 0.09, 0.02])
_CAPITAL = {  # registered capital in 10k yuan (万元) by category
    91: (
        np.array([10, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000]),
        np.array([8, 8, 12, 20, 12, 8, 10, 10, 6, 4, 2]),
    ),
    92: (np.array([1, 2, 3, 5, 10, 20, 50]), np.array([15, 15, 20, 20, 15, 10, 5])),
    93: (np.array([10, 20, 50, 100, 200, 500]), np.array([20, 20, 25, 20, 10, 5])),
}  # fmt: skip
_FOUNDED_FROM = 7305  # 1990-01-01 in days since 1970-01-01
_ELECTRICITY_SEASON = np.array([1.25, 1.1, 0.95, 0.85, 0.9, 1.1, 1.4, 1.45, 1.05, 0.9, 1.0, 1.2])
_GAS_SEASON = np.array([1.6, 1.5, 1.2, 0.9, 0.7, 0.6, 0.6, 0.6, 0.7, 0.9, 1.2, 1.5])
_HEAT_SEASON = np.array([1.0, 1.0, 0.5, 0, 0, 0, 0, 0, 0, 0, 0.5, 1.0])  # heating 15 Nov - 15 Mar


def entity_count(rows: int) -> int:
    """The number of legal entities in a city of ``rows`` residents."""
    return math.ceil(rows / STRATUM)


def _entity_u(seed: int, label: str, entity: np.ndarray) -> np.ndarray:
    return uniform(stream_key(seed, f"entity/{label}"), entity)


def entity_regions(seed: int, entity: np.ndarray) -> np.ndarray:
    """Index into REGIONS of each entity's registered district."""
    return weighted_choice(_entity_u(seed, "region", entity), REGION_WEIGHTS)


def entity_categories(seed: int, entity: np.ndarray) -> np.ndarray:
    """91 enterprise, 92 individual business (个体工商户) or 93 farmers' cooperative."""
    u = _entity_u(seed, "category", entity)
    return np.select([u < 0.62, u < 0.97], [91, 92], 93)


def entity_credit_codes(seed: int, entity: np.ndarray) -> pl.Series:
    """The unified social credit code of each entity index: unique, valid, seed-dependent."""
    key = int(stream_key(seed, "entity/body"))
    step = key % ORG_BODY_SPACE
    step += 1 if step % 31 == 0 else 0  # coprime with 31**6, so the map below is a bijection
    body = (entity.astype(np.int64) * step + (key >> 34)) % ORG_BODY_SPACE
    region = REGION_CODES[entity_regions(seed, entity)]
    return credit_codes(entity_categories(seed, entity), region, body)


def _block_entities(block: PersonBlock) -> np.ndarray:
    first = block.start // STRATUM
    return np.arange(first, first + math.ceil(block.size / STRATUM), dtype=np.int64)


def entity_frame(block: PersonBlock, seed: int, rows: int) -> pl.DataFrame:
    """The legal entities founded by the strata of one population block."""
    entity = _block_entities(block)
    p = pools()
    category = entity_categories(seed, entity)
    region = entity_regions(seed, entity)
    industry = weighted_choice(_entity_u(seed, "industry", entity), p.industry_weights)
    industry = np.where(category == 93, 0, industry)  # cooperatives farm
    word = p.trade_word_start[industry] + (
        _entity_u(seed, "word", entity) * p.trade_word_count[industry]
    ).astype(np.int64)
    trade = (_entity_u(seed, "trade", entity) * len(p.trade_names)).astype(np.int64)
    form = pl.Series(["有限公司", "股份有限公司", "有限责任公司", "商店", "经营部", "专业合作社"])
    form_index = np.select(
        [category == 91, category == 92], [(_entity_u(seed, "form", entity) * 3).astype(np.int64), 3], 5
    )
    form_index = np.where((category == 92) & (_entity_u(seed, "shop", entity) < 0.5), 4, form_index)
    parts = pl.DataFrame(
        {
            "district": pick(p.region_names, region),
            "trade": pick(p.trade_names, trade),
            "word": pick(p.trade_words, word),
            "form": pick(form, form_index),
            "company": category == 91,
        }
    )
    name = pl.concat_str(
        pl.when("company").then(pl.lit("淄博")).otherwise("district"), "trade", "word", "form"
    )
    return pl.DataFrame(
        {
            "credit_code": entity_credit_codes(seed, entity),
            "name": parts.select(name).to_series(),
            "legal_rep_id": block.resident_id.gather(pl.Series(_representatives(block, seed))),
            "industry": pick(p.industries, industry),
            "registered_capital": _capital(seed, entity, category),
            "founded_date": _founded(seed, entity),
            "district": parts["district"],
            "status": pick(pl.Series(_STATUS), weighted_choice(_entity_u(seed, "status", entity), _STATUS_P)),
        }
    )


def _representatives(block: PersonBlock, seed: int) -> np.ndarray:
    """Per stratum of the block, the local index of a working-age adult (or its oldest member)."""
    strata = math.ceil(block.size / STRATUM)
    score = np.full(strata * STRATUM, -1.0)
    adult = (block.age >= 20) & (block.age <= 75)
    score[: block.size] = adult * 2 + uniform(stream_key(seed, "entity/rep"), block.index) + block.age / 1000
    return np.arange(strata) * STRATUM + score.reshape(strata, STRATUM).argmax(axis=1)


def _capital(seed: int, entity: np.ndarray, category: np.ndarray) -> np.ndarray:
    u = _entity_u(seed, "capital", entity)
    capital = np.zeros(len(entity))
    for code, (values, weights) in _CAPITAL.items():
        chosen = category == code
        capital[chosen] = values[weighted_choice(u[chosen], weights)]
    return capital


def _founded(seed: int, entity: np.ndarray) -> pl.Series:
    u = _entity_u(seed, "founded", entity) ** 0.6  # more young firms than old ones
    days = AS_OF_DAYS - np.floor(u * (AS_OF_DAYS - _FOUNDED_FROM)).astype(np.int64)
    return pl.Series(days.astype(np.int32)).cast(pl.Date)


def _month_days(month: np.ndarray) -> pl.Series:
    """First day of each month (1..12) of YEAR as a Polars Date Series."""
    days = (np.datetime64(f"{YEAR}-01") + (month - 1).astype("timedelta64[M]")).astype("datetime64[D]")
    return pl.Series(days.astype(np.int64).astype(np.int32)).cast(pl.Date)


def utility_frame(block: PersonBlock, seed: int, rows: int) -> pl.DataFrame:
    """Monthly consumption of the block's household accounts and entity accounts."""
    rng = block_rng(seed, "utility", block.block)
    entity = _block_entities(block)
    households = len(block.household_size)
    accounts = households + len(entity)
    is_entity = np.arange(accounts) >= households
    region = np.concatenate([block.household_region, entity_regions(seed, entity)])
    account_no = np.concatenate([10**11 + block.household_number, 2 * 10**11 + entity])
    household_id = pl.Series(block.household_number).cast(pl.String).str.zfill(12)
    habits = rng.lognormal(0, 0.35, accounts)  # households differ beyond their size
    scale = np.concatenate([0.6 + 0.25 * block.household_size, np.full(len(entity), 1.0)]) * habits
    base = {
        "electricity_kwh": np.where(is_entity, rng.lognormal(np.log(3000), 1.3, accounts), 150 * scale),
        "water_m3": np.where(is_entity, rng.lognormal(np.log(60), 1.2, accounts), 2.5 * scale * 1.6),
        "gas_m3": np.where(is_entity, rng.lognormal(np.log(200), 1.5, accounts), 12 * scale),
        "heat_gj": np.where(
            is_entity, rng.lognormal(np.log(40), 1.0, accounts), rng.lognormal(np.log(7.5), 0.3, accounts)
        ),
    }
    has_gas = np.where(is_entity, rng.random(accounts) < 0.5, rng.random(accounts) < 0.75)
    urban = np.array([r.urban for r in REGIONS])[region]
    has_heat = urban & (rng.random(accounts) < np.where(is_entity, 0.6, 0.8))
    account = np.repeat(np.arange(accounts), 12)
    month = np.tile(np.arange(1, 13), accounts)
    noise = rng.lognormal(0, 0.12, (4, len(account)))
    season = {"electricity_kwh": _ELECTRICITY_SEASON, "water_m3": np.ones(12), "gas_m3": _GAS_SEASON}
    season["heat_gj"] = _HEAT_SEASON
    present = {"electricity_kwh": None, "water_m3": None, "gas_m3": has_gas, "heat_gj": has_heat}
    columns: dict[str, pl.Series] = {}
    for i, (column, values) in enumerate(base.items()):
        amount = np.round(values[account] * season[column][month - 1] * noise[i], 2)
        mask = present[column]
        columns[column] = (
            pl.Series(column, amount)
            if mask is None
            else pl.Series(column, np.where(mask[account], amount, np.nan)).fill_nan(None)
        )
    node = (rng.random(accounts) * 300).astype(np.int64) + 1
    frame = pl.DataFrame(
        {
            "account_id": pl.Series(account_no).cast(pl.String),
            "account_type": pl.Series(np.where(is_entity, "非居民", "居民")),
            "household_id": pl.concat([household_id, pl.Series([None] * len(entity), dtype=pl.String)]),
            "credit_code": pl.concat(
                [pl.Series([None] * households, dtype=pl.String), entity_credit_codes(seed, entity)]
            ),
            "district": pick(pools().region_names, region),
            "supply_node": pl.Series(REGION_CODES[region] * 10_000 + node).cast(pl.String),
        }
    )
    frame = frame.with_columns(pl.concat_str(pl.lit("TQ"), "supply_node").alias("supply_node"))
    expanded = frame.select(pl.all().gather(pl.Series(account))).with_columns(month=_month_days(month))
    return expanded.with_columns(**columns)


def social_insurance_frame(block: PersonBlock, seed: int, rows: int) -> pl.DataFrame:
    """Contribution rows of the block's employed people, one per month worked in YEAR."""
    rng = block_rng(seed, "social_insurance", block.block)
    working_age = (block.age >= 18) & np.where(block.male, block.age < 60, block.age < 55)
    person = np.flatnonzero(working_age & (rng.random(block.size) < 0.62))
    n = len(person)
    first = np.where(rng.random(n) < 0.9, 1, rng.integers(2, 13, n))
    last = np.where(rng.random(n) < 0.95, 12, rng.integers(first, 13))
    months = last - first + 1
    employer = np.minimum(
        (entity_count(rows) * rng.random(n) ** 2.5).astype(np.int64), entity_count(rows) - 1
    )
    base = np.clip(np.round(rng.lognormal(np.log(5600), 0.35, n)), 4416, 22080)
    row_person = np.repeat(np.arange(n), months)
    month = (
        np.repeat(first, months) + np.arange(len(row_person)) - np.repeat(np.cumsum(months) - months, months)
    )
    raised = np.clip(np.round(base[row_person] * 1.05), 4637, 23184)
    amount = np.where(month >= 7, raised, base[row_person])
    paid = rng.random(len(row_person)) < 0.97
    codes = entity_credit_codes(seed, employer)
    return pl.DataFrame(
        {
            "resident_id": block.resident_id.gather(pl.Series(person[row_person])),
            "month": _month_days(month),
            "employer_credit_code": codes.gather(pl.Series(row_person)),
            "contribution_base": amount.astype(np.float64),
            "payment_status": pl.Series(np.where(paid, "已缴", "欠缴")),
        }
    )
