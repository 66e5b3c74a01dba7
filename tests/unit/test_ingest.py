"""``datalab dataset import`` / ``accept``: every format, versions, and each bad input refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
import pyarrow.parquet as pq
import pytest

from lab import cli
from lab.errors import ConfigError, LabError, NotFound, PolicyError
from lab.ingest import DirStore, accept, import_source, manifests, sources
from lab.ingest import cli as ingest_cli
from lab.ingest.frames import conform, infer
from lab.settings import Settings
from tests.unit import login_support
from tests.unit.ingest_support import Audit, Operators, entries, settings_fixture, store_fixture  # noqa: F401  (fixtures)
from tests.unit.ingest_support import rows as _rows
from tests.unit.ingest_support import write_csv as _csv

pytestmark = pytest.mark.unit


POLICY = """dataset: {name}
release_modes: [masked]
quasi_identifiers: [district]
k: 5
columns:
  person_id: {{level: important, pi: sensitive, identifier: direct, rule: pseudonym, family: person}}
  district:  {{level: general, pi: pi, rule: keep}}
  age:       {{level: general, pi: pi, rule: generalise, to: band, width: 10}}
  income:    {{level: general, pi: pi, rule: topcode, top: 5000}}
  joined:    {{level: general, pi: none, rule: generalise, to: month}}
  area_code: {{level: general, pi: none, rule: keep}}
