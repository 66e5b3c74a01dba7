"""Synthetic registers: valid codes, determinism, chunking, links between tables, Parquet output."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from lab import synthetic as datasets
from lab.errors import ConfigError, NotFound
from lab.synthetic import (
    DATASETS,
    REGIONS,
    generate,
    is_valid_credit_code,
    is_valid_resident_id,
    write_parquet,
)

pytestmark = pytest.mark.unit

ROWS = 20_000
SEED = 11
ZIBO_CODES = tuple(r.code for r in REGIONS)


def _table(name: str, rows: int = ROWS, seed: int = SEED, chunk_rows: int = 8_192) -> pl.DataFrame:
    return pl.concat(list(generate(name, rows, seed, chunk_rows=chunk_rows)))


@pytest.fixture(scope="module")
def city() -> dict[str, pl.DataFrame]:
    """All four registers of one synthetic city."""
    return {name: _table(name) for name in DATASETS}


def test_catalogue_lists_the_four_registers_with_owners_and_schemas() -> None:
    assert list(DATASETS) == ["population", "legal_entity", "utility", "social_insurance"]
    assert DATASETS["population"].title_zh == "人口库"
    for info in DATASETS.values():
        assert info.owner and info.description and info.schema
        assert set(info.to_dict()["columns"]) == set(info.schema)


def test_resident_ids_are_valid_unique_and_agree_with_birth_date_and_sex(
    city: dict[str, pl.DataFrame],
) -> None:
    people = city["population"]
    assert people.height == ROWS
    ids = people["resident_id"].to_list()
    assert len(set(ids)) == ROWS
    assert all(is_valid_resident_id(i, ZIBO_CODES) for i in ids)
    births = people["birth_date"].dt.strftime("%Y%m%d").to_list()
    assert all(i[6:14] == b for i, b in zip(ids, births, strict=True))
    odd = [int(i[16]) % 2 == 1 for i in ids]
    assert odd == [s == "男" for s in people["sex"].to_list()]
    assert set(people["district"]) <= {r.name for r in REGIONS}
    assert date(1920, 1, 1) <= people["birth_date"].min() <= people["birth_date"].max() <= date(2025, 6, 30)


def test_check_characters_match_known_real_codes() -> None:
    assert is_valid_resident_id("11010519491231002X")
    assert not is_valid_resident_id("110105194912310021")  # wrong check digit
    assert not is_valid_resident_id("110105194902300021")  # 30 February
    assert is_valid_credit_code("91350100M000100Y43")
    assert not is_valid_credit_code("91350100M000100Y44")


def test_credit_codes_are_valid_and_unique(city: dict[str, pl.DataFrame]) -> None:
    codes = city["legal_entity"]["credit_code"].to_list()
    assert len(codes) == datasets.expected_rows("legal_entity", ROWS)
    assert len(set(codes)) == len(codes)
    assert all(is_valid_credit_code(c) for c in codes)
    assert all(int(c[2:8]) in ZIBO_CODES for c in codes)


def test_phones_are_unique_mobile_numbers_and_children_have_none(city: dict[str, pl.DataFrame]) -> None:
    people = city["population"]
    phones = people["phone"].drop_nulls().to_list()
    assert len(set(phones)) == len(phones)
    assert all(re.fullmatch(r"1[3-9]\d{9}", p) for p in phones)
    age = 2025 - people["birth_date"].dt.year()
    assert people.filter(age < 13)["phone"].null_count() == people.filter(age < 13).height


def test_household_members_share_address_and_district(city: dict[str, pl.DataFrame]) -> None:
    per_household = (
        city["population"]
        .group_by("household_id")
        .agg(
            pl.col("street_address").n_unique().alias("addresses"),
            pl.col("district").n_unique().alias("districts"),
        )
    )
    assert per_household["addresses"].max() == 1 and per_household["districts"].max() == 1
    assert per_household.height < ROWS / 2  # households, not singles


def test_output_is_deterministic_and_independent_of_chunk_size() -> None:
    first = _table("population", 3_000, seed=5, chunk_rows=1_000)
    again = _table("population", 3_000, seed=5, chunk_rows=2_999)
    other = _table("population", 3_000, seed=6, chunk_rows=1_000)
    assert first.equals(again)
    assert not first["resident_id"].equals(other["resident_id"])


def test_chunks_have_the_requested_size_and_the_catalogue_schema() -> None:
    chunks = list(generate("population", 10_000, 1, chunk_rows=4_000))
    assert [c.height for c in chunks] == [4_000, 4_000, 2_000]
    assert all(dict(c.schema) == dict(DATASETS["population"].schema) for c in chunks)


def test_registers_link_to_the_same_people_households_and_entities(city: dict[str, pl.DataFrame]) -> None:
    ids = city["population"]["resident_id"].implode()
    households = city["population"]["household_id"].implode()
    codes = city["legal_entity"]["credit_code"].implode()
    insured = city["social_insurance"]
    utility = city["utility"]
    assert insured.height > ROWS  # months of contributions
    assert insured["resident_id"].is_in(ids).all()
    assert insured["employer_credit_code"].is_in(codes).all()
    assert city["legal_entity"]["legal_rep_id"].is_in(ids).all()
    assert utility["household_id"].drop_nulls().is_in(households).all()
    assert utility["credit_code"].drop_nulls().is_in(codes).all()
    assert utility.group_by("account_id").len()["len"].unique().to_list() == [12]


def test_write_parquet_writes_one_file_with_its_digest(tmp_path: Path) -> None:
    target = tmp_path / "population.parquet"
    seen: list[tuple[int, int]] = []
    result = write_parquet("population", target, 5_000, 3, lambda done, total: seen.append((done, total)))
    assert result.rows == 5_000 and result.path == target
    assert result.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert seen[-1] == (5_000, 5_000)
    assert pl.read_parquet(target).equals(_table("population", 5_000, seed=3))
    assert [p.name for p in tmp_path.iterdir()] == ["population.parquet"]


def test_bad_requests_are_rejected_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="unknown dataset 'people'"):
        list(generate("people", 10, 1))
    with pytest.raises(ConfigError, match="rows must be"):
        list(generate("population", 0, 1))
    with pytest.raises(ConfigError, match="seed"):
        list(generate("population", 10, -1))
    with pytest.raises(NotFound):
        write_parquet("people", tmp_path / "x.parquet", 10, 1)
    assert list(tmp_path.iterdir()) == []
