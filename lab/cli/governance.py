"""``datalab audit …``, ``application …``, ``grant …`` and ``budget …``: governance verbs.

``lab.cli.main.build_parser`` calls :func:`add_parsers`. These verbs run on the bureau's
server, against the ledger and MinIO directly (no web login): ``--as`` names the
operator who acts, which ``lab.cli.main`` checks in Keycloak before the verb runs (an enabled
account with the operator role, never any name), and the same rules apply as in the console
(nobody decides their own application; approvals and revocations re-provision MinIO at once).

Exit codes: 0 done (``audit verify``: the log is intact), 1 the log is broken or an
operation was refused, 2 a bad argument.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.settings import Settings
from lab.store import layout


def _time(value: str) -> datetime:
    """A date (``2025-01-31``) or time (``2025-01-31T08:00``, UTC unless it says otherwise)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date like 2025-01-31 or 2025-01-31T08:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ledger(settings: Settings) -> Any:
    from lab.extracts import ledger

    return ledger(settings)


def _governance(settings: Settings, book: Any) -> Any:
    from lab import access
    from lab.registry.datasets import policies as registry_policies
    from lab.services.governance import Governance

    def build(grant: Any, actor: str) -> None:
        prefix = access.ensure_extract(settings, grant, actor=actor)
        if prefix:
            print(f"built extracts/{prefix}/")

    from lab.services.queries import sync_budget_limits

    policies = registry_policies(settings)
    sync_budget_limits(book, policies, actor="datalab-cli")
    provisioner = access.Provisioner(settings, book)
    return Governance(settings, book, policies, provisioner, build=build)


def _operator(name: str) -> Any:
    from lab.gateway.auth import Caller

    return Caller(name, None, frozenset({"operator"}))


# --- audit ------------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    archive: Any = None
    with _ledger(settings) as book:
        result = book.verify()
        problems: list[str] = []
        if args.archive:
            from lab import auditpkg

            archive = auditpkg.archive_report(settings, book)
            problems = archive.problems
    if args.json:
        extra = {"archive_problems": problems, "archive": archive.as_dict() if archive else None}
        print(json.dumps({**result.as_dict(), **extra}, ensure_ascii=False))
    else:
        print(result.message)
        if archive is not None:
            print(archive.message)
        for problem in problems:
            print(f"archive: {problem}")
    return 0 if result.ok and not problems else 1


def cmd_audit_export(args: argparse.Namespace, settings: Settings) -> int:
    from lab import auditpkg

    with _ledger(settings) as book:
        body = auditpkg.write_package(book, args.since, args.until, Path(args.out))
    verification = body["verification"]
    summary = body["summary"]
    print(
        f"{args.out}: {summary['records']} records (seq {summary['first_seq']}–{summary['last_seq']}); "
        f"{verification['message']}"
    )
    return 0 if verification["ok"] else 1


def cmd_audit_archive(args: argparse.Namespace, settings: Settings) -> int:
    from lab import auditpkg

    with _ledger(settings) as book:
        segment = auditpkg.seal(settings, book, actor=args.actor)
    if segment is None:
        print("Nothing new to archive. / 没有需要归档的新记录。")
    else:
        print(
            f"sealed records {segment.first_seq}–{segment.last_seq} into "
            f"{layout.AUDIT_BUCKET}/{segment.object_name} "
            f"(sha256 {segment.sha256[:16]}…)"
        )
    return 0


# --- applications and grants ------------------------------------------------------------


def cmd_application_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        apps = book.list_applications(state=args.state)
    for a in apps:
        print(
            f"#{a.id:<4} {a.state:<9} {a.organisation:<14} {a.dataset:<17} {','.join(a.modes):<10} "
            f"ε={a.epsilon:g} δ={a.delta:g} {a.term_days:g} d  by {a.applicant}: {a.purpose}"
        )
    return 0


