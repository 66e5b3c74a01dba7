"""The gates SQL text passes before it is translated (:mod:`lab.dp.sql`): a lexical scan of our
own, then sqlglot's parser, giving one ``SELECT`` tree or a :class:`~lab.errors.ConfigError`.

The scan refuses, by name and position: more than :data:`MAX_SQL_CHARS` characters; comments
(``--``, ``/* */``, ``#``); more than one statement (a trailing ``;`` is dropped); parentheses
nested deeper than :data:`MAX_NESTING` (sqlglot's parser is recursive); outside ``'...'``
anything but ASCII, so that a full-width or Cyrillic look-alike letter is named rather than
read as a name; control and invisible characters anywhere. Statements that write or inspect
(``INSERT``, ``DROP``, ``COPY``, ``ATTACH``, …) are named as such. A syntax error names its
line and column and shows a keyword, name or operator near it, never a number or text.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from lab.errors import ConfigError

MAX_SQL_CHARS = 4000
MAX_NESTING = 8
EXAMPLE = "SELECT district, COUNT(*) FROM population GROUP BY district"
AGGREGATE = (f"ask an aggregate, e.g. {EXAMPLE}", f"请改为聚合查询，例如 {EXAMPLE}")
_STATEMENTS = frozenset(  # statements that write, change or inspect: named when refused
    ("INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "TRUNCATE", "MERGE", "GRANT", "REVOKE")
    + ("COPY", "ATTACH", "DETACH", "PRAGMA", "SET", "USE", "CALL", "EXEC", "EXECUTE", "REPLACE")
    + ("UPSERT", "VACUUM", "ANALYZE", "LOAD", "INSTALL", "EXPORT", "IMPORT", "COMMENT", "BEGIN")
    + ("COMMIT", "ROLLBACK", "DESCRIBE", "DESC", "SHOW", "EXPLAIN", "CACHE", "UNCACHE", "REFRESH")
)
ONE_SELECT = ("write one SELECT over one dataset", "请写成对单个数据集的一条 SELECT")
PER_CALL = ("send one SELECT per lab.sql call", "每次 lab.sql 调用只发送一条 SELECT")


def unsupported(what: str, what_zh: str, instead: tuple[str, str]) -> ConfigError:
    """A construct the engine has no equivalent for, named, with what to write instead."""
    return ConfigError(
        f"SQL: {what} is not supported in DP queries; {instead[0]}. "
        f"/ SQL：差分隐私查询不支持 {what_zh}；{instead[1]}。",
        reason="dp-sql-unsupported",
    )


def _syntax(message: str, message_zh: str, text: str, at: int | None) -> ConfigError:
    where = ""
    if at is not None:
        line = text.count("\n", 0, at) + 1
        col = at - (text.rfind("\n", 0, at) + 1) + 1
        where = f" at line {line}, column {col}"
        where_zh = f"（第 {line} 行第 {col} 列）"
    else:
        where_zh = ""
    return ConfigError(
        f"SQL syntax error{where}: {message}; e.g. {EXAMPLE} / SQL 语法错误{where_zh}：{message_zh}",
        reason="dp-sql-syntax",
    )


def _char(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"


def scan(text: Any) -> str:
    """The lexical gate: the one statement's text (a trailing ``;`` dropped), or a ConfigError."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f"SQL: the query is empty; write one SELECT, e.g. {EXAMPLE} / SQL：查询为空",
            reason="dp-sql-syntax",
        )
    if len(text) > MAX_SQL_CHARS:
        raise ConfigError(
            f"SQL: the query has {len(text)} characters, more than {MAX_SQL_CHARS}; a DP query is one "
            f"short SELECT, shorten it / SQL：查询过长（{len(text)} 个字符，最多 {MAX_SQL_CHARS}），请缩短",
            reason="dp-sql-too-long",
        )
    i, depth, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            end = i + 1
            while end < n and not (text[end] == ch and not text.startswith(ch * 2, end)):
                end += 2 if text.startswith(ch * 2, end) else 1
            if end >= n:
                what = "text literal" if ch == "'" else "quoted name"
                raise _syntax(
                    f"unterminated {what} (add the closing {ch})", f"引号未闭合（补上 {ch}）", text, i
                )
            for j in range(i + 1, end):
                if unicodedata.category(text[j]) in ("Cc", "Cf", "Cs", "Co", "Cn") and text[j] != "\t":
                    raise _syntax(
                        f"invisible or control character {_char(text[j])}; remove it",
                        "含有不可见字符或控制字符，请删除",
                        text,
                        j,
                    )
                if ch == '"' and not text[j].isascii():
                    raise _syntax(
                        f"a name holds {_char(text[j])}; dataset and column names are ASCII",
                        "名称只能使用 ASCII 字符",
                        text,
                        j,
                    )
            i = end + 1
            continue
        if text.startswith("--", i) or text.startswith("/*", i) or ch == "#":
            raise unsupported(
                "a comment (--, /* */ or #)", "注释", ("remove the comment from the text", "请删除注释")
            )
        if ch == ";":
            if text[i + 1 :].strip():
                raise unsupported("more than one statement (;)", "多条语句（;）", PER_CALL)
            return text[:i]
        if ch == "(":
            depth += 1
            if depth > MAX_NESTING:
                raise _syntax(
                    f"parentheses nested deeper than {MAX_NESTING}", f"括号嵌套超过 {MAX_NESTING} 层", text, i
                )
        elif ch == ")":
            depth -= 1
        if not ch.isascii():
            raise _syntax(
                f"{_char(ch)} outside a text literal; type keywords, names and operators in ASCII "
                "(only text in '...' may hold other characters, e.g. '张店区')",
                f"引号外出现非 ASCII 字符 {_char(ch)}（可能是形近字或全角字符），"
                "关键字、名称和运算符请用 ASCII",
                text,
                i,
            )
        if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t":
            raise _syntax(f"control character {_char(ch)}; remove it", "含有控制字符，请删除", text, i)
        i += 1
    return text


