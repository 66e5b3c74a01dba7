"""``datalab login``: operator commands act as the person who logged in to the lab's Keycloak.

Plays the attacker of issue 13 against the running lab: a free ``--as mallory``, an analyst's
login, a forged or hand-edited cached token, a cache file others can read. Each is refused with
a bilingual message and changes nothing: this module's own grant stays active until the real
operator revokes it, and the audit record names that operator.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from lab import access, vault
from lab.cli import login
from lab.ledger import Ledger
from lab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.security]
ORG, DATASET = "zibo-credit", "legal_entity"  # this module's own grant (its analysts keep theirs)


def datalab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def grant(lab_stack: Settings) -> Iterator[int]:
    with Ledger(lab_stack.ledger_url, anchor_path=lab_stack.ledger_anchor) as book:
        made = book.create_grant(
            organisation=ORG, dataset=DATASET, purpose="datalab login tests", modes=["dp"], epsilon=0.1,
            delta=0.0, expires_at=book.now() + timedelta(days=1), approved_by="op.li",
        )  # fmt: skip
        access.Provisioner(lab_stack, book).provision()
    yield made.id
    with Ledger(lab_stack.ledger_url, anchor_path=lab_stack.ledger_anchor) as book:
        if book.get_grant(made.id).revoked_at is None:
            book.revoke(made.id, by="op.li", reason="datalab login tests finished")
        access.Provisioner(lab_stack, book).provision()


def _active(settings: Settings, grant_id: int) -> bool:
    with Ledger(settings.ledger_url, anchor_path=settings.ledger_anchor) as book:
        return book.get_grant(grant_id).revoked_at is None


def _password(settings: Settings) -> str:
    return vault.secret(settings, "demo-password")


def _refused(settings: Settings, grant_id: int, *more: str) -> str:
    done = datalab("grant", "revoke", str(grant_id), "--reason", "attack", *more)
    assert done.returncode == 1 and "revoked" not in done.stdout, done.stdout
    assert _active(settings, grant_id)
    return done.stderr


def test_login_caches_a_private_token_and_the_password_never_shows(lab_stack: Settings) -> None:
    password = _password(lab_stack)
    done = datalab("login", "op.wang", stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    assert "Logged in as op.wang (roles: operator)" in done.stdout and "已登录" in done.stdout
    assert password not in done.stdout + done.stderr
    path = login.cache_file(lab_stack)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert password not in path.read_text()


def test_a_wrong_password_is_refused(lab_stack: Settings) -> None:
    done = datalab("login", "zhou.ting", stdin="not-the-password\n")
    assert done.returncode == 1 and "wrong username or password" in done.stderr and "密码错误" in done.stderr
    assert json.loads(login.cache_file(lab_stack).read_text())["username"] == "op.wang"  # kept


def test_as_mallory_is_refused_and_changes_nothing(lab_stack: Settings, grant: int) -> None:
    login.login(lab_stack, "op.wang", _password(lab_stack))
    err = _refused(lab_stack, grant, "--as", "mallory")
    assert "logged in as op.wang, not mallory" in err and "您当前登录的是 op.wang" in err
    err = _refused(lab_stack, grant, "--as", "op.li")  # a real operator, but not the one logged in
    assert "logged in as op.wang, not op.li" in err


def test_an_analysts_login_cannot_revoke(lab_stack: Settings, grant: int) -> None:
    done = datalab("login", "chen.jing", stdin=_password(lab_stack) + "\n")
    assert done.returncode == 0 and "not an operator" in done.stderr and "不是运营人员" in done.stderr
    err = _refused(lab_stack, grant)
    assert "chen.jing is logged in but is not an enabled operator" in err and "运营人员" in err


def _forged(token: str) -> str:
    """The token with ``roles`` and ``preferred_username`` rewritten, its signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(roles=["operator"], preferred_username="op.li")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def test_a_forged_cached_token_is_refused(lab_stack: Settings, grant: int) -> None:
    login.login(lab_stack, "chen.jing", _password(lab_stack))
    path = login.cache_file(lab_stack)
    cached = json.loads(path.read_text())
    path.write_text(
        json.dumps({**cached, "username": "op.li", "access_token": _forged(cached["access_token"])})
    )
    err = _refused(lab_stack, grant)
    assert "datalab login" in err and "登录" in err


def test_a_cache_others_can_read_is_refused(lab_stack: Settings, grant: int) -> None:
    login.login(lab_stack, "op.wang", _password(lab_stack))
    os.chmod(login.cache_file(lab_stack), 0o644)
    err = _refused(lab_stack, grant)
    assert "other users" in err and "其他用户" in err
    login.cache_file(lab_stack).unlink()


def test_the_logged_in_operator_revokes_and_the_record_names_them(lab_stack: Settings, grant: int) -> None:
    assert datalab("login", "op.wang", stdin=_password(lab_stack) + "\n").returncode == 0
    done = datalab("grant", "revoke", str(grant), "--reason", "datalab login tests")
    assert done.returncode == 0 and "revoked" in done.stdout and "已撤销" in done.stdout, done.stderr
    with Ledger(lab_stack.ledger_url, anchor_path=lab_stack.ledger_anchor) as book:
        assert book.get_grant(grant).revoked_by == "op.wang"
    assert datalab("logout").stdout.startswith("Logged out op.wang")
    assert not login.cache_file(lab_stack).exists()
    err = datalab("grant", "revoke", str(grant), "--reason", "again").stderr
    assert "nobody is logged in" in err and "尚未登录" in err


def test_the_cli_client_refuses_a_password_grant_without_its_secret(lab_stack: Settings) -> None:
    """An outsider who knows an operator's password cannot use datalab-cli without the state directory."""
    for secret in (None, "guessed-secret"):
        form = {"grant_type": "password", "client_id": "datalab-cli", "username": "op.wang"}
        form |= {"password": _password(lab_stack), "scope": "openid"}
        if secret:
            form["client_secret"] = secret
        answer = httpx.post(f"{lab_stack.issuer}/protocol/openid-connect/token", data=form)
        assert answer.status_code in (400, 401) and "access_token" not in answer.text, answer.status_code
