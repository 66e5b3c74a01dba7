"""``datalab … --as NAME``: the name must be an enabled operator in Keycloak, whatever the command.

Keycloak is faked at the boundary (``Directory.person``); the integration check runs the real
command against the running lab's Keycloak (see the report of issue 13).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import pytest

from lab.directory import Person
from lab.errors import AccessDenied

pytestmark = pytest.mark.unit
cli = importlib.import_module("lab.cli.main")  # the module (lab.cli exports the function main)
PEOPLE = {
    "olivia": Person("1", "olivia", True, frozenset(), frozenset({"operator"})),
    "ana": Person("2", "ana", True, frozenset({"org-a"}), frozenset({"analyst"})),
    "old-op": Person("3", "old-op", False, frozenset(), frozenset({"operator"})),
}


class Directory:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def person(self, username: str) -> Person | None:
        return PEOPLE.get(username)


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(_commands(child, (*path, name)))
        elif "--as" in action.option_strings:
            found[path] = parser
    return found


def test_every_command_with_as_checks_the_name() -> None:
    commands = _commands(cli.build_parser())
    assert ("grant", "revoke") in commands and ("org", "add") in commands and len(commands) >= 10
    for path, parser in commands.items():
        assert parser.get_default("operator_as") == "actor", path


@pytest.mark.security
@pytest.mark.parametrize("name", ["mallory", "ana", "old-op", "Olivia"])
def test_grant_revoke_as_anyone_else_is_refused_before_anything_runs(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker types someone else's (or no one's) name: nothing is revoked, exit 1."""
    ran: list[Any] = []
    monkeypatch.setattr(cli, "load_settings", lambda: object())
    monkeypatch.setattr("lab.directory.Directory", Directory)
    monkeypatch.setattr("lab.cli.governance.cmd_grant_revoke", lambda args, settings: ran.append(args) or 0)
    code = cli.main(["grant", "revoke", "31", "--as", name, "--reason", "x"])
    err = capsys.readouterr()
    assert code != 0 and ran == [] and "revoked" not in err.out
    assert "not an enabled operator" in err.err or "--as" in err.err
    assert "运营人员" in err.err or "--as：" in err.err


def test_an_enabled_operator_passes() -> None:
    args = argparse.Namespace(actor="olivia", operator_as="actor")
    cli.checked_operator(args, Directory())
    assert args.actor == "olivia"
    with pytest.raises(AccessDenied, match="请用 --as"):
        cli.checked_operator(argparse.Namespace(actor="mallory", operator_as="actor"), Directory())
