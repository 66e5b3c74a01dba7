"""A SQL front door to the DP engine: one ``SELECT`` becomes the same :class:`~lab.dp.query.Query`
that :mod:`lab.dp.builder` builds, so preview, calibration, charging and noise are the engine's::

    to_query("SELECT district, COUNT(*) FROM population GROUP BY district", epsilon=0.2)
    # == on("population").group_by("district").count(epsilon=0.2)

The grammar (``docs/sql.md``)::

    SELECT [key, ...,] aggregate [, key ...]
    FROM dataset [[AS] alias]
    [WHERE condition [AND condition ...]]
    [GROUP BY key [, key ...]] [;]

    aggregate := COUNT(*) | SUM(col) | AVG(col) | MEDIAN(col) | QUANTILE(col, a)
               | PERCENTILE_CONT(a) WITHIN GROUP (ORDER BY col) | HISTOGRAM(col [, edge | category ...])
    condition := col op literal | col [NOT] IN (literal, ...) | col BETWEEN literal AND literal
               | NOT col = literal | (condition)            op := = != <> < <= > >=

Bounds of SUM / AVG / quantiles and quantile candidates come with the call (``bounds=``,
``candidates=``), as in the builder. The text passes the gates of :mod:`lab.dp.sqlgate`
first (a lexical scan of our own, then sqlglot's parser), then a whitelist walk of the
tree here: any construct not listed above is refused by name with the supported
alternative. Nothing here reads
data or spends budget; the gateway checks the columns and the grant as for any query.

Later constructs (joins of linked registers, an enterprise's own list as keys) enter in
:func:`_source` and :func:`_translate`; the gates stay as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlglot import exp

from lab.dp.builder import QueryBuilder, on
from lab.dp.query import Query
from lab.dp.sqlgate import AGGREGATE, EXAMPLE, ONE_SELECT, parse, unsupported
from lab.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_OPS: dict[type[exp.Expression], str] = {
    exp.EQ: "==",
    exp.NEQ: "!=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NEGATE = {"==": "!=", "!=": "=="}
_DATASET = ("name one dataset, e.g. FROM population", "请只写一个数据集名，例如 FROM population")
_NO_JOIN = (
    "query one dataset at a time; joins of linked registers are not available yet",
    "请每次查询一个数据集（关联登记库的连接查询尚未提供）",
)
_FILTER = (
    "filter the released result: result.frame.filter(...)",
    "请在发布的结果上筛选：result.frame.filter(...)",
)
_SORT = (
    "sort the released result: result.frame.sort('value')",
    "请对发布的结果排序：result.frame.sort('value')",
)
_REMOVE = ("remove it", "请删除它")
_AGGREGATES = (
    "use COUNT(*), SUM, AVG, MEDIAN, QUANTILE or HISTOGRAM",
    "请使用 COUNT(*)、SUM、AVG、MEDIAN、QUANTILE 或 HISTOGRAM",
)
_FILTERS = (
    "filter with column = / != / < / <= / > / >= value, IN (...), BETWEEN a AND b, joined by AND",
    "请用 列 = / != / < / <= / > / >= 值、IN (...)、BETWEEN a AND b 筛选，并以 AND 连接",
)
# Clauses of a SELECT that the engine has no equivalent for: what, 中文, the alternative.
_CLAUSES: dict[str, tuple[str, str, tuple[str, str]]] = {
    "joins": ("JOIN", "连接（JOIN）", _NO_JOIN),
    "with_": ("WITH (common table expressions)", "WITH 子句", ONE_SELECT),
    "distinct": (
        "DISTINCT",
        "DISTINCT",
        ("group with GROUP BY and count with COUNT(*)", "请用 GROUP BY 分组并用 COUNT(*) 计数"),
    ),
    "having": ("HAVING", "HAVING", _FILTER),
    "order": ("ORDER BY", "ORDER BY", _SORT),
    "limit": (
        "LIMIT",
        "LIMIT",
        (
            "take rows of the released result: result.frame.head(n)",
            "请取发布结果的前几行：result.frame.head(n)",
        ),
    ),
    "offset": (
        "OFFSET",
        "OFFSET",
        ("slice the released result: result.frame.slice(n)", "请对发布的结果切片：result.frame.slice(n)"),
    ),
    "windows": (
        "WINDOW",
        "窗口（WINDOW）",
        ("ask one aggregate per group with GROUP BY", "请用 GROUP BY 按组聚合"),
    ),
    "qualify": ("QUALIFY", "QUALIFY", _FILTER),
    "into": (
        "SELECT INTO",
        "SELECT INTO",
        ("keep the released result in your notebook", "请在笔记本中保存发布的结果"),
    ),
    "laterals": ("LATERAL", "LATERAL", ONE_SELECT),
    "locks": ("FOR UPDATE", "锁（FOR UPDATE）", _REMOVE),
    "sample": ("TABLESAMPLE", "抽样（TABLESAMPLE）", ("query the whole dataset", "请查询整个数据集")),
    "prewhere": ("PREWHERE", "PREWHERE", ("use WHERE", "请使用 WHERE")),
    "connect": ("CONNECT BY", "CONNECT BY", ONE_SELECT),
    "cluster": ("CLUSTER BY", "CLUSTER BY", _REMOVE),
    "distribute": ("DISTRIBUTE BY", "DISTRIBUTE BY", _REMOVE),
    "sort": ("SORT BY", "SORT BY", _SORT),
    "match": ("MATCH_RECOGNIZE", "MATCH_RECOGNIZE", ONE_SELECT),
    "kind": ("SELECT AS STRUCT", "SELECT AS STRUCT", ("select one aggregate", "请只选择一个聚合")),
}
_SELECT_ARGS = {"expressions", "from_", "where", "group"}


def to_query(
    text: Any,
    *,
    epsilon: float,
    delta: float = 0.0,
    bounds: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    candidates: Sequence[float] | None = None,
) -> Query:
    """The :class:`Query` that ``text`` asks for, equal to the builder's for the same question."""
    if candidates is not None and (isinstance(candidates, str) or not isinstance(candidates, Sequence)):
        raise ConfigError(
            "SQL: candidates are a list of increasing numbers, e.g. candidates=[20, 30, 40] "
            "/ SQL：候选值须为递增数列，例如 candidates=[20, 30, 40]",
            reason="dp-query",
        )
    select = parse(text)
    for arg, value in select.args.items():
        if arg not in _SELECT_ARGS and value:
            what, what_zh, instead = _CLAUSES.get(arg, (arg.upper(), arg.upper(), _REMOVE))
            raise unsupported(what, what_zh, instead)
    for node in select.walk():
        if isinstance(node, exp.Subquery | exp.Select) and node is not select:
            raise unsupported("a subquery", "子查询", ONE_SELECT)
        if isinstance(node, exp.Window):
            raise unsupported("a window function (OVER)", "窗口函数（OVER）", _CLAUSES["windows"][2])
    dataset, aliases = _source(select)
    return _translate(select, dataset, aliases, epsilon, delta, bounds, candidates)