def cmd_application_decide(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        gov = _governance(settings, book)
        who = _operator(args.actor)
        if args.verb == "reject":
            app = gov.reject(who, args.id, {"reason": args.reason})
            print(f"application {app['id']} rejected: {app['decision_reason']}")
            return 0
        body = {
            "epsilon": args.epsilon,
            "delta": args.delta,
            "term_days": args.term_days,
            "modes": args.modes,
        }
        result = gov.approve(who, args.id, {k: v for k, v in body.items() if v is not None})
    grant = result["grant"]
    print(
        f"application {args.id} approved: grant {grant['id']} ({grant['organisation']}, {grant['dataset']}, "
        f"{', '.join(grant['modes'])}, ε={grant['budget']['epsilon']:g}) until {grant['expires_at']}"
    )
    return 0


def cmd_grant_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        rows = _governance(settings, book).grants(_operator("datalab-cli"), active=args.active)
    for g in rows:
        if args.org and g["organisation"] != args.org:
            continue
        note = f"  ⚠ {g['reminder']['en']}" if g["reminder"] else ""
        print(
            f"#{g['id']:<4} {g['status']:<8} {g['organisation']:<14} {g['dataset']:<17} "
            f"ε left {g['budget']['epsilon_remaining']:g}/{g['budget']['epsilon']:g}  "
            f"until {g['expires_at'][:16]}{note}"
        )
    return 0


def cmd_grant_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        grant = _governance(settings, book).revoke(_operator(args.actor), args.id, {"reason": args.reason})
    print(f"grant {grant['id']} revoked; MinIO access of {grant['organisation']} updated")
    return 0


# --- budget agreements --------------------------------------------------------------------


def _agreement_scope(settings: Settings, org: str, dataset: str) -> tuple[str, str]:
    """The organisation and dataset, checked: a known organisation, a dataset with a policy."""
    from lab import validate
    from lab.errors import NotFound
    from lab.extracts import organisation
    from lab.registry.datasets import policies as registry_policies

    org, dataset = validate.name(org, "organisation"), validate.name(dataset, "dataset")
    organisation(settings, org)
    policies = registry_policies(settings)
    if dataset not in policies:
        raise NotFound(
            f"unknown dataset {dataset!r}; known: {', '.join(sorted(policies))} / 未知数据集 {dataset}",
            reason="no-such-dataset",
        )
    return org, dataset


def _reason(value: str) -> str:
    from lab.ledger.applications import check_reason

    return check_reason(value)


def cmd_agreement_set(args: argparse.Namespace, settings: Settings) -> int:
    from lab import validate

    org, dataset = _agreement_scope(settings, args.org, args.dataset)
    actor = validate.username(args.actor, "--as")
    with _ledger(settings) as book:
        agreed = book.set_agreement(
            org,
            dataset,
            epsilon=args.epsilon,
            delta=args.delta,
            window_days=args.window_days,
            grant_epsilon=args.per_grant_epsilon,
            grant_delta=args.per_grant_delta,
            by=actor,
            reason=_reason(args.reason),
        )
    window = "lifetime" if agreed["window_days"] is None else f"rolling {agreed['window_days']:g} days"
    print(
        f"agreement recorded: {org} may hold ε={agreed['epsilon']}, δ={agreed['delta']} on {dataset} "
        f"({window}) / 已记录协议额度"
    )
    return 0


def cmd_agreement_remove(args: argparse.Namespace, settings: Settings) -> int:
    from lab import validate

    org, dataset = _agreement_scope(settings, args.org, args.dataset)
    actor = validate.username(args.actor, "--as")
    with _ledger(settings) as book:
        removed = book.remove_agreement(org, dataset, by=actor, reason=_reason(args.reason))
    if not removed:
        print(f"{org} has no recorded agreement on {dataset}. / 该机构在此数据集上没有协议额度。")
        return 1
    print(f"agreement removed: the policy's caps apply to {org} on {dataset} again / 已移除协议额度")
    return 0


def cmd_agreement_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        rows = book.agreements()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    for a in rows:
        window = "lifetime" if a["window_days"] is None else f"{a['window_days']:g} d"
        print(
            f"{a['organisation']:<14} {a['dataset']:<17} ε={a['epsilon']} δ={a['delta']} {window}  "
            f"by {a['set_by']} at {a['set_at'][:16]}: {a['reason']}"
        )
    return 0


def _add_budget_parsers(sub: Any) -> None:
    budget = sub.add_parser("budget", help="privacy budget totals across grants").add_subparsers(
        dest="verb", required=True
    )
    agreement = budget.add_parser(
        "agreement", help="an organisation's own total on a dataset (replaces the policy's caps for it)"
    ).add_subparsers(dest="action", required=True)
    p = agreement.add_parser("set", help="record (or replace) an agreement; audited")
    p.add_argument("org")
    p.add_argument("dataset")
    p.add_argument("--epsilon", type=float, help="total ε in the window (omit: no ε total)")
    p.add_argument("--delta", type=float, help="total δ in the window (omit: no δ total)")
    p.add_argument("--window-days", type=float, help="rolling window in days (omit: lifetime)")
    p.add_argument("--per-grant-epsilon", type=float, help="the most ε one approval may grant")
    p.add_argument("--per-grant-delta", type=float, help="the most δ one approval may grant")
    p.add_argument("--as", dest="actor", required=True, help="the operator who records it")
    p.add_argument("--reason", required=True, help="the agreement it rests on (recorded)")
    p.set_defaults(func=cmd_agreement_set)
    p = agreement.add_parser("remove", help="remove an agreement: the policy's caps apply again; audited")
    p.add_argument("org")
    p.add_argument("dataset")
    p.add_argument("--as", dest="actor", required=True, help="the operator who removes it")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_agreement_remove)
    p = agreement.add_parser("list", help="the agreements operators recorded")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_agreement_list)


