"""What the analyst's client says.

``lab.extract()`` when the object store refuses: our own error in 中文 and English, naming the
dataset and what to do, never minio's ``S3Error``, its response body or request ids. A query's
preview when it asks for more ε than is left.
"""

from __future__ import annotations

from typing import Any

import pytest
from minio.error import S3Error
from urllib3 import HTTPResponse

from lab import client
from lab.errors import AccessDenied, LabError, NotFound

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
