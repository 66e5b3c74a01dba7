"""What a reviewer sees of a file in the airlock: a table, an image, text, or a note.

:func:`preview` turns an export's name and bytes into plain data for a page, never HTML
(the console's templates escape every value):

- a **table** (CSV, TSV, Parquet, JSON records; read as the disclosure checks read it) as
  its first :data:`MAX_ROWS` rows and :data:`MAX_COLUMNS` columns, each cell cut at
  :data:`MAX_CELL` characters, with a note saying what was cut;
- an **image** only if its bytes *are* PNG, JPEG, GIF or WebP (magic numbers) and its name
  agrees; it is served by the console with that one content type, ``nosniff`` and a
  sandboxing CSP. SVG is text (it can carry script). A file named like an image whose bytes
  are not one is flagged as disguised and shown as text or not at all;
- **text and code** (UTF-8) as text, cut at :data:`MAX_TEXT` characters;
- anything else: a note that it cannot be shown, and the reviewer's download.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from lab import disclosure

MAX_ROWS = 200
MAX_COLUMNS = 40
MAX_CELL = 200
MAX_TEXT = 100_000
IMAGE_SUFFIXES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}
TABLE_SUFFIXES = ("csv", "tsv", "parquet", "json")
# PNG chunks that only draw pixels: no text, no metadata, no private data (PNG spec, 4.2).
PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"sRGB", b"pHYs", b"cHRM", b"bKGD"}
MAX_IMAGE = 5 * 1024 * 1024


def image_type(data: bytes) -> str | None:
    """The image type the bytes really are (magic numbers), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def png_problem(data: bytes) -> str | None:
    """None if ``data`` is a PNG made only of pixel chunks with nothing after its end; else why not.

    Text chunks (tEXt, zTXt, iTXt), private chunks and bytes after IEND could carry rows a
    reviewer never sees in the picture, so such a file is held.
    """
    if image_type(data) != "image/png":
        return "not a PNG"
    if len(data) > MAX_IMAGE:
        return f"larger than {MAX_IMAGE >> 20} MB"
    at = 8
    while at + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        end = at + 12 + length
        if end > len(data):
            return "a chunk runs past the end of the file"
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(data[at + 4 : end - 4]) != crc:
            return f"chunk {kind.decode('latin-1')!r} is damaged (CRC)"
        if kind not in PIXEL_CHUNKS:
            return f"it carries a {kind.decode('latin-1')!r} chunk (text or data besides the pixels)"
        if kind == b"IEND":
            return None if end == len(data) else "bytes follow the end of the image"
        at = end
    return "the image has no end (IEND)"


def image_checks(name: str, data: bytes, thresholds: dict[str, Any]) -> dict[str, Any] | None:
    """The automatic checks of an image file (None if it is not one): a clean PNG waits for the
    reviewers' eyes (a warning); any other image is held with the reason."""
    real = image_type(data)
    if real is None:
        return None
    problem = (
        png_problem(data) if real == "image/png" else f"{real} is not checked automatically; export a PNG"
    )
    finding: dict[str, Any] = {
        "check": "image",
        "severity": "warn" if problem is None else "fail",
        "column": None,
        "rows": [],
        "message": (
            "an image: the reviewers check it by eye (it holds only pixels) "
            "/ 图片：由审核人目视检查（仅含像素）"
            if problem is None
            else f"the image cannot pass the automatic checks: {problem} / 图片未通过自动检查"
            "（含有像素以外的内容或格式不受支持，请导出仅含像素的 PNG）"
        ),
    }
    return {
        "kind": "image",
        "rows": 0,
        "columns": [],
        "thresholds": thresholds,
        "passed": problem is None,
        "findings": [finding],
    }


def _suffix(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def preview(name: str, data: bytes) -> dict[str, Any]:
    """What the console shows of ``data`` (named ``name``): ``kind`` table | image | text | binary."""
    suffix = _suffix(name)
    notes: list[dict[str, str]] = []
    real = image_type(data)
    claimed = IMAGE_SUFFIXES.get(suffix)
    if real is not None and (claimed is None or claimed == real):
        return {"kind": "image", "mime": real, "notes": notes}
    if claimed is not None:
        notes.append(
            {
                "zh": f"文件名表明这是图片（.{suffix}），但内容不是 {claimed} 图片："
                "不按图片显示，请谨慎审核。",
                "en": f"the name says an image (.{suffix}) but the bytes are not {claimed}: it is not shown "
                "as an image; review it with care.",
            }
        )
    frame = disclosure.read_table(name, data) if suffix in TABLE_SUFFIXES or data[:4] == b"PAR1" else None
    if frame is not None:
        columns = frame.columns[:MAX_COLUMNS]
        shown = frame.head(MAX_ROWS).select(columns)
        rows = [[_cell(v) for v in row] for row in shown.iter_rows()]
        if frame.height > MAX_ROWS or frame.width > MAX_COLUMNS:
            notes.append(
                {
                    "zh": f"只显示前 {min(frame.height, MAX_ROWS)} 行、{len(columns)} 列"
                    f"（共 {frame.height} 行、{frame.width} 列）；其余请下载查看。",
                    "en": f"showing the first {min(frame.height, MAX_ROWS)} rows and {len(columns)} columns "
                    f"of {frame.height} rows and {frame.width} columns; download the file for the rest.",
                }
            )
        return {
            "kind": "table",
            "columns": [_cell(c) for c in columns],
            "rows": rows,
            "total_rows": frame.height,
            "total_columns": frame.width,
            "notes": notes,
        }
    text = _text(data)
    if text is not None:
        if len(text) > MAX_TEXT:
            notes.append(
                {
                    "zh": f"只显示前 {MAX_TEXT} 个字符（共 {len(text)} 个）；其余请下载查看。",
                    "en": f"showing the first {MAX_TEXT} of {len(text)} characters; "
                    "download the file for the rest.",
                }
            )
        return {"kind": "text", "text": text[:MAX_TEXT], "notes": notes}
    notes.append(
        {
            "zh": "该文件无法在页面中显示（二进制内容）；请下载后用合适的工具检查。",
            "en": "this file cannot be shown in the page (binary content); download it and inspect it "
            "with a suitable tool.",
        }
    )
    return {"kind": "binary", "notes": notes}