"""


def _policy(path: Path, name: str = "people", text: str = POLICY) -> Path:
    path.write_text(text.format(name=name), encoding="utf-8")
    return path


def _published(store: DirStore, name: str) -> bool:
    return (store.root / name / "meta.json").exists()


# --- formats --------------------------------------------------------------------------------


def test_csv_import_writes_a_draft_and_publishes_only_on_accept(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    path = _csv(tmp_path / "people.csv", _rows(300))
    audit = Audit()
    done = import_source(settings, store, str(path), name="people", actor="op.wang", audit=audit)
    assert done.version == 1 and done.rows == 300 and not done.published
    assert "person_id" in done.flagged  # the scanner found the ID numbers by their check digits
    assert done.draft is not None and "person_id" in done.draft.read_text(encoding="utf-8")
    types = {c["name"]: c["type"] for c in done.schema}
    assert types["age"] == "Int64" and types["income"] == "Float64" and types["joined"] == "Date"
    assert types["person_id"] == "String" and types["area_code"] == "String"  # leading zero kept
    assert not _published(store, "people") and entries(settings, store) == []
    # The draft drops the ID numbers, so it validates as it is; the operator accepts it.
    assert done.draft_problems == ()
    meta = accept(settings, store, "people", actor="op.li", audit=audit)
    assert meta["version"] == 1 and meta["rows"] == 300 and meta["accepted_by"] == "op.li"
    assert audit.kinds == ["dataset-import", "dataset-accept"]
    assert audit.records[1][1]["actor"] == "op.li"
    stored = store.root / "people" / "people.parquet"
    frame = pl.read_parquet(stored)
    assert frame.height == 300 and frame["area_code"].unique().to_list() == ["0533"]
    assert frame["person_id"].to_list() == _rows(300)["person_id"]
    import hashlib

    assert hashlib.sha256(stored.read_bytes()).hexdigest() == done.sha256 == meta["sha256"]
    [entry] = entries(settings, store)
    assert entry["name"] == "people" and entry["rows"] == 300
    assert {c["name"] for c in entry["columns"]} == set(types)
    with pytest.raises(ConfigError, match="already accepted"):
        accept(settings, store, "people", actor="op.li")


def test_gb18030_csv_is_detected_or_named(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    data = _rows(50)
    path = _csv(tmp_path / "gb.csv", data, encoding="gb18030")
    done = import_source(settings, store, str(path), name="gb", actor="op.wang")
    [manifest] = manifests(store, "gb")
    assert manifest["encoding"] == "gb18030" and done.rows == 50
    frame = pl.read_parquet(store.root / "gb" / "versions" / "000001" / "data.parquet")
    assert frame["district"].to_list() == data["district"]
    again = import_source(
        settings, store, str(path), name="gb", actor="op.wang", encoding="GBK", new_version=True
    )
    assert again.version == 2 and again.sha256 == done.sha256


def test_parquet_with_policy_is_published_at_once(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    frame = pl.read_csv(_csv(tmp_path / "p.csv", _rows(80)), schema_overrides={"area_code": pl.String})
    frame = frame.with_columns(pl.col("joined").str.to_date())
    frame.write_parquet(tmp_path / "people.parquet")
    audit = Audit()
    done = import_source(
        settings,
        store,
        str(tmp_path / "people.parquet"),
        name="people",
        actor="op.wang",
        policy=_policy(tmp_path / "people.yaml"),
        audit=audit,
    )
    assert done.published and done.draft is None
    assert audit.kinds == ["dataset-import", "dataset-accept"]
    assert pl.read_parquet(store.root / "people" / "people.parquet").equals(frame)


def test_excel_streaming_and_types(
    settings: Settings, store: DirStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("登记")
    sheet.append(["code", "amount", "when", "note"])
    for i in range(40):
        # From row 30 on, 'code' holds a text value: the first batch said Int64, so it widens.
        sheet.append([f"A{i}" if i == 30 else i, i * 1.5, dt.datetime(2024, 1, 1 + i % 28), "=1+1"])
    book.save(tmp_path / "book.xlsx")
    monkeypatch.setattr(sources, "BATCH_ROWS", 10)
    done = import_source(settings, store, str(tmp_path / "book.xlsx"), name="book", actor="op.wang")
    types = {c["name"]: c["type"] for c in done.schema}
    assert types == {"code": "String", "amount": "Float64", "when": "Date", "note": "String"}
    frame = pl.read_parquet(store.root / "book" / "versions" / "000001" / "data.parquet")
    assert frame.height == 40 and frame["code"][31] == "31" and frame["code"][30] == "A30"
    # A formula is never evaluated: its cached value is read, and openpyxl wrote none.
    assert frame["note"].null_count() == 40


def test_typing_is_cautious() -> None:
    frame = pl.DataFrame(
        {
            "n": ["1", "-2", None],
            "zero": ["0532", "1", "2"],
            "long": ["1234567890123456", "1", "2"],
            "f": ["1.5", "2", "3e2"],
            "d": ["2024-01-31", "2024-02-29", None],
            "bad_d": ["2024-02-30", "2024-01-01", "2024-01-02"],
            "ts": ["2024-01-31 08:00:00", "2024-01-31T09:30:00", None],
            "empty": [None, None, None],
        }
    )
    kinds = infer(frame)
    assert kinds == {
        "n": "Int64",
        "zero": "String",
        "long": "String",
        "f": "Float64",
        "d": "Date",
        "bad_d": "String",
        "ts": "Datetime",
        "empty": "String",
    }
    typed = conform(frame, kinds)
    assert typed["n"].to_list() == [1, -2, None] and typed["ts"].dtype == pl.Datetime("us")


# --- versions -------------------------------------------------------------------------------


def test_versions(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    first = _csv(tmp_path / "v1.csv", _rows(20, seed=1))
    second = _csv(tmp_path / "v2.csv", _rows(30, seed=2))
    import_source(settings, store, str(first), name="people", actor="op.wang")
    accept(settings, store, "people", actor="op.li")
    with pytest.raises(ConfigError, match="--new-version") as refused:
        import_source(settings, store, str(second), name="people", actor="op.wang")
    assert refused.value.reason == "exists"
    with pytest.raises(ConfigError, match="no version yet"):
        import_source(settings, store, str(second), name="others", actor="op.wang", new_version=True)
    done = import_source(settings, store, str(second), name="people", actor="op.wang", new_version=True)
    assert done.version == 2
    # Until version 2 is accepted, readers still see version 1.
    assert pl.read_parquet(store.root / "people" / "people.parquet").height == 20
    accept(settings, store, "people", actor="op.li")
    assert pl.read_parquet(store.root / "people" / "people.parquet").height == 30
    old = store.root / "people" / "versions" / "000001"
    assert pl.read_parquet(old / "data.parquet").height == 20 and (old / "policy.yaml").exists()
    [entry] = entries(settings, store)
    assert entry["version"] == 2 and [v["rows"] for v in entry["versions"]] == [20, 30]


def test_generated_register_names_are_not_taken(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    store.put_bytes("population/meta.json", b'{"dataset": "population", "rows": 1}')
    with pytest.raises(ConfigError, match="generated register"):
        import_source(settings, store, str(_csv(tmp_path / "a.csv", _rows(5))), name="population", actor="o")


# --- bad input: a clear error and nothing published ------------------------------------------


def _nothing_written(store: DirStore) -> bool:
    return store.keys("") == []


def test_malformed_row_names_the_line(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        import_source(settings, store, str(path), name="bad", actor="op.wang")
    assert error.value.reason == "malformed-row"
    assert str(error.value).startswith(f"{path}:3: malformed CSV row: expected 3 fields, found 2")
    quoted = tmp_path / "quote.csv"
    quoted.write_text('a,b\n1,2\n3,"never closed\n5,6\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"quote\.csv:3: .*quoted field"):
        import_source(settings, store, str(quoted), name="bad", actor="op.wang")
    assert _nothing_written(store)


def test_unknown_encoding(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("name,city\nJosé,Zürich\n".encode("latin-1") + b"ok,\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"unknown text encoding.*line 2") as error:
        import_source(settings, store, str(path), name="latin", actor="op.wang")
    assert error.value.reason == "encoding" and "José" not in str(error.value)
    good = _csv(tmp_path / "ok.csv", _rows(5))
    with pytest.raises(ConfigError, match="utf-8 or gb18030") as named:
        import_source(settings, store, str(good), name="ok", actor="op.wang", encoding="klingon")
    assert named.value.reason == "encoding"
    with pytest.raises(ConfigError, match=r"not GB18030 \(line 2\)"):
        import_source(settings, store, str(path), name="latin", actor="op.wang", encoding="gb18030")
    assert _nothing_written(store)


def test_column_the_policy_does_not_mention(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    data = {**_rows(10), "extra": ["x"] * 10}
    path = _csv(tmp_path / "people.csv", data)
    with pytest.raises(PolicyError, match=r"people\.yaml:\d+: .*'extra'.* not classified"):
        import_source(
            settings, store, str(path), name="people", actor="o", policy=_policy(tmp_path / "people.yaml")
        )
    assert _nothing_written(store)


def test_policy_naming_a_column_the_data_lacks(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    data = _rows(10)
    del data["area_code"]
    path = _csv(tmp_path / "people.csv", data)
    with pytest.raises(PolicyError, match=r"people\.yaml:\d+: column 'area_code' is not in dataset"):
        import_source(
            settings, store, str(path), name="people", actor="o", policy=_policy(tmp_path / "people.yaml")
        )
    assert _nothing_written(store)


def test_policy_for_another_dataset_and_type_rules(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    path = _csv(tmp_path / "people.csv", _rows(10))
    with pytest.raises(PolicyError, match="not 'people'"):
        import_source(
            settings, store, str(path), name="people", actor="o", policy=_policy(tmp_path / "x.yaml", "other")
        )
    # A rule that needs a date on a text column is caught once the types are known.
    wrong = POLICY.replace("income:    {{level: general, pi: pi, rule: topcode, top: 5000}}", "income: "
                           "{{level: general, pi: pi, rule: generalise, to: month}}")  # fmt: skip
    with pytest.raises(PolicyError, match="income"):
        import_source(
            settings,
            store,
            str(path),
            name="people",
            actor="o",
            policy=_policy(tmp_path / "w.yaml", text=wrong),
        )
    assert _nothing_written(store)


def test_accept_refuses_a_draft_that_does_not_validate(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    path = _csv(tmp_path / "people.csv", _rows(40))
    done = import_source(settings, store, str(path), name="people", actor="op.wang")
    assert done.draft is not None
    done.draft.write_text(done.draft.read_text(encoding="utf-8") + "  ghost: {level: general, pi: none, "
                          "rule: keep}\n", encoding="utf-8")  # fmt: skip
    with pytest.raises(PolicyError, match="'ghost' is not in dataset"):
        accept(settings, store, "people", actor="op.li")
    assert not _published(store, "people")
    with pytest.raises(NotFound):
        accept(settings, store, "nobody", actor="op.li")


def test_bad_names_and_columns(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    path = _csv(tmp_path / "a.csv", _rows(5))
    with pytest.raises(LabError) as error:
        import_source(settings, store, str(path), name="../../x", actor="op.wang")
    assert "--name" in str(error.value) and "../../x" not in str(error.value)
    chinese = _csv(tmp_path / "zh.csv", {"姓名": ["王伟"], "年龄": ["30"]})
    with pytest.raises(ConfigError, match="column 1 has a name") as column:
        import_source(settings, store, str(chinese), name="zh", actor="op.wang")
    assert "姓名" not in str(column.value)
    with pytest.raises(NotFound):
        import_source(settings, store, str(tmp_path / "missing.csv"), name="m", actor="op.wang")
    assert _nothing_written(store)


# --- the command ------------------------------------------------------------------------------


def test_cli_import_and_accept(
    settings: Settings, store: DirStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    audit = Audit()
    monkeypatch.setenv("DATALAB_HOME", str(settings.home))
    monkeypatch.setattr(ingest_cli, "store_and_audit", lambda s: (store, audit))
    monkeypatch.setattr("lab.directory.Directory", Operators)  # the login is checked in Keycloak
    login_support.keys(monkeypatch)
    path = _csv(tmp_path / "people.csv", _rows(60))
    login_support.log_in(settings, "op.wang")
    assert cli.main(["dataset", "import", str(path), "--name", "people", "--as", "op.wang"]) == 0
    out = capsys.readouterr().out
    assert "version 1: 60 rows" in out and "datalab dataset accept people" in out
    login_support.log_in(settings, "op.li")  # a second operator accepts
    assert cli.main(["dataset", "accept", "people"]) == 0
    assert "published" in capsys.readouterr().out
    assert audit.kinds == ["dataset-import", "dataset-accept"]
    login_support.log_in(settings, "op.wang")
    assert cli.main(["dataset", "import", str(path), "--name", "people"]) == 1
    assert "--new-version" in capsys.readouterr().err


def test_parquet_output_is_row_grouped(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    path = _csv(tmp_path / "p.csv", _rows(10))
    import_source(settings, store, str(path), name="p", actor="o")
    meta = pq.ParquetFile(store.root / "p" / "versions" / "000001" / "data.parquet").metadata
    assert meta.num_rows == 10 and meta.num_row_groups == 1
