"""``datalab dataset import postgresql://…?table=…`` against a real PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import psycopg
import pytest

from lab.errors import ConfigError, NotFound
from lab.ingest import DirStore, accept, import_source, manifests
from lab.ingest import postgres as ingest_pg
from lab.settings import Settings
from tests.unit.ingest_support import entries, settings_fixture, store_fixture  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.unit, pytest.mark.postgres]

TABLE = """
CREATE TABLE people (
    id integer PRIMARY KEY, code text, amount numeric(10, 2), born date, seen timestamp,
    active boolean, doc jsonb, small smallint, big bigint, ratio real, flag char(1)
);
INSERT INTO people
SELECT i, lpad((i % 7)::text, 4, '0'), i * 1.25, date '1980-01-01' + i,
       timestamp '2024-01-01 08:00:00' + i * interval '1 minute', i % 2 = 0,
       jsonb_build_object('n', i), (i % 100)::smallint, i::bigint * 1000000000, i / 4.0, 'x'
FROM generate_series(1, 250) AS i;
CREATE SCHEMA reg;
CREATE TABLE reg.empty (district text, age integer);
"""


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def pg(postgres_url: str) -> str:
    with psycopg.connect(libpq(postgres_url), autocommit=True) as conn:
        conn.execute(TABLE)
    return libpq(postgres_url)


def table_url(url: str, table: str) -> str:
    return f"{url}&table={table}"


def test_table_streams_in_batches_with_its_types(
    settings: Settings, store: DirStore, pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_pg, "BATCH_ROWS", 64)  # four fetches from the server-side cursor
    fetched: list[int] = []
    real = ingest_pg._frame

    def counting(rows: list[Any], schema: Any) -> pl.DataFrame:
        fetched.append(len(rows))
        return real(rows, schema)

    monkeypatch.setattr(ingest_pg, "_frame", counting)
    done = import_source(settings, store, table_url(pg, "people"), name="pgpeople", actor="op.wang")
    assert fetched == [64, 64, 64, 58] and done.rows == 250 and not done.published
    types = {c["name"]: c["type"] for c in done.schema}
    assert types == {
        "id": "Int64",
        "code": "String",
        "amount": "Float64",
        "born": "Date",
        "seen": "Datetime(time_unit='us', time_zone=None)",
        "active": "Boolean",
        "doc": "String",
        "small": "Int64",
        "big": "Int64",
        "ratio": "Float64",
        "flag": "String",
    }
    frame = pl.read_parquet(store.root / "pgpeople" / "versions" / "000001" / "data.parquet")
    first = frame.row(0, named=True)
    assert first["code"] == "0001" and first["amount"] == 1.25 and first["born"] == dt.date(1980, 1, 2)
    assert first["seen"] == dt.datetime(2024, 1, 1, 8, 1) and first["doc"] == '{"n": 1}'
    assert frame["big"][-1] == 250_000_000_000
    [manifest] = manifests(store, "pgpeople")
    assert manifest["format"] == "postgresql"
    assert "postgres@" not in manifest["source"] and manifest["source"].endswith("?table=people")
    accept(settings, store, "pgpeople", actor="op.li")
    assert [e["rows"] for e in entries(settings, store)] == [250]


def test_empty_table_in_a_schema(settings: Settings, store: DirStore, pg: str) -> None:
    done = import_source(settings, store, table_url(pg, "reg.empty"), name="empty", actor="op.wang")
    assert done.rows == 0 and [c["type"] for c in done.schema] == ["String", "Int64"]


def test_missing_table_and_bad_table_names(settings: Settings, store: DirStore, pg: str) -> None:
    with pytest.raises(NotFound, match=r"\?table=ghost: no such table"):
        import_source(settings, store, table_url(pg, "ghost"), name="ghost", actor="op.wang")
    for bad in ("people;DROP TABLE people", 'people"', "a.b.c", "", "people&table=reg.empty"):
        with pytest.raises(ConfigError, match=r"\?table=") as error:
            import_source(settings, store, table_url(pg, bad), name="bad", actor="op.wang")
        assert error.value.reason == "bad-source" and "DROP" not in str(error.value)
    with psycopg.connect(pg) as conn:  # the table survived every attempt
        assert conn.execute("SELECT count(*) FROM people").fetchone() == (250,)
    assert store.keys("") == []


def test_encoding_is_refused_for_a_table(settings: Settings, store: DirStore, pg: str) -> None:
    with pytest.raises(ConfigError, match="CSV files only"):
        import_source(settings, store, table_url(pg, "people"), name="p", actor="o", encoding="gbk")


def test_reading_as_a_read_only_transaction(
    settings: Settings, store: DirStore, pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import cannot change the source: its transaction is read-only."""
    seen: list[bool] = []
    real = psycopg.Connection.cursor

    def spy(self: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(bool(self.read_only) and kwargs.get("name", "") != "")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "cursor", spy)
    import_source(settings, store, table_url(pg, "people"), name="ro", actor="op.wang")
    assert seen[-1] is True  # the reading cursor is named (server-side) in a read-only session
