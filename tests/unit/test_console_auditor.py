"""The auditor console in-process: a refused filter is a 400 page, a long value a short cell.

The console runs over a stand-in for :class:`~lab.services.governance.Governance` (its
audit search answers a fixed record) and a stand-in session store holding one auditor.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lab import validate
from lab.gateway import console as pages
from lab.gateway import console_auditor
from lab.gateway.auth import Caller
from lab.gateway.sessions import Session

pytestmark = pytest.mark.unit
LONG = "x" * 100_000


def _record(seq: int, dataset: str = LONG, actor: str = "ana") -> dict[str, Any]:
    return {
        "seq": seq,
        "at": "2026-12-02T12:00:00+00:00",
        "actor": actor,
        "organisation": "org-a",
        "dataset": dataset,
        "kind": "dp-query",
        "details": {"outcome": "refused", "note": LONG if dataset == LONG else "n"},
        "hash": f"h{seq}",
    }


class Gov:
    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.searched: list[dict[str, Any]] = []
        self.pages: list[tuple[int, int]] = []
        self.exported: list[dict[str, Any]] = []
        self.records = records if records is not None else [_record(7)]
        self.flag_list: list[dict[str, Any]] = []
        self.points: list[dict[str, Any]] = []

    def search(
        self, who: Caller, filters: dict[str, Any], limit: int, offset: int = 0
    ) -> list[dict[str, Any]]:
        self.searched.append(filters)
        self.pages.append((offset, limit))
        return [dict(r) for r in self.records[offset : offset + limit]]

    def search_count(self, who: Caller, filters: dict[str, Any]) -> int:
        return len(self.records)

    def search_export(self, who: Caller, filters: dict[str, Any]) -> Any:
        self.exported.append(filters)
        return iter([dict(r) for r in self.records])

    def budget_caps(self, who: Caller, keys: Any) -> dict[str, Any]:
        return {
            f"{o} / {d}": {"cap": 6.0, "window": "rolling 365 days / 滚动 365 天", "granted": 2.0}
            for o, d in keys
        }

    def verify(self, who: Caller) -> dict[str, Any]:
        return {"ok": True, "message": "ok"}

    def spending(self, who: Caller, period: str, zone: Any = None) -> list[dict[str, Any]]:
        return self.points

    def flags(self, who: Caller) -> list[dict[str, Any]]:
        return [dict(f) for f in self.flag_list]

    def risk_reports(self, who: Caller) -> list[dict[str, Any]]:
        return []

    def package(self, who: Caller, since: Any, until: Any) -> dict[str, Any]:
        return {"since": str(since), "until": str(until)}


@pytest.fixture
def client() -> tuple[TestClient, Gov]:
    return serve(Gov())


def serve(gov: Gov) -> tuple[TestClient, Gov]:
    session = Session(Caller("aud", None, frozenset({"auditor"})), 2**40, "csrf")
    sessions = SimpleNamespace(
        read=lambda cookie: session, signer=SimpleNamespace(loads=lambda c: None), cookie_path="/"
    )
    console = pages.Console(gov, sessions, "/console")  # type: ignore[arg-type]
    app = FastAPI()
    pages.install(app, console)
    app.include_router(pages.router(console))
    app.include_router(console_auditor.router(console))
    return TestClient(app, raise_server_exceptions=False), gov


@pytest.mark.parametrize("since", ["2026-13-45", "yesterday", "2026-02-30T10:00"])
@pytest.mark.parametrize("path", ["/console/auditor", "/console/auditor/package"])
def test_a_malformed_date_is_a_400_page_that_keeps_the_form(
    client: tuple[TestClient, Gov], path: str, since: str
) -> None:
    app, gov = client
    answer = app.get(path, params={"since": since, "actor": "ana"})
    assert answer.status_code == 400
    page = answer.text
    assert 'id="search-error"' in page
    assert "ISO 8601" in page and "日期时间" in page
    assert f'name="since" value="{since}"' in page and 'name="actor" value="ana"' in page
    assert gov.searched == []


@pytest.mark.parametrize("path", ["/console/auditor", "/console/auditor/package"])
def test_a_reversed_range_is_refused_naming_both_dates(client: tuple[TestClient, Gov], path: str) -> None:
    app, gov = client
    answer = app.get(path, params={"since": "2026-12-03T10:00", "until": "2026-12-01T09:30"})
    assert answer.status_code == 400
    assert "2026-12-03 10:00:00 (Asia/Shanghai)" in answer.text
    assert "2026-12-01 09:30:00 (Asia/Shanghai)" in answer.text
    assert "swap" in answer.text and "晚于" in answer.text
    assert gov.searched == []


def test_a_good_range_searches_and_packages(client: tuple[TestClient, Gov]) -> None:
    app, gov = client
    params = {"since": "2026-12-01T09:30", "until": "2026-12-03T10:00"}
    assert app.get("/console/auditor", params=params).status_code == 200
    assert gov.searched and gov.searched[0]["since"].isoformat() == "2026-12-01T01:30:00+00:00"
    answer = app.get("/console/auditor/package", params=params)
    assert answer.status_code == 200 and "attachment" in answer.headers["content-disposition"]


def test_the_search_use_case_refuses_a_reversed_range_too() -> None:
    later, earlier = validate.moment("2026-12-03T00:00Z", "s"), validate.moment("2026-12-01T00:00Z", "u")
    with pytest.raises(validate.InvalidInput, match="swap"):
        validate.span(later, earlier)
    assert validate.span(earlier, later) == (earlier, later)


def test_a_100000_character_value_renders_as_a_bounded_wrapping_cell(client: tuple[TestClient, Gov]) -> None:
    app, _ = client
    page = app.get("/console/auditor").text
    assert len(page) < 20_000  # the page does not carry the value 100,000 characters long
    row = re.search(r'<tr class="record.*?</tr>', page, flags=re.S)
    assert row is not None
    for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), flags=re.S):
        assert len(re.sub(r"<[^>]+>", "", cell)) <= 400
    title = re.search(r'title="(x+…)"', row.group(0))
    assert title is not None and len(title.group(1)) == pages.TITLE_CHARS  # the longer value, capped
    assert "overflow-wrap: anywhere" in page  # and the cell wraps


def test_the_search_pages_through_every_record_without_a_cap() -> None:
    app, gov = serve(Gov([_record(n, dataset="population") for n in range(1000, 0, -1)]))
    page = app.get("/console/auditor", params={"size": "200", "page": "3", "actor": "ana"})
    assert page.status_code == 200
    assert gov.pages[-1] == (400, 200)  # the store is asked for one page, never for everything
    assert len(re.findall(r'<tr class="record', page.text)) == 200
    assert "第 3 / 5 页 · 共 1000 条（显示第 401–600 条）" in page.text
    nxt = re.search(r'<a class="next" href="([^"]+)"', page.text)
    assert nxt is not None and "page=4" in nxt[1] and "actor=ana" in nxt[1]  # the filters stay
    last = app.get("/console/auditor", params={"size": "200", "page": "5"}).text
    assert 'data-seq="1"' in last and '<a class="next"' not in last


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("page", "-1"),
        ("page", "0"),
        ("page", str(10**30)),
        ("page", "二"),
        ("page", "1 OR 1=1"),
        ("size", "1000000000"),
        ("size", "7"),
        ("size", "' OR '1'='1"),
        ("size", "２５"),
    ],
)
def test_a_bad_page_size_or_filter_is_a_400_page(
    client: tuple[TestClient, Gov], name: str, value: str
) -> None:
    app, gov = client
    answer = app.get("/console/auditor", params={name: value})
    assert answer.status_code == 400 and 'id="search-error"' in answer.text
    assert name in answer.text  # says which parameter
    assert gov.pages == []  # nothing was read


def test_the_whole_result_downloads_as_csv_in_the_lab_zone_and_formulas_stay_text() -> None:
    records = [_record(n, dataset="population") for n in range(1500, 0, -1)]
    records[0]["actor"] = "=HYPERLINK(evil)"
    app, gov = serve(Gov(records))
    answer = app.get("/console/auditor/records.csv", params={"dataset": "population"})
    assert answer.status_code == 200 and "attachment" in answer.headers["content-disposition"]
    assert answer.headers["content-type"].startswith("text/csv")
    lines = answer.text.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("seq,time (Asia/Shanghai),actor")
    assert len(lines) == 1 + 1500  # every record, no 300-row cap
    assert "'=HYPERLINK(evil)" in lines[1]
    assert "2026-12-02T20:00:00+08:00" in lines[1]
    assert gov.exported and gov.exported[0]["dataset"] == "population"
    bad = app.get("/console/auditor/records.csv", params={"since": "yesterday"})
    assert bad.status_code == 400 and len(gov.exported) == 1


def test_each_flag_links_to_the_search_for_its_records(client: tuple[TestClient, Gov]) -> None:
    app, gov = client
    gov.flag_list = [
        {
            "rule": "burst",
            "organisation": "org-a",
            "actor": "ana",
            "dataset": "population",
            "count": 12,
            "first": "2026-12-02T12:00:00+00:00",
            "last": "2026-12-02T12:30:00+00:00",
            "message": "12 queries",
            "records": [1, 2, 3],
        }
    ]
    page = app.get("/console/auditor").text
    link = re.search(r'<a class="flag-records" href="([^"]+)"', page)
    assert link is not None
    url = link[1].replace("&amp;", "&")
    assert "organisation=org-a" in url and "actor=ana" in url and "kind=dp-query" in url
    assert "since=2026-12-02T20%3A00%3A00" in url and "until=2026-12-02T20%3A30%3A01" in url
    followed = app.get(url.split("#")[0])
    assert followed.status_code == 200
    assert followed.text.count('value="2026-12-02T20:00:00"') == 1  # the search form, pre-filled
    assert gov.searched[-1]["since"].isoformat() == "2026-12-02T12:00:00+00:00"


def test_the_budget_chart_stays_readable_with_many_organisations(client: tuple[TestClient, Gov]) -> None:
    app, gov = client
    gov.points = [
        {"period": f"2026-12-0{d}", "organisation": f"org-{n:02d}", "dataset": "population", "epsilon": 0.5}
        for n in range(30)
        for d in (1, 2, 3)
    ]
    page = app.get("/console/auditor").text
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count('class="series"') == 30 and svg.count('<g class="row"') == 30
    assert 'height="' in svg and int(re.search(r'height="(\d+)"', svg)[1]) >= 30 * 30  # type: ignore[index]
    assert svg.count("1.5 / 6 上限") == 30  # value and cap written on every row
    assert "(Asia/Shanghai)" in svg
    rows = re.findall(r'<tr class="budget-row[^"]*" data-series="([^"]+)"', page)
    assert len(rows) == 30 and "org-29 / population" in rows
    assert "滚动 365 天" in page
