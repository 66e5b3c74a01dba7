"""The catalogue of public data (数据目录): one entry per register, searchable.

An entry joins a register's policy (title, owner department, update frequency, description,
columns with grading and PI class, quasi-identifiers, k, privacy unit, release modes,
negative-list status) with its published data (rows, update time, versions) and the
organisations holding active grants on it. ``view`` is what a caller may see of it: operators
and auditors the holders' names; an analyst only whether their own organisation holds one
(which enterprises use which register is the bureau's business, not a competitor's).

Used by ``datalab dataset list | show``, the gateway's ``/api/catalogue`` and the consoles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lab.errors import NotFound
from lab.ingest.importer import manifests
from lab.ingest.store import RawStore
from lab.policy import Policy
from lab.registry.datasets import published_meta
from lab.suggest import did_you_mean

SEARCH_LIMIT = 200  # characters of a search text


def _identifier(policy: Policy, name: str) -> str:
    if policy.columns[name].direct_identifier:
        return "direct"
    return "quasi" if name in policy.quasi_identifiers else "none"


def _columns(policy: Policy) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "level": c.level,
            "pi": c.pi,
            "identifier": _identifier(policy, c.name),
            "rule": c.rule,
            "released": c.released and "masked" in policy.release_modes,
            "negative_list": c.name in policy.negative_listed,
        }
        for c in policy.columns.values()
    ]


def _versions(store: RawStore, name: str, meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    if meta is None:
        return []
    if meta.get("source") != "import":  # a generated register: one version, replaced in place
        return [
            {
                "version": 1,
                "rows": meta.get("rows"),
                "sha256": meta.get("sha256"),
                "created_at": meta.get("updated_at"),
                "accepted_by": None,
                "published": True,
            }
        ]
    return [
        {
            "version": m["version"],
            "rows": m["rows"],
            "sha256": m["sha256"],
            "created_at": m.get("imported_at"),
            "accepted_by": (m["accepted"] or {}).get("by"),
            "published": m["version"] == meta.get("version"),
        }
        for m in manifests(store, name)
    ]


def entry(
    policy: Policy, store: RawStore, holders: Iterable[str] = (), *, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The full catalogue entry of ``policy``'s register (holders included: see ``view``)."""
    name = policy.dataset
    meta = published_meta(store, name) if meta is None else meta
    versions = _versions(store, name, meta)
    return {
        "name": name,
        **policy.catalogue.to_dict(name),
        "description": policy.description,
        "source": None if meta is None else ("import" if meta.get("source") == "import" else "generated"),
        "rows": None if meta is None else meta.get("rows"),
        "updated_at": None if meta is None else meta.get("updated_at"),
        "version": None if meta is None else meta.get("version", 1),
        "versions": versions,
        "release_modes": list(policy.release_modes),
        "quasi_identifiers": list(policy.quasi_identifiers),
        "k": policy.k,
        "l_diversity": {"l": policy.l, "columns": list(policy.sensitive)} if policy.sensitive else None,
        "privacy_unit": None
        if policy.privacy_unit is None
        else {"column": policy.privacy_unit, "max_rows": policy.max_rows},
        "risk_threshold": policy.threshold,
        "linked_datasets": list(policy.linked_datasets),
        "negative_listed": sorted(policy.negative_listed),
        "columns": _columns(policy),
        "holders": sorted(set(holders)),
    }


def catalogue(
    policies: Mapping[str, Policy], store: RawStore, holders: Mapping[str, Iterable[str]] | None = None
) -> list[dict[str, Any]]:
    """Every register's entry, by name; ``holders``: dataset -> organisations with active grants."""
    holders = holders or {}
    return [entry(policies[name], store, holders.get(name, ())) for name in sorted(policies)]


def find(entries: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    """The entry of ``name``; ``NotFound`` naming the known registers."""
    entries = list(entries)
    for item in entries:
        if item["name"] == name:
            return item
    names = [e["name"] for e in entries]
    en, zh = did_you_mean(name, names)
    raise NotFound(
        f"no dataset {name!r} in the catalogue;{en} known: {', '.join(names) or 'none'}; see datalab "
        f"dataset list / 目录中没有数据集 {name}，{zh}请用 datalab dataset list 查看",
        reason="no-such-dataset",
    )


def _haystack(item: dict[str, Any]) -> str:
    words = [
        item["name"],
        item["title"]["zh"],
        item["title"]["en"],
        item["owner"],
        item["description"],
        *item["keywords"],
        *(c["name"] for c in item["columns"]),
    ]
    return "\n".join(words).casefold()


def search(entries: Iterable[dict[str, Any]], text: str | None) -> list[dict[str, Any]]:
    """Entries whose name, titles, owner, description, keywords or columns contain every word
    of ``text`` (case-insensitive; 中文 or English); all of them for an empty text."""
    words = (text or "")[:SEARCH_LIMIT].casefold().split()
    return [item for item in entries if all(w in _haystack(item) for w in words)]


def view(item: dict[str, Any], *, roles: Iterable[str], org: str | None) -> dict[str, Any]:
    """What a caller sees of an entry: holders for operators and auditors; for an analyst only
    ``held`` (whether their organisation holds an active grant)."""
    roles = set(roles)
    out = dict(item)
    out["held"] = bool(org) and org in item["holders"]
    if not roles & {"operator", "auditor"}:
        out.pop("holders")
    return out


def holders(grants: Iterable[Any]) -> dict[str, list[str]]:
    """Dataset -> organisations, from grants (objects with ``dataset`` and ``organisation``)."""
    out: dict[str, set[str]] = {}
    for grant in grants:
        out.setdefault(grant.dataset, set()).add(grant.organisation)
    return {name: sorted(orgs) for name, orgs in out.items()}
