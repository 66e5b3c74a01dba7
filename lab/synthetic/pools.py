"""Vocabulary pools built once from Faker (zh_CN) and a little local knowledge of Zibo.

Faker is used only here, to fill pools of surnames, given names and road names;
rows then pick from the pools by index, which keeps generation vectorised. The pools do not
depend on the user's seed (only the picks do), so they are built once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl
from faker import Faker
from faker.providers.person import zh_CN as person_zh

# Sub-districts (街道) and towns (镇) per region, in the order of codes.REGIONS.
SUBDISTRICTS: tuple[tuple[str, ...], ...] = (
    ("般阳路街道", "松龄路街道", "钟楼街道", "将军路街道", "昆仑镇", "罗村镇", "洪山镇", "寨里镇", "龙泉镇"),
    (
        "车站街道",
        "公园街道",
        "和平街道",
        "科苑街道",
        "体育场街道",
        "杏园街道",
        "马尚街道",
        "湖田街道",
        "房镇镇",
    ),
    ("城东街道", "城西街道", "山头街道", "域城镇", "白塔镇", "八陡镇", "石马镇", "源泉镇", "池上镇"),
    ("闻韶街道", "雪宫街道", "辛店街道", "稷下街道", "齐陵街道", "齐都镇", "皇城镇", "敬仲镇", "朱台镇"),
    ("丝绸路街道", "大街街道", "青年路街道", "永安街街道", "城北路街道", "北郊镇", "南郊镇", "王村镇"),
    ("索镇街道", "少海街道", "起凤镇", "田庄镇", "荆家镇", "马桥镇", "新城镇", "唐山镇", "果里镇"),
    ("田镇街道", "芦湖街道", "青城镇", "高城镇", "黑里寨镇", "唐坊镇", "常家镇", "花沟镇", "木李镇"),
    ("历山街道", "南麻街道", "鲁村镇", "东里镇", "悦庄镇", "西里镇", "大张庄镇", "中庄镇", "燕崖镇"),
)
_ZIBO_ROADS = (
    "柳泉路",
    "华光路",
    "共青团路",
    "人民路",
    "联通路",
    "金晶大道",
    "西五路",
    "北京路",
    "上海路",
    "新村路",
    "张周路",
    "中润大道",
    "世纪路",
    "昌国路",
    "齐赛路",
    "松龄路",
    "般阳路",
    "和平路",
    "淄博路",
    "鲁泰大道",
)

# GB/T 4754-2017 sections: code, name, sampling weight, trade words for company names.
INDUSTRIES: tuple[tuple[str, str, float, tuple[str, ...]], ...] = (
    ("A", "农、林、牧、渔业", 4.0, ("农业", "种植", "养殖")),
    ("B", "采矿业", 0.5, ("矿业",)),
    ("C", "制造业", 14.0, ("机械", "化工", "陶瓷", "新材料", "医药", "纺织", "橡胶制品")),
    ("D", "电力、热力、燃气及水生产和供应业", 0.5, ("热电", "燃气", "供水")),
    ("E", "建筑业", 5.0, ("建设工程", "建筑安装", "装饰工程")),
    ("F", "批发和零售业", 30.0, ("商贸", "贸易", "百货", "五金")),
    ("G", "交通运输、仓储和邮政业", 4.0, ("物流", "运输", "仓储")),
    ("H", "住宿和餐饮业", 9.0, ("餐饮", "酒店", "饭庄")),
    ("I", "信息传输、软件和信息技术服务业", 3.0, ("信息技术", "软件", "网络科技")),
    ("J", "金融业", 0.5, ("投资", "融资担保")),
    ("K", "房地产业", 2.0, ("房地产开发", "物业管理")),
    ("L", "租赁和商务服务业", 7.0, ("商务服务", "企业管理咨询", "租赁")),
    ("M", "科学研究和技术服务业", 3.0, ("检测技术", "工程技术")),
    ("N", "水利、环境和公共设施管理业", 0.5, ("环境工程", "园林绿化")),
    ("O", "居民服务、修理和其他服务业", 10.0, ("家政服务", "汽车维修", "理发")),
    ("P", "教育", 1.5, ("教育咨询", "培训")),
    ("Q", "卫生和社会工作", 1.5, ("诊所", "养老服务")),
    ("R", "文化、体育和娱乐业", 2.0, ("文化传媒", "体育")),
    ("S", "公共管理、社会保障和社会组织", 1.0, ("协会",)),
    ("T", "国际组织", 0.01, ("代表处",)),
)

_TRADE_CHARS = "鑫华泰瑞德信诚宏盛达丰源兴隆恒昌安康福祥和汇通利佳美新正博远"

MOBILE_PREFIXES = np.array(
    [130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157, 158, 159,
     166, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 191, 198, 199],
    dtype=np.int64,
)  # fmt: skip


@dataclass(frozen=True)
class Pools:
    """String pools as Polars Series (gathered by index) plus their sampling weights."""

    surnames: pl.Series
    surname_weights: np.ndarray
    given_male: pl.Series
    given_female: pl.Series
    roads: pl.Series
    trade_names: pl.Series
    region_names: pl.Series
    subdistricts: pl.Series  # flattened SUBDISTRICTS
    subdistrict_start: np.ndarray  # first index of each region's sub-districts
    subdistrict_count: np.ndarray
    industries: pl.Series  # "C 制造业"
    industry_weights: np.ndarray
    trade_words: pl.Series  # flattened trade words
    trade_word_start: np.ndarray
    trade_word_count: np.ndarray


def _flatten(groups: tuple[tuple[str, ...], ...]) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    counts = np.array([len(g) for g in groups], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return pl.Series([item for g in groups for item in g], dtype=pl.String), starts, counts


@lru_cache(maxsize=1)
def pools() -> Pools:
    """The pools, built on first use and then shared."""
    from lab.synthetic.codes import REGION_NAMES

    faker = Faker("zh_CN")
    faker.seed_instance(20250630)
    roads = sorted({faker.street_name() for _ in range(600)} | set(_ZIBO_ROADS))
    surnames = person_zh.Provider.last_names
    subdistricts, sub_start, sub_count = _flatten(SUBDISTRICTS)
    words, word_start, word_count = _flatten(tuple(words for *_, words in INDUSTRIES))
    return Pools(
        surnames=pl.Series(list(surnames), dtype=pl.String),
        surname_weights=np.array(list(surnames.values()), dtype=np.float64),
        given_male=pl.Series(list(person_zh.Provider.first_names_male), dtype=pl.String),
        given_female=pl.Series(list(person_zh.Provider.first_names_female), dtype=pl.String),
        roads=pl.Series(roads, dtype=pl.String),
        trade_names=pl.Series([a + b for a in _TRADE_CHARS for b in _TRADE_CHARS if a != b], dtype=pl.String),
        region_names=pl.Series(REGION_NAMES, dtype=pl.String),
        subdistricts=subdistricts,
        subdistrict_start=sub_start,
        subdistrict_count=sub_count,
        industries=pl.Series([f"{code} {name}" for code, name, *_ in INDUSTRIES], dtype=pl.String),
        industry_weights=np.array([w for _, _, w, _ in INDUSTRIES], dtype=np.float64),
        trade_words=words,
        trade_word_start=word_start,
        trade_word_count=word_count,
    )


def pick(series: pl.Series, index: np.ndarray) -> pl.Series:
    """``series[index]`` as a new Series (index is any integer array)."""
    return series.gather(pl.Series(index, dtype=pl.Int64))
