"""Search, filters and pagination shared by the consoles' list pages.

A list page reads ``page`` (1 … :data:`MAX_PAGE`), ``size`` (one of :data:`SIZES`), a free
text ``q`` and a few named filters from its query string. Each is checked here and a bad one
is an :class:`~lab.validate.InvalidInput` (the page answers 400 saying which and why), so no
value can ask for a page of a million rows or reach the ledger unchecked. Rows come in a
stable order (the caller's, e.g. newest id first) and a page says "page N of M" and how many
rows there are in all.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from lab import validate
from lab.validate import InvalidInput

SIZES = (10, 25, 50, 100, 200)
DEFAULT_SIZE = 25
MAX_PAGE = 1_000_000
Q_CHARS = 200


def _whole(value: str | None, name: str, default: int, high: int) -> int:
    if value in (None, ""):
        return default
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 7 or not 1 <= int(text) <= high:
        raise InvalidInput(name, f"a whole number from 1 to {high:,}", f"应为 1 到 {high:,} 之间的整数")
    return int(text)


def page_size(params: Mapping[str, str]) -> tuple[int, int]:
    """``(page, size)`` from the query string (defaults: 1 and :data:`DEFAULT_SIZE`)."""
    page = _whole(params.get("page"), "page", 1, MAX_PAGE)
    size = _whole(params.get("size"), "size", DEFAULT_SIZE, max(SIZES))
    if size not in SIZES:
        sizes = ", ".join(map(str, SIZES))
        raise InvalidInput("size", f"one of {sizes}", f"应为 {sizes} 之一")
    return page, size


def text(params: Mapping[str, str], key: str = "q") -> str:
    """A free-text search term: one line, at most :data:`Q_CHARS` characters."""
    value = params.get(key) or ""
    return validate.text(value, key, limit=Q_CHARS, lines=False).strip() if value else ""


def choice(params: Mapping[str, str], key: str, allowed: Sequence[str], default: str) -> str:
    value = params.get(key) or default
    return validate.choice(value, key, tuple(allowed))


def name(params: Mapping[str, str], key: str) -> str:
    """An organisation or dataset id filter (empty: any)."""
    value = params.get(key) or ""
    return validate.name(value, key) if value else ""


def plain(value: str | None) -> str | None:
    """A typed value fit to show back in a form after a refusal (None: not that one)."""
    if value is None or len(value) > Q_CHARS:
        return None
    return None if any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") for c in value) else value


def matches(row: Mapping[str, Any], q: str, fields: Iterable[str]) -> bool:
    """Whether any of ``fields`` of ``row`` contains ``q`` (case-insensitive; empty: yes; ``#31``: id 31)."""
    if not q:
        return True
    if q.startswith("#") and q[1:].isascii() and q[1:].isdigit():  # "#31": that id only
        return str(row.get("id")) == q[1:]
    needle = q.casefold()
    return any(needle in str(row.get(f) or "").casefold() for f in fields)


@dataclass
class Window:
    """One page of a list: its rows, where it is, and links to the others."""

    rows: list[Any]
    page: int
    pages: int
    total: int
    size: int
    path: str
    query: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # e.g. rows per state, for the filter

    @property
    def first(self) -> int:
        return 0 if not self.total else (self.page - 1) * self.size + 1

    @property
    def last(self) -> int:
        return min(self.total, self.page * self.size)

    def url(self, page: int | None = None, **change: str) -> str:
        """This list's URL at ``page`` (with filters changed by ``change``; "" drops one)."""
        query = {**self.query, **change, "page": str(page or self.page), "size": str(self.size)}
        if change and page is None:
            query["page"] = "1"
        return f"{self.path}?{urlencode({k: v for k, v in query.items() if v})}"


def window(
    rows: Sequence[Any], page: int, size: int, path: str, query: Mapping[str, str] | None = None
) -> Window:
    """Page ``page`` of ``rows`` (a page past the last shows the last)."""
    total = len(rows)
    pages = max(1, -(-total // size))
    page = min(page, pages)
    start = (page - 1) * size
    return Window(list(rows[start : start + size]), page, pages, total, size, path, dict(query or {}))


def counted(
    total: int,
    fetch: Callable[[int, int], list[Any]],
    page: int,
    size: int,
    path: str,
    query: Mapping[str, str] | None = None,
) -> Window:
    """Like :func:`window` for rows read from a store: ``fetch(offset, limit)`` reads one page."""
    pages = max(1, -(-total // size))
    page = min(page, pages)
    return Window(fetch((page - 1) * size, size), page, pages, total, size, path, dict(query or {}))
