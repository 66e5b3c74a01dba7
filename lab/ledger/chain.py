"""The hash chain of the audit log: canonical form, append, verification, anchor.

Each record's ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8,
no NaN) of ``{seq, at, actor, organisation, kind, dataset, details, prev_hash}``, where
``at`` is UTC ISO 8601 with microseconds and ``prev_hash`` is the previous record's
hash (64 zeros for seq 1). Appends lock the single head row, so two writers can never
both extend the same record: the chain cannot fork.

Why an anchor file
------------------
A chain held only in the database proves little against someone who can write to the
database: SHA-256 has no key, so they can delete the last records, or edit a record and
recompute every hash after it, and the chain is again self-consistent. Something outside
the database must remember where the chain ended. We chose a small **anchor file**
(``{"seq": N, "hash": H}``, replaced atomically and fsynced after each committed append,
never moved backwards) over an HMAC key because:

- it catches deletion of the last records (the anchor says the log reached N) *and* a
  full rewrite (the record at N no longer has hash H), while an HMAC over each record
  does not catch truncation unless its head is again stored out of band;
- it holds no secret: nothing to leak from the gateway, nothing to rotate; an auditor
  can copy the two values elsewhere (or the archive job can put them in the
  object-locked bucket) to extend the guarantee beyond this host.

The file belongs in the restricted state directory, writable by the ledger's service
account only. Its limits, stated plainly: records appended after the last anchor write
(only possible if the process died between the database commit and the file write) are
unanchored until the next append, and an attacker who can rewrite both the database and
the file defeats it — which is why sealed segments are also archived off-host. Without
an anchor the head row in the database still catches a naive deletion of the last row.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from lab.errors import ConfigError
from lab.hashing import canonical_json
from lab.ledger.db import GENESIS_HASH, audit, audit_head
from lab.ledger.models import AuditRecord, VerifyResult

_KIND_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# Keys that suggest a secret or a raw value; details must carry digests and metadata only.
_FORBIDDEN_KEY_RE = re.compile(
    r"token|secret|password|passwd|authorization|cookie|api[_-]?key|credential|raw[_-]?(value|row)s?$",
    re.IGNORECASE,
)
_BATCH = 1000
log = logging.getLogger(__name__)


def format_time(at: datetime) -> str:
    """UTC ISO 8601 with microseconds, e.g. ``2025-01-31T08:00:00.000000Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical form of one record (everything but ``hash``)."""
    body = {
        "seq": fields["seq"],
        "at": format_time(fields["at"]),
        "actor": fields["actor"],
        "organisation": fields["organisation"],
        "kind": fields["kind"],
        "dataset": fields["dataset"],
        "details": fields["details"],
        "prev_hash": fields["prev_hash"],
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def check_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate an audit details object: JSON only, no key that looks like a secret."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise ConfigError(
            "audit details must be a JSON object / 审计详情必须是 JSON 对象", reason="invalid-value"
        )
    _check_keys(details)
    try:
        return json.loads(canonical_json(dict(details)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"audit details must be plain JSON: {exc} / 审计详情必须是普通 JSON", reason="invalid-value"
        ) from None


def _check_keys(value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or _FORBIDDEN_KEY_RE.search(key):
                raise ConfigError(
                    f"audit details may not carry {key!r}: record a digest or metadata instead "
                    "/ 审计详情不得包含该字段，请改为记录摘要或元数据",
                    reason="invalid-value",
                )
            _check_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_keys(item)


def check_kind(kind: str) -> str:
    """Kinds are lowercase words joined by hyphens (``dp-query``, ``extract-build``)."""
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ConfigError(
            f"audit kind {kind!r} is not valid: use lowercase words and hyphens, e.g. 'dp-query' / "
            "审计类型无效：请使用小写单词和连字符",
            reason="invalid-value",
        )
    return kind


def lock_head(conn: Connection) -> Any:
    """Lock the chain's head row for this transaction and return it (seq, hash)."""
    return conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one()


