"""The registers the lab holds: their policies, from wherever they are kept.

A register is known when it has a policy. Two places keep them:

- the policy directory (``settings.policies_dir``): the demo's generated registers and any
  policy an operator writes there by hand;
- imported registers (``lab.ingest``): the policy an operator accepted is stored with the
  published version in the raw bucket (``NAME/versions/NNNNNN/policy.yaml``, pointed to by
  ``NAME/meta.json``) and validated again here against that version's column types.

``policies`` reads both. ``LivePolicies`` is the long-running services' view of them: it reads
again every ``REFRESH_SECONDS`` and when asked for a name it does not know (at most every
``MISS_SECONDS``); a listing shown to a person (``current``) is at most ``MISS_SECONDS`` old.
So a register accepted while the gateway runs can be listed, applied for, granted and queried
without a restart. A policy that no longer validates is left out and logged by dataset name
(never its content); the others stay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lab import storage
from lab.errors import LabError, NotFound
from lab.ingest.importer import column_types, negative_list, version_key
from lab.ingest.store import MinioStore, RawStore, get_json
from lab.policy import NegativeList, Policy, PolicyProblem, load_policies, load_policy_bytes
from lab.settings import Settings
from lab.store import layout
from lab.suggest import did_you_mean

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0
MISS_SECONDS = 2.0


def raw_store(settings: Settings) -> RawStore:
    """The restricted raw bucket (bureau services only)."""
    return MinioStore(storage.root_client(settings), layout.RAW_BUCKET)


def published_meta(store: RawStore, name: str) -> dict[str, Any] | None:
    """The metadata of a register's published version (None if nothing is published)."""
    return get_json(store, layout.raw_meta(name))


def imported_policies(store: RawStore, negative: NegativeList) -> dict[str, Policy]:
    """The accepted policy of every imported register's published version."""
    return checked_imports(store, negative)[0]


def checked_imports(store: RawStore, negative: NegativeList) -> tuple[dict[str, Policy], list[PolicyProblem]]:
    """The imported registers' accepted policies that validate, and a problem for each that does not
    (``datalab policy check``; the services leave such a register out and log its name)."""
    found: dict[str, Policy] = {}
    problems: list[PolicyProblem] = []
    for name in store.names():
        meta = published_meta(store, name)
        if meta is None or meta.get("source") != "import":
            continue
        version = int(meta["version"])
        label = f"{layout.RAW_BUCKET}/{version_key(name, version, 'policy.yaml')}"
        data = store.get_bytes(version_key(name, version, "policy.yaml"))
        try:
            if data is None:
                raise LabError(
                    f"{label} is missing; import the dataset again / {label} 缺失，请重新导入该数据集",
                    reason="policy",
                )
            types = column_types({c["name"]: c["type"] for c in meta.get("schema", [])})
            policy = load_policy_bytes(data, label, types, negative)
        except LabError as exc:
            log.warning("imported dataset %s left out: its policy does not validate (%s)", name, exc.reason)
            problems += [_problem(label, line) for line in exc.detail.splitlines()]
            continue
        if policy.dataset == name:
            found[name] = policy
    return found, problems


def require_dataset(policies: Mapping[str, Policy], name: Any) -> Policy:
    """The policy of register ``name``; NotFound naming the closest register and the known ones."""
    from lab import validate

    name = validate.name(name, "dataset")
    policy = policies.get(name)
    if policy is None:
        known = sorted(policies)
        en, zh = did_you_mean(name, known)
        raise NotFound(
            f"there is no dataset {name!r};{en} known: {', '.join(known) or 'none'}; see datalab "
            f"dataset list / 没有数据集 {name}，{zh}请用 datalab dataset list 查看已有数据集",
            reason="no-such-dataset",
        )
    return policy


def _problem(label: str, line: str) -> PolicyProblem:
    """``label:N: reason`` (or any other text) as a PolicyProblem of ``label``."""
    number, _, reason = line.removeprefix(f"{label}:").partition(": ")
    if line.startswith(f"{label}:") and number.isdigit():
        return PolicyProblem(label, int(number), str(reason))  # the PolicyError's own words
    return PolicyProblem(label, 0, str(line.removeprefix(f"{label}: ")))


def policies(settings: Settings, store: RawStore | None = None) -> dict[str, Policy]:
    """Every register's policy: the policy directory's, then the imported registers'.

    A name in both keeps the directory's (an import cannot replace a written policy).
    """
    shipped = load_policies(settings.policies_dir)
    imported = imported_policies(store or raw_store(settings), negative_list(settings) or NegativeList())
    for name in sorted(imported.keys() & shipped.keys()):
        log.warning("imported dataset %s ignored: the policy directory has a policy of that name", name)
    return {**imported, **shipped}


class LivePolicies(Mapping[str, Policy]):
    """``policies`` as a mapping that follows acceptances (see the module docstring)."""

    def __init__(
        self,
        load: Callable[[], dict[str, Policy]],
        *,
        first: dict[str, Policy] | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load, self._clock, self._refresh = load, clock, refresh_seconds
        self._lock = threading.Lock()
        self._current = first if first is not None else load()
        self._at = clock()
        # called with each newly read set before it is served (the gateway syncs budget caps)
        self.on_load: Callable[[dict[str, Policy]], object] | None = None

    @classmethod
    def of(cls, settings: Settings) -> LivePolicies:
        """The lab's registers; the policy directory must be valid, the raw bucket may be down."""
        try:
            first = policies(settings)
        except LabError:
            raise
        except Exception as exc:  # MinIO not reachable yet: start with the written policies
            log.warning("imported registers not read yet (%s); retrying", type(exc).__name__)
            first = load_policies(settings.policies_dir)
        return cls(lambda: policies(settings), first=first)

    def _reload(self, after: float) -> None:
        with self._lock:
            now = self._clock()
            if now - self._at < after:
                return
            self._at = now
            try:
                found = self._load()
                if self.on_load is not None:
                    self.on_load(found)
                self._current = found
            except Exception as exc:  # keep serving the last good set
                log.warning("registers not re-read (%s); keeping the last good set", type(exc).__name__)

    def refresh(self, within: float = 0.0) -> None:
        """Re-read unless the set is younger than ``within`` seconds (0: now, after an acceptance)."""
        self._reload(within)

    def __getitem__(self, name: str) -> Policy:
        self._reload(self._refresh)
        try:
            return self._current[name]
        except KeyError:
            self._reload(MISS_SECONDS)
            return self._current[name]

    def __iter__(self) -> Iterator[str]:
        self._reload(self._refresh)
        return iter(dict(self._current))

    def __len__(self) -> int:
        return len(self._current)


def current(policies: Mapping[str, Policy]) -> Mapping[str, Policy]:
    """``policies`` as a listing shown to a person should be: at most ``MISS_SECONDS`` old, so a
    register accepted elsewhere (the CLI, another replica) is in the catalogue on the next view."""
    if isinstance(policies, LivePolicies):
        policies.refresh(MISS_SECONDS)
    return policies
