"""``lab.extract()`` when the object store refuses: our own error in 中文 and English, naming the
dataset and what to do, never minio's ``S3Error``, its response body or request ids."""

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
