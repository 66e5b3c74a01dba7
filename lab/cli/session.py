"""``datalab login`` / ``logout`` and who acts: every command with ``--as`` runs as the logged-in operator.

``lab.cli.main`` calls :func:`mark_operator_options` on its parser and :func:`checked_operator`
before any verb: a verb's ``actor`` is the verified login of ``lab.cli.login``, and ``--as``
(kept for scripts) may only repeat it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lab.errors import ConfigError
from lab.settings import Settings


def cmd_login(args: argparse.Namespace, settings: Settings) -> int:
    from lab.cli import login

    name = args.name
    if name is None:
        if not sys.stdin.isatty():
            raise ConfigError(
                "name the account: datalab login NAME (the password then comes from stdin) "
                "/ 请指定账号：datalab login NAME（密码从标准输入读取）"
            )
        name = input("Username / 用户名: ").strip()
    found, caller = login.login(settings, name, login.read_password())
    roles = ", ".join(sorted(caller.roles)) or "none / 无"
    print(
        f"Logged in as {found.username} (roles: {roles}); the login is kept in {login.cache_file(settings)} "
        f"(mode 0600) until datalab logout / 已登录为 {found.username}"
    )
    if login.OPERATOR not in caller.roles:
        print(
            f"Note: {found.username} is not an operator, so operator commands will be refused "
            "/ 注意：该账号不是运营人员，运营命令将被拒绝",
            file=sys.stderr,
        )
    return 0


def cmd_logout(args: argparse.Namespace, settings: Settings) -> int:
    from lab.cli import login

    name = login.logout(settings)
    print(f"Logged out {name}. / 已退出登录。" if name else "Nobody was logged in. / 当前没有登录。")
    return 0


AS_HELP = " (optional: it must be you, the operator logged in with datalab login)"


def mark_operator_options(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command with an ``--as`` option, now or added later, acts as the logged-in
    operator; ``--as`` may only repeat that name (see :func:`checked_operator`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                mark_operator_options(child)
        elif "--as" in action.option_strings:
            parser.set_defaults(operator_as=action.dest)
            action.required, action.default, action.metavar = False, None, "OPERATOR"
            action.help = (action.help or "the operator who acts") + AS_HELP


def checked_operator(args: argparse.Namespace, settings: Settings, verifier: Any = None) -> None:
    """The actor of an operator command is whoever logged in (``lab.cli.login``: a verified
    Keycloak login with the operator role), never a name typed on the command line: ``--as``
    may only repeat it. The audit log records who acted, so a free name would let anyone act
    as anyone."""
    from lab import validate
    from lab.cli import login
    from lab.errors import AccessDenied

    dest = getattr(args, "operator_as", None)
    if not dest:
        return
    named = getattr(args, dest)
    named = None if named is None else validate.username(named, "--as")
    actor = login.operator(settings, verifier)
    if named is not None and named != actor:
        raise AccessDenied(
            f"you are logged in as {actor}, not {named}: --as may only name yourself (or be left out); "
            f"to act as {named}, {named} logs in with datalab login {named} "
            f"/ 您当前登录的是 {actor}，--as 只能填写您本人（或省略）；"
            f"如需以 {named} 身份操作，请由其本人登录",
            reason="not-yourself",
        )
    setattr(args, dest, actor)


def add_parsers(sub: Any) -> None:
    """Add ``login`` and ``logout`` to the ``datalab`` parser."""
    p = sub.add_parser(
        "login", help="log in to Keycloak for operator commands (password from a prompt or stdin)"
    )
    p.add_argument("name", nargs="?", help="your Keycloak username (asked if left out at a terminal)")
    p.set_defaults(func=cmd_login)
    sub.add_parser("logout", help="forget this OS user's login").set_defaults(func=cmd_logout)