def parse(text: Any) -> exp.Select:
    """The gated text parsed by sqlglot into one ``SELECT``; syntax errors name line and column."""
    clean = scan(text)
    _first_word(clean)
    try:
        statements = [s for s in sqlglot.parse(clean) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line, col = first.get("line"), first.get("col")
        token = str(first.get("highlight") or "")
        # A keyword, a name or an operator is shown; a number or text (a value) never is.
        near = token if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,39}|[^\w\s'\"]{1,3}", token) else ""
        where, where_zh = "", ""
        if isinstance(line, int) and isinstance(col, int):
            col = max(1, col - len(token) + 1)  # sqlglot points at the token's end; name its start
            where, where_zh = f" at line {line}, column {col}", f"（第 {line} 行第 {col} 列）"
        description = str(first.get("description") or "cannot be parsed")
        if description.startswith("Required keyword"):
            description = f"something is missing after {near or 'this point'}"
            zh = f"{near} 之后缺少内容" if near else "此处缺少内容"
        elif description.startswith("Invalid expression") or description.startswith("Unexpected"):
            description = f"unexpected {near or 'text'}"
            zh = f"此处不应出现 {near}" if near else "此处有多余的内容"
        else:
            description = description[:120]
            zh = f"{description}（{near}）" if near else description
            description += f" near {near!r}" if near else ""
        raise ConfigError(
            f"SQL syntax error{where}: {description}; e.g. {EXAMPLE} / SQL 语法错误{where_zh}：{zh}",
            reason="dp-sql-syntax",
        ) from None
    except (TokenError, RecursionError, ValueError, TypeError, KeyError, IndexError):
        # Whatever else the parser may raise on odd text is a syntax error, never a 5xx.
        raise _syntax("the text cannot be read as SQL", "无法解析为 SQL", clean, None) from None
    if len(statements) != 1:
        raise unsupported("more than one statement", "多条语句", PER_CALL)
    statement = statements[0]
    if isinstance(statement, exp.SetOperation):
        name = type(statement).__name__.upper()
        raise unsupported(
            name, name, ("run one query per part and combine the results", "请分别查询各部分后合并结果")
        )
    if not isinstance(statement, exp.Select):
        _first_word(clean)
        raise _syntax("a DP query is one SELECT", "差分隐私查询须为一条 SELECT", clean, None)
    return statement


def _first_word(clean: str) -> None:
    """A statement that writes or inspects is named; anything else that is not SELECT is a syntax error."""
    word = re.match(r"\s*([A-Za-z]*)", clean)
    kind = word.group(1).upper() if word else ""
    if kind in ("SELECT", "WITH"):
        return
    if kind in _STATEMENTS:
        raise unsupported(
            f"{kind} (only SELECT is accepted: nothing is created, changed or deleted)",
            f"{kind} 语句（只接受 SELECT，不能建表或修改数据）",
            AGGREGATE,
        )
    at = len(clean) - len(clean.lstrip())
    raise _syntax("a DP query starts with SELECT", "差分隐私查询须以 SELECT 开头", clean, at)
