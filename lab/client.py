"""What an analyst uses in a notebook::

    import lab.client as lab

    lab.datasets()                                   # granted datasets, budget left
    q = lab.dp("population").group_by("district").count(epsilon=0.5)
    q = lab.sql("SELECT district, COUNT(*) FROM population GROUP BY district", epsilon=0.5)  # the same
    q                                                # the preview: cost and accuracy, nothing spent
    result = q.release()                             # spends ε, returns noisy counts
    result.frame                                     # a Polars DataFrame (result.to_pandas() too)
    people = lab.extract("population")               # the masked extract, as a DataFrame
    tables = lab.extract("population", kind="dp-table")  # DP tables, no budget spent to reuse
    lab.history()                                    # your own queries

Everything goes through the gateway (``DATALAB_GATEWAY_URL``) with the analyst's access
token (``DATALAB_TOKEN``, or a file named by ``DATALAB_TOKEN_FILE`` that is re-read on
every call so a refreshed token is picked up); masked extracts are read from MinIO
(``DATALAB_S3_ENDPOINT``) with short-lived credentials obtained with the same token, which
expire with it.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from lab import dp as _dp
from lab.errors import (
    AccessDenied,
    BudgetExhausted,
    Busy,
    ConfigError,
    LabError,
    NotAuthenticated,
    NotFound,
)
from lab.settings import GATEWAY_PREFIX
from lab.store import layout

__all__ = [
    "Connection",
    "PendingQuery",
    "Result",
    "SyntheticDataWarning",
    "connect",
    "datasets",
    "dp",
    "extract",
    "history",
    "request_export",
    "sql",
]

SYNTHETIC_NOTICE = (
    "SYNTHETIC DATA: generated from differentially private marginals; no row is a real person. "
    "/ 合成数据：由差分隐私边际分布生成，任何一行都不是真实个人。"
)


class SyntheticDataWarning(UserWarning):
    """Shown whenever DP synthetic rows are loaded, so nobody mistakes them for real records."""


_ERRORS: dict[int, type[LabError]] = {
    400: ConfigError,
    401: NotAuthenticated,
    403: AccessDenied,
    404: NotFound,
    429: Busy,
}
_AGGREGATES = ("count", "sum", "mean", "quantile", "median", "histogram")


def _token_from_env() -> Callable[[], str]:
    def read() -> str:
        path = os.environ.get("DATALAB_TOKEN_FILE")
        token = Path(path).read_text().strip() if path else os.environ.get("DATALAB_TOKEN", "")
        if not token:
            raise NotAuthenticated(
                "No access token: set DATALAB_TOKEN or DATALAB_TOKEN_FILE. / 缺少访问令牌。"
            )
        return token

    return read


class Connection:
    """A session with the gateway on behalf of one analyst."""

    def __init__(self, url: str, token: str | Callable[[], str], *, s3_endpoint: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token if callable(token) else (lambda: token)
        self.s3_endpoint = s3_endpoint or os.environ.get("DATALAB_S3_ENDPOINT", "127.0.0.1:9000")
        self._http = httpx.Client(timeout=120)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._token()}"}
        response = self._http.request(method, f"{self.url}/api{path}", headers=headers, **kwargs)
        if response.is_success:
            return response.json()
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise LabError(
                f"The gateway answered {response.status_code} (网关返回错误，请稍后重试或联系运营人员): "
                f"{response.text[:200]}"
            ) from None
        kind = (
            BudgetExhausted
            if error.get("reason") == "budget-exhausted"
            else _ERRORS.get(response.status_code, LabError)
        )
        raise kind(error["message"], reason=error.get("reason"))

    def me(self) -> dict[str, Any]:
        return dict(self._call("GET", "/me"))

    def datasets(self) -> pl.DataFrame:
        """The datasets granted to your organisation: modes, extracts built, rows, budget left, term."""
        rows = [
            {
                "dataset": d["dataset"],
                "title": d["title"]["zh"] + " / " + d["title"]["en"],
                "modes": ", ".join(d["modes"]),
                "extracts": ", ".join(d["extracts"]),
                "rows": d["rows"],
                "epsilon_remaining": d["budget"]["epsilon_remaining"],
                "delta_remaining": d["budget"]["delta_remaining"],
                "expires_at": d["expires_at"][:10],
                "columns": ", ".join(d["columns"]),
            }
            for d in self._call("GET", "/datasets")
        ]
        schema = [
            "dataset",
            "title",
            "modes",
            "extracts",
            "rows",
            "epsilon_remaining",
            "delta_remaining",
            "expires_at",
            "columns",
        ]
        return pl.DataFrame(rows, schema=schema if not rows else None)

    def dp(self, dataset: str) -> QueryBuilder:
        """Start a DP query on ``dataset``: ``.group_by(...)``, ``.filter(...)``, then an aggregate."""
        return QueryBuilder(self, _dp.on(dataset))

    def sql(
        self,
        text: str,
        *,
        epsilon: float,
        delta: float = 0.0,
        bounds: Any = None,
        candidates: list[float] | None = None,
    ) -> PendingQuery:
        """One SQL ``SELECT`` as a DP query (docs/sql.md): the gateway parses it into the query
        ``dp()`` builds and previews it at once; ``release()`` spends the budget."""
        body = {"sql": text, "epsilon": epsilon, "delta": delta, "bounds": bounds, "candidates": candidates}
        answer = self._call("POST", "/sql", json=body)
        pending = PendingQuery(self, _dp.Query.from_dict(answer["query"]))
        pending._preview = dict(answer["preview"])
        return pending

    def history(self) -> pl.DataFrame:
        """Your DP queries, newest first."""
        rows = [
            {
                "time": r["at"],
                "dataset": r["dataset"],
                "outcome": r["details"].get("outcome"),
                "epsilon": r["details"].get("epsilon"),
                "delta": r["details"].get("delta"),
                "query": r["details"].get("query"),
            }
            for r in self._call("GET", "/queries")
        ]
        return (
            pl.DataFrame(rows)
            if rows
            else pl.DataFrame(schema=["time", "dataset", "outcome", "epsilon", "delta", "query"])
        )

    def _credentials(self) -> Any:
        from minio.credentials import WebIdentityProvider

        # No DurationSeconds: the credentials expire with the access token (MinIO caps any
        # longer request at 15 minutes anyway), and are fetched again with a fresh token.
        return WebIdentityProvider(
            jwt_provider_func=lambda: {"access_token": self._token()},
            sts_endpoint=f"http://{self.s3_endpoint}",
        )

    def _s3(self) -> Any:
        from minio import Minio

        return Minio(self.s3_endpoint, credentials=self._credentials(), secure=False, region="us-east-1")

    def _storage_options(self) -> dict[str, str]:
        """Polars' S3 options with the analyst's own short-lived credentials (never the root keys)."""
        creds = self._credentials().retrieve()
        options = {
            "aws_access_key_id": creds.access_key,
            "aws_secret_access_key": creds.secret_key,
            "aws_endpoint_url": f"http://{self.s3_endpoint}",
            "aws_region": "us-east-1",
            "aws_allow_http": "true",
        }
        if creds.session_token:
            options["aws_session_token"] = creds.session_token
        return options

    def extract(
        self, dataset: str, kind: str = "masked", table: str | None = None, *, lazy: bool = False
    ) -> Any:
        """Your organisation's newest extract of ``dataset`` of one ``kind``.

        ``masked``: de-identified microdata (a DataFrame); ``dp-synthetic``: DP synthetic
        rows (a DataFrame, marked synthetic); ``dp-table``: the DP tables, a dict of
        DataFrames by name (or the one named ``table``). With ``lazy=True`` each is a
        LazyFrame scanning the object in MinIO with your credentials, so a register larger
        than the notebook's memory can be filtered and aggregated in streaming; collect it
        within about 15 minutes (the credentials expire with your token), or call
        ``extract`` again.
        """
        org = self.me().get("org")
        if not org:
            raise AccessDenied(
                "You belong to no organisation, so no extract is built for you. "
                "/ 您不属于任何机构，因此没有为您生成的数据。"
            )
        from minio.error import MinioException, S3Error

        try:
            s3, scan = self._s3(), None
            if lazy:
                options = self._storage_options()

                def scan(name: str) -> pl.LazyFrame:
                    return pl.scan_parquet(f"s3://{layout.EXTRACTS_BUCKET}/{name}", storage_options=options)

            return self._extract(s3, org, dataset, kind, table, scan)
        except S3Error as exc:
            raise _s3_error(exc, dataset) from None
        except MinioException as exc:  # e.g. the token was not exchanged for storage credentials
            raise LabError(
                f"The object store refused the request for {dataset!r} ({type(exc).__name__}); "
                "log in again and retry, or tell the bureau. "
                "/ 对象存储拒绝了请求，请重新登录后重试或联系数据局。",
                detail=type(exc).__name__,
                reason="storage",
            ) from None

    def _extract(
        self,
        s3: Any,
        org: str,
        dataset: str,
        kind: str,
        table: str | None,
        scan: Callable[[str], pl.LazyFrame] | None = None,
    ) -> Any:
        bucket = layout.EXTRACTS_BUCKET

        def read(name: str) -> bytes:
            response = s3.get_object(bucket, name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        def frame(name: str) -> pl.DataFrame | pl.LazyFrame:
            return scan(name) if scan is not None else pl.read_parquet(io.BytesIO(read(name)))

        versions = sorted(
            {o.object_name for o in s3.list_objects(bucket, prefix=layout.dataset_prefix(org, dataset))}
        )
        for version in reversed(versions):
            names = {o.object_name for o in s3.list_objects(bucket, prefix=version)}
            if f"{version}{layout.MANIFEST}" not in names:
                continue  # not (yet) published
            manifest = json.loads(read(f"{version}{layout.MANIFEST}"))
            if manifest.get("kind", "masked") != kind:
                continue
            if kind == "masked":
                return frame(f"{version}{layout.MASKED_DATA}")
            if kind == "dp-synthetic":
                warnings.warn(SYNTHETIC_NOTICE, SyntheticDataWarning, stacklevel=2)
                return frame(f"{version}{layout.SYNTHETIC_DATA}")
            tables = {Path(name).stem: name for name in manifest["files"] if name.endswith(".parquet")}
            if table is not None:
                if table not in tables:
                    raise NotFound(
                        f"No table {table!r} in this extract; it has {', '.join(sorted(tables))}. "
                        f"/ 该数据中没有表 {table}，现有：{'、'.join(sorted(tables))}。"
                    )
                return frame(f"{version}{tables[table]}")
            return {name: frame(f"{version}{file}") for name, file in tables.items()}
        raise NotFound(
            f"No {kind} extract of {dataset!r} has been built for {org}. "
            f"/ 尚未为贵机构生成 {dataset} 的 {kind} 数据。"
        )


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


class QueryBuilder:
    """``lab.dp(dataset)``: chain ``filter`` / ``group_by``, finish with an aggregate."""

    def __init__(self, connection: Connection, builder: _dp.QueryBuilder) -> None:
        self._connection = connection
        self._builder = builder

    def filter(self, column: str, op: str, value: Any) -> QueryBuilder:
        return QueryBuilder(self._connection, self._builder.filter(column, op, value))

    def group_by(self, *columns: str, keys: list[Any] | None = None) -> QueryBuilder:
        return QueryBuilder(self._connection, self._builder.group_by(*columns, keys=keys))

    def __getattr__(self, name: str) -> Callable[..., PendingQuery]:
        if name not in _AGGREGATES:
            raise AttributeError(name)
        method = getattr(self._builder, name)

        @wraps(method)
        def aggregate(*args: Any, **kwargs: Any) -> PendingQuery:
            return PendingQuery(self._connection, method(*args, **kwargs))

        return aggregate

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *_AGGREGATES]


class PendingQuery:
    """A query not yet run. Its repr is the preview; ``release()`` spends the budget."""

    def __init__(self, connection: Connection, query: _dp.Query) -> None:
        self._connection = connection
        self.query = query
        self._preview: dict[str, Any] | None = None

    def _body(self) -> dict[str, Any]:
        body = self.query.to_dict()
        body.pop("unit")  # the gateway applies the dataset's privacy unit
        return body

    def preview(self) -> dict[str, Any]:
        """Cost (ε, δ), noise scale and 95% accuracy, and your remaining budget; spends nothing."""
        if self._preview is None:
            self._preview = dict(self._connection._call("POST", "/queries/preview", json=self._body()))
        return self._preview

    def release(self) -> Result:
        """Run the query: the budget is charged, the noisy result returned."""
        return Result(self._connection._call("POST", "/queries", json=self._body()))

    def __repr__(self) -> str:
        p = self.preview()
        budget = p["budget"]
        accuracy = ", ".join(f"{n['statistic']} ±{n['accuracy']:.4g}" for n in p["noise"])
        cost = f"ε={p['epsilon']:g}" + (f", δ={p['delta']:g}" if p["delta"] else "")
        left, asked = budget["epsilon_remaining"], p["epsilon"]
        total = budget.get("epsilon")
        of = f" of {total:g}" if isinstance(total, int | float) else ""
        of_zh = f"（共 {total:g}）" if of else ""
        lines = [
            f"DP query (not yet run / 尚未执行): {p['query']}",
            f"  cost 花费: {cost};  accuracy 95% 精度: {accuracy}",
        ]
        if p.get("mean_accuracy"):
            shown = ", ".join(
                f"±{m['accuracy']:.4g} (n={m['rows']:,})"
                if m["accuracy"] is not None
                else f"suppressed 不发布 (n={m['rows']:,})"
                for m in p["mean_accuracy"]
            )
            lines.append(f"  mean 均值 95% accuracy 精度, for a group of n rows 每组 n 行: {shown}")
        if asked > left or not p["affordable"]:
            lines.append(
                f"  ✗ budget: ε {asked:g} exceeds what is left (ε {left:g}{of}); release() will be refused "
                f"/ 预算不足：所需 ε {asked:g} 超过剩余的 ε {left:g}{of_zh}，release() 将被拒绝"
            )
        else:
            lines.append(f"  budget 预算: ε {left:g}{of} left 剩余 → {left - asked:g} after release() 执行后")
        lines += [f"  note: {n}" for n in p["notes"]]
        return "\n".join(lines)


class Result:
    """A released DP result: ``frame`` (Polars), ``budget`` left, the noise ``scale``."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.frame = pl.DataFrame(payload["rows"])
        self.budget = payload["budget"]
        self.epsilon = payload["preview"]["epsilon"]
        self.delta = payload["preview"]["delta"]

    def to_pandas(self) -> Any:
        return self.frame.to_pandas()

    def __repr__(self) -> str:
        left = f"ε {self.budget['epsilon_remaining']:g}, δ {self.budget['delta_remaining']:g}"
        return f"{self.frame}\nspent 花费 ε={self.epsilon:g} δ={self.delta:g}; budget left 剩余预算: {left}"


