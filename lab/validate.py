"""Names, ids and free text from outside, checked once at the boundary.

Every value a request carries is checked here before it reaches a log line, an audit
record or SQL. The rules:

==============  ======================================================================
name            a dataset, organisation, state, kind, period or column: 1-64 ASCII
                characters ``[a-z0-9]`` then ``[a-z0-9._-]`` (case as given for
                columns); no look-alike letters can pass because only ASCII can
username        like a name, plus ``@`` (Keycloak usernames), at most 100 characters
id              an integer 1 … 2**31-1 (an int, or a string of digits); a bool is not an id
text            free text (a purpose, a reason, a file name): a string, at most a bound,
                NFKC-normalised, no control, format (RTL overrides, zero-width),
                surrogate, private-use or unassigned characters (tab and newline
                are allowed where the text may have lines)
JSON body       every key a short clean string, every string clean text (checked, not
                rewritten: the field's own rule then applies to the value as sent, so a
                full-width name is refused, not silently taken for its ASCII twin),
                every number finite and every integer within ±2**63, at most 32 deep
==============  ======================================================================

A failure is :class:`InvalidInput` (a ``ConfigError``, so HTTP 400) whose message says
which field was wrong and what is allowed, in 中文 and English. It never repeats the
value: :func:`fingerprint` gives what may be recorded about it (its length and SHA-256).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lab.errors import ConfigError
from lab.localtime import local_time

MAX_ID = 2**31 - 1
MAX_INT = 2**63 - 1
MAX_NAME = 64
MAX_USERNAME = 100
MAX_TEXT = 2000
MAX_KEY = 64
MAX_DEPTH = 32
MAX_ITEMS = 100_000
MAX_STRING = 10_000  # any string inside a JSON body

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_COLUMN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]*")
_DIGITS = re.compile(r"[0-9]{1,12}")
# Unicode general categories refused in text: control, format, surrogate, private use, unassigned.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_LINES = frozenset("\n\t")


class InvalidInput(ConfigError):
    """A name, id or text from a request that breaks the rules above."""

    reason = "invalid-input"

    def __init__(self, field: str, rule: str, rule_zh: str, value: Any = None) -> None:
        super().__init__(
            f"{field}: {rule}; correct it and send the request again. "
            f"/ {field}：{rule_zh}，请改正后重新提交。",
            reason="invalid-input",
        )
        self.field = field
        self.fingerprint = fingerprint(value)


def did_you_mean(name: Any, known: Any) -> tuple[str, str]:
    """``(" did you mean 'X'?", "您是不是要找 X？")`` for the closest of ``known`` (difflib), else
    ``("", "")``: the English and Chinese halves go into their halves of a message.

    Only for names the caller already checked (``name`` / ``column``), so nothing raw is echoed.
    """
    if not isinstance(name, str):
        return "", ""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return (f" did you mean {close[0]!r}?", f"您是不是要找 {close[0]}？") if close else ("", "")


def fingerprint(value: Any) -> dict[str, Any]:
    """What may be recorded about a refused value: its type, length and SHA-256, never the value."""
    text = value if isinstance(value, str) else repr(value)
    data = text.encode("utf-8", errors="surrogatepass")
    return {"type": type(value).__name__, "length": len(text), "sha256": hashlib.sha256(data).hexdigest()}


def _bad_char(text: str, lines: bool) -> bool:
    return any(unicodedata.category(ch) in _BAD_CATEGORIES and not (lines and ch in _LINES) for ch in text)


def _pattern(value: Any, field: str, pattern: re.Pattern[str], limit: int, what: str, what_zh: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string ({what})", f"必须是字符串（{what_zh}）", value)
    if not value or len(value) > limit or not pattern.fullmatch(value):
        raise InvalidInput(
            field,
            f"must be 1-{limit} characters: {what}",
            f"长度 1-{limit}，只能包含{what_zh}",
            value,
        )
    return value


def name(value: Any, field: str) -> str:
    """A dataset, organisation, state, kind or period name."""
    return _pattern(
        value,
        field,
        _NAME,
        MAX_NAME,
        "lowercase ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        "小写英文字母、数字、'.'、'_'、'-'（以字母或数字开头）",
    )


def column(value: Any, field: str) -> str:
    """A column name (ASCII letters, digits, '_', '.', '-')."""
    return _pattern(
        value,
        field,
        _COLUMN,
        MAX_NAME,
        "ASCII letters, digits, '_', '.' or '-'",
        "英文字母、数字、'_'、'.'、'-'",
    )


def username(value: Any, field: str) -> str:
    """A Keycloak username (e.g. an ``actor`` filter)."""
    return _pattern(
        value,
        field,
        _USERNAME,
        MAX_USERNAME,
        "lowercase ASCII letters, digits, '.', '_', '@' or '-'",
        "小写英文字母、数字、'.'、'_'、'@'、'-'",
    )


def optional(check: Any, value: Any, field: str) -> Any:
    """``check(value, field)`` unless the value is absent (None or empty)."""
    return None if value is None or value == "" else check(value, field)


def ident(value: Any, field: str) -> int:
    """An id: an integer 1 … 2**31-1, given as an int or a string of digits."""
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = -1
    if not 1 <= number <= MAX_ID:
        raise InvalidInput(
            field, f"must be a whole number from 1 to {MAX_ID}", f"必须是 1 到 {MAX_ID} 之间的整数", value
        )
    return number


def text(value: Any, field: str, *, limit: int = MAX_TEXT, lines: bool = True) -> str:
    """Free text, NFKC-normalised; InvalidInput if too long or with control/format characters."""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string", "必须是字符串", value)
    if len(value) > limit:
        raise InvalidInput(field, f"must be at most {limit} characters", f"最多 {limit} 个字符", value)
    normal = unicodedata.normalize("NFKC", value)
    if len(normal) > limit or _bad_char(normal, lines):
        raise InvalidInput(
            field,
            "must not contain control, format (e.g. right-to-left override, zero-width) "
            "or unassigned characters",
            "不能包含控制字符、格式字符（如从右向左覆盖、零宽字符）或未分配字符",
            value,
        )
    return normal


def number(value: Any, field: str, *, low: float = 0.0, high: float = 1e9) -> float | None:
    """A finite number in [low, high], or None if absent; strings of a number are accepted."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInput(field, "must be a number", "必须是数字", value)
    try:
        result = float(value) if isinstance(value, int | float) else float(text(value, field, limit=40))
    except (ValueError, OverflowError):
        raise InvalidInput(field, "must be a number", "必须是数字", value) from None
    if not math.isfinite(result) or not low <= result <= high:
        raise InvalidInput(
            field,
            f"must be a finite number from {low:g} to {high:g}",
            f"必须是 {low:g} 到 {high:g} 之间的数",
            value,
        )
    return result


