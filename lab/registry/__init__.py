"""Who and what the lab serves, kept as data: organisations (and, later, datasets)."""
