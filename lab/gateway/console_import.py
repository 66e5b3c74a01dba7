"""The operator console's import page: upload a file or name a PostgreSQL table, review the
draft policy, accept (``/console/operator/imports``).

Under the operator prefix (the role guard and the page's dependency refuse anyone else);
the use cases (:class:`lab.services.imports.Imports`) check the operator in Keycloak again.

An upload is a ``multipart/form-data`` post read as a stream (python-multipart's parser):
text fields are kept in memory up to a small bound, the one file field goes straight to a
private scratch directory (``work/upload-*``, mode 0700), refused past
``DATALAB_IMPORT_MAX_MB``, and removed after the import whatever happens. The form's CSRF
token must arrive before the file (the page puts it first): a post without it is refused
before a byte of the file is written.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response
from python_multipart.multipart import MultipartParser, parse_options_header

from lab.errors import ConfigError, LabError
from lab.gateway.console import Console, ConsoleDenied, Operator
from lab.ingest import Imported
from lab.ingest.sources import ENCODINGS
from lab.services.imports import POLICY_MAX, Imports

PAGE = "operator/imports"
FIELD_MAX = POLICY_MAX  # bytes of one text field (the policy is the longest)
FIELDS = {"csrf", "name", "new_version", "encoding", "policy"}
SUFFIXES = (".csv", ".parquet", ".xlsx", ".xlsm", ".xls", ".txt")


def _said(done: Imported) -> str:
    if done.published:
        return (
            f"已导入并发布 {done.dataset} 第 {done.version} 版（{done.rows:,} 行）。 / "
            f"Imported and published {done.dataset} version {done.version} ({done.rows:,} rows)."
        )
    return (
        f"已导入 {done.dataset} 第 {done.version} 版（{done.rows:,} 行），请审阅下方的策略草案后采纳。 / "
        f"Imported {done.dataset} version {done.version} ({done.rows:,} rows); review its draft policy "
        "below, then accept it."
    )


def _accepted(meta: dict[str, Any]) -> str:
    said = (
        f"{meta['dataset']} 第 {meta['version']} 版已发布，已列入数据目录。 / {meta['dataset']} "
        f"version {meta['version']} is published and listed in the catalogue."
    )
    if meta["rebuilding"]:
        said += (
            f" 正在后台按新版本重建 {meta['rebuilding']} 个机构的脱敏提取件（见审计日志）。 / Rebuilding "
            f"{meta['rebuilding']} organisation(s)' masked extracts from it in the background "
            "(see the audit log)."
        )
    return said


def _file_name(raw: str) -> str:
    """A safe name for the stored upload, keeping the original's readable part and suffix."""
    base = Path(raw.replace("\\", "/")).name
    stem, dot, suffix = base.rpartition(".")
    suffix = f".{suffix.lower()}" if dot else ""
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{base[:80]!r}: upload a .csv, .parquet or .xlsx file (请上传 CSV、Parquet 或 Excel 文件)",
            reason="unsupported-format",
        )
    clean = re.sub(r"[^\w.-]", "_", stem or "upload")[:80].lstrip(".") or "upload"
    return clean + suffix


