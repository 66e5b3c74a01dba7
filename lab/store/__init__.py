"""Where bytes live: the object-storage layout (``lab.store.layout``)."""
