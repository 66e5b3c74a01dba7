"""The airlock releases exactly what the gateway released, never uploaded bytes that contain it.

The hostile analyst (threat model: "one way out") runs one genuine DP query with a tiny
ε and adds 2,000 rows of the organisation's masked extract to the result's JSON, at the
top level, inside the keys the gateway sends along, or next to a bare digest, hoping the
airlock recognises the result and releases the whole file. Each attempt must be held for
review, its bytes never downloadable, and nothing spent, granted or unrecorded. The plain
result is released, and what downloads is the canonical form regenerated from the copy
the gateway kept, not the uploaded bytes.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import polars as pl
import pytest

from lab import extracts, storage
from lab.dp.query import canonical_json
from lab.extracts import ledger as open_ledger
from lab.ledger import Kind, Ledger
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct

pytestmark = [pytest.mark.integration, pytest.mark.security]

ORG, DATASET, ANALYST = "qilu-energy", "population", "li.na"
QUERY = {
    "dataset": DATASET,
    "aggregate": {"kind": "count"},
    "epsilon": 0.001,
    "group_by": {"columns": ["district"]},
}
SMUGGLED_ROWS = 2000


def _api(settings: Settings) -> str:
    return f"{settings.url('gateway')}/services/gateway/api"


def _h(settings: Settings, user: str = ANALYST) -> dict[str, str]:
    return {"Authorization": f"Bearer {kct.access_token(settings, user)}"}


@pytest.fixture(scope="module")
def lab(lab_stack: Settings) -> Iterator[Settings]:
    kct.ensure(lab_stack)
    yield lab_stack


@pytest.fixture(scope="module")
def book(lab: Settings) -> Iterator[Ledger]:
    with open_ledger(lab) as ledger:
        yield ledger


@pytest.fixture(scope="module")
def extract_rows(lab: Settings) -> list[dict[str, Any]]:
    """2,000 rows of the organisation's masked extract, read with the analyst's own credentials."""
    version = extracts.versions(lab, ORG, DATASET)[-1]["version"]
    client = storage.analyst_client(lab, kct.access_token(lab, ANALYST))
    data = client.get_object(storage.EXTRACTS_BUCKET, f"{ORG}/{DATASET}/{version}/{extracts.DATA}").read()
    frame = pl.read_parquet(io.BytesIO(data)).head(SMUGGLED_ROWS)
    assert frame.height == SMUGGLED_ROWS
    return json.loads(frame.write_json())


def _query(settings: Settings) -> dict[str, Any]:
    ran = httpx.post(f"{_api(settings)}/queries", headers=_h(settings), json=QUERY, timeout=120)
    assert ran.status_code == 200, ran.text
    return dict(ran.json())


def _export(settings: Settings, name: str, data: bytes) -> dict[str, Any]:
    body = {
        "name": name,
        "purpose": "board report / 董事会报告",
        "content_b64": base64.b64encode(data).decode(),
    }
    response = httpx.post(f"{_api(settings)}/exports", headers=_h(settings), json=body, timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _state(book: Ledger) -> tuple[Any, ...]:
    """Budget of the organisation's grant, its grants, and whether the chain verifies."""
    (grant,) = book.list_grants(organisation=ORG, dataset=DATASET, active=True)
    status = book.budget(grant.id)
    grants = [(g.id, g.epsilon, g.revoked_at) for g in book.list_grants(organisation=ORG)]
    return (status.epsilon_spent, status.delta_spent, grants)


