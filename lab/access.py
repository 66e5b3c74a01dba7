"""Access where it is enforced, kept in step with the grants in the ledger.

The ledger is the one source of truth. Each place that enforces access follows it:

- the **gateway** checks the active grant on every call, so approval, revocation and
  expiry apply to its next request;
- **MinIO**: each organisation's STS policy (``extracts-read-<org>``, named by the
  token's ``policy`` claim) lists only the prefixes ``extracts/<org>/<dataset>/`` of the
  datasets it holds an active grant for. :meth:`Provisioner.provision` recomputes every
  policy from the grants and rewrites those that differ. MinIO evaluates a policy's
  current content on each request, so STS credentials already issued to a running
  notebook lose access with the rewrite (checked by the integration tests);
- a **masked extract** is built for the organisation when a grant with the ``masked``
  mode is approved and none exists yet. When a register gets a new published version, the
  extracts built from earlier versions stay readable; :func:`outdated_extracts` names them
  and :func:`rebuild_extracts` builds them again from the published version, when the
  operator chooses (``datalab extract rebuild``, ``dataset accept --rebuild-extracts``, the
  console's import page).

:class:`Sweeper` runs :meth:`Provisioner.sweep` in the gateway process every
``interval`` seconds (≤ 30): it writes an ``expire`` audit record for each grant that
expired and re-provisions, which also repairs any drift (a revocation made straight
in the ledger, a policy reset by ``storage.bootstrap``). Approvals and revocations
through the gateway provision at once, without waiting for the sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lab import extracts, registers, storage
from lab.errors import LabError
from lab.ledger import Grant, Kind, Ledger
from lab.periodic import Periodic
from lab.registry.organisations import ACTIVE, Registry
from lab.settings import Settings

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 15.0  # seconds; revocations and expiries reach MinIO within this
REMINDER_DAYS = 14.0  # a grant this close to its expiry shows a reminder

Apply = Callable[[Settings, str, Iterable[str]], bool]


@dataclass(frozen=True)
class SweepResult:
    expired: list[Grant]
    changed: list[str]  # organisations whose MinIO policy was rewritten


class Provisioner:
    """Makes MinIO's per-organisation policies match the active grants."""

    def __init__(
        self, settings: Settings, ledger: Ledger, *, apply: Apply = storage.set_extracts_access
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self._apply = apply
        self._lock = threading.Lock()

    def desired(self) -> dict[str, list[str]]:
        """Every organisation (registered or with grants) → datasets it may read extracts of now.

        Only an active organisation of the registry reads anything: a grant that raced a
        suspension still opens nothing."""
        active = self.ledger.list_grants(active=True)
        statuses = {org.id: org.status for org in Registry(self.ledger).list_organisations()}
        orgs = set(statuses) | {g.organisation for g in self.ledger.list_grants()}
        return {
            org: sorted({g.dataset for g in active if g.organisation == org})
            if statuses.get(org) == ACTIVE
            else []
            for org in sorted(orgs)
        }

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One provisioning at a time across the lab's processes (the gateway's sweep, the CLI):
        a sweep that read the grants before a revocation must not write its stale view after the
        revoker wrote the new one."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.settings.home / "provision.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def provision(self) -> list[str]:
        """Rewrite the policies that differ from the grants; the organisations changed."""
        with self._exclusive():
            changed = [
                org for org, datasets in self.desired().items() if self._apply(self.settings, org, datasets)
            ]
        for org in changed:
            log.info("MinIO access of %s now follows its active grants", org)
        return changed

    def sweep(self) -> SweepResult:
        """Record expiries, then re-provision."""
        expired = self.ledger.record_expiries(actor="gateway-sweep")
        return SweepResult(expired, self.provision())


def ensure_extract(settings: Settings, grant: Grant, *, actor: str) -> str | None:
    """Build the organisation's masked extract of a ``masked`` grant if none exists; its prefix."""
    if "masked" not in grant.modes:
        return None
    built = extracts.versions(settings, grant.organisation, grant.dataset)
    if any(m.get("kind", "masked") == "masked" for m in built):
        return None
    return extracts.build(settings, grant.dataset, grant.organisation, actor=actor, grant=grant).prefix


