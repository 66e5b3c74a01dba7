"""Read a PostgreSQL table in batches through a server-side cursor (psycopg 3).

The source is a URL ``postgresql://[user@]host[:port]/db?table=[schema.]name`` (a unix
socket as ``postgresql://user@/db?host=/run/postgresql&table=…``). A password is never
taken from the command line, where every user of the machine can read it: libpq reads it
from ``PGPASSWORD`` or a password file (``PGPASSFILE``, ``~/.pgpass``), and a URL that
carries one is refused (``reject_password``). Nothing printed or recorded names the user
or the password: ``display`` is ``postgresql://host/db?table=…``.

Column types come from the server's catalogue: integers, floating-point numbers
(``numeric`` is read as ``float8``), text, dates, timestamps and booleans keep their type;
every other type is read as text (``::text``). Rows arrive ``BATCH_ROWS`` at a time from a
named (server-side) cursor in one read-only transaction, so the table is never held whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa

from lab.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from lab.ingest.sources import Source

BATCH_ROWS = 65_536
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(?:\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
# Type OIDs of pg_catalog (pg_type.dat) and how each is read.
_TYPES: dict[int, tuple[str, pa.DataType]] = {
    16: ("", pa.bool_()),
    20: ("", pa.int64()),
    21: ("", pa.int64()),
    23: ("", pa.int64()),
    700: ("", pa.float64()),
    701: ("", pa.float64()),
    1700: ("::float8", pa.float64()),
    25: ("", pa.string()),
    1042: ("", pa.string()),
    1043: ("", pa.string()),
    1082: ("", pa.date32()),
    1114: ("", pa.timestamp("us")),
    1184: ("", pa.timestamp("us", tz="UTC")),
}


def _parts(url: str) -> tuple[str, str, str]:
    """(connection URL without ``table``, the table, the display form)."""
    split = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    query = parse_qsl(split.query, keep_blank_values=True)
    tables = [v for k, v in query if k == "table"]
    if len(tables) != 1 or not _TABLE.fullmatch(tables[0]):
        raise ConfigError(
            "PostgreSQL source: name one table as ?table=name or ?table=schema.name (ASCII letters, "
            "digits and '_') (请用 ?table= 指定一张表)",
            reason="bad-source",
        )
    rest = [(k, v) for k, v in query if k != "table"]
    conninfo = urlunsplit((split.scheme, split.netloc, split.path, urlencode(rest), ""))
    host = split.hostname or dict(rest).get("host", "localhost")
    display = f"postgresql://{host}{split.path}?table={tables[0]}"
    return conninfo, tables[0], display


def reject_password(url: str) -> None:
    """Refuse a URL with a password in it (it would be in the process arguments)."""
    if url.startswith(("postgresql", "postgres")):
        split = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
        if split.password is not None or any(k == "password" for k, _ in parse_qsl(split.query)):
            raise ConfigError(
                "PostgreSQL source: the URL carries a password, which every user of this machine can "
                "read in the process list; remove it and set PGPASSWORD or a password file (PGPASSFILE, "
                "~/.pgpass) instead (请勿在命令行中写入密码，改用 PGPASSWORD 或密码文件)",
                reason="secret-in-argv",
            )


def open_table(url: str, password: str | None = None) -> Source:
    """The table named by ``url``; ``password`` given apart from it (the console's form field)."""
    from lab.ingest.sources import Source

    reject_password(url)
    conninfo, table, display = _parts(url)
    split = urlsplit(conninfo)
    secrets = tuple(s for s in (password, split.username) if s)
    return Source(
        display, "postgresql", None, False, lambda: _read(conninfo, table, display, secrets, password)
    )


def host(url: str) -> str:
    """The server a PostgreSQL URL names: a host name or address, or a unix socket directory."""
    reject_password(url)
    conninfo, _, _ = _parts(url)
    split = urlsplit(conninfo)
    return split.hostname or dict(parse_qsl(split.query)).get("host", "localhost")


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """The first line of a driver message, without the user name or password."""
    first = text.strip().splitlines()[0] if text.strip() else "no detail"
    for secret in secrets:
        first = first.replace(secret, "***")
    return first


def _read(
    conninfo: str, table: str, display: str, secret: tuple[str, ...], password: str | None = None
) -> Iterator[pl.DataFrame]:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from lab.ingest.sources import check_columns

    name = sql.Identifier(*table.split("."))
    try:
        if password:  # merged here, never in a URL that a message could quote
            conninfo = make_conninfo(conninfo, password=password)
        conn = psycopg.connect(conninfo, connect_timeout=10)
    except psycopg.Error as exc:
        raise ConfigError(
            f"{display}: cannot connect to the PostgreSQL server (无法连接数据库): "
            f"{_scrub(str(exc), secret)}",
            reason="unreachable",
        ) from None
    try:
        conn.read_only = True
        with conn.cursor() as probe:
            try:
                probe.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(name))
            except psycopg.errors.UndefinedTable:
                raise NotFound(f"{display}: no such table (表不存在)", reason="not-found") from None
            columns = [(d.name, d.type_code) for d in probe.description or []]
        conn.rollback()
        check_columns(display, [c for c, _ in columns])
        reads = [_TYPES.get(oid, ("::text", pa.string())) for _, oid in columns]
        schema = pa.schema([(c, t) for (c, _), (_, t) in zip(columns, reads, strict=True)])
        select = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(
                sql.SQL("{}{}").format(sql.Identifier(c), sql.SQL(cast))
                for (c, _), (cast, _) in zip(columns, reads, strict=True)
            ),
            name,
        )
        with conn.cursor(name="datalab_import") as cursor:
            cursor.execute(select)
            empty = True
            while rows := cursor.fetchmany(BATCH_ROWS):
                empty = False
                yield _frame(rows, schema)
            if empty:
                yield _frame([], schema)
    except psycopg.Error as exc:
        raise ConfigError(
            f"{display}: reading the table failed (读取数据表失败): {_scrub(str(exc), secret)}",
            reason="unreadable",
        ) from None
    finally:
        conn.close()


def _frame(rows: list[tuple[object, ...]], schema: pa.Schema) -> pl.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [pa.array(list(values), type=field.type) for values, field in zip(columns, schema, strict=True)]
    frame = pl.from_arrow(pa.Table.from_arrays(arrays, schema=schema))
    assert isinstance(frame, pl.DataFrame)
    return frame
