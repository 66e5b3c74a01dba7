"""Output checking in the ledger: two distinct reviewers, never the requester, history kept;
and what a reviewer's page shows of a file (tables capped, images only when they are images)."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from lab import airlock_view
from lab.errors import AccessDenied, ConfigError, PolicyError
from lab.ledger import Ledger

pytestmark = pytest.mark.unit
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        yield ledger


def _export(book: Ledger, state: str = "pending", previous: int | None = None, required: int = 2) -> int:
    return book.request_export(
        organisation="qilu-energy",
        requester="li.na",
        name="table.csv",
        kind="table",
        dataset="population",
        purpose="report",
        sha256="0" * 64,
        size=10,
        object_key="qilu-energy/x/table.csv",
        state=state,
        checks={"findings": [{"severity": "fail", "message": "2 cell(s) below 10"}]}
        if state == "held"
        else {},
        required=required,
        previous=previous,
    ).id


def test_two_distinct_approvals_release_and_nobody_counts_twice(book: Ledger) -> None:
    export = _export(book)
    with pytest.raises(AccessDenied) as own:
        book.decide_export(export, by="li.na", decision="approve")
    assert own.value.reason == "self-approval" and "不能审核自己" in own.value.message
    assert book.decide_export(export, by="op.wang", decision="approve").state == "pending"
    with pytest.raises(ConfigError) as twice:
        book.decide_export(export, by="op.wang", decision="approve")
    assert twice.value.reason == "already-reviewed" and "另一位运营人员" in twice.value.message
    assert book.get_export(export).state == "pending"
    assert book.decide_export(export, by="op.li", decision="approve").state == "approved"
    records = [r.details for r in book.records(kind="export-review")]
    assert [(d["approvals"], d["required"], d["released"]) for d in records] == [(1, 2, False), (2, 2, True)]


def test_a_policy_may_ask_three(book: Ledger) -> None:
    export = _export(book, required=3)
    for reviewer in ("op.a", "op.b"):
        assert book.decide_export(export, by=reviewer, decision="approve").state == "pending"
    assert book.decide_export(export, by="op.c", decision="approve").state == "approved"


def test_held_override_needs_a_reason_from_each(book: Ledger) -> None:
    export = _export(book, "held")
    with pytest.raises(ConfigError) as bare:
        book.decide_export(export, by="op.wang", decision="approve", override=True)
    assert bare.value.reason == "held"
    book.decide_export(export, by="op.wang", decision="approve", override=True, reason="public totals")
    with pytest.raises(ConfigError):
        book.decide_export(export, by="op.li", decision="approve", reason="no override box")
    assert book.get_export(export).state == "held"
    done = book.decide_export(export, by="op.li", decision="approve", override=True, reason="agreed")
    assert done.state == "approved"


def test_changes_requested_then_resubmitted_keeps_history(book: Ledger) -> None:
    first = _export(book)
    with pytest.raises(ConfigError):  # a request for changes says what to change
        book.decide_export(first, by="op.wang", decision="changes")
    assert book.decide_export(first, by="op.wang", decision="changes", reason="round").state == "returned"
    book.comment_export(first, by="op.wang", body="<b>round to tens</b>")
    second = _export(book, previous=first)
    assert book.get_export(first).state == "superseded"
    with pytest.raises(ConfigError):  # only a returned request is resubmitted
        _export(book, previous=first)
    review = book.export_review(second)
    assert review.round.version == 2 and review.round.previous_id == first
    assert [e.id for e, *_ in review.versions] == [first, second]
    assert review.versions[0][3][0].body == "<b>round to tens</b>"  # kept as typed; pages escape it
    with pytest.raises(AccessDenied):
        book.withdraw_export(second, by="zhang.wei")
    assert book.withdraw_export(second, by="li.na").state == "withdrawn"
    with pytest.raises(ConfigError):
        book.decide_export(second, by="op.li", decision="approve")
    kinds = [r.kind for r in book.records()]
    assert kinds == ["export", "export-review", "export-comment", "export", "export-withdraw"]


def test_rejection_needs_a_reason_and_ends_the_review(book: Ledger) -> None:
    export = _export(book)
    book.decide_export(export, by="op.wang", decision="approve")
    assert book.decide_export(export, by="op.li", decision="reject", reason="small cells").state == "rejected"
    with pytest.raises(ConfigError):
        book.decide_export(export, by="op.zhao", decision="approve")


def test_preview_of_a_table_is_capped_and_noted() -> None:
    frame = pl.DataFrame({"district": [f"<script>{i}</script>" for i in range(300)], "count": range(300)})
    shown = airlock_view.preview("t.csv", frame.write_csv().encode())
    assert shown["kind"] == "table" and len(shown["rows"]) == airlock_view.MAX_ROWS
    assert shown["rows"][0] == ["<script>0</script>", "0"]  # data, escaped by the template
    assert "300" in shown["notes"][0]["en"] and "300" in shown["notes"][0]["zh"]
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    assert airlock_view.preview("t.parquet", buffer.getvalue())["total_rows"] == 300


def test_only_real_images_are_images() -> None:
    assert airlock_view.preview("plot.png", PNG) == {"kind": "image", "mime": "image/png", "notes": []}
    disguised = airlock_view.preview("plot.png", b"<html><script>alert(1)</script></html>")
    assert disguised["kind"] == "text" and "not image/png" in disguised["notes"][0]["en"]
    assert airlock_view.preview("plot.jpg", PNG)["kind"] != "image"  # name and bytes disagree
    assert airlock_view.preview("x.svg", b"<svg onload='alert(1)'/>")["kind"] == "text"
    assert airlock_view.preview("model.bin", b"\x00\x01\x02")["kind"] == "binary"
    text = airlock_view.preview("analysis.py", ("x = 1\n" * 30_000).encode())
    assert text["kind"] == "text" and len(text["text"]) == airlock_view.MAX_TEXT and text["notes"]


def test_a_png_of_pixels_waits_for_eyes_and_one_carrying_text_is_held() -> None:
    from tests.integration.airlock_support import png

    clean = png()
    assert airlock_view.png_problem(clean) is None
    checks = airlock_view.image_checks("c.png", clean, {})
    assert checks is not None and checks["passed"] and checks["findings"][0]["severity"] == "warn"
    text = b"tEXt" + b"rows\x00" + b"1,2,3\n" * 100
    chunk = len(text[4:]).to_bytes(4, "big") + text + zlib.crc32(text).to_bytes(4, "big")
    smuggling = clean[:33] + chunk + clean[33:]  # after IHDR (8 + 25 bytes)
    assert "tEXt" in str(airlock_view.png_problem(smuggling))
    assert "follow" in str(airlock_view.png_problem(clean + b"id,name\n1,Li"))
    held = airlock_view.image_checks("c.png", smuggling, {})
    assert held is not None and not held["passed"] and "图片未通过" in held["findings"][0]["message"]
    assert airlock_view.image_checks("c.csv", b"a,b\n", {}) is None


def test_reviewers_required_come_from_the_lab_and_the_dataset_policy(tmp_path: Path) -> None:
    from lab.airlock import Airlock
    from lab.policy import load_policy
    from lab.settings import load_settings

    policies = Path(__file__).resolve().parents[2] / "policies"
    text = (policies / "population.yaml").read_text(encoding="utf-8") + "export_reviewers: 3\n"
    path = tmp_path / "population.yaml"
    path.write_text(text, encoding="utf-8")
    strict = load_policy(path)
    assert strict.export_reviewers == 3
    settings = load_settings({"DATALAB_HOME": str(tmp_path)})
    airlock = Airlock(settings, None, {"population": strict})  # type: ignore[arg-type]
    assert (airlock.reviewers_required("population"), airlock.reviewers_required(None)) == (3, 2)
    more = load_settings({"DATALAB_HOME": str(tmp_path), "DATALAB_EXPORT_REVIEWERS": "4"})
    assert Airlock(more, None, {"population": strict}).reviewers_required("population") == 4  # type: ignore[arg-type]
    for bad in ("1", "ten"):
        with pytest.raises(ConfigError) as refused:
            load_settings({"DATALAB_HOME": str(tmp_path), "DATALAB_EXPORT_REVIEWERS": bad})
        assert "2 到 9" in refused.value.message
    path.write_text(text.replace("export_reviewers: 3", "export_reviewers: 1"), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert "export_reviewers must be a whole number from 2 to 9" in str(caught.value)