def append_record(
    conn: Connection,
    *,
    at: datetime,
    kind: str,
    actor: str,
    organisation: str | None = None,
    dataset: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """Append one record inside the caller's write transaction and return it."""
    if not actor:
        raise ConfigError("an audit record needs an actor / 审计记录必须有操作人", reason="invalid-value")
    fields: dict[str, Any] = {
        "at": at,
        "actor": actor,
        "organisation": organisation,
        "kind": check_kind(kind),
        "dataset": dataset,
        "details": check_details(details),
    }
    head = lock_head(conn)
    fields["seq"] = head.seq + 1
    fields["prev_hash"] = head.hash
    fields["hash"] = record_hash(fields)
    conn.execute(insert(audit).values(**{**fields, "details": canonical_json(fields["details"])}))
    conn.execute(
        update(audit_head).where(audit_head.c.id == 1).values(seq=fields["seq"], hash=fields["hash"])
    )
    return AuditRecord(**fields)


# --- verification -------------------------------------------------------------------


def iter_rows(conn: Connection) -> Iterator[Any]:
    """All audit rows in seq order, fetched in batches."""
    last = None
    while True:
        query = select(audit).order_by(audit.c.seq).limit(_BATCH)
        if last is not None:
            query = query.where(audit.c.seq > last)
        rows = conn.execute(query).mappings().all()
        yield from rows
        if len(rows) < _BATCH:
            return
        last = rows[-1]["seq"]


def _row_fields(row: Mapping[str, Any]) -> dict[str, Any] | None:
    fields = dict(row)
    try:
        fields["details"] = json.loads(row["details"])
    except ValueError:
        return None
    return fields


def walk_chain(conn: Connection, anchor: tuple[int, str] | None, anchored: bool) -> VerifyResult:
    """Check every record, then the head row and the anchor, in one snapshot."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    for row in iter_rows(conn):
        problem = _check_row(row, expected_seq, prev_hash)
        if problem is not None:
            bad_seq, why = problem
            return VerifyResult(False, checked, row["seq"], bad_seq, why, anchored)
        expected_seq, prev_hash, checked = row["seq"] + 1, row["hash"], checked + 1
    last_seq = expected_seq - 1
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    if (head.seq, head.hash) != (last_seq, prev_hash):
        bad_seq, why = _head_problem(head.seq, last_seq)
        return VerifyResult(False, checked, last_seq, bad_seq, why, anchored)
    return _check_anchor(conn, anchor, anchored, checked, last_seq)


def _head_problem(head_seq: int, last_seq: int) -> tuple[int, str]:
    if head_seq > last_seq:
        return last_seq + 1, (
            f"record seq {last_seq + 1} is missing: the chain head says the log reaches seq {head_seq}"
        )
    if head_seq < last_seq:
        return head_seq + 1, f"records from seq {head_seq + 1} were added behind the chain head's back"
    return last_seq, "it does not match the chain head: the last record was rewritten"


def _check_row(row: Mapping[str, Any], expected_seq: int, prev_hash: str) -> tuple[int, str] | None:
    seq = row["seq"]
    if seq != expected_seq:
        return expected_seq, f"record seq {expected_seq} is missing (next present record is seq {seq})"
    fields = _row_fields(row)
    if fields is None or record_hash(fields) != row["hash"]:
        return seq, "its content does not match its hash: the record was edited or moved"
    if row["prev_hash"] != prev_hash:
        if seq == 1:
            return seq, "the first record does not start from the genesis hash"
        # This record is intact, so the one before it was rewritten with a new hash.
        return seq - 1, (
            f"record seq {seq} no longer links to it: it was rewritten with a recomputed hash "
            f"(or record seq {seq}'s link was)"
        )
    return None


def _check_anchor(
    conn: Connection, anchor: tuple[int, str] | None, anchored: bool, checked: int, last_seq: int
) -> VerifyResult:
    if not anchored:
        return VerifyResult(True, checked, last_seq, anchored=False)
    if anchor is None:
        if last_seq == 0:
            return VerifyResult(True, checked, last_seq, anchored=True)
        why = "the anchor file is missing although the log has records; restore it or re-anchor after review"
        return VerifyResult(False, checked, last_seq, last_seq, why, anchored)
    anchor_seq, anchor_hash = anchor
    if anchor_seq > last_seq:
        why = f"record seq {last_seq + 1} is missing: the anchor says the log reaches seq {anchor_seq}"
        return VerifyResult(False, checked, last_seq, last_seq + 1, why, anchored)
    if anchor_seq > 0:
        stored = conn.execute(select(audit.c.hash).where(audit.c.seq == anchor_seq)).scalar_one()
        if stored != anchor_hash:
            why = "it does not match the anchor: the log was rewritten up to this record"
            return VerifyResult(False, checked, last_seq, anchor_seq, why, anchored)
    return VerifyResult(True, checked, last_seq, anchored=True, unanchored=last_seq - anchor_seq)


# --- anchors --------------------------------------------------------------------------


def _supersedes(
    current: tuple[int, str] | None, seq: int, still_valid: Callable[[int, str], bool] | None, where: object
) -> bool:
    """Whether the head ``seq`` may replace the anchored ``current`` (see :meth:`FileAnchor.advance`)."""
    if current is None:
        return True
    if current[0] >= seq:
        return False
    if still_valid is not None and not still_valid(*current):
        log.error("audit anchor %s no longer matches record seq %d; not advancing", where, current[0])
        return False
    return True


def _body(seq: int, hash_: str) -> str:
    return canonical_json({"seq": seq, "hash": hash_, "written_at": format_time(datetime.now(UTC))})


class ObjectAnchor:
    """The head of the chain as an object in the audit archive, for replicas on many hosts.

    Same contract as :class:`FileAnchor` (monotonic, kept as evidence when the log no
    longer matches it), with the object store in place of a local file: ``get`` returns
    the stored bytes (None if absent), ``put`` stores new ones. Each write is a new version
    under the archive's COMPLIANCE retention, so even a writer holding the root
    credentials cannot erase the heads it replaced. ``lock`` (set by the ledger: its
    ``audit-anchor`` lock, shared by every process on the database) orders the
    read-compare-write of replicas that commit at the same moment.
    """

    def __init__(self, name: str, get: Callable[[], bytes | None], put: Callable[[bytes], None]) -> None:
        self.path = name  # shown in messages, like FileAnchor.path
        self._get, self._put = get, put
        self.lock: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext

    def read(self) -> tuple[int, str] | None:
        try:
            data = self._get()
        except Exception as exc:  # the object store's errors, whatever the client raises
            raise ConfigError(
                f"the audit anchor {self.path} cannot be read ({type(exc).__name__}); check the object "
                "store / 无法读取审计锚点，请检查对象存储",
                reason="ledger-anchor",
            ) from None
        if data is None:
            return None
        try:
            value = json.loads(data)
            return int(value["seq"]), str(value["hash"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"the audit anchor {self.path} is corrupt; restore it from a copy / "
                "审计锚点已损坏，请从备份恢复",
                reason="ledger-anchor",
            ) from None

    def advance(
        self,
        seq: int,
        hash_: str,
        *,
        still_valid: Callable[[int, str], bool] | None = None,
        force: bool = False,
    ) -> bool:
        with self.lock():
            if not _supersedes(None if force else self.read(), seq, still_valid, self.path):
                return False
            try:
                self._put(_body(seq, hash_).encode())
            except Exception as exc:  # the object store's errors
                raise ConfigError(
                    f"the audit anchor {self.path} cannot be written ({type(exc).__name__}) / "
                    "无法写入审计锚点",
                    reason="ledger-anchor",
                ) from None
            return True


class FileAnchor:
    """The head of the chain (seq, hash) kept in a file outside the database.

    Writes are atomic (temporary file, fsync, rename, fsync of the directory), serialised
    across threads and processes by ``flock`` on a sibling ``.lock`` file, and monotonic:
    an older head never replaces a newer one, whatever order writers finish in.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.Lock()

    def read(self) -> tuple[int, str] | None:
        """The anchored (seq, hash), or None if no anchor was written yet."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return int(data["seq"]), str(data["hash"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"the audit anchor file {self.path} is corrupt; restore it from a copy / "
                "审计锚点文件已损坏，请从备份恢复",
                reason="ledger-anchor",
            ) from None

    def advance(
        self,
        seq: int,
        hash_: str,
        *,
        still_valid: Callable[[int, str], bool] | None = None,
        force: bool = False,
    ) -> bool:
        """Record (seq, hash) as the head; return whether the file changed.

        Nothing changes if a later head is already recorded, or if ``still_valid`` says
        the recorded head no longer matches the log: then the old anchor is kept as
        evidence (otherwise a truncated and re-extended log would be anchored afresh).
        ``force`` skips both checks (for :meth:`Ledger.reanchor`).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _supersedes(None if force else self.read(), seq, still_valid, self.path):
                return False
            self._write(seq, hash_)
            return True

    def _write(self, seq: int, hash_: str) -> None:
        body = _body(seq, hash_)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
