"""Audit packages for outside reviewers, and sealed segments in the object-locked archive.

**Package** (``datalab audit export --from --to OUT``): one JSON file holding the records
in the period, the verification of the *whole* chain at the time of export, a summary
(counts by kind, organisation, dataset, actor, outcome; budget spent), and the hash
of the canonical records so a reviewer can quote exactly what they received. Records
carry ``prev_hash`` and ``hash``, so a reviewer can re-check the chain over the period
with nothing but SHA-256 (see :mod:`lab.ledger.chain` for the canonical form).

**Archive** (``datalab audit archive``): the records not yet archived are sealed into a
segment ``segments/<ledger>/<first>-<last>.jsonl`` (``<ledger>`` is the identity stored in
the ledger at creation, not its path: two ledgers never share a sequence, and a copy or a
restore of one is still compared with what was sealed from it) and its manifest ``.json`` (first and last
seq, the hash the segment starts from and ends with, the segment's SHA-256) in the
``audit-archive`` bucket, whose default COMPLIANCE retention keeps them for a year
whatever anyone's privileges. A broken chain is never sealed. :func:`check_archive`
compares the live log with the sealed segments: a record rewritten after sealing no
longer has the sealed hash, even if the database and the anchor file were rewritten
together. The gateway's :class:`Sealer` seals new records within about half a minute
(or every :data:`SEAL_EVERY` records), and :func:`archive_report` fails when a record
older than a minute is not sealed, so an unsealed window cannot hide a rewrite.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minio import Minio
from minio.commonconfig import COMPLIANCE
from minio.retention import Retention

from lab import storage
from lab.errors import ConfigError
from lab.ledger import AuditRecord, Ledger, canonical_json
from lab.settings import Settings
from lab.store import layout

FORMAT = "datalab-audit-package/1"
SEAL_INTERVAL = 30.0  # new records wait at most this long (plus one poll) to be sealed
SEAL_EVERY = 500  # ... or are sealed as soon as this many are waiting
SEAL_POLL = 5.0  # seconds between the sealer's looks at the log
UNSEALED_GRACE = 60.0  # verify --archive fails if a record older than this is not sealed
log = logging.getLogger(__name__)
_SEGMENT = re.compile(rf"^{re.escape(layout.AUDIT_SEGMENTS)}[0-9a-f]{{12,32}}/(\d{{12}})-(\d{{12}})\.jsonl$")
SEAL = "audit-seal"


def _record_line(record: AuditRecord) -> str:
    return canonical_json(record.as_dict())


def package(ledger: Ledger, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The audit package of [since, until) as a JSON-ready dict."""
    export = ledger.export(since, until)
    body = export.as_dict()
    lines = "\n".join(_record_line(r) for r in export.records).encode()
    body = {
        "format": FORMAT,
        "generated_at": datetime.now(UTC).isoformat(),
        **body,
        "records_sha256": hashlib.sha256(lines).hexdigest(),
    }
    return body


def write_package(
    ledger: Ledger, since: datetime | None, until: datetime | None, out: Path
) -> dict[str, Any]:
    """Write the package to ``out`` (atomically) and return it."""
    body = package(ledger, since, until)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)
    return body


@dataclass(frozen=True)
class Segment:
    first_seq: int
    last_seq: int
    records: int
    last_hash: str
    sha256: str
    object_name: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ledger_id(ledger: Ledger) -> str:
    """The ledger's identity (stored in it at creation): a copy or a restore keeps it.

    The archive is keyed by it, so verifying a copy of the ledger at another path (or on
    another host) still compares it with the segments sealed from the original.
    """
    return ledger.identity


def _segments(client: Minio, ident: str) -> list[tuple[int, int, str]]:
    found = []
    prefix = layout.audit_segments(ident)
    for item in client.list_objects(layout.AUDIT_BUCKET, prefix=prefix, recursive=True):
        match = _SEGMENT.match(item.object_name or "")
        if match:
            found.append((int(match[1]), int(match[2]), str(item.object_name)))
    return sorted(found)


