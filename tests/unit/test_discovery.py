"""Sensitive-data discovery: planted identifiers are found by value, decoys are not flagged.

The files are written here by a generator of our own (no ``lab.synthetic``): valid check
characters for the planted columns, deliberately wrong ones for the decoys. Column names
say nothing (``col_7``), so only values can give a column away. No planted value may appear
in what the scanner prints.
"""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from lab import cli
from lab.discovery import ScanResult, classify, draft_yaml, read_sample, scan_source, to_text
from lab.discovery.checks import (
    card_digits,
    credit_code_mask,
    is_bank_card,
    is_credit_code,
    is_resident_id,
    luhn_mask,
    resident_id_mask,
)
from lab.discovery.kinds import ID_KINDS
from lab.errors import ConfigError
from lab.policy import load_policy

pytestmark = pytest.mark.unit

ROWS = 3_000
TODAY = date(2026, 1, 1)

# ---- our own generator of identifier codes (independent of lab.discovery.checks) ----------

_ID_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_REGIONS = ["370302", "370303", "110105", "440305", "510104", "320106", "650102"]
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉建国志宏海波宇浩然欣怡子涵梓轩"
_ROADS = ["共青团", "人民", "柳泉", "华光", "金晶", "中润", "西六", "北京", "和平", "新村"]
_DISTRICTS = ["张店区", "淄川区", "博山区", "临淄区", "周村区", "桓台县", "高青县", "沂源县"]


def _id_check(first17: str) -> str:
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, _ID_W, strict=True)) % 11]


def _resident_id(rng: random.Random, valid: bool = True) -> str:
    born = date(1935, 1, 1) + timedelta(days=rng.randrange(80 * 365))
    body = f"{rng.choice(_REGIONS)}{born:%Y%m%d}{rng.randrange(1000):03d}"
    check = _id_check(body)
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return body + check


def _credit_code(rng: random.Random, valid: bool = True, category: str = "91") -> str:
    org8 = "".join(rng.choice(_CHARSET) for _ in range(8))
    values = [int(c) if c.isdigit() else ord(c) - 55 for c in org8]
    org = 11 - sum(v * w for v, w in zip(values, [3, 7, 9, 10, 5, 8, 4, 2], strict=True)) % 11
    body = f"{category}{rng.choice(_REGIONS)}{org8}{'X' if org == 10 else org % 11}"
    total = sum(_CHARSET.index(c) * pow(3, i, 31) for i, c in enumerate(body))
    check = _CHARSET[(31 - total % 31) % 31]
    if not valid:
        check = rng.choice([c for c in _CHARSET if c != check])
    return body + check


def _luhn_digit(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c) * (2 if i % 2 == 0 else 1)  # the check digit will sit to the right
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def _bank_card(rng: random.Random, valid: bool = True) -> str:
    length = rng.choice([16, 17, 18, 19])
    body = "62" + "".join(str(rng.randrange(10)) for _ in range(length - 3))
    check = _luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randrange(1, 10)) % 10)
    number = body + check
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4)) if rng.random() < 0.2 else number


def _mobile(rng: random.Random) -> str:
    number = "1" + rng.choice("3456789") + "".join(str(rng.randrange(10)) for _ in range(9))
    form = rng.random()
    if form < 0.1:
        return f"+86 {number}"
    if form < 0.2:
        return f"{number[:3]}-{number[3:7]}-{number[7:]}"
    return number


def _name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice([1, 2, 2])))


def _address(rng: random.Random) -> str:
    return (
        f"山东省淄博市{rng.choice(_DISTRICTS)}{rng.choice(_ROADS)}路{rng.randrange(1, 300)}号"
        f"{rng.randrange(1, 6)}单元{rng.randrange(101, 1802)}室"
    )


def _email(rng: random.Random) -> str:
    user = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randrange(4, 11)))
    return f"{user}@{rng.choice(['163.com', 'qq.com', 'example.cn', 'zibo.gov.cn'])}"


