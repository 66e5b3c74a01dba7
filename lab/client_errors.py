"""How the notebook client turns every failure into a ``LabError`` (httpx's ``map_exceptions``).

An analyst never sees an ``httpx``, ``minio``, ``urllib3``, Polars or JSON exception: each is
mapped here, at the client's boundary, to our own error with a message in 中文 and English
that says what to do. The original exception stays attached as ``error.__context__`` (not
printed under the message) and is logged at DEBUG on the ``lab.client`` logger; no message
carries a token, a response body, a request id or a value read from data. In a notebook
(IPython), a ``LabError`` is shown with the analyst's own lines only, not the client's frames
(:func:`show_lab_errors_briefly`, installed when ``lab.client`` is imported).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from lab.errors import (
    AccessDenied,
    BudgetExhausted,
    Busy,
    ConfigError,
    LabError,
    NotAuthenticated,
    NotFound,
    Unavailable,
)

log = logging.getLogger("lab.client")

BY_STATUS: dict[int, type[LabError]] = {
    400: ConfigError,
    401: NotAuthenticated,
    403: AccessDenied,
    404: NotFound,
    422: ConfigError,
    429: Busy,  # the gateway's admission: too many heavy queries at once, retry later
}


class UnknownAttribute(ConfigError, AttributeError):
    """A mistyped method of the client's builders: a ``LabError`` with a suggestion, and still
    an ``AttributeError`` so ``hasattr`` and tab completion behave."""


def _logged(error: LabError, cause: BaseException) -> LabError:
    log.debug("%s (%s): %s", type(error).__name__, error.reason, error.detail, exc_info=cause)
    return error


def unreachable(url: str, exc: httpx.HTTPError) -> LabError:
    """The gateway could not be reached or did not answer."""
    if isinstance(exc, httpx.TimeoutException):
        return _logged(
            Unavailable(
                "The gateway did not answer in time; try again in a minute. A DP release that timed "
                "out may still have run: check lab.history() before releasing again. "
                "/ 网关未能及时响应，请稍后重试。超时的差分隐私发布可能已经执行，再次发布前请先用 "
                "lab.history() 查看。",
                detail=f"{type(exc).__name__} calling {url}",
                reason="gateway-timeout",
            ),
            exc,
        )
    return _logged(
        Unavailable(
            f"Cannot reach the gateway at {url} ({_kind(exc)}); check that the lab is running and "
            "that DATALAB_GATEWAY_URL is right, then retry. "
            f"/ 无法连接网关 {url}，请确认数据实验室正在运行、DATALAB_GATEWAY_URL 设置正确，然后重试。",
            detail=f"{type(exc).__name__} calling {url}",
            reason="gateway-unreachable",
        ),
        exc,
    )


def _kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection was closed"
    return type(exc).__name__


def refusal(response: httpx.Response) -> LabError:
    """A gateway answer that is not a success, as our error (never its raw body)."""
    status = response.status_code
    try:
        error = response.json()["error"]
        message, reason = error["message"], error.get("reason")  # the gateway's, in both languages
    except (ValueError, KeyError, TypeError):  # not the gateway's shape: a proxy page, a crash
        return _without_shape(status)
    if reason == "budget-exhausted":
        return BudgetExhausted(str(message), reason=reason)
    if status >= 500:
        return Unavailable(str(message), reason=str(reason or "internal"))
    return BY_STATUS.get(status, LabError)(str(message), reason=str(reason) if reason else None)


def _without_shape(status: int) -> LabError:
    detail = f"HTTP {status} without the gateway's error shape"
    if status in (401, 403):
        return NotAuthenticated(
            f"The lab refused the request (HTTP {status}); your login may have expired: reload "
            f"JupyterLab (or log in again) and retry. / 请求被拒绝（HTTP {status}），登录可能已过期："
            "请刷新 JupyterLab 或重新登录后重试。",
            detail=detail,
            reason="refused",
        )
    if status >= 500:
        return Unavailable(
            f"The gateway failed (HTTP {status}); try again in a minute, or tell the bureau if it "
            f"persists. / 网关出错（HTTP {status}），请稍后重试；若持续出现请联系数据局。",
            detail=detail,
            reason="gateway-failed",
        )
    return LabError(
        f"The gateway answered HTTP {status}; check DATALAB_GATEWAY_URL, then retry. "
        f"/ 网关返回 HTTP {status}，请检查 DATALAB_GATEWAY_URL 后重试。",
        detail=detail,
        reason="unexpected-answer",
    )


def not_json(url: str, exc: Exception) -> LabError:
    return _logged(
        Unavailable(
            "The gateway sent an answer the client cannot read; check DATALAB_GATEWAY_URL, then retry. "
            "/ 网关返回的内容无法解析，请检查 DATALAB_GATEWAY_URL 后重试。",
            detail=f"{type(exc).__name__} reading the answer of {url}",
            reason="unexpected-answer",
        ),
        exc,
    )


def storage(exc: BaseException, dataset: str) -> LabError:
    """A failure reading an extract from the object store, or a damaged file, as our error."""
    from minio.error import MinioException, S3Error

    if isinstance(exc, S3Error):
        return _logged(_s3_error(exc, dataset), exc)
    if isinstance(exc, MinioException):  # e.g. the token was not exchanged for storage credentials
        return _logged(
            LabError(
                f"The object store refused the request for {dataset!r} ({type(exc).__name__}); "
                "log in again and retry, or tell the bureau. "
                "/ 对象存储拒绝了请求，请重新登录后重试或联系数据局。",
                detail=type(exc).__name__,
                reason="storage",
            ),
            exc,
        )
    if _is_connection(exc):
        return _logged(
            Unavailable(
                f"Cannot reach the object store to read {dataset!r}; check that the lab is running and "
                "DATALAB_S3_ENDPOINT, then retry. "
                f"/ 无法连接对象存储读取 {dataset}，请确认数据实验室正在运行、"
                "DATALAB_S3_ENDPOINT 正确后重试。",
                detail=f"{type(exc).__name__} reading {dataset}",
                reason="storage-unreachable",
            ),
            exc,
        )
    return _logged(
        LabError(
            f"The extract of {dataset!r} could not be read: a file of it is damaged or incomplete. "
            "Try again; if it persists, ask the bureau to rebuild it. "
            f"/ {dataset} 的数据文件损坏或不完整，无法读取。请重试；若仍失败，请联系数据局重新生成。",
            detail=f"{type(exc).__name__} reading {dataset}",
            reason="corrupt-extract",
        ),
        exc,
    )


def _is_connection(exc: BaseException) -> bool:
    import urllib3.exceptions

    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


@contextmanager
def reading_extract(dataset: str) -> Iterator[None]:
    """Map whatever reading ``dataset``'s extract raises (other than our own errors)."""
    try:
        yield
    except LabError:
        raise
    except Exception as exc:
        raise storage(exc, dataset) from None


