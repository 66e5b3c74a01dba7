"""The ``catalogue:`` section of a dataset policy: what the public-data catalogue (数据目录) says.

::

    catalogue:
      title: {zh: 人口库, en: Population register}
      owner: 淄博市公安局 (Zibo Public Security Bureau)     # the department providing it (数据提供部门)
      update_frequency: monthly                             # see FREQUENCIES
      keywords: [户籍, residents]                            # optional, for search

Every key is optional: a register imported without one is listed under its name, owner
unknown. The dataset's ``description:`` (top level) is the catalogue's description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the model imports this module; yamldoc imports the model
    from lab.policy.yamldoc import YamlDoc

# update frequency -> (中文, English)
FREQUENCIES: dict[str, tuple[str, str]] = {
    "realtime": ("实时", "real time"),
    "daily": ("每日", "daily"),
    "weekly": ("每周", "weekly"),
    "monthly": ("每月", "monthly"),
    "quarterly": ("每季度", "quarterly"),
    "yearly": ("每年", "yearly"),
    "irregular": ("不定期", "irregular"),
}
_KEYS = ("title", "owner", "update_frequency", "keywords")
_LIMIT = 200  # characters of one catalogue text


@dataclass(frozen=True)
class CatalogueInfo:
    """What the catalogue shows about a dataset besides its policy."""

    title_zh: str = ""
    title_en: str = ""
    owner: str = ""
    update_frequency: str | None = None
    keywords: tuple[str, ...] = ()

    def to_dict(self, name: str) -> dict[str, Any]:
        labels = FREQUENCIES.get(self.update_frequency or "")
        return {
            "title": {"zh": self.title_zh or name, "en": self.title_en or name},
            "owner": self.owner,
            "update_frequency": self.update_frequency,
            "update_frequency_label": {"zh": labels[0], "en": labels[1]} if labels else None,
            "keywords": list(self.keywords),
        }


def _text(doc: YamlDoc, at: tuple[Any, ...], value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _LIMIT or "\n" in value:
        doc.problem(at, f"must be one line of text of at most {_LIMIT} characters (须为单行文字)")
        return ""
    return value.strip()


def parse_catalogue(doc: YamlDoc, value: Any) -> CatalogueInfo:
    """The catalogue section (an empty one if absent), recording problems in ``doc``."""
    if value is None:
        return CatalogueInfo()
    if not isinstance(value, dict):
        reason = "catalogue must be a mapping with title, owner, update_frequency (目录信息格式错误)"
        doc.problem(("catalogue",), reason)
        return CatalogueInfo()
    for key in value:
        if key not in _KEYS:
            doc.problem(("catalogue", key), f"unknown key {key!r} (未知的键); expected: {', '.join(_KEYS)}")
    title = value.get("title")
    title_zh = title_en = ""
    if isinstance(title, str):
        title_zh = title_en = _text(doc, ("catalogue", "title"), title)
    elif isinstance(title, dict):
        for key in title:
            if key not in ("zh", "en"):
                doc.problem(("catalogue", "title", key), "title has keys zh and en (标题仅含 zh、en)")
        title_zh = _text(doc, ("catalogue", "title", "zh"), title.get("zh"))
        title_en = _text(doc, ("catalogue", "title", "en"), title.get("en"))
    elif title is not None:
        doc.problem(("catalogue", "title"), "title is {zh: …, en: …} (标题格式错误)")
    frequency = value.get("update_frequency")
    if frequency is not None and frequency not in FREQUENCIES:
        doc.problem(
            ("catalogue", "update_frequency"),
            f"unknown update frequency {frequency!r} (未知的更新频率); use one of: {', '.join(FREQUENCIES)}",
        )
        frequency = None
    keywords = value.get("keywords") or []
    if not isinstance(keywords, list):
        doc.problem(("catalogue", "keywords"), "keywords is a list of words (关键词须为列表)")
        keywords = []
    words = tuple(w for i, k in enumerate(keywords) if (w := _text(doc, ("catalogue", "keywords", i), k)))
    return CatalogueInfo(
        title_zh=title_zh,
        title_en=title_en,
        owner=_text(doc, ("catalogue", "owner"), value.get("owner")),
        update_frequency=frequency,
        keywords=words,
    )