class _Form:
    """The callbacks of one multipart post: text fields in memory, the file field to disk."""

    def __init__(self, csrf: str, folder: Path, max_bytes: int) -> None:
        self.csrf, self.folder, self.max_bytes = csrf, folder, max_bytes
        self.fields: dict[str, str] = {}
        self.file: Path | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field, self._value = b"", b""
        self._name = ""
        self._buffer: bytearray | None = None
        self._out: BinaryIO | None = None
        self._size = 0
        self.complete = False  # the closing boundary arrived

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: setattr(self, "_field", self._field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", self._value + d[s:e]),
            "on_header_end": self._header,
            "on_headers_finished": self._start,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_end": lambda: setattr(self, "complete", True),
        }

    def _begin(self) -> None:
        self._headers, self._name, self._buffer, self._out = {}, "", None, None

    def _header(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _start(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if self._name == "source":
            if self.fields.get("csrf") != self.csrf:  # before a byte of the file is written
                raise ConsoleDenied(
                    "The form's security token is missing or stale; reload the page. / 请刷新页面。"
                )
            if self.file is not None:
                raise ConfigError("upload one file at a time (请一次上传一个文件)", reason="bad-form")
            filename = options.get(b"filename", b"").decode("utf-8", errors="replace")
            if not filename:
                raise ConfigError("choose a file to upload (请选择要上传的文件)", reason="bad-form")
            self.file = self.folder / _file_name(filename)
            self._out = self.file.open("xb")
        elif self._name in FIELDS and self._name not in self.fields:
            self._buffer = bytearray()
        else:
            raise ConfigError(
                f"the form has an unexpected field {self._name[:40]!r}; reload the page "
                "(表单字段有误，请刷新页面)",
                reason="bad-form",
            )

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self._size += end - start
            if self._size > self.max_bytes:
                raise ConfigError(
                    f"the file is larger than {self.max_bytes >> 20:,} MB, the console's limit; import it "
                    "with 'datalab dataset import' on the server, or ask the administrator to raise "
                    "DATALAB_IMPORT_MAX_MB (文件超过控制台上传上限，请改用命令行导入)",
                    reason="too-large",
                )
            self._out.write(data[start:end])
        elif self._buffer is not None:
            if len(self._buffer) + end - start > FIELD_MAX:
                raise ConfigError(
                    f"the field {self._name!r} is longer than {FIELD_MAX // 1024} KiB (字段过长)",
                    reason="too-large",
                )
            self._buffer += data[start:end]

    def _end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self._buffer is not None:
            self.fields[self._name] = self._buffer.decode("utf-8", errors="replace")
            self._buffer = None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


async def read_upload(
    request: Request, csrf: str, folder: Path, max_bytes: int
) -> tuple[dict[str, str], Path]:
    """The text fields and the stored file of a multipart post (errors name what was wrong)."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ConfigError("post the form from the import page (请从导入页面提交表单)", reason="bad-form")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes + FIELD_MAX * len(FIELDS):
        raise ConfigError(
            f"the file is larger than {max_bytes >> 20:,} MB, the console's limit; import it with "
            "'datalab dataset import' on the server (文件超过控制台上传上限，请改用命令行导入)",
            reason="too-large",
        )
    form = _Form(csrf, folder, max_bytes)
    parser = MultipartParser(boundary, cast(Any, form.callbacks()))
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except LabError:
        raise
    except Exception:  # the parser's own errors: a malformed body
        form.complete = False
    finally:
        form.close()
    if not form.complete:
        raise ConfigError(
            "the upload was cut off or malformed; try again (上传中断或格式有误，请重试)", reason="bad-form"
        )
    if form.fields.get("csrf") != csrf:
        raise ConsoleDenied("The form's security token is missing or stale; reload the page. / 请刷新页面。")
    if form.file is None:
        raise ConfigError("choose a file to upload (请选择要上传的文件)", reason="bad-form")
    return form.fields, form.file


def router(console: Console, imports: Imports) -> APIRouter:
    pages = APIRouter(prefix="/console")
    settings = imports.settings

    @pages.get(f"/{PAGE}")
    def imports_page(request: Request, session: Operator) -> Response:
        return console.render(
            request,
            "imports.html",
            "imports",
            session,
            pending=imports.pending(),
            encodings=sorted(set(ENCODINGS.values())),
            pg_hosts=settings.import_pg_hosts,
            max_mb=settings.import_max_bytes >> 20,
        )

    @pages.post(f"/{PAGE}/file")
    async def upload(request: Request, session: Operator) -> Response:
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix="upload-") as tmp:
            try:
                fields, path = await read_upload(request, session.csrf, Path(tmp), settings.import_max_bytes)
            except ConsoleDenied:
                raise
            except LabError as exc:
                return console.flash(PAGE, error=exc.message)
            return await console.act(
                PAGE,
                lambda: imports.upload(
                    session.caller.username,
                    path,
                    fields.get("name", ""),
                    new_version=bool(fields.get("new_version")),
                    encoding=fields.get("encoding") or None,
                    policy=fields.get("policy", ""),
                ),
                said=_said,
            )

    @pages.post(f"/{PAGE}/postgres")
    async def table(request: Request, session: Operator) -> Response:
        form = await console.form(request, session)
        return await console.act(
            PAGE,
            lambda: imports.table(
                session.caller.username,
                form.get("url", "").strip(),
                form.get("password", ""),
                form.get("name", ""),
                new_version=bool(form.get("new_version")),
                policy=form.get("policy", ""),
            ),
            said=_said,
        )

    @pages.post(f"/{PAGE}/{{dataset}}/{{version}}/accept")
    async def accept(request: Request, session: Operator, dataset: str, version: str) -> Response:
        form = await console.form(request, session)
        if not version.isdigit() or not 0 < int(version) < 10**6:
            return console.flash(PAGE, error="no such version; reload the page (没有此版本，请刷新页面)")
        return await console.act(
            PAGE,
            lambda: imports.accept(
                session.caller.username,
                dataset,
                int(version),
                form.get("policy", ""),
                rebuild=bool(form.get("rebuild_extracts")),
            ),
            said=_accepted,
        )

    return pages