def request_query(body: Mapping[str, Any]) -> dict[str, Any]:
    """A request's ``sql``, ``epsilon``, ``delta``, ``bounds``, ``candidates`` as the JSON the gateway
    takes for a DP query (``Query.to_dict()`` without the privacy unit, which the gateway applies)."""
    query = to_query(
        body.get("sql"),
        epsilon=body.get("epsilon"),  # type: ignore[arg-type]  # Query checks it, naming the fix
        delta=body.get("delta") or 0.0,
        bounds=body.get("bounds"),
        candidates=body.get("candidates"),
    )
    out = query.to_dict()
    out.pop("unit")
    return out


def _source(select: exp.Select) -> tuple[str, set[str]]:
    """The one dataset named in FROM, and the names its columns may be qualified with."""
    source = select.args.get("from_")
    if source is None:
        raise unsupported(
            "a SELECT without FROM",
            "缺少 FROM 的查询",
            (f"name the dataset, e.g. {EXAMPLE}", f"请写明数据集，例如 {EXAMPLE}"),
        )
    table = source.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise unsupported("FROM something other than a dataset name", "FROM 后不是数据集名", _DATASET)
    if table.args.get("db") or table.args.get("catalog"):
        raise unsupported("a qualified dataset name (schema.table)", "带前缀的数据集名", _DATASET)
    for arg in ("joins", "laterals", "pivots", "sample", "hints", "version", "when"):
        if table.args.get(arg):
            raise unsupported(f"{arg.upper()} on the dataset", arg.upper(), _DATASET)
    name = _name(table.this, "dataset")
    aliases = {name}
    if table.alias:
        aliases.add(table.alias)
    return name, aliases


def _name(node: exp.Expression, role: str) -> str:
    value = str(node.this) if isinstance(node, exp.Identifier) else node.name
    if not _NAME.fullmatch(value):
        raise ConfigError(
            f"SQL: the {role} name is not valid; names are 1-64 ASCII letters, digits, '_', '.' or '-' "
            f"/ SQL：{role} 名称无效，只能使用英文字母、数字、'_'、'.'、'-'",
            reason="dp-sql-syntax",
        )
    return value


