"""The bounded-memory aggregates equal the one-pass ones exactly.

The truncation per identifier is hash-partitioned into many buckets here (a few hundred
rows each) and compared with the unpartitioned query and with a plain-Python reference:
same counts, clamped sums, histogram bins, released keys and quantile cells, with ties,
null values, null identifiers, groups absent from some buckets (and from the data), and
at most ``max_rows`` rows kept per person, the first ones. The quantile scores computed
from cell counts equal OpenDP's ``make_quantile_score_candidates`` on the whole column.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import polars as pl
import pytest

from lab import dp as labdp
from lab.dp.aggregate import CELL, PolarsAggregator
from lab.dp.calibrate import quantile_scores
from lab.dp.execute import quantile_scores_from_cells
from lab.dp.plan import Plan, resolve

pytestmark = pytest.mark.unit

DISTRICTS = ["张店区", "淄川区", "博山区", "临淄区", "周村区", "桓台县", "高青县", "沂源县", "无人区"]
K = 3  # rows kept per person
SMALL = PolarsAggregator(rows_per_bucket=150)  # ~27 buckets on 4,000 rows
ONE_PASS = PolarsAggregator(rows_per_bucket=10**12)  # the unpartitioned query


def _register(seed: int) -> pl.DataFrame:
    """Person-months: 1 to 40 rows per person, some nulls, few distinct incomes (ties)."""
    rng = np.random.default_rng(seed)
    people = 400
    repeats = rng.choice([1, 2, 3, 5, 12, 40], people)
    pid = np.repeat(np.arange(people), repeats)
    rng.shuffle(pid)
    n = len(pid)
    ids: list[int | None] = pid.tolist()
    for i in rng.choice(n, 30, replace=False):
        ids[i] = None
    districts = [DISTRICTS[i] for i in rng.integers(0, 8, n)]  # 无人区 never occurs
    for i in rng.choice(n, 20, replace=False):
        districts[i] = None  # type: ignore[call-overload]
    income: list[int | None] = (rng.integers(0, 20, n) * 500).tolist()
    for i in rng.choice(n, 60, replace=False):
        income[i] = None
    return pl.DataFrame(
        {
            "person_id": pl.Series(ids, dtype=pl.Int64),
            "person_key": pl.Series(ids, dtype=pl.Int64),  # the identifier again, to group by it
            "seq": np.arange(n),
            "district": pl.Series(districts, dtype=pl.String),
            "income": pl.Series(income, dtype=pl.Int64),
            "score": np.round(rng.normal(0, 2, n), 1),  # float, with ties and -0.0
            "age": rng.integers(0, 100, n),
        }
    )


@pytest.fixture(scope="module", params=[1, 2])
def data(request: pytest.FixtureRequest) -> pl.DataFrame:
    return _register(request.param)


def _meta(frame: pl.DataFrame) -> labdp.FrameMeta:
    return labdp.FrameMeta.from_lazyframe(frame.lazy(), public_keys={"district": DISTRICTS}, max_rows=10**6)


def _plan(builder: labdp.QueryBuilder, agg: str, frame: pl.DataFrame, **kw: Any) -> Plan:
    query = getattr(builder, agg)(**kw)
    return resolve(query, _meta(frame))


def _builder(identifier: str | None = "person_id") -> labdp.QueryBuilder:
    return labdp.on("register", max_rows=K, identifier=identifier) if identifier else labdp.on("register")


def _sorted(table: pl.DataFrame) -> pl.DataFrame:
    return table.sort(table.columns, nulls_last=True)


QUERIES: list[tuple[str, Any, dict[str, Any]]] = [
    ("count", lambda b: b.group_by("district"), {"epsilon": 1.0}),
    ("sum", lambda b: b.group_by("district"), {"column": "income", "bounds": (1000, 8000), "epsilon": 1.0}),
    ("mean", lambda b: b.group_by("district"), {"column": "income", "bounds": (0, 6000), "epsilon": 1.0}),
    ("count", lambda b: b.filter("age", ">=", 30), {"epsilon": 1.0}),
    ("histogram", lambda b: b, {"column": "income", "bins": [0, 2000, 5000], "epsilon": 1.0}),
    ("count", lambda b: b.group_by("district"), {"epsilon": 1.0, "delta": 1e-7}),  # released keys
    ("median", lambda b: b.group_by("district"), {"column": "income", "bounds": (0, 10_000), "epsilon": 1.0}),
    (
        "quantile",
        lambda b: b,
        {"column": "score", "alpha": 0.3, "candidates": [-2.0, -0.0, 0.5, 3.0], "epsilon": 1.0},
    ),
]


@pytest.mark.parametrize(("kind", "shape", "kw"), QUERIES)
def test_buckets_equal_the_one_pass_query(
    data: pl.DataFrame, kind: str, shape: Any, kw: dict[str, Any]
) -> None:
    query = getattr(shape(_builder()), kind)(**kw)
    public = {} if "delta" in kw else {"district": DISTRICTS}
    meta = labdp.FrameMeta.from_lazyframe(data.lazy(), public_keys=public, max_rows=10**6)
    plan = resolve(query, meta)
    assert SMALL.buckets(data.lazy()) > 20
    bucketed, one_pass = SMALL.aggregate(plan, data.lazy()), ONE_PASS.aggregate(plan, data.lazy())
    if plan.keys is not None and plan.candidates is None:  # every public key, in order (无人区 is empty)
        assert bucketed.equals(one_pass)
        assert bucketed.height == len(plan.keys)
    else:
        assert _sorted(bucketed).equals(_sorted(one_pass))


def _kept(data: pl.DataFrame) -> list[dict[str, Any]]:
    """The first K rows of each person (nulls are one person), in plain Python."""
    seen: dict[Any, int] = defaultdict(int)
    kept = []
    for row in data.to_dicts():
        seen[row["person_id"]] += 1
        if seen[row["person_id"]] <= K:
            kept.append(row)
    return kept


def test_counts_and_sums_equal_a_plain_reference(data: pl.DataFrame) -> None:
    kept = _kept(data)
    count = _plan(_builder().group_by("district"), "count", data, epsilon=1.0)
    expected = {d: sum(1 for r in kept if r["district"] == d) for d in DISTRICTS}
    table = SMALL.aggregate(count, data.lazy())
    assert dict(zip(table["district"], table["count"], strict=True)) == expected

    total = _plan(_builder(), "sum", data, column="income", bounds=(1000, 8000), epsilon=1.0)
    midpoint = (1000 + 8000) // 2
    clamped = [midpoint if r["income"] is None else min(max(r["income"], 1000), 8000) for r in kept]
    assert SMALL.aggregate(total, data.lazy())["sum"].item() == sum(clamped)


def test_each_person_keeps_at_most_k_rows_the_first_ones(data: pl.DataFrame) -> None:
    people = sorted({p for p in data["person_key"].to_list() if p is not None})
    meta = labdp.FrameMeta.from_lazyframe(data.lazy(), public_keys={"person_key": people}, max_rows=10**6)
    by_person = _builder().group_by("person_key")
    counts = SMALL.aggregate(resolve(by_person.count(epsilon=1.0), meta), data.lazy())
    rows = data.group_by("person_key").len().drop_nulls()
    expected = {p: min(n, K) for p, n in zip(rows["person_key"], rows["len"], strict=True)}
    assert dict(zip(counts["person_key"], counts["count"], strict=True)) == expected
    assert max(counts["count"]) == K and max(rows["len"]) > K  # somebody was truncated

    first = SMALL.aggregate(resolve(by_person.sum("seq", bounds=(0, 10**6), epsilon=1.0), meta), data.lazy())
    seq: dict[Any, int] = defaultdict(int)
    for row in _kept(data):
        if row["person_key"] is not None:
            seq[row["person_key"]] += row["seq"]
    assert dict(zip(first["person_key"], first["sum"], strict=True)) == dict(seq)


EXTREMES = [
    (pl.Series("v", [-(2**63), -1, 0, 0, 5, 2**63 - 1], dtype=pl.Int64), (-(2**62), 0, 1, 2**62)),
    (
        pl.Series("v", [-0.0, 0.0, 5e-324, 1.0, float("inf"), -float("inf")]),
        (-0.0, 5e-324, 1.0, 1.0000000000000002),
    ),
]


@pytest.mark.parametrize(("values", "candidates"), EXTREMES)
def test_scores_at_the_ends_of_the_types_equal_opendps(
    values: pl.Series, candidates: tuple[Any, ...]
) -> None:
    frame = pl.DataFrame({"v": values})
    meta = labdp.FrameMeta.from_lazyframe(frame.lazy(), max_rows=10**6)
    query = labdp.on("t").quantile("v", alpha=0.5, candidates=list(candidates), epsilon=1.0)
    cells = ONE_PASS.aggregate(resolve(query, meta), frame.lazy())
    ours = quantile_scores_from_cells(cells[CELL].to_numpy(), cells["count"].to_numpy(), len(candidates), 0.5)
    integer = values.dtype == pl.Int64
    assert ours == list(quantile_scores(candidates, 0.5, integer)(values.to_numpy(writable=True)))


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.1, 0.9, 0.0, 1.0, 0.333, 0.7071, 0.123456789])
def test_scores_from_cells_equal_opendps_scores(alpha: float) -> None:
    rng = np.random.default_rng(int(alpha * 1e6))
    for trial in range(12):
        integer = trial % 2 == 0
        n = int(rng.integers(0, 400))
        if integer:
            values = pl.Series("v", rng.integers(-10, 40, n), dtype=pl.Int64)
            candidates: tuple[Any, ...] = tuple(sorted({int(x) for x in rng.integers(-5, 30, 10)}))
        else:
            values = pl.Series("v", np.round(rng.normal(0, 3, n), 1) * rng.choice([1.0, -1.0], n))
            candidates = tuple(sorted({float(x) for x in np.round(rng.normal(0, 3, 8), 1)}))
        frame = pl.DataFrame({"v": values})
        meta = labdp.FrameMeta.from_lazyframe(frame.lazy(), max_rows=10**6)
        query = labdp.on("t").quantile("v", alpha=alpha, candidates=list(candidates), epsilon=1.0)
        cells = ONE_PASS.aggregate(resolve(query, meta), frame.lazy())
        ours = quantile_scores_from_cells(
            cells[CELL].to_numpy(), cells["count"].to_numpy(), len(candidates), alpha
        )
        theirs = quantile_scores(candidates, alpha, integer)(values.to_numpy(writable=True))
        assert ours == list(theirs)


def test_quantile_release_at_huge_epsilon_is_the_exact_median(data: pl.DataFrame) -> None:
    candidates = list(range(0, 10_001, 500))
    query = _builder(None).group_by("district").median("income", candidates=candidates, epsilon=1e7)
    result = labdp.release(query, data.lazy(), _meta(data), aggregator=SMALL)
    for row in result.rows:
        values = (
            data.filter(pl.col("district") == row["district"])["income"].drop_nulls().to_numpy(writable=True)
        )
        if len(values) == 0:
            continue
        scores = list(quantile_scores(tuple(candidates), 0.5, True)(values))
        assert row["value"] in {c for c, s in zip(candidates, scores, strict=True) if s == min(scores)}
