"""Where things live: the object-storage layout (``lab.store.layout``) and the ledger (``.ledgers``)."""