def add_parsers(sub: Any) -> None:
    """Add ``audit``, ``application``, ``grant`` and ``budget`` to the ``datalab`` parser."""
    _add_budget_parsers(sub)
    audit = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        dest="verb", required=True
    )
    p = audit.add_parser("verify", help="check the hash chain; name the first broken record (exit 1)")
    p.add_argument("--archive", action="store_true", help="also compare with the sealed segments in MinIO")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("export", help="write an audit package (records, verification, summary)")
    p.add_argument("--from", dest="since", type=_time, help="first day or time (inclusive, UTC)")
    p.add_argument("--to", dest="until", type=_time, help="end day or time (exclusive, UTC)")
    p.add_argument("out", help="the JSON file to write")
    p.set_defaults(func=cmd_audit_export)
    p = audit.add_parser("archive", help="seal new records into the object-locked audit-archive bucket")
    p.add_argument("--actor", default="datalab-cli", help="who seals (recorded)")
    p.set_defaults(func=cmd_audit_archive)

    app = sub.add_parser("application", help="applications for access").add_subparsers(
        dest="verb", required=True
    )
    p = app.add_parser("list", help="applications, newest first")
    p.add_argument("--state", choices=["pending", "approved", "rejected"])
    p.set_defaults(func=cmd_application_list)
    p = app.add_parser("approve", help="approve, optionally with a smaller budget or shorter term")
    p.add_argument("id", type=int)
    p.add_argument("--as", dest="actor", required=True, help="the operator who approves")
    p.add_argument("--epsilon", type=float)
    p.add_argument("--delta", type=float)
    p.add_argument("--term-days", type=float)
    p.add_argument("--modes", help="comma-separated subset of the requested modes")
    p.set_defaults(func=cmd_application_decide)
    p = app.add_parser("reject", help="reject with a reason")
    p.add_argument("id", type=int)
    p.add_argument("--as", dest="actor", required=True, help="the operator who rejects")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_application_decide)

    grant = sub.add_parser("grant", help="grants of access").add_subparsers(dest="verb", required=True)
    p = grant.add_parser("list", help="grants with budget left and expiry (reminders when close)")
    p.add_argument("--active", action="store_true")
    p.add_argument("--org")
    p.set_defaults(func=cmd_grant_list)
    p = grant.add_parser("revoke", help="revoke now: gateway and MinIO access end at once")
    p.add_argument("id", type=int)
    p.add_argument("--as", dest="actor", required=True, help="the operator who revokes")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_grant_revoke)
