"""The data catalogue (数据目录): policy catalogue sections, entries of generated and imported
registers, search, who may see which organisations hold grants, and policies that follow
acceptances while the gateway runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import access
from lab.errors import LabError, NotFound, PolicyError
from lab.gateway.auth import Caller
from lab.ingest import DirStore, accept, import_source
from lab.ledger import Ledger
from lab.policy import load_policies, load_policy_bytes
from lab.registry import datasets, listing
from lab.services import governance
from lab.settings import Settings, load_settings
from tests.unit.ingest_support import rows as _rows
from tests.unit.ingest_support import write_csv as _csv
from tests.unit.test_ledger import make_grant

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = """\
catalogue:
  title: {zh: 居民名册, en: Resident list}
  owner: 张店区民政局 (Zhangdian Civil Affairs Bureau)
  update_frequency: quarterly
  keywords: [民政, civil affairs]
"""
BODY = """\
release_modes: [dp]
privacy_unit: {column: person_id, max_rows: 1}
columns:
  person_id: {level: important, pi: sensitive, identifier: direct, rule: drop}
  district: {level: general, pi: pi, rule: keep}
  age: {level: general, pi: pi, rule: keep}
  income: {level: important, pi: pi, rule: drop}
  joined: {level: general, pi: pi, rule: keep}
  area_code: {level: general, pi: none, rule: keep}
