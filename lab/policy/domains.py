"""Public domains of a dataset (公开取值域): values anyone may know without seeing the data.

A policy declares them, beside the columns they describe::

    reference_date: 2025-06-30           # the day the register describes (ages are reached in its year)
    public_domains:
      sex: [女, 男]                       # every value the column can take, in release order
      district: [淄川区, 张店区, …]
      month: [2024-01-01, 2024-02-01, …]
      birth_date: {years: [1920, 2025]}  # a date column: the span of its years

Grouping a DP query or a DP table by a column with a listed domain uses those values as
public keys (pure DP: no δ is spent on releasing keys); a date column's span of years gives
the public keys of its year (``birth_year``) and the encoding of synthetic data. A rule
``generalise: district`` finds the names of the ``district`` domain in the text. A domain
naming a column the dataset lacks, values of the wrong type, repeated values or an empty
list are problems that name file, line and column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from lab.policy.model import ColumnPolicy, PublicDomains
from lab.policy.yamldoc import YamlDoc

_KIND_OF = {"text": (str,), "date": (date,), "number": (int, float)}


def _reference_date(doc: YamlDoc, value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    doc.problem(("reference_date",), "reference_date must be a date such as 2025-06-30 (参考日期格式错误)")
    return None


def _years(doc: YamlDoc, column: str, spec: dict[str, Any], kind: str | None) -> tuple[int, int] | None:
    at = ("public_domains", column)
    span = spec.get("years")
    if set(spec) != {"years"} or not isinstance(span, list) or len(span) != 2:
        doc.problem(
            at,
            f"public_domains: column '{column}': write a span of years as {{years: [first, last]}} "
            "(年份范围写作 "
            f"{{years: [起始年, 结束年]}})",
        )
        return None
    first, last = span
    if not all(isinstance(y, int) and not isinstance(y, bool) for y in span) or first > last:
        doc.problem(
            at,
            f"public_domains: column '{column}': years must be two whole years, first <= last "
            "(须为两个整数年份，起始年不大于结束年)",
        )
        return None
    if kind not in (None, "date"):
        doc.problem(
            at,
            f"public_domains: column '{column}' is {kind}, and only a date has a span of years "
            "(只有日期字段可以有年份范围)",
        )
        return None
    return first, last


def _values(doc: YamlDoc, column: str, values: list[Any], kind: str | None) -> tuple[Any, ...] | None:
    at = ("public_domains", column)
    if not values:
        doc.problem(at, f"public_domains: column '{column}': the list of values is empty (取值域为空)")
        return None
    allowed = _KIND_OF.get(kind or "", (str, date, int, float))
    for i, item in enumerate(values):
        if isinstance(item, bool | datetime) or not isinstance(item, allowed):
            doc.problem(
                (*at, i),
                f"public_domains: column '{column}': value {i + 1} is not a {kind or 'text, date or number'} "
                "value (取值类型不符)",
            )
            return None
    if len(set(values)) != len(values):
        doc.problem(at, f"public_domains: column '{column}': a value is listed twice (取值重复)")
        return None
    return tuple(values)


def parse_domains(
    doc: YamlDoc, value: dict[str, Any], dataset: str, kinds: Mapping[str, str | None] | None
) -> PublicDomains:
    """The ``public_domains:`` and ``reference_date:`` of a policy, recording every problem."""
    reference = _reference_date(doc, value.get("reference_date"))
    section = value.get("public_domains")
    if section is None:
        return PublicDomains(reference_date=reference)
    if not isinstance(section, dict):
        doc.problem(
            ("public_domains",), "public_domains must map column names to their values (取值域格式错误)"
        )
        return PublicDomains(reference_date=reference)
    listed: dict[str, tuple[Any, ...]] = {}
    years: dict[str, tuple[int, int]] = {}
    for column, spec in section.items():
        if kinds is not None and column not in kinds:
            known = ", ".join(map(str, kinds))
            doc.problem(
                ("public_domains", column),
                f"public_domains: dataset '{dataset}' has no column '{column}' (数据集没有此列); "
                f"its columns: {known}",
            )
            continue
        kind = None if kinds is None else kinds[column]
        if isinstance(spec, dict):
            span = _years(doc, str(column), spec, kind)
            if span is not None:
                years[str(column)] = span
        elif isinstance(spec, list):
            values = _values(doc, str(column), spec, kind)
            if values is not None:
                listed[str(column)] = values
        else:
            doc.problem(
                ("public_domains", column),
                f"public_domains: column '{column}': give a list of values or {{years: [first, last]}} "
                "(请给出取值列表或年份范围)",
            )
    return PublicDomains(listed, years, reference)


def with_districts(
    doc: YamlDoc, columns: dict[str, ColumnPolicy], domains: PublicDomains
) -> dict[str, ColumnPolicy]:
    """``to: district`` finds district names in the text: the rule's ``districts:``, else the
    public domain of the dataset's ``district`` column; without either it is a problem."""
    out = dict(columns)
    for name, column in columns.items():
        if column.rule != "generalise" or column.params.get("to") != "district":
            continue
        names = column.params.get("districts", domains.values.get("district"))
        if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) for n in names):
            doc.problem(
                (),
                f"column {name!r}: 'to: district' needs the district names, as 'districts: [...]' on the "
                "rule or under public_domains: {district: [...]} (缺少区县名称)",
                column.line,
            )
            continue
        out[name] = dataclasses.replace(column, params={**column.params, "districts": tuple(names)})
    return out
