"""What the analyst's client says.

Every failure of a ``lab.*`` call is a ``LabError`` in 中文 and English (connection refused, a
timeout, a proxy's error page, the gateway's own errors, a damaged extract, an unreachable
store); a mistyped name gets "did you mean"; DP tables preview before one charge; dummy data.

``lab.extract()`` when the object store refuses: our own error in 中文 and English, naming the
dataset and what to do, never minio's ``S3Error``, its response body or request ids. A query's
preview when it asks for more ε than is left.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import polars as pl
import pytest
from minio.error import S3Error
from urllib3 import HTTPResponse

from lab import client, client_errors
from lab.errors import (
    AccessDenied,
    BudgetExhausted,
    ConfigError,
    LabError,
    NotAuthenticated,
    NotFound,
    Unavailable,
)

pytestmark = pytest.mark.unit
SECRET_BODY = b"<Error><Code>AccessDenied</Code><Key>AKIA-SECRET-KEY</Key></Error>"


def _refusal(code: str) -> S3Error:
    response = HTTPResponse(body=SECRET_BODY, status=403)
    return S3Error(response, code, "Access Denied.", "/extracts/org-a/people/", "REQ-1234", "HOST-99")


class Store:
    def __init__(self, code: str) -> None:
        self.code = code

    def list_objects(self, bucket: str, prefix: str) -> Any:
        raise _refusal(self.code)


class Lab(client.Connection):
    def __init__(self, code: str) -> None:
        super().__init__("http://127.0.0.1:1", "token", s3_endpoint="127.0.0.1:1")
        self.code = code

    def me(self) -> dict[str, Any]:
        return {"org": "org-a"}

    def _s3(self) -> Any:
        return Store(self.code)


@pytest.mark.parametrize(
    ("code", "kind", "words"),
    [
        ("AccessDenied", AccessDenied, ("Apply for the dataset", "申请该数据集")),
        ("NoSuchKey", NotFound, ("check the name", "核对名称")),
        ("NoSuchBucket", NotFound, ("check the name", "核对名称")),
        ("SlowDown", LabError, ("try again", "请重试")),
    ],
)
def test_a_refusal_from_the_store_is_a_lab_error_naming_the_dataset(
    code: str, kind: type[LabError], words: tuple[str, ...]
) -> None:
    with pytest.raises(LabError) as caught:
        Lab(code).extract("people")
    error = caught.value
    assert type(error) is kind and not isinstance(error, S3Error)
    assert error.__cause__ is None and error.__suppress_context__  # no S3Error traceback below it
    assert "people" in error.message and all(w in error.message for w in words)
    for leaked in ("AKIA", "REQ-1234", "HOST-99", "<Error>"):
        assert leaked not in error.message and leaked not in error.detail


def _preview(asked: float, left: float, affordable: bool) -> str:
    pending = client.PendingQuery.__new__(client.PendingQuery)
    pending._preview = {
        "query": "mean(income)",
        "epsilon": asked,
        "delta": 0,
        "noise": [{"statistic": "mean", "accuracy": 1.5}],
        "budget": {"epsilon": 10.0, "epsilon_remaining": left},
        "affordable": affordable,
        "notes": [],
    }
    return repr(pending)


def test_a_preview_asking_more_than_is_left_says_so_instead_of_a_negative_remainder() -> None:
    shown = _preview(asked=47.25, left=2.0, affordable=False)
    assert "-45.25" not in shown
    assert "exceeds what is left (ε 2 of 10)" in shown and "超过剩余的 ε 2（共 10）" in shown
    assert "→ 1 after release()" in _preview(asked=1.0, left=2.0, affordable=True)


# --- every failure of a lab.* call is a LabError in 中文 and English -----------------------

TOKEN = "eyJ-SECRET-TOKEN"


def _both_languages(message: str) -> bool:
    return " / " in message and any("\u4e00" <= ch <= "\u9fff" for ch in message)


def _gateway(handler: Any) -> client.Connection:
    lab = client.Connection("http://127.0.0.1:9/gw", TOKEN, s3_endpoint="127.0.0.1:9")
    lab._http = httpx.Client(transport=httpx.MockTransport(handler))
    return lab


def _raises(handler: Any, kind: type[LabError]) -> LabError:
    with pytest.raises(LabError) as caught:
        _gateway(handler).datasets()
    error = caught.value
    assert type(error) is kind, error
    assert _both_languages(error.message), error.message
    assert TOKEN not in error.message and TOKEN not in error.detail
    assert error.__cause__ is None and (
        error.__context__ is None or error.__suppress_context__
    )  # no httpx traceback
    return error


def _fail(exc: Exception) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def test_a_gateway_that_refuses_the_connection_says_to_check_the_lab_and_the_url() -> None:
    error = _raises(_fail(httpx.ConnectError("[Errno 111] Connection refused")), Unavailable)
    assert "DATALAB_GATEWAY_URL" in error.message and "无法连接网关" in error.message
    assert isinstance(error.__context__, httpx.ConnectError)  # kept for the log


def test_a_real_connection_refused_is_mapped_too() -> None:
    with pytest.raises(Unavailable) as caught:
        client.Connection("http://127.0.0.1:1/gw", TOKEN).datasets()
    assert caught.value.reason == "gateway-unreachable" and "connection refused" in caught.value.message


def test_a_timeout_warns_that_a_release_may_have_run() -> None:
    error = _raises(_fail(httpx.ReadTimeout("timed out")), Unavailable)
    assert error.reason == "gateway-timeout" and "lab.history()" in error.message


def test_a_proxy_error_page_is_not_shown_and_a_5xx_says_to_retry() -> None:
    page = b"<html>502 Bad Gateway upstream 10.0.0.7 token=" + TOKEN.encode() + b"</html>"
    error = _raises(lambda r: httpx.Response(502, content=page), Unavailable)
    assert "HTTP 502" in error.message and "<html>" not in error.message and "10.0.0.7" not in error.message


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (400, "dp-column", ConfigError),
        (401, "not-authenticated", NotAuthenticated),
        (403, "no-grant", AccessDenied),
        (403, "budget-exhausted", BudgetExhausted),
        (404, "no-such-dataset", NotFound),
        (500, "internal", Unavailable),
    ],
)
def test_the_gateways_own_errors_keep_their_message_and_reason(
    status: int, reason: str, kind: type[LabError]
) -> None:
    body = {"error": {"reason": reason, "message": "没有 / nothing here; do this"}}
    error = _raises(lambda r: httpx.Response(status, json=body), kind)
    assert error.reason == reason and error.message == body["error"]["message"]


def test_an_answer_that_is_not_json_is_a_lab_error() -> None:
    error = _raises(lambda r: httpx.Response(200, content=b"<html>login</html>"), Unavailable)
    assert error.reason == "unexpected-answer"


def test_a_missing_token_file_says_to_restart_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("DATALAB_TOKEN_FILE", str(tmp_path / "gone"))
    with pytest.raises(NotAuthenticated) as caught:
        client._token_from_env()()
    assert _both_languages(caught.value.message) and "DATALAB_TOKEN_FILE" in caught.value.message


class Objects:
    """A store holding one published masked version whose files are ``files``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = {f"org-a/people/v1/{name}": data for name, data in files.items()}

    def list_objects(self, bucket: str, prefix: str) -> Any:
        names = {n for n in self.files if n.startswith(prefix)}
        if prefix == "org-a/people/":
            names = {"org-a/people/v1/"}
        return [type("O", (), {"object_name": n})() for n in sorted(names)]

    def get_object(self, bucket: str, name: str) -> Any:
        data = self.files[name]
        return type(
            "R", (), {"read": lambda s: data, "close": lambda s: None, "release_conn": lambda s: None}
        )()


