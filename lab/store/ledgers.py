"""Opening the lab's ledger with the audit anchor the settings choose.

Every process that writes the ledger (the gateway, the hub's login hook, the CLI) opens it
here, so they all keep the chain's head in the same place: a file in the state directory
on one machine, or an object in the audit archive when replicas on several hosts share
one PostgreSQL ledger (``DATALAB_AUDIT_ANCHOR=object``; see ``lab.ledger.chain``).
"""

from __future__ import annotations

from lab.ledger import Ledger
from lab.settings import Settings


def open_ledger(settings: Settings) -> Ledger:
    """The ledger of ``settings.ledger_url`` with its anchor (close it, or use ``with``)."""
    if settings.audit_anchor == "file":
        return Ledger(settings.ledger_url, anchor_path=settings.ledger_anchor)
    from lab import storage  # the object store's client, only where the anchor lives there

    ledger = Ledger(settings.ledger_url)
    ledger.use_anchor(storage.audit_anchor(settings, ledger.identity))
    return ledger
