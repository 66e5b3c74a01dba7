"""Catalogue entries of imported registers (published versions only), as ``dataset list`` shows."""

from __future__ import annotations

from typing import Any

import yaml

from lab.ingest.importer import _negative, manifests, version_key
from lab.ingest.store import RawStore, get_json
from lab.settings import Settings


def entries(settings: Settings, store: RawStore) -> list[dict[str, Any]]:
    """One entry per imported dataset with a published version, in ``registers.catalogue``'s shape."""
    negative = _negative(settings)
    found = []
    for name in store.names():
        meta = get_json(store, f"{name}/meta.json")
        if meta is None or meta.get("source") != "import":
            continue
        versions = manifests(store, name)
        raw = store.get_bytes(version_key(name, int(meta["version"]), "policy.yaml")) or b"{}"
        doc = yaml.safe_load(raw) or {}
        columns = [
            {
                "name": column,
                "level": spec.get("level"),
                "pi": spec.get("pi"),
                "rule": spec.get("rule"),
                "negative_list": bool(negative and negative.covers(name, column)),
            }
            for column, spec in (doc.get("columns") or {}).items()
        ]
        found.append(
            {
                "name": name,
                "title": {"en": name, "zh": name},
                "owner": "",
                "description": doc.get("description", ""),
                "rows": meta["rows"],
                "updated_at": meta["updated_at"],
                "release_modes": list(doc.get("release_modes") or []),
                "columns": columns,
                "version": meta["version"],
                "versions": [
                    {
                        "version": m["version"],
                        "rows": m["rows"],
                        "sha256": m["sha256"],
                        "imported_at": m["imported_at"],
                        "accepted_by": (m["accepted"] or {}).get("by"),
                    }
                    for m in versions
                ],
            }
        )
    return found
