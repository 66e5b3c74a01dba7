"""Who and what the lab serves, kept as data: organisations (``organisations``), datasets and
their policies (``datasets``) and the catalogue (``listing``)."""
