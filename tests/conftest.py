"""Shared fixtures. The real stack is brought up once per session for integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab import cli, stack
from lab.settings import Settings, load_settings
from lab.stack.ui import Progress
from tests.pg import postgres_server, postgres_url  # noqa: F401  (PostgreSQL fixtures)

# The tests' research organisation spends far more on the population register than the
# policy's default total (ε = 6 a year) allows. A bureau would record a research agreement for
# it; the tests do the same, as an operator logged in with `datalab login`, through the audited CLI
# verb (docs/governance.md).
TEST_AGREEMENT = [
    "budget", "agreement", "set", "sdu-research", "population",
    "--epsilon", "2000", "--delta", "1e-3", "--window-days", "1",
    "--as", "op.wang", "--reason", "research agreement of the tests' organisation",
]  # fmt: skip


@pytest.fixture(scope="session")
def lab_stack() -> Iterator[Settings]:
    """The running lab: reused if it is already up, otherwise started (and stopped after).

    The tests' organisation's agreement is recorded (audited) before any test runs.
    """
    settings = load_settings()
    started = stack.up(settings, Progress())
    assert all(s.up for s in stack.status(settings)), stack.status(settings)
    from tests.integration import keycloak_test_client as kct

    assert cli.main(kct.operator_argv(settings, TEST_AGREEMENT)) == 0  # logged in as its --as
    yield settings
    if started:
        stack.down(settings)
