"""What the ``lab.ingest`` tests share: a state directory, a directory store, an audit spy, rows."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from lab.ingest import DirStore
from lab.settings import Settings, load_settings
from tests.unit.test_discovery import _resident_id
from tests.unit.test_discovery import _write_csv as write_csv

__all__ = ["Audit", "Operators", "rows", "settings_fixture", "store_fixture", "write_csv"]


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path) -> Settings:
    return load_settings({"DATALAB_HOME": str(tmp_path / "home")})


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> DirStore:
    return DirStore(tmp_path / "raw")


class Audit:
    """Stands in for the ledger's append: keeps (kind, fields) of every record."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        self.records.append((kind, fields))

    @property
    def kinds(self) -> list[str]:
        return [k for k, _ in self.records]


def rows(n: int, seed: int = 7) -> dict[str, list[str]]:
    """``n`` rows of a small register, as text: valid resident IDs, districts, ages, ..."""
    rng = random.Random(seed)
    return {
        "person_id": [_resident_id(rng) for _ in range(n)],
        "district": [rng.choice(["张店区", "淄川区", "博山区"]) for _ in range(n)],
        "age": [str(rng.randrange(18, 90)) for _ in range(n)],
        "income": [f"{rng.uniform(0, 9000):.2f}" for _ in range(n)],
        "joined": [f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}" for _ in range(n)],
        "area_code": ["0533"] * n,
    }


def entries(settings: Settings, store: DirStore) -> list[dict]:
    """The catalogue entries of the imported registers (what ``dataset list`` shows of them)."""
    from lab.ingest.importer import negative_list
    from lab.policy import NegativeList
    from lab.registry.datasets import imported_policies
    from lab.registry.listing import catalogue

    return catalogue(imported_policies(store, negative_list(settings) or NegativeList()), store)


class Operators:
    """Keycloak at the CLI's boundary (``lab.directory.Directory``): ``op.*`` are enabled operators."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def person(self, username: str) -> Any:
        from lab.directory import Person

        if not username.startswith("op."):
            return None
        return Person(username, username, True, frozenset(), frozenset({"operator"}))