def _column(node: exp.Expression, aliases: set[str], role: str) -> str:
    """A bare (or dataset-qualified) column name; anything else is refused."""
    if isinstance(node, exp.Paren):
        return _column(node.this, aliases, role)
    if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
        shown = node.key.upper()
        raise unsupported(
            f"an expression ({shown}) in {role}",
            f"在 {role} 中使用表达式（{shown}）",
            (f"name a column directly in {role}", f"请在 {role} 中直接写列名"),
        )
    if node.table and node.table not in aliases:
        raise unsupported(f"a column of another table ({node.table})", "其他表的列", _NO_JOIN)
    return _name(node.this, "column")


def _translate(
    select: exp.Select,
    dataset: str,
    aliases: set[str],
    epsilon: float,
    delta: float,
    bounds: Sequence[float] | Mapping[str, Sequence[float]] | None,
    candidates: Sequence[float] | None,
) -> Query:
    group = select.args.get("group")
    group_columns: list[str] = []
    if group is not None:
        for arg in ("grouping_sets", "cube", "rollup", "totals"):
            if group.args.get(arg):
                raise unsupported(
                    arg.upper().replace("_", " "), arg.upper(), ("GROUP BY plain columns", "请按列名分组")
                )
        group_columns = [_column(g, aliases, "GROUP BY") for g in group.expressions]
    aggregates: list[Any] = []  # functions (sqlglot types them apart from Expression)
    selected: list[str] = []
    for item in select.expressions:
        while isinstance(item, exp.Paren):
            item = item.this
        if isinstance(item, exp.Alias):
            raise unsupported(
                "an alias (AS)",
                "别名（AS）",
                (
                    "remove it: results name the group columns, value and ci",
                    "请删除：结果列固定为分组列、value 与 ci",
                ),
            )
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            raise unsupported(
                "SELECT * (raw rows are never returned)",
                "SELECT *（不返回原始记录）",
                AGGREGATE,
            )
        if isinstance(item, exp.Column):
            selected.append(_column(item, aliases, "SELECT"))
        elif isinstance(item, exp.Func | exp.WithinGroup):
            aggregates.append(item)
        else:
            shown = item.key.upper()
            raise unsupported(
                f"an expression ({shown}) in SELECT", f"在 SELECT 中使用表达式（{shown}）", AGGREGATE
            )
    if not aggregates:
        raise unsupported(
            "selecting columns without an aggregate (raw values are never returned)",
            "不带聚合地选择列（不返回原始值）",
            AGGREGATE,
        )
    if len(aggregates) > 1:
        raise unsupported(
            "more than one aggregate in one query",
            "一个查询中包含多个聚合",
            (
                "run one lab.sql per aggregate (each is previewed and charged)",
                "请每个聚合单独调用 lab.sql（各自预览和计费）",
            ),
        )
    for column in selected:
        if column not in group_columns:
            raise unsupported(
                f"column {column} selected without an aggregate (raw values are never returned)",
                f"未聚合地选择列 {column}（不返回原始值）",
                (
                    f"add it to GROUP BY, or remove it: GROUP BY {column}",
                    f"请加入 GROUP BY {column} 或删除该列",
                ),
            )
    builder = on(dataset)
    for column, op, value in _conditions(select.args.get("where"), aliases):
        builder = builder.filter(column, op, value)
    if group_columns:
        builder = builder.group_by(*group_columns)
    return _aggregate(aggregates[0], builder, aliases, epsilon, delta, bounds, candidates)