def _smuggled(result: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ways to hide extract rows in (or next to) a genuine result."""
    top = copy.deepcopy(result)
    top["appendix"] = rows
    in_preview = copy.deepcopy(result)
    in_preview["preview"]["appendix"] = rows
    in_budget = copy.deepcopy(result)
    in_budget["budget"]["appendix"] = rows
    in_notes = copy.deepcopy(result)
    in_notes["preview"]["notes"] = [*in_notes["preview"]["notes"], json.dumps(rows)]
    bare = {"digest": result["digest"], "query": result["query"], "appendix": rows}
    return {
        "top-level": top,
        "in-preview": in_preview,
        "in-budget": in_budget,
        "in-notes": in_notes,
        "bare": bare,
    }


def test_dp_result_with_extract_rows_is_held_and_never_downloadable(
    lab: Settings, book: Ledger, extract_rows: list[dict[str, Any]]
) -> None:
    result = _query(lab)
    last_before = max([0, *(e.id for e in book.list_exports())])
    for how, payload in _smuggled(result, extract_rows).items():
        data = json.dumps(payload, ensure_ascii=False).encode()
        before, head = _state(book), book.records(newest_first=True, limit=1)[0].seq
        export = _export(lab, f"result-{how}.json", data)
        assert export["state"] == "held", (how, export["state"], export["kind"])
        assert export["kind"] != "dp-result" and not export["downloadable"], how
        assert "not exactly a result released" in export["checks"]["findings"][0]["message"], how
        refused = httpx.get(f"{_api(lab)}/exports/{export['id']}/download", headers=_h(lab), timeout=60)
        assert refused.status_code == 403, (how, refused.status_code)
        assert refused.json()["error"]["reason"] == "export-held"
        assert _state(book) == before, how  # no budget spent, no grant changed
        new = [
            r
            for r in book.records(actor=ANALYST, newest_first=False)
            if r.seq > head and r.kind in (Kind.EXPORT, "export-download", Kind.DP_QUERY)
        ]
        assert [r.kind for r in new] == [Kind.EXPORT], (how, [r.kind for r in new])
        assert (
            new[0].details["state"] == "held" and new[0].details["sha256"] == hashlib.sha256(data).hexdigest()
        )
    # Of everything the organisation can download, nothing carries the smuggled rows.
    sha_smuggled = {
        hashlib.sha256(json.dumps(p, ensure_ascii=False).encode()).hexdigest()
        for p in _smuggled(result, extract_rows).values()
    }
    downloadable = [e for e in book.list_exports(organisation=ORG) if e.downloadable]
    assert not sha_smuggled & {e.sha256 for e in downloadable}
    assert not [e.id for e in downloadable if e.id > last_before]  # none of this test's exports
    assert book.verify().ok


def test_genuine_dp_result_is_released_as_regenerated_canonical_bytes(lab: Settings, book: Ledger) -> None:
    result = _query(lab)
    uploaded = json.dumps(result, indent=2, ensure_ascii=True).encode()  # not the canonical form
    canonical = canonical_json(result).encode()
    assert uploaded != canonical
    before = _state(book)
    export = _export(lab, "counts.json", uploaded)
    assert (export["state"], export["kind"], export["dataset"]) == ("released", "dp-result", DATASET)
    assert export["sha256"] == hashlib.sha256(canonical).hexdigest() and export["size"] == len(canonical)
    got = httpx.get(f"{_api(lab)}/exports/{export['id']}/download", headers=_h(lab), timeout=60)
    assert got.status_code == 200, got.text
    assert got.content == canonical
    assert json.loads(got.content) == result
    assert _state(book) == before
    # The result alone (without the budget the gateway sent along) is the same result.
    bare = {k: v for k, v in result.items() if k not in ("budget", "reservation_id")}
    again = _export(lab, "counts-bare.json", json.dumps(bare).encode())
    assert again["state"] == "released"
    got = httpx.get(f"{_api(lab)}/exports/{again['id']}/download", headers=_h(lab), timeout=60)
    assert got.content == canonical
    assert book.verify().ok


def test_result_released_to_another_organisation_is_not_released_here(lab: Settings, book: Ledger) -> None:
    """A result from qilu-energy uploaded by zibo-credit's analyst is held, not released."""
    result = _query(lab)
    body = {
        "name": "borrowed.json",
        "purpose": "board report",
        "content_b64": base64.b64encode(json.dumps(result).encode()).decode(),
    }
    response = httpx.post(f"{_api(lab)}/exports", headers=_h(lab, "chen.jing"), json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "held"
    assert book.verify().ok