"""
HEAD = "dataset: people\ndescription: Residents of one district, imported from the bureau's CSV.\n"
PEOPLE_POLICY = HEAD + CATALOGUE + BODY
COLUMNS = ["person_id", "district", "age", "income", "joined", "area_code"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"DATALAB_HOME": str(tmp_path / "home")})


@pytest.fixture
def store(tmp_path: Path) -> DirStore:
    return DirStore(tmp_path / "raw")


def _import_people(settings: Settings, store: DirStore, tmp_path: Path, rows: int = 40) -> None:
    policy = tmp_path / "people.yaml"
    policy.write_text(PEOPLE_POLICY, encoding="utf-8")
    source = _csv(tmp_path / f"people-{rows}.csv", _rows(rows))
    new = bool(store.keys("people/versions/"))
    import_source(
        settings, store, str(source), name="people", actor="op.wang", policy=str(policy), new_version=new
    )


def _generated(store: DirStore) -> None:
    meta = {
        "dataset": "population",
        "rows": 1000,
        "sha256": "ab" * 32,
        "updated_at": "2026-12-01T02:00:00+00:00",
    }
    store.put_bytes("population/meta.json", json.dumps(meta).encode())


# --- the policy's catalogue section ------------------------------------------------------


def test_every_demo_policy_names_title_owner_and_frequency() -> None:
    for name, policy in load_policies(REPO / "policies").items():
        shown = policy.catalogue.to_dict(name)
        assert shown["title"]["zh"] != name and shown["title"]["en"] != name, name
        assert shown["owner"] and shown["update_frequency_label"] is not None, name
        assert policy.description, name


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ("catalogue: {owner: x, colour: red}", ("unknown key 'colour'", "未知的键")),
        ("catalogue: {update_frequency: hourly}", ("unknown update frequency 'hourly'", "monthly")),
        ("catalogue: {title: {zh: 甲, fr: A}}", ("title has keys zh and en",)),
        ("catalogue: [a, b]", ("catalogue must be a mapping",)),
        ("catalogue: {owner: " + "x" * 300 + "}", ("at most 200 characters",)),
    ],
)
def test_a_malformed_catalogue_section_is_named_with_its_line(section: str, words: tuple[str, ...]) -> None:
    text = HEAD + section + "\n" + BODY
    with pytest.raises(PolicyError) as caught:
        load_policy_bytes(text.encode(), "people.yaml", COLUMNS)
    message = str(caught.value)
    assert message.startswith("people.yaml:3:"), message  # the line of the section
    for word in words:
        assert word in message


# --- entries and search ------------------------------------------------------------------


def test_generated_and_imported_registers_are_listed_with_versions_and_holders(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    _generated(store)
    _import_people(settings, store, tmp_path, rows=40)
    _import_people(settings, store, tmp_path, rows=55)  # version 2, published at once
    policies = datasets.policies(settings, store)
    assert {"population", "people", "utility"} <= set(policies)
    entries = listing.catalogue(policies, store, {"people": ["acme", "zibo-uni"]})
    people = listing.find(entries, "people")
    assert people["title"] == {"zh": "居民名册", "en": "Resident list"}
    assert people["owner"].startswith("张店区民政局") and people["update_frequency_label"]["zh"] == "每季度"
    assert people["source"] == "import" and people["version"] == 2 and people["rows"] == 55
    assert [(v["version"], v["rows"], v["published"]) for v in people["versions"]] == [
        (1, 40, False),
        (2, 55, True),
    ]
    assert people["privacy_unit"] == {"column": "person_id", "max_rows": 1} and people["release_modes"] == [
        "dp"
    ]
    columns = {c["name"]: c for c in people["columns"]}
    assert columns["person_id"]["identifier"] == "direct" and columns["person_id"]["pi"] == "sensitive"
    assert people["holders"] == ["acme", "zibo-uni"]
    population = listing.find(entries, "population")
    assert population["source"] == "generated" and population["rows"] == 1000 and population["k"] == 5
    assert {"sex", "district"} <= set(population["quasi_identifiers"])
    assert [c["identifier"] for c in population["columns"] if c["name"] == "district"] == ["quasi"]
    utility = listing.find(entries, "utility")  # a policy without data yet
    assert (
        utility["rows"] is None and utility["versions"] == [] and "supply_node" in utility["negative_listed"]
    )
    with pytest.raises(NotFound, match="known: .*people"):
        listing.find(entries, "peopel")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("民政", ["people"]),  # a keyword in 中文
        ("RESIDENT list", ["people"]),  # a title in English, any case
        ("公安局", ["population"]),  # the owner department
        ("supply_node", ["utility"]),  # a column name
        ("household electricity", ["utility"]),  # every word must match
        ("", ["legal_entity", "people", "population", "social_insurance", "utility"]),
        ("no such thing", []),
    ],
)
def test_search_matches_names_titles_owners_keywords_and_columns(
    settings: Settings, store: DirStore, tmp_path: Path, text: str, found: list[str]
) -> None:
    _import_people(settings, store, tmp_path)
    entries = listing.catalogue(datasets.policies(settings, store), store)
    assert [e["name"] for e in listing.search(entries, text)] == found


# --- what each role sees -----------------------------------------------------------------


@pytest.fixture
def gov(
    settings: Settings, store: DirStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    monkeypatch.setattr(governance, "raw_store", lambda _settings: store)  # the raw bucket as a directory
    _import_people(settings, store, tmp_path)
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", anchor_path=tmp_path / "anchor") as ledger:
        make_grant(ledger, organisation="acme", dataset="people")
        make_grant(ledger, organisation="rival-bank", dataset="people")
        make_grant(ledger, organisation="rival-bank", dataset="population")
        yield governance.Governance(
            settings,
            ledger,
            datasets.policies(settings, store),
            access.Provisioner(settings, ledger, apply=lambda *a, **k: None),
        )


@pytest.mark.security
def test_an_analyst_cannot_learn_which_other_organisations_hold_grants(gov: Any) -> None:
    """Attack: an analyst of acme reads the catalogue (API and console use the same call) to
    learn which competitors were granted which registers."""
    analyst = Caller("ana.acme", "acme", frozenset({"analyst"}))
    entries = gov.catalogue(analyst)
    assert entries and all("holders" not in e for e in entries)
    assert "rival-bank" not in json.dumps(entries, ensure_ascii=False)
    held = {e["name"]: e["held"] for e in entries}
    assert held["people"] is True and held["population"] is False  # only its own organisation's
    assert "rival-bank" not in json.dumps(gov.catalogue_entry(analyst, "people"), ensure_ascii=False)
    operator = Caller("op.li", None, frozenset({"operator"}))
    assert listing.find(gov.catalogue(operator), "people")["holders"] == ["acme", "rival-bank"]
    auditor = Caller("au.zhao", None, frozenset({"auditor"}))
    assert listing.find(gov.catalogue(auditor), "population")["holders"] == ["rival-bank"]


def test_a_caller_without_a_lab_role_is_refused_and_a_bad_search_is_named(gov: Any) -> None:
    with pytest.raises(LabError, match="needs the role"):
        gov.catalogue(Caller("nobody", None, frozenset()))
    analyst = Caller("ana.acme", "acme", frozenset({"analyst"}))
    with pytest.raises(LabError, match="q.*200") as caught:
        gov.catalogue(analyst, "x" * 201)
    assert "最多" in caught.value.message
    assert [e["name"] for e in gov.catalogue(analyst, "民政")] == ["people"]


# --- policies that follow acceptances ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_register_accepted_while_the_gateway_runs_is_known_without_a_restart(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    clock, loads = Clock(), []

    def load() -> dict[str, Any]:
        loads.append(clock.now)
        return datasets.policies(settings, store)

    live = datasets.LivePolicies(load, clock=clock)
    seen: list[set[str]] = []
    live.on_load = lambda found: seen.append(set(found))
    assert "people" not in live and loads == [0.0]
    source = _csv(tmp_path / "later.csv", _rows(30))
    import_source(settings, store, str(source), name="people", actor="op.wang")  # a draft: not yet
    clock.now = 5.0
    assert live.get("people") is None and len(loads) == 2  # a miss reads again ...
    clock.now = 6.0
    assert live.get("people") is None and len(loads) == 2  # ... at most every MISS_SECONDS
    policy = tmp_path / "people.yaml"
    policy.write_text(PEOPLE_POLICY, encoding="utf-8")
    accept(settings, store, "people", actor="op.li", policy=str(policy))
    clock.now = 8.0
    assert live["people"].dataset == "people" and "people" in seen[-1]  # on_load saw it first
    assert "people" in list(live)


def _accepted_after_first_read(
    settings: Settings, store: DirStore, tmp_path: Path, clock: Clock
) -> datasets.LivePolicies:
    """Live policies read once, then "people" imported and accepted behind their back."""
    live = datasets.LivePolicies(lambda: datasets.policies(settings, store), clock=clock)
    import_source(settings, store, str(_csv(tmp_path / "p.csv", _rows(30))), name="people", actor="op.wang")
    policy = tmp_path / "people.yaml"
    policy.write_text(PEOPLE_POLICY, encoding="utf-8")
    accept(settings, store, "people", actor="op.li", policy=str(policy))
    return live


def test_an_acceptance_in_the_gateway_is_listed_at_once_not_after_the_refresh_period(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    clock = Clock()
    live = _accepted_after_first_read(settings, store, tmp_path, clock)
    assert "people" not in list(live)  # iteration alone waits for REFRESH_SECONDS
    live.refresh()  # what the console's import page calls after publishing
    assert "people" in list(live)


def test_a_register_accepted_elsewhere_is_in_the_next_catalogue_view(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    """Accepted with the CLI (another process): the catalogue page lists it on the next view
    after MISS_SECONDS, not only after the gateway's REFRESH_SECONDS."""
    clock = Clock()
    live = _accepted_after_first_read(settings, store, tmp_path, clock)
    assert "people" not in datasets.current(live)  # younger than MISS_SECONDS: served as it is
    clock.now = datasets.MISS_SECONDS
    assert "people" in datasets.current(live)


