"""The sweeper: S3 access follows Keycloak within a minute.

MinIO credentials an analyst obtained from STS keep the policies named in the token they
came from until they expire. Each organisation's ``members-<org>`` policy (see
``lab.storage``) denies every subject that is not one of the organisation's current,
enabled analysts (nobody, for a suspended or removed organisation of the registry);
:class:`Sweeper` rewrites it from Keycloak every
:data:`SWEEP_SECONDS`, so an account disabled, deleted, stripped of its analyst role or
removed from the organisation loses S3 access within that time plus one sweep.

A sweep that fails (Keycloak or MinIO briefly unreachable) changes nothing and is
retried at the next tick; it never widens access.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from lab import storage
from lab.directory import Directory
from lab.periodic import Periodic
from lab.registry.organisations import ACTIVE, Statuses
from lab.settings import Settings

SWEEP_SECONDS = 15.0
log = logging.getLogger("lab.gateway.revocation")


class Sweeper(Periodic):
    """Keeps MinIO's members policies equal to Keycloak's organisations."""

    name = "members-sweeper"
    log = log

    def __init__(
        self,
        settings: Settings,
        directory: Directory,
        *,
        interval: float = SWEEP_SECONDS,
        apply: Callable[[Settings, str, set[str]], bool] = storage.set_members,
        statuses: Statuses | None = None,
    ) -> None:
        super().__init__(interval)  # a failed sweep changes nothing, so never widens access
        self.settings = settings
        self.directory = directory
        self._apply = apply
        self._statuses = statuses or Statuses(settings, ttl=0)  # read at every sweep

    def tick(self) -> list[str]:
        return self.sweep()

    def sweep(self) -> list[str]:
        """One pass; the organisations whose members policy changed."""
        orgs = self._statuses.current()  # every registered organisation; only active ones admit anyone
        members = self.directory.members()
        changed = []
        for org, status in sorted(orgs.items()):
            if self._apply(self.settings, org, members.get(org, set()) if status == ACTIVE else set()):
                changed.append(org)
        if changed:
            log.info("members policies rewritten for %s", ", ".join(changed))
        return changed