_default: Connection | None = None


def connect(url: str | None = None, token: str | Callable[[], str] | None = None) -> Connection:
    """Set (and return) the connection the module-level functions use."""
    global _default
    _default = Connection(
        url or os.environ.get("DATALAB_GATEWAY_URL", f"http://127.0.0.1:8000{GATEWAY_PREFIX}"),
        token or _token_from_env(),
    )
    return _default


def _connection() -> Connection:
    return _default or connect()


def datasets() -> pl.DataFrame:
    """The datasets granted to your organisation. / 已授权的数据集。"""
    return _connection().datasets()


def dp(dataset: str) -> QueryBuilder:
    """Start a differentially private query. / 开始一个差分隐私查询。"""
    return _connection().dp(dataset)


def sql(
    text: str, *, epsilon: float, delta: float = 0.0, bounds: Any = None, candidates: Any = None
) -> PendingQuery:
    """A differentially private query in SQL, previewed at once. / 用 SQL 写的差分隐私查询（先预览）。"""
    return _connection().sql(text, epsilon=epsilon, delta=delta, bounds=bounds, candidates=candidates)


def extract(dataset: str, kind: str = "masked", table: str | None = None, *, lazy: bool = False) -> Any:
    """Your organisation's newest extract: ``masked``, ``dp-table`` or ``dp-synthetic``. / 最新的数据产品。

    ``lazy=True``: a LazyFrame scanning it in the object store (for extracts larger than memory).
    """
    return _connection().extract(dataset, kind, table, lazy=lazy)


