"""``datalab``: unknown names are errors that say what to do, ``--json`` documents, ``policy check``.

The ledger is a real SQLite file in a temporary state directory; MinIO's raw bucket is a
directory store (``lab.ingest.DirStore``) at the boundary.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lab.ingest import DirStore
from lab.ledger import Ledger
from lab.registry.organisations import OrgSpec, Registry
from lab.settings import Settings, load_settings
from lab.suggest import did_you_mean
from tests.unit import login_support

pytestmark = pytest.mark.unit
cli = importlib.import_module("lab.cli.main")
REPO = Path(__file__).resolve().parents[2]
CJK = re.compile(r"[\u4e00-\u9fff]")
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
ORG = OrgSpec(
    "qilu-energy", "齐鲁能源", "Qilu Energy", "91370102MA3Q8L4E7K", "enterprise", "Data office / 数据办"
)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    settings = load_settings({"DATALAB_HOME": str(tmp_path / "home"), "DATALAB_POLICIES": str(policies)})
    monkeypatch.setattr(cli, "load_settings", lambda: settings)
    monkeypatch.setattr("lab.registry.datasets.raw_store", lambda _: DirStore(tmp_path / "raw"))
    return settings


@pytest.fixture
def grant_id(settings: Settings) -> int:
    with Ledger(settings.ledger_url, anchor_path=settings.ledger_anchor) as book:
        Registry(book).add(ORG, by="op.wang")
        grant = book.create_grant(
            organisation=ORG.id,
            dataset="population",
            purpose="energy poverty study",
            modes=["dp"],
            epsilon=1.0,
            delta=1e-6,
            expires_at=book.now() + timedelta(days=30),
            approved_by="op.wang",
        )
        return grant.id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _all_commands(parser: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    import argparse

    found: dict[tuple[str, ...], Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[(*path, name)] = child
                found.update(_all_commands(child, (*path, name)))
    return found


def bilingual(text: str) -> bool:
    return bool(CJK.search(text)) and bool(re.search(r"[A-Za-z]{3}", text))


def test_did_you_mean_names_the_closest_in_each_language() -> None:
    assert did_you_mean("populaton", ["population", "utility"]) == (
        " Did you mean 'population'?",
        "您是不是想用 'population'？",
    )
    assert did_you_mean("zzz", ["population"]) == ("", "")


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["grant", "list", "--org", "qilu-enrgy"], "Did you mean 'qilu-energy'?"),
        (["org", "show", "qilu-enrgy"], "Did you mean 'qilu-energy'?"),
        (["grant", "revoke", "999", "--as", "op.wang", "--reason", "x"], "there is no grant 999"),
        (["grant", "show", "999"], "there is no grant 999"),
        (["application", "approve", "999", "--as", "op.wang"], "there is no application 999"),
        (["application", "show", "999"], "there is no application 999"),
        (["extract", "list", "populaton", "--org", "qilu-energy"], "Did you mean 'population'?"),
        (["extract", "list", "population", "--org", "nope"], "Unknown organisation 'nope'"),
        (
            [
                "budget",
                "agreement",
                "set",
                "qilu-energy",
                "utilty",
                "--epsilon",
                "1",
                "--as",
                "op.wang",
                "--reason",
                "x",
            ],
            "Did you mean 'utility'?",
        ),  # fmt: skip
    ],
)
def test_an_unknown_name_or_id_is_an_error_that_says_what_to_do(
    argv: list[str], wanted: str, settings: Settings, grant_id: int, capsys: Any, monkeypatch: Any
) -> None:
    from tests.unit.ingest_support import Operators

    monkeypatch.setattr("lab.directory.Directory", Operators)
    login_support.keys(monkeypatch)
    login_support.log_in(settings, "op.wang")
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert wanted in err and bilingual(err), err
    assert "list" in err  # says where to look


def test_grant_and_application_lists_are_json_with_offset_times(
    settings: Settings, grant_id: int, capsys: Any
) -> None:
    code, out, _ = run(capsys, "grant", "list", "--org", ORG.id, "--json")
    grants = json.loads(out)
    assert code == 0 and [g["id"] for g in grants] == [grant_id]
    assert {"id", "organisation", "dataset", "status", "expires_at", "budget"} <= set(grants[0])
    assert ISO_WITH_OFFSET.match(grants[0]["expires_at"]) and ISO_WITH_OFFSET.match(grants[0]["created_at"])
    code, out, _ = run(capsys, "grant", "show", str(grant_id), "--json")
    assert code == 0 and json.loads(out)["budget"]["epsilon"] == 1.0
    assert run(capsys, "application", "list", "--json")[:2] == (0, "[]\n")
    code, out, _ = run(capsys, "org", "list", "--json")
    assert code == 0 and ISO_WITH_OFFSET.match(json.loads(out)[0]["created_at"])


def test_every_list_and_show_command_takes_json() -> None:
    commands = _all_commands(cli.build_parser())
    readers = {path: p for path, p in commands.items() if path[-1] in {"list", "show", "check", "verify"}}
    assert len(readers) >= 9
    for path, parser in readers.items():
        assert any("--json" in a.option_strings for a in parser._actions), path


def _negative(settings: Settings, *entries: tuple[str, str]) -> None:
    lines = ["entries:"] + [f"  - {{dataset: '{d}', column: {c}, reason: test}}" for d, c in entries]
    (settings.policies_dir / "negative-list.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_policy_check_finds_a_misspelt_dataset_or_column_in_the_negative_list(
    settings: Settings, capsys: Any
) -> None:
    _negative(settings, ("utilty", "supply_node"), ("utility", "suply_node"), ("*", "phone"))
    code, out, err = run(capsys, "policy", "check")
    assert code == 1 and out == ""
    assert "negative list names dataset 'utilty'" in err and "Did you mean 'utility'?" in err
    assert "column 'suply_node'" in err and "Did you mean 'supply_node'?" in err
    assert "负面清单" in err
    code, out, _ = run(capsys, "policy", "check", "--json")
    body = json.loads(out)
    assert code == 1 and not body["ok"] and len(body["problems"]) == 2
    assert body["problems"][0]["path"].endswith("negative-list.yaml") and body["problems"][0]["line"] > 0


def test_policy_check_passes_the_shipped_policies(settings: Settings, capsys: Any) -> None:
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0 and "are valid" in out and "有效" in out


def _import(settings: Settings, store: DirStore, tmp_path: Path, policy_text: str | None) -> None:
    from lab.ingest import accept, import_source
    from tests.unit.ingest_support import Audit, rows, write_csv

    source = write_csv(tmp_path / "people.csv", rows(40))
    import_source(settings, store, str(source), name="people", actor="op.wang", audit=Audit())
    policy = tmp_path / "people.yaml"
    from tests.unit.test_ingest import POLICY

    policy.write_text(POLICY.format(name="people"), encoding="utf-8")
    accept(settings, store, "people", actor="op.li", policy=policy, audit=Audit())
    if policy_text is not None:  # the stored policy changed afterwards (by hand, in the bucket)
        meta = json.loads(store.get_bytes("people/meta.json") or b"{}")
        key = f"people/versions/{int(meta['version']):06d}/policy.yaml"
        store.put_bytes(key, policy_text.encode())


def test_policy_check_reads_the_accepted_imports(settings: Settings, tmp_path: Path, capsys: Any) -> None:
    store = DirStore(tmp_path / "raw")
    _import(settings, store, tmp_path, None)
    _negative(settings, ("people", "incme"))
    code, _, err = run(capsys, "policy", "check")
    assert code == 1 and "column 'incme'" in err and "Did you mean 'income'?" in err
    _negative(settings, ("people", "income"))  # now named: the accepted rule (topcode) would leak it
    code, _, err = run(capsys, "policy", "check")
    assert code == 1 and "people/versions/000001/policy.yaml" in err and "income" in err
    _negative(settings, ("*", "phone"))
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0 and "1 accepted import(s)" in out


def test_policy_check_reports_an_accepted_import_that_no_longer_validates(
    settings: Settings, tmp_path: Path, capsys: Any
) -> None:
    store = DirStore(tmp_path / "raw")
    _import(settings, store, tmp_path, "dataset: people\nrelease_modes: [masked]\ncolumns: {}\n")
    code, _, err = run(capsys, "policy", "check")
    assert code == 1 and "people/versions/" in err and "policy.yaml" in err
