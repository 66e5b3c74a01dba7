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
from lab.gateway.auth import Caller
from lab.gateway.sessions import Session

pytestmark = pytest.mark.unit
LONG = "x" * 100_000


class Gov:
    def __init__(self) -> None:
        self.searched: list[dict[str, Any]] = []

    def search(self, who: Caller, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        self.searched.append(filters)
        return [
            {
                "seq": 7,
                "at": "2026-12-02T12:00:00+00:00",
                "actor": "ana",
                "organisation": "org-a",
                "dataset": LONG,
                "kind": "dp-query",
                "details": {"outcome": "refused", "note": LONG},
            }
        ]

    def verify(self, who: Caller) -> dict[str, Any]:
        return {"ok": True, "message": "ok"}

    def spending(self, who: Caller, period: str, zone: Any = None) -> list[dict[str, Any]]:
        return []

    def flags(self, who: Caller) -> list[dict[str, Any]]:
        return []

    def risk_reports(self, who: Caller) -> list[dict[str, Any]]:
        return []

    def package(self, who: Caller, since: Any, until: Any) -> dict[str, Any]:
        return {"since": str(since), "until": str(until)}


@pytest.fixture
def client() -> tuple[TestClient, Gov]:
    gov = Gov()
    session = Session(Caller("aud", None, frozenset({"auditor"})), 2**40, "csrf")
    sessions = SimpleNamespace(
        read=lambda cookie: session, signer=SimpleNamespace(loads=lambda c: None), cookie_path="/"
    )
    console = pages.Console(gov, sessions, "/console")  # type: ignore[arg-type]
    app = FastAPI()
    pages.install(app, console)
    app.include_router(pages.router(console))
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