def test_a_stored_policy_that_no_longer_validates_is_left_out_and_the_rest_served(
    settings: Settings, store: DirStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack (an insider with write access to the raw bucket, or a policy accepted under older
    rules): the stored policy of an imported register is changed to release its ID numbers in
    masked extracts. The gateway validates it again and leaves the register out."""
    _import_people(settings, store, tmp_path)
    key = "people/versions/000001/policy.yaml"
    tampered = PEOPLE_POLICY.replace("release_modes: [dp]", "release_modes: [masked, dp]").replace(
        "identifier: direct, rule: drop}", "identifier: direct, rule: keep}"
    )
    store.put_bytes(key, tampered.encode())
    found = datasets.policies(settings, store)
    assert "people" not in found and "population" in found
    assert "people left out" in caplog.text and "person_id" not in caplog.text  # named, content not logged


def test_live_policies_keep_the_last_good_set_when_a_read_fails(settings: Settings, store: DirStore) -> None:
    clock, fail = Clock(), [False]

    def load() -> dict[str, Any]:
        if fail[0]:
            raise OSError("raw bucket unreachable")
        return datasets.policies(settings, store)

    live = datasets.LivePolicies(load, clock=clock)
    fail[0], clock.now = True, datasets.REFRESH_SECONDS + 1
    assert live["population"].dataset == "population" and len(live) == len(list(live))


@pytest.mark.parametrize(
    ("lang", "words"),
    [("zh", ("居民名册", "每季度", "敏感个人信息")), ("en", ("Resident list", "quarterly", "sensitive PI"))],
)
def test_the_console_catalogue_renders_in_both_languages_and_hides_holders_from_analysts(
    settings: Settings, store: DirStore, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    from lab.gateway import console
    from lab.gateway.i18n import translator

    _import_people(settings, store, tmp_path)
    entries = listing.catalogue(datasets.policies(settings, store), store, {"people": ["rival-bank"]})
    context = {"t": translator(lang), "lang": lang, "base": "/gateway/console"}
    macros = console._TEMPLATES.get_template("_macros.html").make_module(context)
    operator = str(macros.catalogue_table(entries, "", "operator", True))  # type: ignore[attr-defined]
    assert all(w in operator for w in words) and "rival-bank" in operator
    seen = [listing.view(e, roles={"analyst"}, org="acme") for e in entries]
    analyst = str(macros.catalogue_table(seen, "民政", "analyst", False))  # type: ignore[attr-defined]
    assert "rival-bank" not in analyst and "/gateway/console/analyst?dataset=people#apply" in analyst
    assert 'value="民政"' in analyst and "(Asia/Shanghai)" in analyst