def _plate(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    tail = "".join(rng.choice(letters + "0123456789") for _ in range(5))
    return "鲁" + rng.choice(letters[:8]) + tail


def _birth(rng: random.Random) -> str:
    return (date(1940, 1, 1) + timedelta(days=rng.randrange(75 * 365))).isoformat()


def _remark(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(
            ["客户来电，请回拨{}。", "联系人电话{}，周一上门", "Call back on {} after 5pm"]
        ).format(_mobile(rng))
    return rng.choice(["已处理", "材料齐全，待审核", "无", "地址变更待核实", "2024年3月复查，金额12.50元"])


# Planted columns: the kind the scanner must report. Decoys: must not be taken for identifiers.
PLANTED: dict[str, Callable[[random.Random], str]] = {
    "resident_id": _resident_id,
    "credit_code": _credit_code,
    "bank_card": _bank_card,
    "mobile": _mobile,
    "person_name": _name,
    "address": _address,
    "email": _email,
    "licence_plate": _plate,
    "birth_date": _birth,
}
DECOYS: dict[str, Callable[[random.Random], str]] = {
    "bad_resident_id": lambda r: _resident_id(r, valid=False),
    "bad_credit_code": lambda r: _credit_code(r, valid=False),
    "bad_bank_card": lambda r: _bank_card(r, valid=False),
    "random_18_digits": lambda r: str(r.randrange(10**17, 10**18)),
    "random_16_digits": lambda r: str(r.randrange(10**15, 10**16)),
    "amount": lambda r: f"{r.uniform(0, 50_000):.2f}",
    "payment_date": lambda r: (date(2024, 1, 1) + timedelta(days=r.randrange(366))).isoformat(),
    "yyyymmdd": lambda r: (date(2023, 1, 1) + timedelta(days=r.randrange(700))).strftime("%Y%m%d"),
    "count": lambda r: str(r.randrange(0, 500)),
    "education": lambda r: r.choice(["小学", "初中", "高中", "大学本科", "研究生", "中专"]),
    "district": lambda r: r.choice(_DISTRICTS),
    "status": lambda r: r.choice(["在业", "存续", "注销", "吊销"]),
}


def _table(seed: int, rows: int = ROWS) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Columns named col_1 ... col_N in shuffled order; returns (column -> role, data)."""
    rng = random.Random(seed)
    roles = [*PLANTED, *DECOYS, "remark"]
    rng.shuffle(roles)
    names = {f"col_{i}": role for i, role in enumerate(roles, 1)}
    makers = {**PLANTED, **DECOYS, "remark": _remark}
    data = {column: [makers[role](rng) for _ in range(rows)] for column, role in names.items()}
    return names, data


def _write_csv(path: Path, data: dict[str, list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(data))
        writer.writerows(zip(*data.values(), strict=True))
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, list[str]]]:
    roles, data = _table(seed=12)
    path = _write_csv(tmp_path_factory.mktemp("scan") / "registers.csv", data)
    return path, roles, data


@pytest.fixture(scope="module")
def result(planted: tuple[Path, dict[str, str], dict[str, list[str]]]) -> ScanResult:
    return scan_source(planted[0], today=TODAY)


# ---- check characters -----------------------------------------------------------------------


def test_check_characters_of_known_codes() -> None:
    assert is_resident_id("11010519491231002X")
    assert not is_resident_id("110105194912310021")  # wrong check character
    assert not is_resident_id("110105194902300021")  # 30 February
    assert is_credit_code("91350100M000100Y43")
    assert not is_credit_code("91350100M000100Y44")
    assert is_bank_card("4111 1111 1111 1111")
    assert not is_bank_card("4111111111111112")
    assert not is_bank_card("0000000000000000")  # passes Luhn, but a placeholder


def test_vectorised_checks_agree_with_the_scalar_ones() -> None:
    rng = random.Random(5)
    ids = [_resident_id(rng, valid=rng.random() < 0.5) for _ in range(2_000)]
    codes = [_credit_code(rng, valid=rng.random() < 0.5) for _ in range(2_000)]
    cards = [_bank_card(rng, valid=rng.random() < 0.5) for _ in range(2_000)]
    got = {
        "id": resident_id_mask(pl.Series(ids)),
        "code": credit_code_mask(pl.Series(codes)),
        "card": luhn_mask(card_digits(pl.Series(cards))),
    }
    assert got["id"].to_list() == [is_resident_id(v) for v in ids]
    assert got["code"].to_list() == [is_credit_code(v) for v in codes]
    assert got["card"].to_list() == [is_bank_card(v) for v in cards]
    assert 0 < sum(got["id"]) < len(ids) and 0 < sum(got["code"]) < len(codes)


# ---- finding planted columns, and no false alarms -------------------------------------------


def test_every_planted_identifier_column_is_found(
    planted: tuple[Path, dict[str, str], dict[str, list[str]]], result: ScanResult
) -> None:
    _, roles, _ = planted
    found = {f.column: f for f in result.columns}
    missed = [f"{c} ({role})" for c, role in roles.items() if role in PLANTED and found[c].kind != role]
    print(f"planted columns: {len(PLANTED) + 1}, missed: {len(missed)}")
    assert not missed
    remark = next(c for c, role in roles.items() if role == "remark")
    assert (found[remark].kind, found[remark].match, found[remark].rule) == ("mobile", "embedded", "drop")
    for column, role in roles.items():
        finding = found[column]
        if role in ID_KINDS or role in ("address", "remark"):
            assert finding.identifier in ("direct", "quasi"), column
        if role == "resident_id":
            assert (finding.pi, finding.rule, finding.params) == (
                "sensitive",
                "pseudonym",
                {"family": "person"},
            )
        if role == "birth_date":
            assert (finding.identifier, finding.rule) == ("quasi", "generalise")


def test_decoys_are_not_flagged_as_identifiers(
    planted: tuple[Path, dict[str, str], dict[str, list[str]]], result: ScanResult
) -> None:
    _, roles, _ = planted
    decoys = [f for f in result.columns if roles[f.column] in DECOYS]
    alarms = [f"{f.column} ({roles[f.column]}: {f.kind})" for f in decoys if f.kind in ID_KINDS]
    direct = [f.column for f in decoys if f.identifier == "direct"]
    print(f"decoy columns: {len(decoys)}, false alarms: {len(alarms)}, direct identifiers: {len(direct)}")
    assert len(decoys) == len(DECOYS)
    assert alarms == [] and direct == []
    kinds = {roles[f.column]: f.kind for f in decoys}
    assert kinds["payment_date"] == kinds["yyyymmdd"] == "date"
    assert kinds["amount"] is None and kinds["bad_resident_id"] is None


def test_few_values_passing_by_chance_are_not_enough() -> None:
    rng = random.Random(8)
    five_cards = pl.Series([_bank_card(rng) for _ in range(5)])  # 5 Luhn passes: chance 1 in 10^5
    assert classify("c", five_cards, today=TODAY).kind is None
    twenty = pl.Series([_bank_card(rng) for _ in range(20)])
    assert classify("c", twenty, today=TODAY).kind == "bank_card"
    categories = pl.Series(["高中", "初中", "王伟", "李娜"] * 50)  # few different values: not names
    assert classify("c", categories, today=TODAY).kind != "person_name"


def test_one_phone_number_in_a_long_free_text_column_is_enough() -> None:
    rng = random.Random(11)
    texts = ["材料齐全，待审核"] * 4_999 + [f"请回拨{_mobile(rng)}"]
    finding = classify("remark", pl.Series(texts), today=TODAY)
    assert (finding.kind, finding.match, finding.rule, finding.evidence.matches) == (
        "mobile",
        "embedded",
        "drop",
        1,
    )
    amounts = pl.Series([f"{rng.uniform(1e10, 2e10):.2f}" for _ in range(100)])  # numbers, not text
    assert classify("amount", amounts, today=TODAY).kind is None


def test_individual_business_codes_are_personal_information() -> None:
    rng = random.Random(9)
    codes = pl.Series([_credit_code(rng, category="92") for _ in range(200)])
    finding = classify("owner", codes, today=TODAY)
    assert (finding.kind, finding.pi) == ("credit_code", "pi")


def test_gb18030_csv(tmp_path: Path) -> None:
    rng = random.Random(3)
    data = {"a": [_name(rng) for _ in range(500)], "b": [_address(rng) for _ in range(500)]}
    path = _write_csv(tmp_path / "gbk.csv", data, encoding="gb18030")
    scanned = scan_source(path, today=TODAY)
    assert scanned.encoding == "gb18030"
    assert [f.kind for f in scanned.columns] == ["person_name", "address"]


def test_gb18030_after_a_long_ascii_start_is_read_again(tmp_path: Path) -> None:
    rng = random.Random(4)
    head = ["x" * 40] * 40_000  # more than the first MiB that picks the encoding
    data = {"n": [str(i) for i in range(len(head) + 500)], "a": head + [_name(rng) for _ in range(500)]}
    scanned = scan_source(_write_csv(tmp_path / "late.csv", data, encoding="gb18030"), today=TODAY)
    assert scanned.encoding == "gb18030" and scanned.rows == len(head) + 500


def test_utf8_with_bom(tmp_path: Path) -> None:
    rng = random.Random(6)
    path = _write_csv(
        tmp_path / "bom.csv", {"电话": [_mobile(rng) for _ in range(100)]}, encoding="utf-8-sig"
    )
    scanned = scan_source(path, today=TODAY)
    assert [(f.column, f.kind) for f in scanned.columns] == [("电话", "mobile")]


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    rng = random.Random(7)
    frame = pl.DataFrame(
        {
            "x1": [int(_mobile(rng).replace("+86 ", "").replace("-", "")) for _ in range(300)],
            "x2": [date(1940, 1, 1) + timedelta(days=rng.randrange(27_000)) for _ in range(300)],
            "x3": [rng.uniform(0, 1000) for _ in range(300)],
            "x4": [[1, 2]] * 300,
            "x5": [timedelta(seconds=i) for i in range(300)],
        }
    )
    frame.write_parquet(tmp_path / "typed.parquet")
    scanned = scan_source(tmp_path / "typed.parquet", today=TODAY)
    assert [f.kind for f in scanned.columns] == ["mobile", "birth_date", None, None, None]
    assert scanned.columns[3].evidence.values == 0  # nested: not scanned, and said so
    assert scanned.format == "parquet" and scanned.rows == 300


def test_sample_is_bounded_and_spread_over_the_file(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "long.csv", {"i": [str(i) for i in range(20_000)]})
    sample = read_sample(path, cap=100)
    values = sample.values["i"].cast(pl.Int64)
    assert sample.rows == 20_000 and 50 <= values.len() <= 100
    assert values.min() < 1_000 and values.max() > 19_000  # type: ignore[operator]


# ---- bad input: clear errors naming file and line -------------------------------------------


def _error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        scan_source(path)
    message = info.value.message
    assert str(path) in message
    assert any("\u4e00" <= c <= "\u9fff" for c in message) and any(
        c.isascii() and c.isalpha() for c in message
    )
    return info.value


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a,b,c\n1,2,3\n4,5,6,7\n8,9,0\n", 3),  # a field too many
        ('a,b,c\n1,2,3\n"multi\nline",5,6\n7,8\n', 5),  # a field too few, after a quoted newline
        ('a,b\n1,2\n3,"never closed\n5,6\n', 3),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    error = _error(path)
    assert error.reason == "malformed-row"
    assert f"{path}:{line}:" in error.message


def test_a_file_without_header_is_refused_without_printing_its_first_row(tmp_path: Path) -> None:
    rng = random.Random(10)
    first = _resident_id(rng)
    path = _write_csv(tmp_path / "nohead.csv", {first: [_resident_id(rng) for _ in range(10)]})
    error = _error(path)
    assert error.reason == "malformed-row" and f"{path}:1:" in error.message
    assert first not in error.message and first not in error.detail
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "header" in _error(empty).message


def test_a_lone_quote_inside_a_field_is_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "inch.csv"
    path.write_text('item,size\nscreen,5" wide\nphone,6\n', encoding="utf-8")
    assert scan_source(path).rows == 2


def test_the_cli_reports_a_bad_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3\n", encoding="utf-8")
    assert cli.main(["dataset", "scan", str(path), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"datalab: error: {path}:3: malformed CSV row")


def test_unknown_encoding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"a,b\n1,2\n3,\xff\xfe\xff\n")
    error = _error(path)
    assert error.reason == "encoding" and "UTF-8" in error.message and "line 3" in error.message
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text("a,b\n1,2\n", encoding="utf-16")
    assert _error(utf16).reason == "encoding"


def test_excel_and_broken_parquet_are_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "book.xlsx"
    sheet.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    assert _error(sheet).reason == "unsupported-format"
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    assert _error(broken).reason == "unreadable"


# ---- the draft policy, and no raw value in any output ---------------------------------------


def test_draft_policy_is_accepted_by_the_policy_loader(tmp_path: Path, result: ScanResult) -> None:
    draft = tmp_path / "draft.yaml"
    draft.write_text(draft_yaml(result, "imported"), encoding="utf-8")
    policy = load_policy(draft, schema=[f.column for f in result.columns])
    assert policy.release_modes == ("masked",) and policy.k == 5
    for finding in result.columns:
        column = policy.columns[finding.column]
        assert (column.rule, column.level, column.pi) == (finding.rule, finding.level, finding.pi)
        assert column.direct_identifier == (finding.identifier == "direct")
    assert {policy.columns[q].name for q in policy.quasi_identifiers} == {
        f.column for f in result.columns if f.kind == "birth_date"
    }


def _planted_values(data: dict[str, list[str]], roles: dict[str, str]) -> set[str]:
    """Every planted value (and its bare digits), and each phone number inside a remark."""
    values = set()
    for column, role in roles.items():
        for value in data[column]:
            if role == "remark":
                values.update(re.findall(r"1[3-9][0-9]{9}", value.replace("-", "")))
            elif role in PLANTED:
                values.update({value, value.replace(" ", "").replace("-", "").removeprefix("+86")})
    return values


@pytest.mark.security
def test_no_planted_value_in_scan_output(
    planted: tuple[Path, dict[str, str], dict[str, list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, roles, data = planted
    assert cli.main(["dataset", "scan", str(path)]) == 0
    text = capsys.readouterr()
    assert cli.main(["dataset", "scan", str(path), "--json"]) == 0
    as_json = capsys.readouterr()
    objects = json.loads(as_json.out)
    assert {"column", "kind", "identifier", "pi"} <= objects[0].keys() and len(objects) == len(roles)
    output = text.out + text.err + as_json.out + as_json.err
    leaked = [v for v in _planted_values(data, roles) if v in output]
    print(f"planted values checked: {len(_planted_values(data, roles))}, leaked: {len(leaked)}")
    assert leaked == []
    assert "e.g." in text.out and "*" in text.out  # examples are there, masked


def test_text_report_is_bilingual(result: ScanResult) -> None:
    text = to_text(result)
    assert "居民身份证号 resident ID number" in text and "direct identifier column(s)" in text


def test_discovery_does_not_import_the_generator() -> None:
    code = "import sys, lab.discovery; sys.exit('lab.synthetic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
