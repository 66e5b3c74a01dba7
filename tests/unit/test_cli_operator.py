"""Operator commands act as whoever logged in (``datalab login``), never as a name typed with ``--as``.

Keycloak is faked at the boundary: tokens are signed with a test key (``login_support``) and
Keycloak's current view is a fake ``Directory``; ``lab.cli.login`` and the gateway's token check
run for real. The integration check (``tests/integration/test_cli_login.py``) logs in to the
running lab's Keycloak.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.cli import login
from lab.directory import Person
from lab.settings import Settings, load_settings
from tests.unit import login_support
from tests.unit.login_support import OTHER_KEY, log_in

pytestmark = pytest.mark.unit
cli = importlib.import_module("lab.cli.main")  # the module (lab.cli exports the function main)
PEOPLE = {
    "olivia": Person("1", "olivia", True, frozenset(), frozenset({"operator"})),
    "ana": Person("2", "ana", True, frozenset({"org-a"}), frozenset({"analyst"})),
    "old-op": Person("3", "old-op", False, frozenset(), frozenset({"operator"})),
    "otto": Person("4", "otto", True, frozenset(), frozenset({"operator"})),
}


class Directory:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def person(self, username: str) -> Person | None:
        return PEOPLE.get(username)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = load_settings({"DATALAB_HOME": str(tmp_path / "home")})
    monkeypatch.setattr(cli, "load_settings", lambda: settings)
    monkeypatch.setattr("lab.directory.Directory", Directory)
    login_support.keys(monkeypatch)
    return settings


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The revocations that ran (the verb itself is replaced: nothing here reaches a ledger)."""
    done: list[argparse.Namespace] = []
    monkeypatch.setattr("lab.cli.governance.cmd_grant_revoke", lambda args, settings: done.append(args) or 0)
    return done


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(_commands(child, (*path, name)))
        elif "--as" in action.option_strings:
            found[path] = parser
    return found


def revoke(capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str, str]:
    code = cli.main(["grant", "revoke", "31", "--reason", "x", *more])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_that_acts_takes_its_actor_from_the_login() -> None:
    commands = _commands(cli.build_parser())
    assert {("grant", "revoke"), ("org", "add"), ("extract", "build"), ("audit", "archive")} <= set(commands)
    assert len(commands) >= 14
    for path, parser in commands.items():
        assert parser.get_default("operator_as") == "actor", path
        option = next(a for a in parser._actions if "--as" in a.option_strings)
        assert not option.required and option.default is None, path


def test_the_logged_in_operator_acts(settings: Settings, ran: list[Any], capsys: Any) -> None:
    log_in(settings, "olivia", sub="1")
    assert revoke(capsys)[0] == 0 and ran[-1].actor == "olivia"
    assert revoke(capsys, "--as", "olivia")[0] == 0 and ran[-1].actor == "olivia"


def test_login_reads_the_password_from_stdin_and_caches_it_0600(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import io

    sent: list[dict[str, str]] = []

    def post(url: str, data: dict[str, str], timeout: float) -> httpx.Response:
        sent.append(data)
        access = login_support.token(settings, "olivia", sub="1")
        return httpx.Response(200, json={"access_token": access, "refresh_token": "r1"})

    monkeypatch.setattr("lab.cli.login.httpx.post", post)
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass\n"))
    assert cli.main(["login", "olivia"]) == 0
    out = capsys.readouterr()
    assert "Logged in as olivia" in out.out and "已登录" in out.out and "s3cret" not in out.out + out.err
    assert sent[0]["password"] == "s3cret-pass" and sent[0]["grant_type"] == "password"
    assert sent[0]["client_id"] == "datalab-cli"
    path = login.cache_file(settings)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert "s3cret" not in path.read_text()
    assert cli.main(["logout"]) == 0 and not path.exists()
    assert "Logged out olivia" in capsys.readouterr().out


def test_there_is_no_password_option() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["login", "olivia", "--password", "x"])


@pytest.mark.security
@pytest.mark.parametrize("name", ["mallory", "ana", "old-op", "otto", "Olivia"])
def test_as_anyone_else_is_refused_before_anything_runs(
    name: str, settings: Settings, ran: list[Any], capsys: Any
) -> None:
    """Logged in as olivia, the attacker names someone else: nothing is revoked, exit 1."""
    log_in(settings, "olivia", sub="1")
    code, out, err = revoke(capsys, "--as", name)
    assert code == 1 and ran == [] and "revoked" not in out
    assert ("logged in as olivia" in err and "您当前登录的是 olivia" in err) or "--as：" in err