class StoreLab(Lab):
    def __init__(self, store: Any) -> None:
        super().__init__("AccessDenied")
        self.store = store

    def _s3(self) -> Any:
        return self.store


@pytest.mark.parametrize(
    "files",
    [
        {"manifest.json": b'{"kind": "masked"', "data.parquet": b"PAR1"},  # a truncated manifest
        {"manifest.json": b'{"kind": "masked"}', "data.parquet": b"PAR1 not parquet at all PAR1"},
    ],
)
def test_a_damaged_extract_is_a_lab_error_saying_to_ask_for_a_rebuild(files: dict[str, bytes]) -> None:
    from lab.store import layout

    files = {layout.MANIFEST if k == "manifest.json" else layout.MASKED_DATA: v for k, v in files.items()}
    with pytest.raises(LabError) as caught:
        StoreLab(Objects(files)).extract("people")
    error = caught.value
    assert error.reason == "corrupt-extract" and "people" in error.message and _both_languages(error.message)
    assert error.__cause__ is None and error.__suppress_context__


def test_an_unreachable_store_is_unavailable_not_a_urllib3_traceback() -> None:
    import urllib3.exceptions

    class Down:
        def list_objects(self, bucket: str, prefix: str) -> Any:
            raise urllib3.exceptions.MaxRetryError(None, "/extracts", "Connection refused")  # type: ignore[arg-type]

    with pytest.raises(Unavailable) as caught:
        StoreLab(Down()).extract("people")
    assert "DATALAB_S3_ENDPOINT" in caught.value.message and _both_languages(caught.value.message)


