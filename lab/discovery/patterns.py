"""Value patterns without a check character: names, addresses, e-mail, plates, dates, sex.

These are weaker evidence than a check character, so the scanner asks more of a column (a
higher share of matching values, and for names many different values).

Chinese personal names (姓名)
    2-4 Han characters starting with one of the common single surnames (the ~300 most frequent,
    covering well over 90 % of residents) or a compound surname (欧阳, 司马 ...), or a minority
    name of two parts joined by a middle dot (买买提·艾力). Values ending in a place or
    organisation suffix (区, 县, 路, 局, 公司 ...) are not names. A column of a few repeated
    values (区县, 学历) is a category, not names: see ``MIN_DISTINCT_NAMES`` in ``scan``.

Addresses (地址)
    At least 6 characters with two or more markers of the GB/T 2260 divisions and street
    numbering (省 市 区 县 镇 乡 村 路 街 巷 号 栋 单元 室 ...) and a house number (``12号``,
    ``3单元``), or three markers (a village: 县 镇 村). Organisation names (... 公司) are not.

Licence plates (机动车号牌), GA 36-2018
    The province character, the issuing office letter (no I, O) and five characters (the last
    may be 挂 学 警 港 澳), or a new-energy plate: six characters with D/F first or last.

Dates (日期) in ``YYYY-MM-DD``, ``YYYY/M/D``, ``YYYYMMDD`` or ``YYYY年M月D日``; a column of dates
is taken for dates of birth when its name says so (birth, dob, 出生, 生日) or when its dates
spread over decades and lie years in the past (see ``birth_like``).
"""

from __future__ import annotations

import re
from datetime import date

import polars as pl

SINGLE_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
    "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴"
    "莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅"
    "童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项"
    "连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞"
    "敖巩明佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花"
    "权强帅屠豆朴盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母"
    "裘亓修邰赫杭况那宿鲜印逯隆茹诸战慕危玉银亢嵇公哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸"
    "奉植衡富尧闭由"
)
COMPOUND_SURNAMES = (
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "令狐", "夏侯", "轩辕", "端木", "南宫", "西门", "独孤", "呼延", "万俟", "闻人", "澹台", "公羊",
)  # fmt: skip
_HAN = r"\x{4e00}-\x{9fff}"
_NOT_NAME_END = "省市区县镇乡村路街巷号局院所厂站店司业部科处队"
NAME_PATTERN = (
    rf"^(?:(?:{'|'.join(COMPOUND_SURNAMES)})[{_HAN}]{{1,2}}|[{SINGLE_SURNAMES}][{_HAN}]{{1,3}})$"
    rf"|^[{_HAN}]{{2,8}}[·•・][{_HAN}]{{2,10}}$"
)
ADDRESS_MARKERS = (
    "省",
    "市",
    "区",
    "县",
    "镇",
    "乡",
    "村",
    "路",
    "街",
    "巷",
    "弄",
    "号",
    "栋",
    "幢",
    "单元",
    "室",
)
HOUSE_NUMBER = r"[0-9０-９一二三四五六七八九十百]+(?:号|栋|幢|楼|室|单元|弄|组)"
ORGANISATION_END = r"(?:公司|厂|店|中心|合作社|局|院|所|校|部|站|行|委员会|政府)$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$"
EMAIL_IN_TEXT = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE_LETTER = "A-HJ-NP-Z"
PLATE_PATTERN = (
    rf"^[{PROVINCES}][{_PLATE_LETTER}][·• ]?"
    rf"(?:[{_PLATE_LETTER}0-9]{{4}}[{_PLATE_LETTER}0-9挂学警港澳]|[DF][{_PLATE_LETTER}0-9][0-9]{{4}}|[0-9]{{5}}[DF])$"
)
SEX_VALUES = ("男", "女", "男性", "女性")
BIRTH_NAME = re.compile(r"birth|dob|born|出生|生日", re.IGNORECASE)
MOBILE_IN_TEXT = r"(?:^|[^0-9])1[3-9][0-9](?:[ \-]?[0-9]{4}){2}(?:[^0-9]|$)"
ID_IN_TEXT = r"(?:^|[^0-9A-Za-z])([1-8][0-9]{16}[0-9Xx])(?:[^0-9A-Za-z]|$)"


def name_expr(s: pl.Expr) -> pl.Expr:
    """Boolean expression: a Chinese personal name (see the module docstring)."""
    return (s.str.contains(NAME_PATTERN) & ~s.str.contains(f"[{_NOT_NAME_END}]$")).fill_null(False)


def address_expr(s: pl.Expr) -> pl.Expr:
    """Boolean expression: a Chinese postal address down to a house number or a village."""
    markers = sum((s.str.contains(m, literal=True).cast(pl.Int32) for m in ADDRESS_MARKERS), pl.lit(0))
    numbered = s.str.contains(HOUSE_NUMBER)
    return (
        (s.str.len_chars() >= 6)
        & (((markers >= 2) & numbered) | (markers >= 3))
        & ~s.str.contains(ORGANISATION_END)
    ).fill_null(False)


def email_expr(s: pl.Expr) -> pl.Expr:
    """Boolean expression: an e-mail address."""
    return s.str.contains(EMAIL_PATTERN).fill_null(False)


def plate_expr(s: pl.Expr) -> pl.Expr:
    """Boolean expression: a mainland licence plate (GA 36)."""
    return s.str.to_uppercase().str.contains(PLATE_PATTERN).fill_null(False)


def sex_expr(s: pl.Expr) -> pl.Expr:
    """Boolean expression: 男 / 女."""
    return s.is_in(SEX_VALUES).fill_null(False)


def date_expr(s: pl.Expr) -> pl.Expr:
    """The value as a Date, or null: ``2024-01-05``, ``2024/1/5``, ``20240105``, ``2024年1月5日``."""
    text = s.str.replace_all(r"[/.年月]", "-").str.replace(r"日$", "")
    text = text.str.replace(r"^([0-9]{4})([0-9]{2})([0-9]{2})$", "$1-$2-$3")
    plain = text.str.contains(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$")
    return pl.when(plain).then(text.str.to_date("%Y-%m-%d", strict=False))


def birth_like(column: str, dates: pl.Series, today: date | None = None) -> bool:
    """True if a column of dates looks like dates of birth.

    By name (birth, dob, 出生, 生日), or by value: none in the future, none before 1900, and the
    middle 80 % spread over at least 20 years ending at least 5 years ago (event dates such as
    payments or visits cluster in recent years).
    """
    if BIRTH_NAME.search(column):
        return True
    today = today or date.today()
    years = dates.dt.year()
    low, high = years.quantile(0.1), years.quantile(0.9)
    first, last = dates.min(), dates.max()
    if low is None or high is None or not isinstance(first, date) or not isinstance(last, date):
        return False
    return first.year >= 1900 and last <= today and high - low >= 20 and high <= today.year - 5


__all__ = [
    "ADDRESS_MARKERS",
    "COMPOUND_SURNAMES",
    "EMAIL_IN_TEXT",
    "ID_IN_TEXT",
    "MOBILE_IN_TEXT",
    "SINGLE_SURNAMES",
    "address_expr",
    "birth_like",
    "date_expr",
    "email_expr",
    "name_expr",
    "plate_expr",
    "sex_expr",
]