def _put(client: Minio, name: str, data: bytes, content_type: str, retention: Retention | None) -> None:
    client.put_object(
        layout.AUDIT_BUCKET,
        name,
        io.BytesIO(data),
        len(data),
        content_type=content_type,
        retention=retention,
    )


def _archived_up_to(client: Minio, ident: str) -> int:
    return max((last for _, last, _ in _segments(client, ident)), default=0)


def pending(settings: Settings, ledger: Ledger) -> list[AuditRecord]:
    """Records not yet sealed, oldest first (a trailing run of seal records does not count)."""
    done = _archived_up_to(storage.root_client(settings), ledger_id(ledger))
    records = ledger.records(after_seq=done)
    while records and records[-1].kind == SEAL:
        records.pop()
    return records


def seal(
    settings: Settings,
    ledger: Ledger,
    *,
    actor: str,
    max_records: int = 50_000,
    retain_until: datetime | None = None,
    wait: bool = True,
) -> Segment | None:
    """Seal the records after the last archived segment; None if there are none.

    ``retain_until`` overrides the bucket's default retention (COMPLIANCE, 365 days).
    One sealer at a time across every gateway replica and the CLI (the ledger's
    ``audit-seal`` lock), and each reads the archive's end only once it holds the lock:
    segments never overlap. ``wait=False`` returns None at once if another is sealing.
    """
    with ledger.exclusive("audit-seal", wait=wait) as mine:
        if not mine:
            return None
        return _seal(settings, ledger, actor=actor, max_records=max_records, retain_until=retain_until)


def _seal(
    settings: Settings, ledger: Ledger, *, actor: str, max_records: int, retain_until: datetime | None
) -> Segment | None:
    verification = ledger.verify()
    if not verification.ok:
        raise ConfigError(
            f"the audit log does not verify ({verification.message}); it is not sealed until the breach "
            "is reviewed / 审计日志核验未通过，在审查完破坏情况之前不会封存",
            reason="audit-broken",
        )
    client = storage.root_client(settings)
    ident = ledger_id(ledger)
    done = _archived_up_to(client, ident)
    records = ledger.records(after_seq=done, limit=max_records)
    if not records:
        return None
    data = ("\n".join(_record_line(r) for r in records) + "\n").encode()
    first, last = records[0], records[-1]
    name = layout.audit_segment(ident, first.seq, last.seq)
    segment = Segment(first.seq, last.seq, len(records), last.hash, hashlib.sha256(data).hexdigest(), name)
    manifest = {
        **segment.as_dict(),
        "ledger_id": ident,
        "prev_hash": first.prev_hash,
        "sealed_at": datetime.now(UTC).isoformat(),
        "sealed_by": actor,
        "verification": verification.as_dict(),
    }
    retention = Retention(COMPLIANCE, retain_until) if retain_until is not None else None
    _put(client, name, data, "application/x-ndjson", retention)
    manifest_name = name.removesuffix(".jsonl") + ".json"
    _put(client, manifest_name, canonical_json(manifest).encode(), "application/json", retention)
    ledger.append(SEAL, actor=actor, details=segment.as_dict())
    return segment