# --- did you mean ---------------------------------------------------------------------------


def test_a_mistyped_aggregate_suggests_the_right_one_and_stays_an_attribute_error() -> None:
    builder = client.Connection("http://127.0.0.1:1", "token").dp("population")
    with pytest.raises(LabError) as caught:
        builder.cout(epsilon=0.5)
    assert isinstance(caught.value, AttributeError)
    assert "Did you mean 'count'?" in caught.value.message and "您是不是想用 'count'" in caught.value.message
    assert not hasattr(builder, "cout") and not hasattr(builder, "_repr_html_")


def test_a_mistyped_extract_kind_suggests_the_right_one() -> None:
    with pytest.raises(LabError) as caught:
        Lab("AccessDenied").extract("people", kind="dp-tabel")
    assert "Did you mean 'dp-table'?" in caught.value.message and _both_languages(caught.value.message)


def test_an_unbuilt_extract_of_a_mistyped_dataset_suggests_the_granted_one() -> None:
    class Empty:
        def list_objects(self, bucket: str, prefix: str) -> Any:
            return []

    lab = StoreLab(Empty())
    lab._call = lambda method, path, **kw: [{"dataset": "people"}, {"dataset": "utility"}]  # type: ignore[method-assign]
    with pytest.raises(NotFound) as caught:
        lab.extract("peeple")
    assert "Did you mean 'people'?" in caught.value.message


# --- DP tables and synthetic data: preview, then one charge ------------------------------------


def test_a_dp_table_previews_then_builds_once_with_one_request_id() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    plan = {"tables": [{"name": "t", "statistic": "count", "group_by": ["district"], "cells": 8,
                        "ci_half_width": 12.0}]}  # fmt: skip
    manifest = {"kind": "dp-table", "dataset": "people", "version": "v1", "epsilon": 0.5, "delta": 0.0,
                "budget": {"epsilon_remaining": 1.5}}  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append((request.url.path, body))
        if request.url.path.endswith("/extracts/preview"):
            budget = {"epsilon_remaining": 2.0, "delta_remaining": 0.0}
            return httpx.Response(200, json={"plan": plan, "epsilon": 0.5, "delta": 0.0, "budget": budget})
        if len([c for c in calls if c[0].endswith("/extracts")]) == 1:
            raise httpx.ReadTimeout("slow")  # the first build times out; the retry gets the same id
        return httpx.Response(200, json=manifest)

    lab = _gateway(handler)
    table = pl.DataFrame({"district": ["张店区"], "value": [3]})
    lab._extract_version = lambda dataset, kind, version: {"t": table}  # type: ignore[method-assign]
    pending = lab.dp_table("people", tables=[{"name": "t", "group_by": ["district"]}], epsilon=0.5)
    shown = repr(pending)
    assert "ε=0.5" in shown and "8 cells" in shown and "→ 1.5 after release()" in shown
    with pytest.raises(Unavailable):
        pending.release()
    built = pending.release()
    assert pending.release() is built  # a third call sends nothing
    builds = [body for path, body in calls if path.endswith("/extracts")]
    assert len(builds) == 2 and builds[0]["request_id"] == builds[1]["request_id"] == pending.request_id
    assert builds[0]["spec"] == {"tables": [{"name": "t", "group_by": ["district"]}], "epsilon": 0.5}
    assert "spent 花费 ε=0.5" in repr(built) and "t (1 rows)" in repr(built) and built.data == {"t": table}


# --- dummy data -------------------------------------------------------------------------------