def record_failed_build(ledger: Ledger, grant: Grant, actor: str, exc: Exception) -> None:
    """The audit record of an extract build that failed (the reason, never data)."""
    ledger.append(
        Kind.EXTRACT_BUILD,
        actor=actor,
        organisation=grant.organisation,
        dataset=grant.dataset,
        details={
            "grant": grant.id,
            "outcome": "failed",
            "reason": getattr(exc, "reason", type(exc).__name__),
        },
    )


@dataclass(frozen=True)
class Outdated:
    """An organisation's newest masked extract, built from other data than the published version."""

    grant: Grant  # the organisation's newest active masked grant on the dataset
    extract: str  # the extract's version
    source_sha256: str  # the register data it was built from


def outdated_extracts(settings: Settings, ledger: Ledger, dataset: str) -> list[Outdated]:
    """Organisations holding an active masked grant whose latest masked extract of ``dataset`` was
    built from an earlier register version (another SHA-256 than the published data's)."""
    published = registers.require_raw(storage.root_client(settings), dataset)["sha256"]
    newest: dict[str, Grant] = {}
    for grant in ledger.list_grants(dataset=dataset, active=True):
        if "masked" in grant.modes and grant.id > getattr(newest.get(grant.organisation), "id", -1):
            newest[grant.organisation] = grant
    found = []
    for org, grant in sorted(newest.items()):
        built = [m for m in extracts.versions(settings, org, dataset) if m.get("kind", "masked") == "masked"]
        if built and built[-1].get("source_sha256") != published:
            found.append(Outdated(grant, str(built[-1]["version"]), str(built[-1].get("source_sha256"))))
    return found


@dataclass(frozen=True)
class Rebuilt:
    organisation: str
    prefix: str | None  # the new extract, or None when the build was refused
    error: str | None = None  # why (the build's own message: e.g. the risk threshold)


def rebuild_extracts(settings: Settings, ledger: Ledger, dataset: str, *, actor: str) -> list[Rebuilt]:
    """Build every outdated extract of ``dataset`` again from the published version.

    Each build is recorded (``extract-build``); one refused (the new data above the policy's
    risk threshold) is recorded as failed, leaves that organisation's earlier extract readable,
    and does not stop the others."""
    done = []
    for stale in outdated_extracts(settings, ledger, dataset):
        org = stale.grant.organisation
        try:
            built = extracts.build(settings, dataset, org, actor=actor, grant=stale.grant)
        except LabError as exc:
            record_failed_build(ledger, stale.grant, actor, exc)
            done.append(Rebuilt(org, None, exc.message))
            continue
        done.append(Rebuilt(org, built.prefix))
    return done


class Sweeper(Periodic):
    """Runs ``provisioner.sweep()`` every ``interval`` seconds in a daemon thread."""

    name = "access-sweep"
    log = log

    def __init__(self, provisioner: Provisioner, interval: float = SWEEP_INTERVAL) -> None:
        if not 0 < interval <= 30:
            raise ValueError("the sweep interval must be in (0, 30] seconds to meet the 60 s withdrawal")
        super().__init__(interval)
        self.provisioner = provisioner
        self.last_run: datetime | None = None

    def tick(self) -> SweepResult:
        result = self.provisioner.sweep()
        self.last_run = self.provisioner.ledger.now()
        if result.expired:
            log.info("grants expired: %s", ", ".join(str(g.id) for g in result.expired))
        return result


def reminder(grant: Grant, now: datetime, within_days: float = REMINDER_DAYS) -> dict[str, Any] | None:
    """A reminder for an active grant that expires within ``within_days``; None otherwise."""
    if grant.status(now) != "active":
        return None
    left = (grant.expires_at - now).total_seconds() / 86400
    if left > within_days:
        return None
    when = grant.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return {
        "days_left": round(left, 2),
        "en": f"Grant {grant.id} ({grant.dataset}) expires on {when}; apply for a renewal in time.",
        "zh": f"授权 {grant.id}（{grant.dataset}）将于 {when} 到期，请及时申请续期。",
    }
