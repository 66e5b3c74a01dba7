"""Schema, engine and transactions of the ledger, for SQLite and PostgreSQL alike.

Everything goes through SQLAlchemy Core with bound parameters. Two kinds of transaction:

- :func:`write_tx` takes the write lock up front. On SQLite that is ``BEGIN IMMEDIATE``
  (one writer at a time for the whole file, others wait up to the busy timeout); on
  PostgreSQL the callers lock the rows they change with ``SELECT … FOR UPDATE`` (the grant
  row for budget changes, the audit head row for appends), in that order, never the other.
- :func:`read_tx` is a plain snapshot read (``BEGIN`` on SQLite, ``REPEATABLE READ`` on
  PostgreSQL) so that a verification or an export sees one consistent state of the log.

Amounts of privacy budget are stored as integers (``EPS_SCALE`` units of ε and
``DELTA_SCALE`` units of δ) so that sums are exact: three queries of ε = 0.1 fit in a
budget of ε = 0.3, which floating point would refuse.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.types import TypeDecorator

from lab.errors import ConfigError

SCHEMA_VERSION = "1"
EPS_SCALE = 10**9
DELTA_SCALE = 10**18
GENESIS_HASH = "0" * 64
_WRITE_OPTION = "ledger_write"
# Arbitrary constant key for pg_advisory_xact_lock while creating the schema.
_SCHEMA_LOCK_KEY = 0x1ED6E5


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite keeps no zone, so values are converted to UTC before storing; naive
    datetimes are refused because their meaning would depend on the host's zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ConfigError("timestamps must carry a time zone / 时间必须带时区", reason="invalid-value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

meta_table = Table(
    "ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

grants = Table(
    "ledger_grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("organisation", String(200), nullable=False),
    Column("dataset", String(200), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("modes", String(64), nullable=False),
    Column("epsilon_units", BigInteger, nullable=False),
    Column("delta_units", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("approved_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_by", String(200), nullable=True),
    Column("revoke_reason", Text, nullable=True),
    Index("ix_ledger_grants_org_dataset", "organisation", "dataset"),
)

reservations = Table(
    "ledger_reservations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("grant_id", Integer, ForeignKey("ledger_grants.id"), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("query", Text, nullable=True),
    Column("epsilon_units", BigInteger, nullable=False),
    Column("delta_units", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("outcome", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime, nullable=True),
    Column("audit_seq", BigInteger, nullable=True),
    Index("ix_ledger_reservations_grant_state", "grant_id", "state"),
    Index("ix_ledger_reservations_settled", "settled_at"),
)

audit = Table(
    "ledger_audit",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("organisation", String(200), nullable=True),
    Column("kind", String(64), nullable=False),
    Column("dataset", String(200), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_ledger_audit_at", "at"),
    Index("ix_ledger_audit_org_at", "organisation", "at"),
)

# Budget limits per organisation x dataset, from the dataset policies (``organisation`` is
# ``*`` for the policy's default, or an organisation named in the policy's agreements).
# NULL means "no limit" (epsilon/delta) or "lifetime" (window).
budget_limits = Table(
    "ledger_budget_limits",
    metadata,
    Column("organisation", String(200), primary_key=True),
    Column("dataset", String(200), primary_key=True),
    Column("epsilon_units", BigInteger, nullable=True),
    Column("delta_units", BigInteger, nullable=True),
    Column("window_seconds", BigInteger, nullable=True),
    Column("grant_epsilon_units", BigInteger, nullable=True),
    Column("grant_delta_units", BigInteger, nullable=True),
    Column("source", Text, nullable=False),
    Column("set_at", UTCDateTime, nullable=False),
)

# Agreements an operator recorded for one organisation x dataset (``datalab budget agreement
# set``, audited as ``budget-agreement``). They take precedence over the policy's caps for that
# organisation and survive the policy sync, which rewrites only ``ledger_budget_limits``.
budget_agreements = Table(
    "ledger_budget_agreements",
    metadata,
    Column("organisation", String(200), primary_key=True),
    Column("dataset", String(200), primary_key=True),
    Column("epsilon_units", BigInteger, nullable=True),
    Column("delta_units", BigInteger, nullable=True),
    Column("window_seconds", BigInteger, nullable=True),
    Column("grant_epsilon_units", BigInteger, nullable=True),
    Column("grant_delta_units", BigInteger, nullable=True),
    Column("set_by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("set_at", UTCDateTime, nullable=False),
)

# One row (id = 1): the head of the chain. Appends lock it, which serialises writers on
# PostgreSQL; it also lets verify() notice a deleted last record without the anchor file.
audit_head = Table(
    "ledger_audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)


def make_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """Create the engine for ``url``: SQLite (WAL, synchronous=FULL) or PostgreSQL."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises several types here
        raise ConfigError(
            "the ledger database URL is not valid; use sqlite:///PATH or postgresql+psycopg://… "
            "/ 台账数据库地址无效，请使用 sqlite:///路径 或 postgresql+psycopg://…",
            detail=f"cannot parse ledger URL: {type(exc).__name__}",
            reason="ledger-url",
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise ConfigError(
                "the ledger needs an SQLite file, e.g. sqlite:////var/lib/datalab/ledger.db "
                "(an in-memory database would be lost and is not shared between threads) "
                "/ 台账需要 SQLite 文件（内存数据库会丢失）",
                reason="ledger-url",
            )
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return _sqlite_engine(url, busy_timeout_s)
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise ConfigError(
        f"the ledger supports SQLite and PostgreSQL, not {backend!r} / 台账只支持 SQLite 和 PostgreSQL",
        reason="ledger-url",
    )


def _sqlite_engine(url: str, busy_timeout_s: float) -> Engine:
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False})
    busy_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (see _on_begin); sqlite3 must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: takes SQLite's write lock at BEGIN."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction over one consistent snapshot."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def create_schema(engine: Engine) -> None:
    """Create the tables if missing, and check the schema version (idempotent)."""
    with write_tx(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting together must not both try to CREATE TABLE.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        metadata.create_all(conn)
        version = conn.execute(
            select(meta_table.c.value).where(meta_table.c.key == "schema_version")
        ).scalar_one_or_none()
        if version is None:
            conn.execute(insert(meta_table).values(key="schema_version", value=SCHEMA_VERSION))
        elif version != SCHEMA_VERSION:
            raise ConfigError(
                f"the ledger database has schema version {version}, this code expects "
                f"{SCHEMA_VERSION}; migrate the database or use a matching release "
                f"/ 台账数据库结构版本为 {version}，本程序需要 "
                f"{SCHEMA_VERSION}，请迁移数据库或使用匹配的版本",
                reason="ledger-schema",
            )
        identity = conn.execute(
            select(meta_table.c.value).where(meta_table.c.key == "ledger_id")
        ).scalar_one_or_none()
        if identity is None:
            # The ledger's identity travels with its content (a copy or a restore keeps it), so
            # the audit archive is keyed by it rather than by the file's path or URL.
            conn.execute(insert(meta_table).values(key="ledger_id", value=uuid.uuid4().hex))
        head = conn.execute(select(audit_head.c.id).where(audit_head.c.id == 1)).first()
        if head is None:
            conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS_HASH))