def _s3_error(exc: Any, dataset: str) -> LabError:
    """The object store's refusal (a minio ``S3Error``) as our own error, naming the dataset and
    what to do; only the error's code is kept (never the response body, keys or request ids)."""
    code = str(getattr(exc, "code", "") or "")
    if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "ExpiredToken"):
        return AccessDenied(
            f"Your organisation holds no extract of {dataset!r} (the store refused access). Apply for "
            "the dataset in the console, or check that your grant is active. "
            f"/ 贵机构没有 {dataset} 的数据（存储拒绝访问）。请在控制台申请该数据集，或确认授权仍然有效。",
            detail=f"S3 {code} on {dataset}",
            reason="no-extract-access",
        )
    if code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
        return NotFound(
            f"No extract of {dataset!r} was found; check the name with lab.datasets(). "
            f"/ 找不到 {dataset} 的数据，请用 lab.datasets() 核对名称。",
            detail=f"S3 {code} on {dataset}",
            reason="no-such-extract",
        )
    label = code if code.isascii() and code.isalnum() and len(code) <= 40 else "?"
    return LabError(
        f"The object store could not read the extract of {dataset!r} (code {label}); try again, or "
        f"tell the bureau. / 对象存储无法读取 {dataset} 的数据（代码 {label}），请重试或联系数据局。",
        detail=f"S3 {label} on {dataset}",
        reason="storage",
    )


_PACKAGE = str(Path(__file__).resolve().parent) + "/"  # lab/


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without the frames inside the ``lab`` package: the analyst's own lines remain."""
    kept = []
    while tb is not None:
        if not str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
            kept.append(tb)
        tb = tb.tb_next
    chained = None
    for frame in reversed(kept):
        chained = TracebackType(chained, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return chained


def show_lab_errors_briefly() -> None:
    """In IPython (a notebook), a ``LabError`` shows the analyst's own line and the message,
    not the client's internals; any other exception keeps IPython's usual traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell: Any = get_ipython()
    if shell is None or getattr(shell, "custom_exceptions", None):
        return  # not IPython, or someone else's handler: leave it alone

    def brief(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
        shell.showtraceback((etype, value, _user_frames(tb) or tb), tb_offset=tb_offset)

    shell.set_custom_exc((LabError,), brief)
