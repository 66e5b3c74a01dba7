"""The handle given by :meth:`lab.ledger.Ledger.spend`, and result digests."""

from __future__ import annotations

import hashlib
from typing import Any

from lab.ledger.chain import canonical_json
from lab.ledger.models import Reservation


def result_digest(value: Any) -> str:
    """``sha256:<hex>`` of a released result: bytes as they are, anything else as canonical JSON.

    Audit records carry this digest, never the value itself.
    """
    data = value if isinstance(value, bytes) else canonical_json(value).encode("utf-8")
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Spend:
    """What the block inside ``with ledger.spend(...)`` tells the ledger.

    ``reservation`` is the outstanding reservation inside the block and the settled one
    after it.
    """

    def __init__(self, reservation: Reservation) -> None:
        self.reservation = reservation
        self.drawn = False
        self.digest: str | None = None
        self.details: dict[str, Any] = {}

    def noise_drawn(self) -> None:
        """Mark that the mechanism ran on the data: from now on a failure is charged."""
        self.drawn = True

    def reading_data(self) -> None:
        """Mark that the first row is about to be read: from now on a failure is charged.

        Call it as late as possible (after every check that needs no row): a failure before
        it is refunded, because nothing computed from the data can have escaped.
        """
        self.drawn = True

    def result(self, digest: str, **details: Any) -> None:
        """Record the released result's digest (see :func:`result_digest`) and extra metadata."""
        self.drawn = True
        self.digest = digest
        self.details.update(details)
