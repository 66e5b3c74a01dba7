"""The ``datalab`` command (``main``: one machine, datasets, extracts; ``governance``: access)."""

from lab.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
