"""The record cannot be rewritten unseen: a consistent rewrite of sealed records is detected.

Attack (issue 11): a consistent rewrite of records not yet sealed (hashes, head and anchor
recomputed) passed ``datalab audit verify --archive``: sealing ran hourly, and on a copy of
the ledger at another path the check compared zero segments and said ok. Played against
the real lab: the lab's own gateway seals its log; the test copies the lab's ledger to
another path (as a backup or a restore would), rewrites a record older than a minute in
the copy consistently, and runs ``datalab audit verify --archive`` on the copy.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lab import auditpkg
from lab.cli import main as datalab
from lab.extracts import ledger as open_ledger
from lab.ledger.chain import FileAnchor, canonical_json, record_hash
from lab.settings import Settings

pytestmark = [pytest.mark.security, pytest.mark.integration]


def _copy(lab: Settings, to: Path) -> Path:
    """A consistent copy of the lab's SQLite ledger and its anchor at another path."""
    to.mkdir(parents=True)
    (to / "secrets").symlink_to(lab.secrets_dir)  # the lab's MinIO credentials
    source = sqlite3.connect(lab.home / "ledger.sqlite")
    target = sqlite3.connect(to / "ledger.sqlite")
    with target:
        source.backup(target)
    source.close()
    target.close()
    (to / "ledger.anchor").write_bytes(lab.ledger_anchor.read_bytes())
    return to


def _rewrite(home: Path, seq: int) -> None:
    """Edit record ``seq`` and re-chain everything after it, head and anchor included."""
    with sqlite3.connect(home / "ledger.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        details = json.loads(
            conn.execute("SELECT details FROM ledger_audit WHERE seq = ?", (seq,)).fetchone()[0]
        )
        details["why"] = "nothing happened here"
        conn.execute("UPDATE ledger_audit SET details = ? WHERE seq = ?", (canonical_json(details), seq))
        prev = conn.execute("SELECT prev_hash FROM ledger_audit WHERE seq = ?", (seq,)).fetchone()[0]
        for row in conn.execute("SELECT * FROM ledger_audit WHERE seq >= ? ORDER BY seq", (seq,)).fetchall():
            fields = dict(row)
            fields["details"] = json.loads(row["details"])
            fields["at"] = datetime.fromisoformat(row["at"]).replace(tzinfo=UTC)
            fields["prev_hash"] = prev
            prev = record_hash(fields)
            conn.execute(
                "UPDATE ledger_audit SET prev_hash = ?, hash = ? WHERE seq = ?",
                (fields["prev_hash"], prev, row["seq"]),
            )
        last = conn.execute("SELECT max(seq) FROM ledger_audit").fetchone()[0]
        conn.execute("UPDATE ledger_audit_head SET seq = ?, hash = ?", (last, prev))
    FileAnchor(home / "ledger.anchor").advance(last, prev, force=True)


def _verify(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.setenv("DATALAB_HOME", str(home))
    monkeypatch.delenv("DATALAB_DB_URL", raising=False)
    code = datalab(["audit", "verify", *args])
    return code, capsys.readouterr().out


def test_a_consistent_rewrite_of_an_old_record_is_detected_also_on_a_copy(
    lab_stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_ledger(lab_stack) as book:
        marker = book.append("test-marker", actor="security-test", details={"why": "a record to rewrite"})
        # The lab's gateway seals it by itself; wait until it is sealed and older than a minute.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            report = auditpkg.archive_report(lab_stack, book)
            old = (datetime.now(UTC) - marker.at).total_seconds() > auditpkg.UNSEALED_GRACE + 1
            if old and report.compared >= marker.seq:
                break
            time.sleep(2)
        assert report.compared >= marker.seq, report.message
        assert report.ok, report.problems  # nothing older than a minute is left unsealed
        live_compared = report.compared
    print(report.message)

    intact = _copy(lab_stack, tmp_path / "restored-elsewhere")
    code, out = _verify(intact, monkeypatch, capsys, "--archive")
    assert "compared" in out and "sealed segment" in out, out

    rewritten = _copy(lab_stack, tmp_path / "rewritten-copy")
    _rewrite(rewritten, marker.seq)
    code, out = _verify(rewritten, monkeypatch, capsys)
    assert code == 0 and "intact" in out  # the chain alone cannot tell: the rewrite is consistent
    code, out = _verify(rewritten, monkeypatch, capsys, "--archive")
    print(out)
    assert code == 1, out
    assert f"record seq {marker.seq} differs from the copy sealed" in out
    compared = int(out.split("archive: compared ")[1].split()[0])
    assert 0 < compared < live_compared + 1

    # Changing the copy's identity does not help: it then has old records and no segment at all.
    with sqlite3.connect(rewritten / "ledger.sqlite") as conn:
        conn.execute("UPDATE ledger_meta SET value = ? WHERE key = 'ledger_id'", ("f" * 32,))
    code, out = _verify(rewritten, monkeypatch, capsys, "--archive")
    assert code == 1 and "compared 0 records" in out and "holds no sealed segment" in out, out
