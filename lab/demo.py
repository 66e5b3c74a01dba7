"""The demo organisations and people that ``make up`` creates.

Two enterprises and one research institute, each with two analysts, plus one bureau
operator and one auditor. Every demo account shares one generated password, kept in
``<home>/secrets/demo-password`` and printed by ``datalab up``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.registry.organisations import OrgSpec


@dataclass(frozen=True)
class Person:
    username: str
    first_name: str
    last_name: str
    role: str  # analyst | operator | auditor
    org: str | None = None


# Registered at ``make up`` (lab.iam.bootstrap) through Registry.add, the path of ``datalab org
# add``, if not registered yet; after that the registry in the ledger database is the source.
DEMO_ORGANISATIONS = (
    OrgSpec(
        "qilu-energy",
        "齐鲁能源服务有限公司",
        "Qilu Energy Services Co.",
        "91370100MA3C4Q7D7M",
        "enterprise",
        "Data office / 数据管理部",
    ),
    OrgSpec(
        "zibo-credit",
        "淄博信用数据科技有限公司",
        "Zibo Credit Analytics Co.",
        "91370300MA3N2K5B03",
        "enterprise",
        "Risk office / 风控部",
    ),
    OrgSpec(
        "sdu-research",
        "山东城市发展研究院",
        "Shandong Urban Research Institute",
        "1237010049301256X4",
        "research",
        "Research office / 科研处",
    ),
)

PEOPLE = (
    Person("op.wang", "Wang", "Lei", "operator"),
    Person("op.li", "Li", "Qiang", "operator"),  # a second operator: a second pair of eyes
    Person("audit.zhao", "Zhao", "Min", "auditor"),
    Person("li.na", "Li", "Na", "analyst", "qilu-energy"),
    Person("zhang.wei", "Zhang", "Wei", "analyst", "qilu-energy"),
    Person("chen.jing", "Chen", "Jing", "analyst", "zibo-credit"),
    Person("liu.yang", "Liu", "Yang", "analyst", "zibo-credit"),
    Person("sun.hao", "Sun", "Hao", "analyst", "sdu-research"),
    Person("zhou.ting", "Zhou", "Ting", "analyst", "sdu-research"),
)

# The synthetic city that ``make up`` generates: residents and seed.
DATA_ROWS = 100_000
DATA_SEED = 2024


@dataclass(frozen=True)
class DemoGrant:
    org: str
    dataset: str
    purpose: str
    modes: tuple[str, ...]
    epsilon: float
    delta: float
    days: int = 180


# The research institute starts with no grant: it shows what an organisation sees before
# an application is approved.
GRANTS = (
    DemoGrant(
        "qilu-energy",
        "population",
        "Household energy demand by district / 分区居民用能需求分析",
        ("masked", "dp"),
        5.0,
        1e-6,
    ),
    DemoGrant(
        "qilu-energy",
        "utility",
        "Household energy demand by district / 分区居民用能需求分析",
        ("dp",),
        5.0,
        1e-6,
    ),
    DemoGrant(
        "zibo-credit", "legal_entity", "SME credit scoring / 小微企业信用评估", ("masked", "dp"), 5.0, 1e-6
    ),
    DemoGrant("zibo-credit", "social_insurance", "SME credit scoring / 小微企业信用评估", ("dp",), 5.0, 1e-6),
)
OPERATOR = "op.wang"

ROLES = {
    "analyst": "Analyses granted datasets in a notebook / 在笔记本中分析已授权的数据集",
    "operator": "Bureau operator: datasets, applications, grants / 数据局运营人员：数据集、申请与授权",
    "auditor": "Reads and verifies the audit trail / 审计人员：查阅并核验审计日志",
}
