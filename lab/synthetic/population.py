"""The population register (人口库): households of people in Zibo, generated block by block.

Generation walks the population in blocks of ``BLOCK`` persons. A block is a run of whole
households (a household never straddles two blocks) and all of its randomness comes from
``block_rng(seed, ..., block)``, so a block's people are the same whatever chunk size the
caller asks for. The one piece of state carried from block to block is the counter of
sequence codes per (region, birth date, sex), which makes every resident ID number unique
without remembering earlier IDs (about 2.5 MB of counters, whatever the row count).

``PopulationStream(seed, rows).blocks()`` yields ``PersonBlock`` objects: the columns other
registers need (ages, sexes, IDs, households). ``person_frame(block, seed)`` adds names,
addresses, phones, education and marital status and returns the register's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from lab.errors import ConfigError
from lab.synthetic.codes import REGION_CODES, REGION_WEIGHTS, REGIONS, resident_ids
from lab.synthetic.pools import MOBILE_PREFIXES, pick, pools
from lab.synthetic.rng import block_rng, rowwise_choice, stream_key, weighted_choice

BLOCK = 65_536  # persons per generation block; fixed so output never depends on chunking
AS_OF = date(2025, 6, 30)  # the registers describe the city on this day
_EPOCH = date(1970, 1, 1)
AS_OF_DAYS = (AS_OF - _EPOCH).days
FIRST_BIRTH_DAYS = (date(1920, 1, 1) - _EPOCH).days
N_DAYS = AS_OF_DAYS - FIRST_BIRTH_DAYS + 1
MAX_ROWS = 50_000_000

HEAD, SPOUSE, CHILD, PARENT = 0, 1, 2, 3
_HOUSEHOLD_SIZES = np.array([1, 2, 3, 4, 5, 6])
_HOUSEHOLD_P = np.array([0.22, 0.30, 0.24, 0.14, 0.07, 0.03])
# Age bands of household heads (20-24, 25-29, ... 90-94), roughly Zibo's ageing pyramid.
_HEAD_BANDS = np.array([4, 6.5, 8, 7.5, 7, 8.5, 9.5, 9, 7.5, 6.5, 5, 3, 2, 1, 0.4])

EDUCATION = ("未上学", "小学", "初中", "高中/中专", "大专", "本科", "研究生")
_EDUCATION_BY_COHORT = np.array(
    [
        [0.15, 0.35, 0.30, 0.15, 0.03, 0.02, 0.00],  # born before 1960
        [0.03, 0.20, 0.40, 0.22, 0.08, 0.06, 0.01],  # 1960-1979
        [0.00, 0.05, 0.25, 0.25, 0.20, 0.20, 0.05],  # 1980 and later, adults
    ]
)
MARITAL = ("未婚", "已婚", "离婚", "丧偶")
_MARITAL_BY_AGE = np.array(
    [
        [1.00, 0.00, 0.00, 0.00],  # under 20
        [0.60, 0.38, 0.02, 0.00],  # 20-29
        [0.06, 0.86, 0.06, 0.02],  # 30-59
        [0.02, 0.75, 0.03, 0.20],  # 60 and over
    ]
)


@dataclass(frozen=True)
class PersonBlock:
    """The core columns of one block of persons (global indices ``start .. start + size``)."""

    block: int
    start: int
    size: int
    age: np.ndarray  # whole years on AS_OF
    birth_days: np.ndarray  # days since 1970-01-01
    male: np.ndarray
    role: np.ndarray  # HEAD, SPOUSE, CHILD or PARENT
    household: np.ndarray  # per person: index of the household within the block
    household_number: np.ndarray  # per household: global household number
    household_size: np.ndarray  # per household
    household_region: np.ndarray  # per household: index into REGIONS of where it lives
    resident_id: pl.Series

    @property
    def index(self) -> np.ndarray:
        """Global person indices of the block."""
        return np.arange(self.start, self.start + self.size, dtype=np.int64)

    @property
    def region(self) -> np.ndarray:
        """Per person: index into REGIONS of the household's district."""
        return self.household_region[self.household]