class Sealer:
    """Seals new audit records into the archive while they arrive (a daemon thread in the gateway).

    Every ``poll`` seconds it looks at the records not yet sealed: it seals them when the
    oldest has waited ``interval`` seconds or ``every`` of them are waiting, whichever
    comes first; so no record stays unsealed much longer than ``interval`` + ``poll``
    (well inside the minute that ``verify --archive`` allows). The first look is
    ``first_after`` seconds after start (archiving any backlog at once). A log that does
    not verify is not sealed; the failure is logged and retried, and ``datalab audit
    verify`` names the breach.
    """

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        *,
        interval: float = SEAL_INTERVAL,
        first_after: float = 1.0,
        every: int = SEAL_EVERY,
        poll: float = SEAL_POLL,
    ) -> None:
        self.settings, self.ledger = settings, ledger
        self.interval, self.first_after = interval, first_after
        self.every, self.poll = every, min(poll, interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-seal", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def due(self, *, backlog: bool = False) -> bool:
        """Whether the waiting records should be sealed now (any at all, for a ``backlog``)."""
        waiting = pending(self.settings, self.ledger)
        if not waiting:
            return False
        age = (datetime.now(UTC) - waiting[0].at).total_seconds()
        return backlog or len(waiting) >= self.every or age >= self.interval

    def round(self, *, backlog: bool = False) -> list[Segment]:
        """One look: seal everything waiting if it is due (several segments for a backlog)."""
        sealed: list[Segment] = []
        if not self.due(backlog=backlog):
            return sealed
        while True:
            segment = seal(self.settings, self.ledger, actor="gateway-archive", wait=False)
            if segment is None or segment.records < 50_000:
                if segment is not None:
                    sealed.append(segment)
                return sealed
            sealed.append(segment)

    def _run(self) -> None:
        wait, backlog = self.first_after, True
        while not self._stop.wait(wait):
            try:
                for segment in self.round(backlog=backlog):
                    log.info("sealed audit records %s-%s", segment.first_seq, segment.last_seq)
                backlog = False
            except Exception as exc:  # retried next round
                log.error("sealing the audit log failed: %s", getattr(exc, "reason", type(exc).__name__))
            wait = self.poll


@dataclass(frozen=True)
class ArchiveCheck:
    """What ``verify --archive`` compared and what it found."""

    ledger_id: str
    segments: int
    compared: int  # records compared with their sealed copy
    unsealed_old: int  # records older than the grace period not yet sealed
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        return (
            f"archive: compared {self.compared} records with {self.segments} sealed segment(s) of ledger "
            f"{self.ledger_id}; {self.unsealed_old} record(s) older than {UNSEALED_GRACE:g} s unsealed"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok, "message": self.message}


def archive_report(settings: Settings, ledger: Ledger, *, grace: float = UNSEALED_GRACE) -> ArchiveCheck:
    """Compare the live log with its sealed segments, and count what should be sealed but is not.

    Fails (``problems``) when a sealed record differs or is missing, and when records older
    than ``grace`` seconds are not sealed: in particular when the log has such records but
    the archive holds no segment at all for this ledger's identity (a rewritten copy, or a
    ledger whose identity was changed, compares nothing and must not pass).
    """
    client = storage.root_client(settings)
    ident = ledger_id(ledger)
    live = {r.seq: r for r in ledger.records()}
    problems: list[str] = []
    segments = _segments(client, ident)
    compared = 0
    for _, _, name in segments:
        response = client.get_object(layout.AUDIT_BUCKET, name)
        try:
            lines = response.read().decode().splitlines()
        finally:
            response.close()
            response.release_conn()
        for line in lines:
            sealed = json.loads(line)
            record = live.get(sealed["seq"])
            if record is None:
                problems.append(
                    f"record seq {sealed['seq']} was sealed in {name} but is missing from the log"
                )
                break
            if record.hash != sealed["hash"] or _record_line(record) != line:
                problems.append(f"record seq {sealed['seq']} differs from the copy sealed in {name}")
                break
            compared += 1
    done = max((last for _, last, _ in segments), default=0)
    cutoff = datetime.now(UTC).timestamp() - grace
    old = [r for seq, r in live.items() if seq > done and r.kind != SEAL and r.at.timestamp() < cutoff]
    if old and not segments:
        problems.append(
            f"the archive holds no sealed segment of ledger {ident}, but {len(old)} record(s) are older than "
            f"{grace:g} s: they were never sealed, or this is not the ledger that was sealed "
            "/ 归档中没有此账本的封存段"
        )
    elif old:
        problems.append(
            f"{len(old)} record(s) older than {grace:g} s (from seq {min(r.seq for r in old)}) are "
            "not sealed: is the gateway's sealer running? / 有超过时限未封存的记录"
        )
    return ArchiveCheck(ident, len(segments), compared, len(old), problems)


def check_archive(settings: Settings, ledger: Ledger) -> list[str]:
    """Differences between the live log and the sealed segments (empty when they agree)."""
    return archive_report(settings, ledger).problems