def test_dummy_rows_have_the_schema_public_values_and_a_mark(capsys: pytest.CaptureFixture[str]) -> None:
    entry = {
        "dataset": "people",
        "columns": {"sex": "String", "district": "String", "birth_year": "Int64", "industry": "String",
                    "month": "Date", "income": "Float64"},
        "public_keys": {"sex": ["女", "男"], "month": ["2024-01-01", "2024-02-01"],
                        "birth_year": ["1990", "1991"]},
    }  # fmt: skip
    lab = _gateway(lambda r: httpx.Response(200, json=[entry]))
    frame = lab.dummy("people", rows=50)
    assert frame.height == 50 and frame.columns == [*entry["columns"], "_dummy"]
    assert frame["_dummy"].all() and "DUMMY DATA" in capsys.readouterr().out
    assert set(frame["sex"]) <= {"女", "男"} and set(frame["birth_year"]) <= {1990, 1991}
    spans = {**entry, "columns": {"birth_date": "Date", "birth_year": "Int64"}, "public_keys": {},
             "public_years": {"birth_date": [1920, 1930]}}  # fmt: skip
    born = _gateway(lambda r: httpx.Response(200, json=[spans])).dummy("people", rows=50)
    assert born["birth_date"].dt.year().is_between(1920, 1930).all()
    assert (born["birth_year"] == born["birth_date"].dt.year()).all()
    assert frame.schema["month"] == pl.Date and frame.schema["income"] == pl.Float64
    assert all(v.startswith("dummy-industry-") for v in frame["industry"])
    with pytest.raises(NotFound) as caught:
        lab.dummy("peple")
    assert "Did you mean 'people'?" in caught.value.message


def test_in_a_notebook_a_lab_error_shows_the_analysts_line_and_the_message_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="nocolor")
    try:
        client_errors.show_lab_errors_briefly()
        shell.run_cell("import lab.client as lab")
        run = shell.run_cell("lab.Connection('http://127.0.0.1:1', 'tok').datasets()")
        shown = capsys.readouterr().out
        assert isinstance(run.error_in_exec, Unavailable)
        assert "Cannot reach the gateway" in shown and "无法连接网关" in shown and ".datasets()" in shown
        assert "client.py" not in shown and "httpx" not in shown and "_call" not in shown
        run = shell.run_cell("1 / 0")  # other exceptions keep IPython's usual traceback
        assert isinstance(run.error_in_exec, ZeroDivisionError)
    finally:
        shell.set_custom_exc((), None)
        InteractiveShell.clear_instance()


def test_a_mean_preview_shows_the_accuracy_of_the_mean_not_only_of_its_sum_and_count() -> None:
    """The issue: a mean's preview showed "sum ±…, len ±…", which says little about the mean."""
    from lab.dp.engine import MIN_MEAN_ROWS, _mean_row, mean_accuracy

    sum_scale, count_scale, alpha, bounds = 2_000.0, 4.0, 0.05, (0.0, 50_000.0)
    widths = [mean_accuracy(sum_scale, count_scale, alpha, bounds, n) for n in (100, 1_000, 10_000)]
    assert widths[0] is not None and widths[0] > widths[1] > widths[2] > 0  # bigger groups, tighter means
    assert mean_accuracy(sum_scale, count_scale, alpha, bounds, MIN_MEAN_ROWS) is None  # suppressed anyway
    # It is the interval a released mean gets when the noisy figures land on the worst true mean.
    n, worst = 1_000, bounds[1]
    plan = type("P", (), {"key_columns": ()})()
    prev = type("V", (), {"alpha": alpha, "noise": (_noise(sum_scale), _noise(count_scale))})()
    released = _mean_row(plan, prev, {"sum": worst * n, "len": n})  # type: ignore[arg-type]
    assert released["ci"] == pytest.approx(widths[1])

    pending = client.PendingQuery.__new__(client.PendingQuery)
    pending._preview = {
        "query": "mean(income)",
        "epsilon": 1.0,
        "delta": 0,
        "noise": [{"statistic": "sum", "accuracy": 9_000.0}, {"statistic": "len", "accuracy": 17.0}],
        "budget": {"epsilon": 10.0, "epsilon_remaining": 5.0},
        "affordable": True,
        "notes": [],
        "mean_accuracy": [{"rows": 100, "accuracy": widths[0]}, {"rows": 10, "accuracy": None}],
    }
    shown = repr(pending)
    assert f"±{widths[0]:.4g} (n=100)" in shown and "均值" in shown and "suppressed 不发布 (n=10)" in shown


def _noise(scale: float) -> object:
    return type("N", (), {"scale": scale})()
