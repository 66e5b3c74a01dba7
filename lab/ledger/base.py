"""Plumbing of the :class:`~lab.ledger.Ledger` and its audit-log methods.

Every change is one database transaction that also appends its audit record, so a
grant, a revocation or a settled query is never in the database without its record,
nor the other way round. After the transaction commits, the anchor file (if any) is
moved to the new head of the chain (see :mod:`lab.ledger.chain`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Self

from sqlalchemy import select, text

from lab.errors import ConfigError
from lab.ledger import audit as audit_q
from lab.ledger.chain import FileAnchor, ObjectAnchor, append_record, walk_chain
from lab.ledger.db import audit, create_schema, ledger_identity, make_engine, now_utc, read_tx, write_tx
from lab.ledger.models import AuditExport, AuditRecord, SpendPoint, VerifyResult

log = logging.getLogger(__name__)


@dataclass
class _Tx:
    """A write transaction in progress and the head of the chain it appended."""

    conn: Any
    at: datetime
    clock: Callable[[], datetime]
    head: tuple[int, str] | None = None

    def append(self, kind: str, **fields: Any) -> AuditRecord:
        # Stamped after the head row is locked, so times follow seq order.
        record = append_record(self.conn, at=self.clock(), kind=kind, **fields)
        self.head = (record.seq, record.hash)
        return record


class LedgerCore:
    """Grants, budgets and the hash-chained audit log on SQLite or PostgreSQL.

    ``url`` is an SQLAlchemy URL: ``sqlite:////state/ledger.db`` or
    ``postgresql+psycopg://user@host/db``. ``anchor_path`` names the file that remembers
    the head of the audit chain outside the database (see :mod:`lab.ledger.chain`);
    without it, deleting the last records *and* the head row goes unnoticed. ``clock``
    returns the current time (timezone-aware), for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        anchor_path: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] = now_utc,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self._engine = make_engine(url, busy_timeout_s=busy_timeout_s)
        self._anchor: FileAnchor | ObjectAnchor | None = (
            FileAnchor(anchor_path) if anchor_path is not None else None
        )
        self._clock = clock
        create_schema(self._engine)

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def identity(self) -> str:
        """The random id stored in this ledger at creation; a copy or a restore keeps it."""
        with read_tx(self._engine) as conn:
            return ledger_identity(conn)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def use_anchor(self, anchor: ObjectAnchor) -> None:
        """Keep the chain's head in ``anchor`` (the object store) instead of a local file.

        Its writes are ordered across every process on this database by the ledger's
        ``audit-anchor`` lock.
        """
        anchor.lock = lambda: self.exclusive("audit-anchor")
        self._anchor = anchor

    @contextmanager
    def exclusive(self, name: str, *, wait: bool = True) -> Iterator[bool]:
        """Hold the lab-wide lock ``name`` (e.g. ``"audit-seal"``); yields whether it was taken.

        Every process on this ledger shares it, on any host: PostgreSQL's session advisory
        lock (released if the holder dies), or an ``flock`` beside an SQLite file (one
        host by construction). ``wait=False`` yields False at once when another holds it.
        """
        key = int.from_bytes(hashlib.sha256(f"datalab:{name}".encode()).digest()[:8], "big", signed=True)
        if self.backend == "postgresql":
            with self._engine.connect() as conn:
                if wait:
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                    got = True
                else:
                    got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
                try:
                    yield got
                finally:
                    if got:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        database = self._engine.url.database or ""
        with open(f"{database}.{name}.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ConfigError(
                "the ledger's clock must return timezone-aware times / 台账时钟必须返回带时区的时间",
                reason="invalid-value",
            )
        return now

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        with write_tx(self._engine) as conn:
            tx = _Tx(conn=conn, at=self._now(), clock=self._now)
            yield tx
        # Committed: now move the anchor (never before, or a rollback would leave it ahead).
        if tx.head is not None and self._anchor is not None:
            try:
                self._anchor.advance(*tx.head, still_valid=self._matches_log)
            except (OSError, ConfigError) as exc:
                # The record is committed; verify() will report it as unanchored.
                log.error("could not write the audit anchor %s: %s", self._anchor.path, exc)

    def transaction(self) -> AbstractContextManager[_Tx]:
        """A write transaction whose ``append`` joins the audit chain, for registries kept here.

        Rows written through ``tx.conn`` and the records appended with ``tx.append`` commit
        together or not at all (see :mod:`lab.registry.organisations`).
        """
        return self._write()

    def snapshot(self) -> AbstractContextManager[Any]:
        """A read transaction over one consistent snapshot (a connection)."""
        return read_tx(self._engine)

    def _matches_log(self, seq: int, hash_: str) -> bool:
        with read_tx(self._engine) as conn:
            return conn.execute(select(audit.c.hash).where(audit.c.seq == seq)).scalar_one_or_none() == hash_

    # --- audit log --------------------------------------------------------------------

    def append(
        self,
        kind: str,
        *,
        actor: str,
        organisation: str | None = None,
        dataset: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one audit record (durable when this returns) and return it.

        ``details`` is a JSON object of metadata only: canonical query text, ε, δ, digests,
        ids. Keys that look like secrets (``token``, ``password``, …) are refused.
        """
        with self._write() as tx:
            return tx.append(kind, actor=actor, organisation=organisation, dataset=dataset, details=details)

    def records(
        self,
        *,
        organisation: str | None = None,
        actor: str | None = None,
        dataset: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        after_seq: int | None = None,
    ) -> list[AuditRecord]:
        """Search the audit log; every filter is optional, ``until`` is exclusive."""
        with read_tx(self._engine) as conn:
            return audit_q.select_records(
                conn,
                organisation=organisation,
                actor=actor,
                dataset=dataset,
                kind=kind,
                since=since,
                until=until,
                limit=limit,
                newest_first=newest_first,
                after_seq=after_seq,
            )

    def verify(self) -> VerifyResult:
        """Check the whole chain, the head row and the anchor; name the first broken record."""
        anchored = self._anchor is not None
        try:
            # Read the anchor before the snapshot: it only moves forward, after commits.
            anchor = self._anchor.read() if self._anchor is not None else None
        except ConfigError as exc:
            return VerifyResult(False, 0, 0, None, exc.message, anchored)
        with read_tx(self._engine) as conn:
            return walk_chain(conn, anchor, anchored)

    def reanchor(self, *, actor: str) -> VerifyResult:
        """Anchor the current head after a review (first anchor, or a restored database).

        Refused unless the chain itself verifies. Leaves an audit record saying so.
        """
        if self._anchor is None:
            raise ConfigError(
                "this ledger has no anchor file configured / 台账未配置锚点文件", reason="ledger-anchor"
            )
        with read_tx(self._engine) as conn:
            result = walk_chain(conn, None, anchored=False)
        if not result.ok:
            return result
        previous = self._anchor.read()
        details = {"previous_anchor_seq": previous[0] if previous else None, "head_seq": result.head_seq}
        with write_tx(self._engine) as conn:
            record = append_record(conn, at=self._now(), kind="anchor-reset", actor=actor, details=details)
        self._anchor.advance(record.seq, record.hash, force=True)
        return self.verify()

    def export(self, since: datetime | None = None, until: datetime | None = None) -> AuditExport:
        """Records in [since, until), the verification of the whole log, and summary counts."""
        verification = self.verify()
        with read_tx(self._engine) as conn:
            records = audit_q.select_records(conn, since=since, until=until)
            spending = audit_q.select_spending(conn, since=since, until=until)
        summary = audit_q.summarise(records)
        summary["budget_spent"] = [vars(point) for point in spending]
        return AuditExport(since, until, records, verification, summary)

    def spending(
        self,
        *,
        organisation: str | None = None,
        dataset: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        period: str = "day",
        zone: tzinfo = UTC,
    ) -> list[SpendPoint]:
        """Budget spent per organisation and dataset per ``period`` (hour, day, month) of ``zone``."""
        with read_tx(self._engine) as conn:
            return audit_q.select_spending(
                conn,
                organisation=organisation,
                dataset=dataset,
                since=since,
                until=until,
                period=period,
                zone=zone,
            )