def _aggregate(
    node: exp.Expression,
    builder: QueryBuilder,
    aliases: set[str],
    epsilon: float,
    delta: float,
    bounds: Sequence[float] | Mapping[str, Sequence[float]] | None,
    candidates: Sequence[float] | None,
) -> Query:
    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Distinct):
            raise unsupported("COUNT(DISTINCT ...)", "COUNT(DISTINCT ...)", _CLAUSES["distinct"][2])
        if not (isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and arg.name == "1")):
            raise unsupported(
                "COUNT(column) (counting non-null values)",
                "COUNT(列)",
                (
                    "count rows with COUNT(*), with a WHERE filter if needed",
                    "请用 COUNT(*) 计数行，必要时加 WHERE",
                ),
            )
        return builder.count(epsilon=epsilon, delta=delta)
    if isinstance(node, exp.Sum | exp.Avg):
        _no_distinct(node)
        column = _column(node.this, aliases, "the aggregate")
        fn = "SUM" if isinstance(node, exp.Sum) else "AVG"
        pair = _bounds(bounds, column, fn)
        if isinstance(node, exp.Sum):
            return builder.sum(column, pair, epsilon=epsilon, delta=delta)
        return builder.mean(column, pair, epsilon=epsilon, delta=delta)
    if isinstance(node, exp.Median):
        column = _column(node.this, aliases, "the aggregate")
        span, cands = _quantile_options(bounds, candidates, column, "MEDIAN")
        return builder.median(column, candidates=cands, bounds=span, epsilon=epsilon, delta=delta)
    if isinstance(node, exp.Quantile):
        column = _column(node.this, aliases, "the aggregate")
        alpha = _number(node.args.get("quantile"), "the quantile's alpha")
        span, cands = _quantile_options(bounds, candidates, column, "QUANTILE")
        return builder.quantile(column, alpha, candidates=cands, bounds=span, epsilon=epsilon, delta=delta)
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont | exp.PercentileDisc):
        alpha = _number(node.this.this, "the percentile")
        order = node.expression
        keys = order.expressions if isinstance(order, exp.Order) else []
        if len(keys) != 1 or keys[0].args.get("desc"):
            raise unsupported(
                "this WITHIN GROUP ordering",
                "该 WITHIN GROUP 排序",
                ("write WITHIN GROUP (ORDER BY column)", "请写 WITHIN GROUP (ORDER BY 列)"),
            )
        column = _column(keys[0].this, aliases, "the aggregate")
        span, cands = _quantile_options(bounds, candidates, column, "PERCENTILE_CONT")
        return builder.quantile(column, alpha, candidates=cands, bounds=span, epsilon=epsilon, delta=delta)
    if isinstance(node, exp.Anonymous) and str(node.this).upper() == "HISTOGRAM":
        args = list(node.expressions)
        if not args:
            raise unsupported(
                "HISTOGRAM()",
                "HISTOGRAM()",
                ("name the column: HISTOGRAM(education)", "请写明列名：HISTOGRAM(education)"),
            )
        column = _column(args[0], aliases, "the aggregate")
        values = [_literal(a, "a histogram edge or category") for a in args[1:]]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return builder.histogram(column, bins=values, epsilon=epsilon, delta=delta)
        return builder.histogram(column, categories=values or None, epsilon=epsilon, delta=delta)
    name = node.key.upper()
    instead = _AGGREGATES
    if isinstance(node, exp.Min | exp.Max):
        instead = (
            "ask a quantile near the end instead, e.g. QUANTILE(col, 0.99) with bounds=",
            "请改用接近两端的分位数，例如 QUANTILE(col, 0.99) 并给出 bounds=",
        )
    elif isinstance(node, exp.Anonymous):
        name = str(node.this).upper()
    elif isinstance(node, exp.Func):
        name = node.sql_name()
    raise unsupported(name, name, instead)


def _no_distinct(node: exp.Expression) -> None:
    if isinstance(node.this, exp.Distinct):
        raise unsupported(
            "DISTINCT inside an aggregate", "聚合中的 DISTINCT", ("aggregate all rows", "请对所有行聚合")
        )


def _bounds(
    bounds: Sequence[float] | Mapping[str, Sequence[float]] | None, column: str, fn: str
) -> tuple[float, float]:
    pair = bounds.get(column) if isinstance(bounds, Mapping) else bounds
    if pair is None:
        raise ConfigError(
            f"SQL: {fn}({column}) needs bounds, so that one person's effect is limited; pass them with the "
            f"query, e.g. lab.sql(..., bounds=(0, 50000)) (values outside are clamped) "
            f"/ SQL：{fn}({column}) 需要取值上下界，例如 lab.sql(..., bounds=(0, 50000))",
            reason="dp-bounds",
        )
    if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ConfigError(
            f"SQL: bounds of {fn}({column}) are two numbers (lower, upper), e.g. bounds=(0, 50000) "
            "/ SQL：上下界须为两个数",
            reason="dp-bounds",
        )
    return (pair[0], pair[1])


def _quantile_options(
    bounds: Sequence[float] | Mapping[str, Sequence[float]] | None,
    candidates: Sequence[float] | None,
    column: str,
    fn: str,
) -> tuple[tuple[float, float] | None, Sequence[float] | None]:
    if candidates is not None:
        return (None if bounds is None else _bounds(bounds, column, fn)), candidates
    if bounds is None or (isinstance(bounds, Mapping) and column not in bounds):
        raise ConfigError(
            f"SQL: {fn}({column}) needs candidates or bounds, e.g. lab.sql(..., bounds=(0, 100)) or "
            f"candidates=[20, 30, 40] / SQL：{fn}({column}) 需要候选值或上下界",
            reason="dp-bounds",
        )
    return _bounds(bounds, column, fn), None


