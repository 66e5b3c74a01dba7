"""``datalab org …``: the organisations the lab serves (``lab.registry``).

``add``, ``suspend``, ``remove`` and ``add-user`` act as the operator logged in with
``datalab login`` (``lab.cli.login``: an enabled Keycloak account holding the operator role,
checked, not trusted; ``--as`` may only repeat that name);
each change is audited and followed by Keycloak and MinIO (``lab.services.onboarding``).
``list`` and ``show`` read the registry (``--json`` for programs).

Exit codes: 0 done, 1 refused or not found, 2 a bad argument.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.settings import Settings

_STATUS = {"active": "启用", "suspended": "暂停", "removed": "移除"}


@contextmanager
def _onboarding(settings: Settings) -> Iterator[Any]:
    from lab.directory import Directory
    from lab.registry.organisations import closing_registry
    from lab.services.onboarding import Onboarding

    with closing_registry(settings) as registry:
        yield Onboarding(settings, registry, Directory(settings, ttl=0))


def _print(outcome: Any, what: str) -> None:
    org = outcome.organisation
    print(f"organisation {org.id} {what} / 机构 {org.id} 已{_STATUS[org.status]}")
    for change in outcome.changes:
        print(f"  {change}")
    if outcome.revoked:
        print(f"  grants revoked / 已撤销授权: {', '.join(str(g.id) for g in outcome.revoked)}")
    if outcome.sessions_ended:
        print(f"  Keycloak sessions ended for {outcome.sessions_ended} member(s) / 已注销成员会话")
    if outcome.servers_stopped:
        print(f"  notebook servers stopped: {outcome.servers_stopped} / 已停止笔记本服务")


def cmd_org_add(args: argparse.Namespace, settings: Settings) -> int:
    from lab.registry.organisations import OrgSpec

    spec = OrgSpec(args.id, args.name_zh, args.name_en, args.credit_code, args.kind, args.contact)
    with _onboarding(settings) as onboarding:
        outcome = onboarding.add(args.actor, spec)
    if args.json:
        print(json.dumps(outcome.as_dict(), ensure_ascii=False))
    else:
        _print(outcome, "added (active)")
        print(f"  provenance: audit record {outcome.organisation.provenance['audit_seq']}")
    return 0


def cmd_org_suspend(args: argparse.Namespace, settings: Settings) -> int:
    with _onboarding(settings) as onboarding:
        outcome = onboarding.suspend(args.actor, args.id, args.reason)
    _print(outcome, "suspended; its access ends within 60 s")
    return 0


def cmd_org_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _onboarding(settings) as onboarding:
        outcome = onboarding.remove(args.actor, args.id, args.reason)
    _print(outcome, "removed (its records are kept)")
    return 0


def cmd_org_add_user(args: argparse.Namespace, settings: Settings) -> int:
    with _onboarding(settings) as onboarding:
        membership, joined = onboarding.add_user(args.actor, args.id, args.username)
    state = "joined" if joined else "was already in"
    print(
        f"{membership.username} {state} {membership.organisation} (audit record "
        f"{membership.provenance['audit_seq']}) / 已加入机构"
    )
    return 0


def cmd_org_list(args: argparse.Namespace, settings: Settings) -> int:
    from lab.registry.organisations import closing_registry

    with closing_registry(settings) as registry:
        orgs = registry.list_organisations(status=args.status)
    if args.json:
        print(json.dumps([o.as_dict() for o in orgs], ensure_ascii=False))
        return 0
    for o in orgs:
        print(f"{o.id:<16} {o.status:<9} {o.kind:<10} {o.credit_code}  {o.name_en} / {o.name_zh}")
    return 0


def cmd_org_show(args: argparse.Namespace, settings: Settings) -> int:
    from lab.registry.organisations import closing_registry
    from lab.services.onboarding import describe

    with closing_registry(settings) as registry:
        body = describe(registry, args.id)
    if args.json:
        print(json.dumps(body, ensure_ascii=False))
        return 0
    print(f"{body['id']}: {body['name_en']} / {body['name_zh']}")
    for key in ("status", "kind", "credit_code", "contact", "created_by", "created_at", "status_reason"):
        if body.get(key):
            print(f"  {key:<14} {body[key]}")
    print(f"  provenance     audit record {body['provenance']['audit_seq']} ({body['provenance']['action']})")
    for m in body["members"]:
        seq = m["provenance"]["audit_seq"]
        print(f"  member         {m['username']} (added by {m['added_by']}, audit record {seq})")
    for g in body["grants"]:
        app = g["provenance"]["application"]
        origin = f"application #{app}" if app else "no application"
        by = g["provenance"]["approved_by"]
        print(f"  grant #{g['id']:<6} {g['status']:<8} {g['dataset']} ({origin}, approved by {by})")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``org`` to the ``datalab`` parser."""
    org = sub.add_parser(
        "org", help="organisations: add, list, show, suspend, remove, add-user"
    ).add_subparsers(dest="verb", required=True)
    p = org.add_parser(
        "add", help="register an organisation; creates its Keycloak group, MinIO policies, key"
    )
    p.add_argument("id", help="a short id (slug), e.g. jinan-water; also its group and extracts prefix")
    p.add_argument("--name-zh", required=True, help="中文名称")
    p.add_argument("--name-en", required=True, help="English name")
    p.add_argument(
        "--credit-code", required=True, help="统一社会信用代码 (18 characters, check character verified)"
    )
    p.add_argument("--kind", required=True, choices=["enterprise", "research", "government"])
    p.add_argument("--contact", required=True, help="contact person, phone or e-mail (not audited)")
    p.add_argument("--as", dest="actor", required=True, help="the operator who adds it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_org_add)
    p = org.add_parser("list", help="the registered organisations")
    p.add_argument("--status", choices=["active", "suspended", "removed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_org_list)
    p = org.add_parser("show", help="one organisation, its members and grants with their provenance")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_org_show)
    for verb, func, text in (
        ("suspend", cmd_org_suspend, "suspend: every grant revoked, every credential ended within 60 s"),
        ("remove", cmd_org_remove, "remove (after suspend, or with no live grants); records are kept"),
    ):
        p = org.add_parser(verb, help=text)
        p.add_argument("id")
        p.add_argument("--as", dest="actor", required=True, help="the operator who acts")
        p.add_argument("--reason", required=True, help="why (recorded)")
        p.set_defaults(func=func)
    p = org.add_parser("add-user", help="put an existing Keycloak account into the organisation's group")
    p.add_argument("id")
    p.add_argument("username")
    p.add_argument("--as", dest="actor", required=True, help="the operator who adds them")
    p.set_defaults(func=cmd_org_add_user)