def ledger_identity(conn: Connection) -> str:
    """The random id stored in the ledger when it was created (32 hex digits)."""
    return str(conn.execute(select(meta_table.c.value).where(meta_table.c.key == "ledger_id")).scalar_one())


def lock_scope(conn: Connection, organisation: str, dataset: str) -> None:
    """Serialise budget decisions on one organisation x dataset (all its grants).

    SQLite's ``BEGIN IMMEDIATE`` already serialises every writer; PostgreSQL takes a
    transaction-scoped advisory lock keyed by the pair. Lock order: scope, then grant,
    then reservation, then the audit head.
    """
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{organisation}\x00{dataset}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def to_units(value: float, scale: int, *, name: str, round_up: bool) -> int:
    """Convert an ε or δ amount to integer units (charges round up, budgets down)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigError(
            f"{name} must be a number, got {type(value).__name__} / {name} 必须是数字", reason="invalid-value"
        )
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"{name} must be a finite number ≥ 0, got {value!r} / {name} 必须是 ≥ 0 的有限数",
            reason="invalid-value",
        )
    exact = Decimal(str(value)) * scale
    units = int(exact.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR))
    if units >= 2**63:
        raise ConfigError(f"{name} = {value!r} is too large / {name} 过大", reason="invalid-value")
    return units


def from_units(units: int, scale: int) -> float:
    """The float value of an integer amount of units."""
    return float(Decimal(units) / scale)


def show_units(units: int, scale: int) -> str:
    """Shortest exact text for a message, e.g. ``0.7`` or ``1e-07``."""
    return repr(from_units(units, scale))


def now_utc() -> datetime:
    """The default clock."""
    return datetime.now(UTC)
