"""Suspicious-pattern flags for the auditor, the budget chart, and MinIO audit entries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lab.gateway.charts import budget_chart, cumulative
from lab.gateway.minio_audit import download, entries
from lab.gateway.sessions import Signer
from lab.suspicious import (
    DatasetProfile,
    Rules,
    bursts_before_expiry,
    flags,
    is_narrow,
    isolated,
    narrow_queries,
    near_duplicates,
    shape,
    singling_out,
)

pytestmark = pytest.mark.unit

T0 = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class Rec:
    at: datetime
    details: dict[str, Any]
    actor: str = "li.na"
    organisation: str | None = "qilu-energy"
    dataset: str | None = "population"
    kind: str = "dp-query"


@dataclass
class G:
    id: int
    created_at: datetime
    expires_at: datetime
    organisation: str = "qilu-energy"
    dataset: str = "population"
    modes: tuple[str, ...] = field(default=("dp",))


def q(filters: Sequence[tuple[str, str, Any]] = (), group: list[str] | None = None, eps: float = 0.1) -> str:
    return json.dumps(
        {
            "dataset": "population",
            "aggregate": {"kind": "count"},
            "epsilon": eps,
            "delta": 0.0,
            "filters": [{"column": c, "op": o, "value": v} for c, o, v in filters],
            "group_by": {"columns": group, "keys": None} if group else None,
            "unit": {"max_rows": 1, "identifier": None},
        }
    )


def rec(minutes: float, query: str, grant: int = 1, outcome: str = "released") -> Rec:
    return Rec(T0 + timedelta(minutes=minutes), {"query": query, "outcome": outcome, "grant": grant})


def test_shape_ignores_constants_and_epsilon() -> None:
    a = json.loads(q([("age", ">=", 30)], eps=0.1))
    b = json.loads(q([("age", ">=", 31)], eps=0.5))
    c = json.loads(q([("age", "<", 30)]))
    assert shape(a) == shape(b) != shape(c)


def test_repeated_query_shape_is_flagged() -> None:
    records = [rec(i, q([("district", "==", "张店区")], eps=0.01 * (i + 1))) for i in range(6)]
    (flag,) = near_duplicates(records)
    assert flag.rule == "near-duplicate" and flag.count == 6 and flag.actor == "li.na"


def test_repeats_spread_beyond_the_window_or_refused_are_not_flagged() -> None:
    spread = [rec(i * 60 * 30, q()) for i in range(6)]  # one every 30 hours
    refused = [rec(i, q(), outcome="refused") for i in range(6)]
    assert near_duplicates(spread) == [] and near_duplicates(refused) == []


def test_narrow_queries() -> None:
    rules = Rules()
    assert is_narrow(json.loads(q([("district", "==", "a"), ("sex", "==", "F")])), rules)
    assert is_narrow(json.loads(q([("age", ">", 80)], group=["district", "sex"])), rules)
    assert not is_narrow(json.loads(q(group=["district"])), rules)
    records = [rec(i, q([("district", "==", f"d{i}"), ("birth_year", "==", 1950 + i)])) for i in range(5)]
    (flag,) = narrow_queries(records)
    assert flag.rule == "narrow" and flag.count == 5


def test_burst_before_expiry() -> None:
    grant = G(1, T0, T0 + timedelta(days=10))  # tail: the last day
    steady = [rec(60 * 24 * d, q(group=["district"])) for d in range(9)]
    burst = [rec(60 * 24 * 9.5 + i, q(group=["sex"])) for i in range(12)]
    (flag,) = bursts_before_expiry(steady + burst, [grant])
    assert flag.rule == "burst-before-expiry" and flag.count == 12
    assert bursts_before_expiry(steady, [grant]) == []


def test_flags_collects_every_rule_newest_first() -> None:
    records = [rec(i, q([("district", "==", "a"), ("sex", "==", "F")])) for i in range(6)]
    found = flags(records, [])
    assert {f.rule for f in found} == {"near-duplicate", "narrow"}
    assert all(f.as_dict()["first"].startswith("2030-03-01") for f in found)


def test_budget_chart_has_one_cumulative_line_per_organisation_and_dataset() -> None:
    points = [
        {"period": "2030-03-01", "organisation": "a", "dataset": "x", "epsilon": 0.5},
        {"period": "2030-03-02", "organisation": "a", "dataset": "x", "epsilon": 0.25},
        {"period": "2030-03-02", "organisation": "b", "dataset": "y", "epsilon": 1.0},
    ]
    periods, series = cumulative(points)
    assert periods == ["2030-03-01", "2030-03-02"]
    assert series == {"a / x": [0.5, 0.75], "b / y": [0.0, 1.0]}
    svg = budget_chart(points, title="ε <spent>", empty="none")
    assert svg.startswith('<svg id="budget-chart"') and svg.count('class="series"') == 2
    assert "&lt;spent&gt;" in svg and "<spent>" not in svg
    assert "none" in budget_chart([], title="t", empty="none")


def _entry(**over: Any) -> dict[str, Any]:
    entry = {
        "api": {
            "name": "GetObject",
            "bucket": "extracts",
            "object": "qilu-energy/population/v1/data.parquet",
            "statusCode": 200,
            "tx": 100,
        },
        "accessKey": "TEMPKEY",
        "parentUser": "parent",
        "requestClaims": {"preferred_username": "li.na", "org": "qilu-energy", "policy": ["x"]},
        "requestID": "R1",
    }
    entry.update(over)
    return entry


def test_minio_audit_entries_become_downloads() -> None:
    found = download(_entry())
    assert found is not None and found.actor == "li.na" and found.dataset == "population"
    assert found.details["outcome"] == "ok" and found.details["object"].startswith("extracts/qilu-energy/")
    denied = download(_entry(api={**_entry()["api"], "statusCode": 403}))
    assert denied is not None and denied.details["outcome"] == "denied"
    assert download(_entry(api={**_entry()["api"], "name": "PutObject"})) is None
    assert download(_entry(api={**_entry()["api"], "bucket": "raw"})) is None
    assert download(_entry(accessKey="datalab-root", parentUser=None, requestClaims=None)) is None
    assert "TEMPKEY" not in json.dumps(found.details)


def test_webhook_bodies_single_batched_or_list() -> None:
    one = json.dumps(_entry()).encode()
    assert len(list(entries(one))) == 1
    assert len(list(entries(one + b"\n" + one))) == 2
    assert len(list(entries(json.dumps([_entry(), _entry()]).encode()))) == 2
    assert list(entries(b"")) == []


def test_session_signer_refuses_tampering_and_expiry() -> None:
    signer = Signer(b"k" * 32)
    token = signer.dumps({"u": "op.wang", "r": ["operator"]}, ttl=60)
    assert signer.loads(token)["u"] == "op.wang"  # type: ignore[index]
    payload, mac = token.split(".")
    forged = Signer(b"k" * 32).dumps({"u": "op.wang", "r": ["operator", "auditor"]}, ttl=60).split(".")[0]
    assert signer.loads(f"{forged}.{mac}") is None
    assert Signer(b"other-key-000000000000000000000").loads(token) is None
    assert signer.loads(signer.dumps({"u": "x"}, ttl=-1)) is None
    assert signer.loads("garbage") is None and signer.loads(None) is None


# --- singling-out ------------------------------------------------------------------------

PROFILE = DatasetProfile(
    rows=100_000,
    distinct={"birth_date": 30_000, "district": 8, "sex": 2, "education": 6, "birth_year": 85},
    ranges={"birth_date": (715_000.0, 746_000.0), "birth_year": (1940.0, 2024.0)},
)


def test_isolated_counts_the_people_a_query_can_isolate() -> None:
    day = ("birth_date", "==", "1983-07-21")
    assert isolated(json.loads(q([day])), PROFILE) == pytest.approx(100_000 / 30_000)
    assert isolated(json.loads(q([day], ["district"])), PROFILE) == pytest.approx(100_000 / 30_000 / 8)
    histogram = {
        "aggregate": {"kind": "histogram", "column": "district"},
        "filters": [dict(zip(("column", "op", "value"), day, strict=True))],
    }
    assert isolated(histogram, PROFILE) == pytest.approx(100_000 / 30_000 / 8)
    one_day = json.loads(q([("birth_date", ">=", "1983-07-21"), ("birth_date", "<=", "1983-07-21")]))
    assert isolated(one_day, PROFILE) < 5
    assert isolated(json.loads(q([], ["district"])), PROFILE) == pytest.approx(12_500)
    assert isolated(json.loads(q([("birth_year", ">=", 1980)])), PROFILE) > 1000


def test_singling_out_is_flagged_across_shapes_and_analysts() -> None:
    day = ("birth_date", "==", "1983-07-21")
    records = [
        Rec(T0, {"query": q([day])}, actor="li.na"),
        Rec(T0 + timedelta(minutes=1), {"query": q([day], ["district"])}, actor="wang.wei"),
        Rec(T0 + timedelta(minutes=2), {"query": q([], ["district"])}, actor="wang.wei"),  # harmless
        Rec(T0 + timedelta(minutes=3), {"query": q([day])}, organisation="other-org"),
    ]
    found = singling_out(records, lambda name: PROFILE if name == "population" else None)
    ours = next(f for f in found if f.organisation == "qilu-energy")
    assert ours.count == 2 and ours.actors == ("li.na", "wang.wei") and ours.actor is None
    assert "0.42" in ours.message and "个人" in ours.message
    assert {f.organisation for f in found} == {"qilu-energy", "other-org"}
    assert singling_out(records, lambda name: None) == []
    assert any(f.rule == "singling-out" for f in flags(records, [], profiles=lambda name: PROFILE))
