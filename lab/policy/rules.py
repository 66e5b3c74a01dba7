"""Validation of a parsed policy document and the release rules of masked extracts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from lab.policy.budget import parse_budget
from lab.policy.catalogue import parse_catalogue
from lab.policy.domains import parse_domains, with_districts
from lab.policy.model import (
    HIDDEN_RULES,
    LEVELS,
    LONGITUDINAL_LEVELS,
    MODES,
    PI_CLASSES,
    RULES,
    ColumnPolicy,
    HouseholdLink,
    Longitudinal,
    NegativeList,
    Policy,
)
from lab.policy.yamldoc import Where, YamlDoc

Schema = Mapping[str, Any] | Sequence[str]
"""Column names, or column names to Polars types (types enable rule/type checks)."""

DATASET_KEYS = (
    "dataset",
    "description",
    "release_modes",
    "quasi_identifiers",
    "k",
    "l_diversity",
    "privacy_unit",
    "risk_threshold",
    "household_link",
    "longitudinal",
    "linked_datasets",
    "public_identifiers",
    "reference_date",
    "public_domains",
    "columns",
    "budget",
    "catalogue",
    "export_reviewers",
)
_COMMON_KEYS = {"level", "pi", "rule", "identifier", "description", "watermark"}
_RULE_KEYS: dict[str, set[str]] = {
    "drop": set(),
    "keep": set(),
    "pseudonym": {"family"},
    "generalise": {"to", "years", "width", "top", "bottom", "districts"},
    "topcode": {"top", "bottom"},
    "suppress_rare": {"min_count", "replacement"},
}
_GENERALISE_KIND = {"year": {"date"}, "month": {"date"}, "band": {"date", "number"}, "district": {"text"}}


def polars_kind(dtype: Any) -> str | None:
    """'date', 'number' or 'text' for a Polars type; None when unknown."""
    if isinstance(dtype, type) and issubclass(dtype, pl.DataType):
        dtype = dtype()
    if not isinstance(dtype, pl.DataType):
        return None
    if dtype.is_temporal():
        return "date"
    if dtype.is_numeric():
        return "number"
    return "text" if dtype == pl.String else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _schema_kinds(doc: YamlDoc, dataset: str, schema: Schema | None) -> dict[str, str | None] | None:
    if schema is None:
        from lab.registry.catalogue import DATASETS

        if dataset not in DATASETS:
            known = ", ".join(DATASETS)
            doc.problem(("dataset",), f"unknown dataset {dataset!r} (未知数据集); known datasets: {known}")
            return None
        schema = DATASETS[dataset].schema
    if isinstance(schema, Mapping):
        return {str(column): polars_kind(dtype) for column, dtype in schema.items()}
    return dict.fromkeys(map(str, schema))


def build_policy(
    doc: YamlDoc, value: dict[str, Any], schema: Schema | None, negative: NegativeList, digest: str
) -> Policy | None:
    """A Policy from a parsed document, recording every problem in ``doc.problems``."""
    for key in value:
        if key not in DATASET_KEYS:
            doc.problem((key,), f"unknown key {key!r} (未知的键); expected: {', '.join(DATASET_KEYS)}")
    dataset = value.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        doc.problem(("dataset",), "'dataset:' must name the dataset (缺少数据集名称)")
        return None
    kinds = _schema_kinds(doc, dataset, schema)
    columns = _columns(doc, dataset, value.get("columns"), negative, kinds)
    modes = _modes(doc, value.get("release_modes"))
    qis = _column_list(
        doc, ("quasi_identifiers",), value.get("quasi_identifiers", []), columns, "quasi-identifier"
    )
    k = _k(doc, value, qis)
    l_value, sensitive = _l_diversity(doc, value.get("l_diversity"), columns, qis)
    unit, max_rows = _privacy_unit(doc, value.get("privacy_unit"), columns, "dp" in modes)
    threshold = _risk_threshold(doc, value.get("risk_threshold"))
    household = _household(doc, value.get("household_link"), columns)
    longitudinal = _longitudinal(doc, value.get("longitudinal"), columns, unit, kinds)
    linked = _linked(doc, value.get("linked_datasets", []), dataset)
    public = _column_list(
        doc, ("public_identifiers",), value.get("public_identifiers", []), columns, "public identifier"
    )
    domains = parse_domains(doc, value, dataset, kinds)
    columns = with_districts(doc, columns, domains)
    policy = Policy(
        dataset=dataset,
        path=doc.path,
        digest=digest,
        columns=columns,
        release_modes=modes,
        quasi_identifiers=qis,
        k=k,
        l=l_value,
        sensitive=sensitive,
        privacy_unit=unit,
        max_rows=max_rows,
        negative_listed=frozenset(c for c in columns if negative.covers(dataset, c)),
        budget=parse_budget(doc, value.get("budget")),
        risk_threshold=threshold,
        household=household,
        longitudinal=longitudinal,
        linked_datasets=linked,
        public_identifiers=public,
        domains=domains,
        description=_description(doc, value.get("description")),
        catalogue=parse_catalogue(doc, value.get("catalogue")),
        export_reviewers=_reviewers(doc, value.get("export_reviewers")),
    )
    if "masked" in modes:
        for line, reason in release_problems(policy):
            doc.problem((), reason, line)
    return policy


def _columns(
    doc: YamlDoc, dataset: str, spec: Any, negative: NegativeList, kinds: dict[str, str | None] | None
) -> dict[str, ColumnPolicy]:
    if not isinstance(spec, dict) or not spec:
        doc.problem(("columns",), "'columns:' must map every column to its level, pi and rule (缺少列定义)")
        return {}
    columns = {}
    for name, column_spec in spec.items():
        if kinds is not None and name not in kinds:
            doc.problem(
                ("columns", name), f"column {name!r} is not in dataset {dataset!r} (数据集中没有此列)"
            )
            continue
        kind = None if kinds is None else kinds[name]
        column = _column(doc, str(name), column_spec, kind)
        if column is not None:
            columns[str(name)] = column
    for name in kinds or {}:
        if name not in spec:
            reason = (
                f"column {name!r} of dataset {dataset!r} is not classified (缺少列); add level, pi and rule"
            )
            doc.problem(("columns",), reason)
    return columns


def _column(doc: YamlDoc, name: str, spec: Any, kind: str | None) -> ColumnPolicy | None:
    at: Where = ("columns", name)
    if not isinstance(spec, dict):
        doc.problem(
            at, f"column {name!r}: expected a mapping with level, pi and rule (字段须包含 level、pi 和 rule)"
        )
        return None
    ok = True
    for key, allowed in (("level", LEVELS), ("pi", PI_CLASSES)):
        if spec.get(key) not in allowed:
            doc.problem(
                (*at, key),
                f"column {name!r}: {key} must be one of {', '.join(allowed)}, got {spec.get(key)!r} "
                "(取值无效)",
            )
            ok = False
    rule = spec.get("rule")
    if rule not in RULES:
        doc.problem(
            (*at, "rule"),
            f"column {name!r}: unknown rule {rule!r} (未知的脱敏规则); use one of: {', '.join(RULES)}",
        )
        return None
    for key in spec:
        if key not in _COMMON_KEYS | _RULE_KEYS[rule]:
            doc.problem((*at, key), f"column {name!r}: {key!r} does not apply to rule {rule!r} (参数无效)")
            ok = False
    if spec.get("identifier") not in (None, "direct"):
        doc.problem(
            (*at, "identifier"),
            f"column {name!r}: identifier may only be 'direct' (identifier 只能是 direct)",
        )
        ok = False
    params = {key: spec[key] for key in _RULE_KEYS[rule] if key in spec}
    ok = _check_params(doc, at, name, rule, params, kind) and ok
    watermark = spec.get("watermark")
    if watermark is not None and not _watermark_ok(watermark, rule, kind):
        doc.problem(
            (*at, "watermark"),
            f"column {name!r}: watermark is a positive unit on a kept or top-coded number "
            "(水印须为保留或顶部编码数值字段上的正单位)",
        )
        ok = False
    if not ok:
        return None
    line = doc.line((*at, "rule"))
    return ColumnPolicy(
        name=name,
        level=spec["level"],
        pi=spec["pi"],
        rule=rule,
        params=params,
        direct_identifier=spec.get("identifier") == "direct",
        watermark=None if watermark is None else float(watermark),
        line=line,
    )


def _watermark_ok(unit: Any, rule: str, kind: str | None) -> bool:
    return _number(unit) and unit > 0 and rule in ("keep", "topcode") and kind in (None, "number")


def _check_params(
    doc: YamlDoc, at: Where, name: str, rule: str, params: dict[str, Any], kind: str | None
) -> bool:
    def bad(key: str, reason: str) -> bool:
        doc.problem((*at, key), f"column {name!r}: {reason}")
        return False

    if rule == "pseudonym" and not (isinstance(params.get("family"), str) and params["family"]):
        return bad(
            "rule",
            "pseudonym needs 'family:', the key family it joins on (e.g. person) (假名化需要 "
            "family：用于关联的密钥族)",
        )
    if rule == "suppress_rare":
        count = params.get("min_count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 2:
            return bad(
                "min_count" if "min_count" in params else "rule",
                "suppress_rare needs 'min_count:' >= 2 (稀有值抑制需要 min_count ≥ 2)",
            )
    if rule == "topcode" and not ({"top", "bottom"} & params.keys()):
        return bad("rule", "topcode needs 'top:' and/or 'bottom:' (顶部编码需要 top 或 bottom)")
    for key in ("top", "bottom", "width"):
        if key in params and not _number(params[key]):
            return bad(key, f"{key} must be a number (须为数字)")
    if "top" in params and "bottom" in params and params["bottom"] >= params["top"]:
        return bad("bottom", "bottom must be below top (bottom 须小于 top)")
    if rule in ("topcode",) and kind not in (None, "number"):
        return bad("rule", f"{rule} applies to numbers, but the column holds {kind} (该规则只适用于数值字段)")
    if rule == "generalise":
        return _check_generalise(at, params, kind, bad)
    return True


def _check_generalise(at: Where, params: dict[str, Any], kind: str | None, bad: Any) -> bool:
    target = params.get("to")
    if target not in _GENERALISE_KIND:
        return bool(
            bad(
                "to" if "to" in params else "rule",
                f"generalise needs 'to:' one of {', '.join(_GENERALISE_KIND)} (泛化需要 to: 指定目标)",
            )
        )
    if kind is not None and kind not in _GENERALISE_KIND[target]:
        return bool(bad("to", f"cannot generalise {kind} to {target!r} (该字段类型不能这样泛化)"))
    numeric_band = target == "band" and (kind == "number" or "width" in params)
    if numeric_band and not (_number(params.get("width")) and params["width"] > 0):
        return bool(bad("to", "a numeric band needs 'width:' > 0 (数值分段需要 width > 0)"))
    if target == "band" and not numeric_band:
        years = params.get("years", 5)
        if not isinstance(years, int) or isinstance(years, bool) or years < 1:
            return bool(bad("years", "'years:' must be a whole number of years >= 1 (须为不小于 1 的整数年)"))
    if {"top", "bottom", "width"} & params.keys() and not numeric_band:
        return bool(
            bad(
                "to",
                "top, bottom and width apply only to numeric bands (top、bottom、width 只适用于数值分段)",
            )
        )
    if "years" in params and not (target == "band" and not numeric_band):
        return bool(bad("years", "'years:' applies only to date bands (years 只适用于日期分段)"))
    return True


def _modes(doc: YamlDoc, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(m not in MODES for m in value):
        doc.problem(
            ("release_modes",), f"release_modes must list one or more of: {', '.join(MODES)} (发布方式)"
        )
        return tuple(m for m in value if m in MODES) if isinstance(value, list) else ()
    return tuple(dict.fromkeys(value))


def _column_list(
    doc: YamlDoc, at: Where, value: Any, columns: Mapping[str, ColumnPolicy], what: str
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        doc.problem(at, f"{what}s must be a list of column names (须为字段名列表)")
        return ()
    for i, name in enumerate(value):
        column = columns.get(name)
        if column is None:
            doc.problem(
                (*at, i),
                f"{what} {name!r} is not a classified column of this dataset (不是本数据集已分级的字段)",
            )
        elif not column.released:
            doc.problem(
                (*at, i),
                f"{what} {name!r} has rule {column.rule!r}; it must be released (keep/generalise) "
                "(该字段必须发布：keep 或 generalise)",
            )
    return tuple(value)


def _positive_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _k(doc: YamlDoc, value: dict[str, Any], qis: tuple[str, ...]) -> int:
    k: Any = value.get("k", None if qis else 1)
    if not _positive_int(k, 2 if qis else 1):
        where = ("k",) if "k" in value else ("quasi_identifiers",)
        doc.problem(where, "k must be a whole number >= 2 when quasi_identifiers are declared (k-匿名)")
        return 1
    return int(k)


def _l_diversity(
    doc: YamlDoc, value: Any, columns: Mapping[str, ColumnPolicy], qis: tuple[str, ...]
) -> tuple[int, tuple[str, ...]]:
    if value is None:
        return 1, ()
    if not isinstance(value, dict) or set(value) != {"l", "columns"} or not _positive_int(value["l"], 2):
        doc.problem(("l_diversity",), "l_diversity must be {l: <2 or more>, columns: [...]} (l-多样性)")
        return 1, ()
    sensitive = _column_list(doc, ("l_diversity", "columns"), value["columns"], columns, "l-diversity column")
    for i, name in enumerate(sensitive):
        if name in qis:
            doc.problem(
                ("l_diversity", "columns", i),
                f"{name!r} cannot be both a quasi-identifier and sensitive (不能既是准标识符又是敏感属性)",
            )
    return int(value["l"]), sensitive


def _privacy_unit(
    doc: YamlDoc, value: Any, columns: Mapping[str, ColumnPolicy], dp: bool
) -> tuple[str | None, int]:
    if value is None:
        if dp:
            doc.problem(("release_modes",), "dp releases need 'privacy_unit: {column, max_rows}' (隐私单元)")
        return None, 1
    if (
        not isinstance(value, dict)
        or set(value) != {"column", "max_rows"}
        or not _positive_int(value["max_rows"], 1)
    ):
        doc.problem(
            ("privacy_unit",),
            "privacy_unit must be {column: <name>, max_rows: <1 or more>} (隐私单元须为 {column: 字段名, "
            "max_rows: "
            "≥1})",
        )
        return None, 1
    if value["column"] not in columns:
        doc.problem(
            ("privacy_unit", "column"),
            f"privacy unit {value['column']!r} is not a column of this dataset (隐私单元不是本数据集的字段)",
        )
        return None, 1
    return str(value["column"]), int(value["max_rows"])


def _risk_threshold(doc: YamlDoc, value: Any) -> float | None:
    if value is None:
        return None
    if not _number(value) or not 0 < value <= 1:
        doc.problem(
            ("risk_threshold",),
            f"risk_threshold must be a number in (0, 1], the highest re-identification risk released "
            f"(重识别风险阈值), got {value!r}",
        )
        return None
    return float(value)


def _reviewers(doc: YamlDoc, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 9:
        doc.problem(
            ("export_reviewers",),
            f"export_reviewers must be a whole number from 2 to 9, the distinct operators who approve an "
            f"export of this dataset (导出审核人数须为 2 到 9 的整数), got {value!r}",
        )
        return None
    return value


def _household(doc: YamlDoc, value: Any, columns: Mapping[str, ColumnPolicy]) -> HouseholdLink | None:
    if value is None:
        return None
    at: Where = ("household_link",)
    if not isinstance(value, dict) or set(value) - {"column", "purposes"} or "column" not in value:
        doc.problem(at, "household_link must be {column: <household pseudonym>, purposes: [...]} (户关联)")
        return None
    column = columns.get(value["column"])
    if column is None or column.rule != "pseudonym":
        doc.problem(
            (*at, "column"),
            f"household_link column {value['column']!r} must be a pseudonymised column of this dataset "
            "(户关联字段须为本数据集的假名化字段)",
        )
        return None
    purposes = value.get("purposes", [])
    if not isinstance(purposes, list) or not all(isinstance(p, str) and p.strip() for p in purposes):
        doc.problem((*at, "purposes"), "household_link purposes must be a list of purpose names (用途)")
        return None
    return HouseholdLink(column.name, tuple(p.strip() for p in purposes))


def _longitudinal(
    doc: YamlDoc,
    value: Any,
    columns: Mapping[str, ColumnPolicy],
    unit: str | None,
    kinds: dict[str, str | None] | None,
) -> Longitudinal | None:
    if value is None:
        return None
    at: Where = ("longitudinal",)
    allowed = {"time", "within", "generalise", "max_suppressed"}
    if not isinstance(value, dict) or set(value) - allowed or "time" not in value:
        doc.problem(
            at, "longitudinal must be {time: <date column>, within: <column>, generalise: [...]} (纵向数据)"
        )
        return None
    if unit is None:
        doc.problem(
            at, "longitudinal rows need 'privacy_unit:' (whose trajectory it is) (纵向数据需要 privacy_unit)"
        )
        return None
    time = columns.get(value["time"])
    kind = None if kinds is None or time is None else kinds.get(time.name)
    if (
        time is None
        or kind not in (None, "date")
        or time.rule not in ("keep", "generalise")
        or time.params.get("to") not in (None, "month")
    ):
        doc.problem(
            (*at, "time"),
            f"longitudinal time {value['time']!r} must be a released monthly date column "
            "(须为已发布的月度日期字段)",
        )
        return None
    within = value.get("within")
    if within is not None and (within not in columns or not columns[within].released):
        doc.problem(
            (*at, "within"),
            f"longitudinal within {within!r} must be a released column of this dataset "
            "(须为本数据集已发布的字段)",
        )
        return None
    levels = value.get("generalise", list(LONGITUDINAL_LEVELS))
    order = list(LONGITUDINAL_LEVELS)
    if (
        not isinstance(levels, list)
        or not levels
        or any(level not in order for level in levels)
        or [order.index(level) for level in levels] != sorted({order.index(level) for level in levels})
    ):
        doc.problem(
            (*at, "generalise"),
            f"longitudinal generalise must list levels from finest to coarsest, of: {', '.join(order)} "
            "(须按从细到粗列出层级)",
        )
        return None
    share = value.get("max_suppressed", 0.05)
    if not _number(share) or not 0 <= share < 1:
        doc.problem(
            (*at, "max_suppressed"),
            "longitudinal max_suppressed must be a share in [0, 1) (max_suppressed 须为 [0, 1) 之间的比例)",
        )
        return None
    return Longitudinal(time.name, within, tuple(levels), float(share))


def _linked(doc: YamlDoc, value: Any, dataset: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        doc.problem(("linked_datasets",), "linked_datasets must be a list of dataset names (关联数据集)")
        return ()
    for i, name in enumerate(value):
        if name == dataset:
            doc.problem(
                ("linked_datasets", i),
                f"dataset {dataset!r} cannot be linked with itself (数据集不能与自身关联)",
            )
    return tuple(dict.fromkeys(v for v in value if v != dataset))


def _description(doc: YamlDoc, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 2000:
        doc.problem(("description",), "description is text of at most 2,000 characters (描述过长或格式错误)")
        return ""
    return value.strip()


def release_problems(policy: Policy) -> list[tuple[int, str]]:
    """(line, reason) for every column a masked extract under ``policy`` would leak."""
    problems = []
    anonymous = policy.k >= 2 and bool(policy.quasi_identifiers)
    for c in policy.columns.values():
        if c.level == "core" and c.rule != "drop":
            reason = "is core data (核心数据), which never leaves; set rule: drop"
        elif c.name in policy.negative_listed and c.rule != "drop":
            reason = "is on the negative list (负面清单), which never leaves; set rule: drop"
        elif (c.level == "important" or c.pi == "sensitive") and c.released:
            what = "important data" if c.level == "important" else "sensitive PI"
            reason = (
                f"is {what} (仅限差分隐私): only DP results may use its values; set rule: drop or pseudonym"
            )
        elif (
            c.direct_identifier
            and c.released
            and not (c.rule == "generalise" and c.params.get("to") == "district")
        ):
            reason = (
                "is a direct identifier (直接标识符); set rule: drop, pseudonym or generalise to: district"
            )
        elif c.pi == "pi" and c.released and not anonymous:
            reason = "is personal information, released only under k-anonymity; declare quasi_identifiers, k"
        else:
            continue
        problems.append((c.line, f"column {c.name!r} {reason} — a masked extract would release it"))
    return problems


__all__ = ["HIDDEN_RULES", "Schema", "build_policy", "polars_kind", "release_problems"]