def _number(node: Any, role: str) -> float:
    value = _literal(node, role)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise unsupported(
            f"a non-number as {role}", "非数字的参数", ("write a number, e.g. 0.5", "请写数字，例如 0.5")
        )
    return value


def _literal(node: Any, role: str) -> Any:
    """A constant: number, text, TRUE/FALSE, DATE '...' / TIMESTAMP '...' (as its ISO text)."""
    if isinstance(node, exp.Paren):
        return _literal(node.this, role)
    if isinstance(node, exp.Neg):
        value = _literal(node.this, role)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    elif isinstance(node, exp.Literal):
        if node.is_string:
            return node.name
        text = node.name
        try:
            number = int(text) if re.fullmatch(r"[0-9]+", text) else float(text)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number) and abs(number) < 2**63:
            return number
    elif isinstance(node, exp.Boolean):
        return bool(node.this)
    elif (
        isinstance(node, exp.Cast)
        and isinstance(node.this, exp.Literal)
        and node.this.is_string
        and node.to.this in (exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.DATETIME)
    ):
        return node.this.name
    elif isinstance(node, exp.Null):
        raise unsupported("NULL as a value", "NULL 值", ("compare with a value", "请与具体值比较"))
    shown = node.key.upper() if isinstance(node, exp.Expression) else "?"
    raise unsupported(
        f"{shown} as {role}",
        f"以 {shown} 作为值",
        (
            "write a constant: a number, 'text' or DATE '2024-01-01'",
            "请写常量：数字、'文本' 或 DATE '2024-01-01'",
        ),
    )


def _conditions(where: exp.Where | None, aliases: set[str]) -> list[tuple[str, str, Any]]:
    """The WHERE clause as the engine's filters (all must hold: AND only)."""
    if where is None:
        return []
    out: list[tuple[str, str, Any]] = []
    todo: list[exp.Expression] = [where.this]
    while todo:
        node = todo.pop(0)
        if isinstance(node, exp.Paren):
            todo.insert(0, node.this)
        elif isinstance(node, exp.And):
            todo[:0] = [node.this, node.expression]
        else:
            out += _condition(node, aliases)
    return out


def _condition(node: exp.Expression, aliases: set[str]) -> list[tuple[str, str, Any]]:
    negated = False
    while isinstance(node, exp.Not):
        negated, node = not negated, node.this
        while isinstance(node, exp.Paren):
            node = node.this
    if isinstance(node, exp.In):
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise unsupported(
                "IN with a subquery",
                "IN 子查询",
                ("list the values: IN ('a', 'b')", "请列出取值：IN ('a', 'b')"),
            )
        column = _column(node.this, aliases, "WHERE")
        values = [_literal(v, "an IN value") for v in node.expressions]
        return [(column, "not in" if negated else "in", values)]
    if isinstance(node, exp.Between) and not negated:
        column = _column(node.this, aliases, "WHERE")
        low = _literal(node.args.get("low"), "a BETWEEN bound")
        high = _literal(node.args.get("high"), "a BETWEEN bound")
        return [(column, ">=", low), (column, "<=", high)]
    op = _OPS.get(type(node))
    if op is not None and (not negated or op in _NEGATE):
        left, right = node.this, node.expression
        if isinstance(left, exp.Column | exp.Paren) and not isinstance(right, exp.Column):
            column, value = _column(left, aliases, "WHERE"), _literal(right, "a compared value")
        elif isinstance(right, exp.Column):
            column, value, op = (
                _column(right, aliases, "WHERE"),
                _literal(left, "a compared value"),
                _FLIP[op],
            )
        else:
            column, value = _column(left, aliases, "WHERE"), None
        return [(column, _NEGATE[op] if negated else op, value)]
    if isinstance(node, exp.Or):
        raise unsupported(
            "OR",
            "OR",
            (
                "use IN for alternatives of one column, or one query per alternative",
                "同一列的多个取值请用 IN，否则请分别查询",
            ),
        )
    name = ("NOT " if negated else "") + ("IS NULL" if isinstance(node, exp.Is) else node.key.upper())
    raise unsupported(f"{name} in WHERE", f"WHERE 中的 {name}", _FILTERS)
