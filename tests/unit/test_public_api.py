"""The analyst's client and the datalab command are the public API: keep them small."""

from __future__ import annotations

import pytest

import lab.client
from lab.cli import build_parser

pytestmark = pytest.mark.unit


def test_client_exports() -> None:
    assert sorted(lab.client.__all__) == [
        "BuiltExtract",
        "Connection",
        "PendingExtract",
        "PendingQuery",
        "Result",
        "SyntheticDataWarning",
        "connect",
        "datasets",
        "dp",
        "dp_synthetic",
        "dp_table",
        "dummy",
        "extract",
        "history",
        "request_export",
        "sql",
    ]


def test_cli_verbs() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(commands) == [
        "application",
        "audit",
        "budget",
        "dataset",
        "down",
        "extract",
        "grant",
        "login",
        "logout",
        "logs",
        "org",
        "policy",
        "status",
        "up",
    ]


def test_query_builder_offers_every_aggregate() -> None:
    builder = lab.client.Connection("http://127.0.0.1:1", "token").dp("population").group_by("district")
    for name in ("count", "sum", "mean", "quantile", "median", "histogram"):
        assert callable(getattr(builder, name))
    with pytest.raises(AttributeError):
        builder.drop  # noqa: B018
