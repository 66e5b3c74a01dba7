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