@pytest.mark.security
def test_nobody_logged_in_is_refused(settings: Settings, ran: list[Any], capsys: Any) -> None:
    code, _, err = revoke(capsys, "--as", "olivia")
    assert code == 1 and ran == [] and "datalab login" in err and "尚未登录" in err


@pytest.mark.security
def test_an_analysts_login_cannot_run_an_operator_command(
    settings: Settings, ran: list[Any], capsys: Any
) -> None:
    log_in(settings, "ana", sub="2", roles=("analyst",))
    code, _, err = revoke(capsys)
    assert code == 1 and ran == [] and "not an enabled operator" in err and "运营人员" in err
    # A token claiming the operator role does not help: Keycloak says now that ana is an analyst.
    log_in(settings, "ana", sub="2", roles=("operator", "analyst"))
    code, _, err = revoke(capsys)
    assert code == 1 and ran == [] and "not an enabled operator" in err


@pytest.mark.security
def test_a_disabled_operator_is_refused(settings: Settings, ran: list[Any], capsys: Any) -> None:
    log_in(settings, "old-op", sub="3")
    code, _, err = revoke(capsys)
    assert code == 1 and ran == [] and "disabled" in err and "已停用" in err


@pytest.mark.security
@pytest.mark.parametrize(
    "forgery",
    [
        {"key": OTHER_KEY},  # signed by the attacker
        {"issuer": "http://127.0.0.1:1/realms/datalab"},  # another Keycloak's
        {"azp": "jupyterhub"},  # a token taken from elsewhere
        {"sub": "4"},  # otto's subject under olivia's name
    ],
)
def test_a_forged_cached_token_is_refused(
    forgery: dict[str, Any], settings: Settings, ran: list[Any], capsys: Any, monkeypatch: Any
) -> None:
    asked: list[str] = []
    monkeypatch.setattr("lab.cli.login.httpx.post", lambda url, **kw: asked.append(url))
    log_in(settings, "olivia", **{"sub": "1", **forgery})
    code, _, err = revoke(capsys)
    assert code == 1 and ran == [] and asked == []  # not even renewed
    assert "log in again" in err or "datalab login" in err
    assert "登录" in err


@pytest.mark.security
def test_a_hand_edited_cache_naming_someone_else_is_refused(
    settings: Settings, ran: list[Any], capsys: Any
) -> None:
    log_in(settings, "olivia", sub="1")
    path = login.cache_file(settings)
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "username": "otto"}))
    code, _, err = revoke(capsys)
    assert code == 1 and ran == [] and "datalab login" in err


@pytest.mark.security
def test_an_expired_login_is_renewed_once_and_refused_when_keycloak_says_no(
    settings: Settings, ran: list[Any], capsys: Any, monkeypatch: Any
) -> None:
    answers = [httpx.Response(200, json={"access_token": login_support.token(settings, "olivia", sub="1"),
                                         "refresh_token": "r2"}),
               httpx.Response(400, json={"error": "invalid_grant"})]  # fmt: skip
    forms: list[dict[str, str]] = []
    monkeypatch.setattr(
        "lab.cli.login.httpx.post", lambda url, data, timeout: forms.append(data) or answers.pop(0)
    )
    log_in(settings, "olivia", sub="1", expires_in=-60, refresh="r1")
    assert revoke(capsys)[0] == 0 and ran[-1].actor == "olivia"
    assert forms[0]["grant_type"] == "refresh_token" and forms[0]["refresh_token"] == "r1"
    assert json.loads(login.cache_file(settings).read_text())["refresh_token"] == "r2"
    log_in(settings, "olivia", sub="1", expires_in=-60, refresh="r2")
    code, _, err = revoke(capsys)
    assert code == 1 and len(ran) == 1 and "expired" in err and "过期" in err


@pytest.mark.security
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_cache_file_others_can_read_or_write_is_refused(
    mode: int, settings: Settings, ran: list[Any], capsys: Any
) -> None:
    log_in(settings, "olivia", sub="1")
    os.chmod(login.cache_file(settings), mode)
    code, _, err = revoke(capsys)
    assert code == 1 and ran == [] and "other users" in err and "其他用户" in err


@pytest.mark.security
def test_a_cache_that_is_a_symlink_is_refused(settings: Settings, ran: list[Any], capsys: Any) -> None:
    log_in(settings, "olivia", sub="1")
    path = login.cache_file(settings)
    target = path.with_name("elsewhere.json")
    path.rename(target)
    path.symlink_to(target)
    code, _, err = revoke(capsys)
    assert code == 1 and ran == [] and "other users" in err
