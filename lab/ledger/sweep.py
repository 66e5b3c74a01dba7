"""The reservation sweeper: settles budget left reserved by a query whose process died.

A gateway killed mid-query (``kill -9``, a crash, a lost host) leaves its reservation
outstanding: the budget stays held and no record says what happened. The sweeper, a
daemon thread in every gateway, calls :meth:`lab.ledger.Ledger.settle_abandoned` every
``interval`` seconds: each reservation older than ``timeout`` is charged (the mechanism
may have run) and gets its ``abandoned`` audit record. Several gateways sweeping one
ledger settle each reservation once (settlement locks the row).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from lab.periodic import Periodic

log = logging.getLogger(__name__)


class ReservationSweeper(Periodic):
    """Runs ``ledger.settle_abandoned(timeout)`` every ``interval`` seconds in a daemon thread."""

    name = "reservation-sweep"
    log = log

    def __init__(self, ledger: Any, *, timeout_s: float, interval_s: float | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError("the reservation timeout must be > 0 seconds")
        interval = interval_s if interval_s is not None else min(max(timeout_s / 4, 0.5), 60.0)
        super().__init__(interval, immediate=False)
        self.ledger = ledger
        self.timeout = timedelta(seconds=timeout_s)
        self.settled = 0

    def tick(self) -> int:
        return self.sweep()

    def sweep(self) -> int:
        """Settle what is stale now; how many reservations were settled."""
        done = self.ledger.settle_abandoned(self.timeout, actor="gateway-reservation-sweep")
        for reservation in done:
            log.warning(
                "settled abandoned reservation %s of grant %s (charged)", reservation.id, reservation.grant_id
            )
        self.settled += len(done)
        return len(done)