def moment(value: Any, field: str) -> datetime | None:
    """A point in time (ISO 8601, or a datetime), made timezone-aware in UTC; None if absent."""
    if value is None or value == "":
        return None
    try:
        parsed = (
            value if isinstance(value, datetime) else datetime.fromisoformat(text(value, field, limit=40))
        )
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError, TypeError):
        raise InvalidInput(
            field,
            "must be a date and time in ISO 8601, e.g. 2026-01-31T08:00:00Z",
            "必须是 ISO 8601 日期时间，例如 2026-01-31T08:00:00Z",
            value,
        ) from None


def span(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """A time range whose start is not after its end; InvalidInput naming both ends if reversed."""
    if since is not None and until is not None and since > until:
        start, end = local_time(since), local_time(until)
        raise InvalidInput(
            "since/until",
            f"the start {start} is after the end {end}; swap them",
            f"开始时间 {start} 晚于结束时间 {end}，请交换两者",
        )
    return since, until


def choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(allowed)
        raise InvalidInput(field, f"must be one of {listed}", f"必须是 {listed} 之一", value)
    return value


def body(value: Any, field: str = "body") -> dict[str, Any]:
    """A JSON object whose every key, string and number follows the rules (see the module)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, "must be a JSON object", "必须是 JSON 对象", value)
    counter = [0]
    return dict(_walk(value, "", 0, counter))


def _walk(value: Any, field: str, depth: int, counter: list[int]) -> Any:
    counter[0] += 1
    where = field or "body"
    if depth > MAX_DEPTH or counter[0] > MAX_ITEMS:
        raise InvalidInput(
            where,
            f"is nested too deep or too large (at most {MAX_DEPTH} levels, {MAX_ITEMS} values)",
            f"嵌套过深或过大（最多 {MAX_DEPTH} 层、{MAX_ITEMS} 个值）",
        )
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key or len(key) > MAX_KEY or _bad_char(key, False):
                raise InvalidInput(
                    f"{where} (a key)",
                    f"keys must be 1-{MAX_KEY} characters without control characters",
                    f"键名长度 1-{MAX_KEY}，不能包含控制字符",
                    key,
                )
            out[key] = _walk(item, f"{field}.{_label(key)}" if field else _label(key), depth + 1, counter)
        return out
    if isinstance(value, list | tuple):
        return [_walk(item, field, depth + 1, counter) for item in value]
    if isinstance(value, str):
        text(value, where, limit=MAX_STRING)
        return value  # checked, kept as sent: a field's own check (name, text) decides its form
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise InvalidInput(where, "integers must be within ±2^63", "整数必须在 ±2^63 之内", value)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(
                where,
                "numbers must be finite (no NaN or Infinity)",
                "数值必须有限（不能是 NaN 或无穷大）",
                value,
            )
        return value
    raise InvalidInput(where, "must be plain JSON", "必须是普通 JSON", value)


def _label(key: str) -> str:
    """A key safe to name in a message (a clean key is kept, anything else is not echoed)."""
    return key if _COLUMN.fullmatch(key) and len(key) <= MAX_KEY else "?"