def _household_sizes(rng: np.random.Generator, persons: int) -> np.ndarray:
    """Household sizes that add up to exactly ``persons``."""
    sizes = rng.choice(_HOUSEHOLD_SIZES, size=persons // 2 + 16, p=_HOUSEHOLD_P)
    while sizes.sum() < persons:
        sizes = np.concatenate([sizes, rng.choice(_HOUSEHOLD_SIZES, size=16, p=_HOUSEHOLD_P)])
    cumulative = np.cumsum(sizes)
    last = int(np.searchsorted(cumulative, persons))
    sizes = sizes[: last + 1].copy()
    sizes[-1] -= cumulative[last] - persons
    return sizes


def _roles_and_ages(rng: np.random.Generator, sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per person: household index, role and age, with plausible gaps between generations."""
    households = len(sizes)
    household = np.repeat(np.arange(households), sizes)
    position = np.arange(len(household)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    head_age = 20 + 5 * weighted_choice(rng.random(households), _HEAD_BANDS) + rng.integers(0, 5, households)
    head_age = np.maximum(head_age, 22)[household]
    u = rng.random(len(household))
    role = np.where(position == 0, HEAD, CHILD)
    role = np.where((position == 1) & (u < 0.85), SPOUSE, role)
    role = np.where((position >= 2) & (u >= 0.85) & (head_age <= 65), PARENT, role)
    spouse_age = np.clip(head_age + np.rint(rng.normal(-1, 3, len(u))), 20, 100)
    gap = 22 + 16 * rng.random(len(u))
    child_age = np.where(head_age - gap >= 0, head_age - gap, rng.random(len(u)) * (head_age - 20))
    parent_age = np.minimum(head_age + 22 + 14 * rng.random(len(u)), 100)
    age = np.select(
        [role == HEAD, role == SPOUSE, role == PARENT], [head_age, spouse_age, parent_age], child_age
    )
    return household, role, np.floor(age)


def _ymd(days: np.ndarray) -> np.ndarray:
    """yyyymmdd integers from days since 1970-01-01."""
    d = days.astype("datetime64[D]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = (d.astype("datetime64[M]") - d.astype("datetime64[Y]")).astype(np.int64) + 1
    day = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    return year * 10_000 + month * 100 + day


class PopulationStream:
    """Walks the population of one (seed, rows) pair block by block, in order."""

    def __init__(self, seed: int, rows: int) -> None:
        if not 1 <= rows <= MAX_ROWS:
            raise ConfigError(f"rows must be between 1 and {MAX_ROWS:,} (行数超出范围), got {rows:,}")
        self.seed = seed
        self.rows = rows
        self._counter = np.zeros(len(REGIONS) * N_DAYS * 2, dtype=np.int32)

    def blocks(self) -> Iterator[PersonBlock]:
        """Every block of the population, first to last (restartable: counters reset)."""
        self._counter[:] = 0
        for block, start in enumerate(range(0, self.rows, BLOCK)):
            yield self._block(block, start, min(BLOCK, self.rows - start))

    def _block(self, block: int, start: int, size: int) -> PersonBlock:
        rng = block_rng(self.seed, "population/core", block)
        sizes = _household_sizes(rng, size)
        household, role, age = _roles_and_ages(rng, sizes)
        household_region = weighted_choice(rng.random(len(sizes)), REGION_WEIGHTS)
        birth_days = AS_OF_DAYS - np.floor(age * 365.2425 + rng.random(size) * 365).astype(np.int64)
        birth_days = np.maximum(birth_days, FIRST_BIRTH_DAYS)
        age = ((AS_OF_DAYS - birth_days) / 365.2425).astype(np.int64)
        head_male = rng.random(len(sizes)) < 0.55
        male = np.where(role == HEAD, head_male[household], rng.random(size) < 0.51)
        male = np.where(role == SPOUSE, ~head_male[household], male)
        born_elsewhere = rng.random(size) >= 0.88
        id_region = np.where(
            born_elsewhere, weighted_choice(rng.random(size), REGION_WEIGHTS), household_region[household]
        )
        sequence = self._sequence_codes(id_region, birth_days, male)
        ids = resident_ids(REGION_CODES[id_region], _ymd(birth_days), sequence)
        return PersonBlock(
            block=block,
            start=start,
            size=size,
            age=age,
            birth_days=birth_days,
            male=male,
            role=role,
            household=household,
            household_number=block * BLOCK + np.arange(len(sizes), dtype=np.int64),
            household_size=sizes,
            household_region=household_region,
            resident_id=ids.alias("resident_id"),
        )

    def _sequence_codes(self, region: np.ndarray, birth_days: np.ndarray, male: np.ndarray) -> np.ndarray:
        """The 3-digit order code of each ID: next free number of its (region, birthday, sex)."""
        key = ((region * N_DAYS + (birth_days - FIRST_BIRTH_DAYS)) * 2 + male).astype(np.int64)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        first = np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]])
        positions = np.arange(len(key))
        rank_sorted = positions - np.maximum.accumulate(np.where(first, positions, 0))
        rank = np.empty_like(rank_sorted)
        rank[order] = rank_sorted
        taken = self._counter[key] + rank
        starts = np.flatnonzero(first)
        self._counter[sorted_key[starts]] += np.diff(np.append(starts, len(key))).astype(np.int32)
        if (taken > np.where(male, 499, 498)).any():
            raise ConfigError(
                "too many people share a birthday and district for unique ID numbers; "
                "generate fewer rows (身份证号顺序码不足)"
            )
        return np.where(male, 2 * taken + 1, 2 * taken + 2)


def person_frame(block: PersonBlock, seed: int) -> pl.DataFrame:
    """The population register rows of one block."""
    rng = block_rng(seed, "population/detail", block.block)
    p = pools()
    households = len(block.household_size)
    surname = weighted_choice(rng.random(households), p.surname_weights)[block.household]
    own_surname = weighted_choice(rng.random(block.size), p.surname_weights)
    surname = np.where(block.role == SPOUSE, own_surname, surname)
    return pl.DataFrame(
        {
            "resident_id": block.resident_id,
            "name": _names(rng, block, surname),
            "sex": pick(pl.Series(["女", "男"]), block.male.astype(np.int64)),
            "birth_date": pl.Series(block.birth_days.astype(np.int32)).cast(pl.Date),
            "district": pick(p.region_names, block.region),
            "street_address": pick(_addresses(rng, block), block.household),
            "household_id": pl.Series(block.household_number[block.household]).cast(pl.String).str.zfill(12),
            "phone": _phones(rng, block, seed),
            "education": _education(rng, block),
            "marital_status": _marital(rng, block),
        }
    )


def _names(rng: np.random.Generator, block: PersonBlock, surname: np.ndarray) -> pl.Series:
    p = pools()
    frame = pl.DataFrame(
        {
            "male": block.male,
            "s": pick(p.surnames, surname),
            "m1": pick(p.given_male, rng.integers(0, len(p.given_male), block.size)),
            "m2": pick(p.given_male, rng.integers(0, len(p.given_male), block.size)),
            "f1": pick(p.given_female, rng.integers(0, len(p.given_female), block.size)),
            "f2": pick(p.given_female, rng.integers(0, len(p.given_female), block.size)),
            "two": rng.random(block.size) < 0.6,
        }
    )
    first = pl.when("male").then("m1").otherwise("f1")
    second = pl.when("male").then("m2").otherwise("f2")
    one_char = (first.str.len_chars() == 1) & (second.str.len_chars() == 1)
    second = pl.when(pl.col("two") & one_char).then(second).otherwise(pl.lit(""))
    return frame.select(pl.concat_str("s", first, second).alias("name")).to_series()


def _addresses(rng: np.random.Generator, block: PersonBlock) -> pl.Series:
    """One street address per household."""
    p = pools()
    n = len(block.household_size)
    region = block.household_region
    sub = p.subdistrict_start[region] + (rng.random(n) * p.subdistrict_count[region]).astype(np.int64)
    parts = pl.DataFrame(
        {
            "region": pick(p.region_names, region),
            "sub": pick(p.subdistricts, sub),
            "road": pick(p.roads, rng.integers(0, len(p.roads), n)),
            "village": pick(p.surnames, weighted_choice(rng.random(n), p.surname_weights)),
            "no": pl.Series(rng.integers(1, 300, n)).cast(pl.String),
            "bldg": pl.Series(rng.integers(1, 40, n)).cast(pl.String),
            "unit": pl.Series(rng.integers(1, 7, n)).cast(pl.String),
            "room": pl.Series(rng.integers(1, 19, n) * 100 + rng.integers(1, 5, n)).cast(pl.String),
        }
    )
    town = pl.concat_str(
        pl.lit("山东省淄博市"), "region", "sub", "village", pl.lit("家村"), "no", pl.lit("号")
    )
    street = pl.concat_str(
        pl.lit("山东省淄博市"), "region", "sub", "road", "no", pl.lit("号"), "bldg", pl.lit("号楼"),
        "unit", pl.lit("单元"), "room", pl.lit("室"),
    )  # fmt: skip
    expr = pl.when(pl.col("sub").str.ends_with("镇")).then(town).otherwise(street)
    return parts.select(expr.alias("street_address")).to_series()


def _phones(rng: np.random.Generator, block: PersonBlock, seed: int) -> pl.Series:
    """Mobile numbers, unique per person (a bijection of the person index), none under 14."""
    key = int(stream_key(seed, "phone"))
    step = (key % 10**8) | 1
    step += 2 if step % 5 == 0 else 0
    suffix = (block.index * step + (key >> 32) % 10**8) % 10**8
    prefix = MOBILE_PREFIXES[rng.integers(0, len(MOBILE_PREFIXES), block.size)]
    frame = pl.DataFrame({"phone": prefix * 10**8 + suffix, "child": block.age < 14})
    return frame.select(pl.when("child").then(None).otherwise(pl.col("phone").cast(pl.String))).to_series()


def _education(rng: np.random.Generator, block: PersonBlock) -> pl.Series:
    year = AS_OF.year - block.age
    cohort = np.select([year < 1960, year < 1980], [0, 1], 2)
    level = rowwise_choice(rng.random(block.size), cohort, _EDUCATION_BY_COHORT)
    in_school = np.select([block.age < 6, block.age < 12, block.age < 15, block.age < 18], [0, 1, 2, 3], -1)
    level = np.where(in_school >= 0, in_school, np.maximum(level, 1))
    return pick(pl.Series(EDUCATION), level)


def _marital(rng: np.random.Generator, block: PersonBlock) -> pl.Series:
    band = np.select([block.age < 20, block.age < 30, block.age < 60], [0, 1, 2], 3)
    status = rowwise_choice(rng.random(block.size), band, _MARITAL_BY_AGE)
    has_spouse = np.zeros(len(block.household_size), dtype=bool)
    has_spouse[block.household[block.role == SPOUSE]] = True
    married = (block.role == SPOUSE) | ((block.role == HEAD) & has_spouse[block.household])
    status = np.where(married, 1, np.where((block.role == HEAD) & (status == 1), 0, status))
    return pick(pl.Series(MARITAL), status)