def history() -> pl.DataFrame:
    """Your own DP queries. / 我的查询记录。"""
    return _connection().history()


def request_export(
    path_or_bytes: str | Path | bytes | Result | pl.DataFrame,
    *,
    purpose: str,
    name: str | None = None,
    dataset: str | None = None,
    counts: list[str] | None = None,
    by: list[str] | None = None,
) -> dict[str, Any]:
    """Ask to take a file out of the lab. / 申请导出文件。

    A DP result (``Result``, or the JSON the gateway returned) is released at once; any
    other file (CSV, Parquet, JSON records, a PNG chart; a DataFrame is sent as CSV) goes
    through the disclosure checks (minimum cell count, dominance) and is released only when
    two operators other than you have seen it and approved it. Returns the request:
    ``state`` (released / pending / held), ``checks`` and its ``id``. Follow it, reply,
    withdraw it or resubmit a corrected version in the console (我的机构 → the export).
    ``counts`` and ``by`` name the count and grouping columns if their names do not say so.
    """
    import base64
    import json

    if isinstance(path_or_bytes, Result):
        data, name = json.dumps(path_or_bytes.payload).encode(), name or "dp-result.json"
    elif isinstance(path_or_bytes, pl.DataFrame):
        data, name = path_or_bytes.write_csv().encode(), name or "table.csv"
    elif isinstance(path_or_bytes, bytes):
        data, name = path_or_bytes, name or "export.bin"
    else:
        path = Path(path_or_bytes)
        data, name = path.read_bytes(), name or path.name
    body = {
        "name": name,
        "purpose": purpose,
        "dataset": dataset,
        "counts": counts,
        "by": by,
        "content_b64": base64.b64encode(data).decode(),
    }
    return dict(_connection()._call("POST", "/exports", json=body))
