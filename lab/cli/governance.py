"""``datalab audit …``, ``application …``, ``grant …`` and ``budget …``: governance verbs.

``lab.cli.main.build_parser`` calls :func:`add_parsers`. These verbs run on the bureau's
server, against the ledger and MinIO directly. The operator who acts is whoever logged in
with ``datalab login`` (``lab.cli.login``: a verified Keycloak login, an enabled account with
the operator role now; ``--as`` may only repeat that name), checked by ``lab.cli.main`` before
the verb runs, and the same rules apply as in the console
(nobody decides their own application; approvals and revocations re-provision MinIO at once).

Exit codes: 0 done (``audit verify``: the log is intact), 1 the log is broken or an
operation was refused, 2 a bad argument.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.cli.output import print_json
from lab.settings import Settings
from lab.store import layout


def _time(value: str) -> datetime:
    """A date (``2025-01-31``) or time (``2025-01-31T08:00``, UTC unless it says otherwise)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date like 2025-01-31 or 2025-01-31T08:00 "
            f"/ 日期格式应为 2025-01-31 或 2025-01-31T08:00"
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
            print(f"built extracts/{prefix}/ / 已生成提取件")

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
        print_json({**result.as_dict(), **extra})
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
            f"(sha256 {segment.sha256[:16]}…) / 已归档"
        )
    return 0


# --- applications and grants ------------------------------------------------------------


def cmd_application_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        apps = book.list_applications(state=args.state)
    if args.json:
        print_json([a.as_dict() for a in apps])
        return 0
    if not apps:
        print("No applications. / 没有申请。")
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
            print(f"application {app['id']} rejected / 申请已拒绝: {app['decision_reason']}")
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
        f"{', '.join(grant['modes'])}, ε={grant['budget']['epsilon']:g}) until {grant['expires_at']} "
        "/ 申请已批准"
    )
    return 0


def cmd_application_show(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        app = book.get_application(args.id).as_dict()
    if args.json:
        print_json(app)
        return 0
    for key, value in app.items():
        print(f"{key:<16} {value if value is not None else '-'}")
    return 0


def cmd_grant_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.org:
        from lab.extracts import organisation

        organisation(settings, args.org)  # NotFound with the closest name
    with _ledger(settings) as book:
        rows = _governance(settings, book).grants(_operator("datalab-cli"), active=args.active)
    rows = [g for g in rows if not args.org or g["organisation"] == args.org]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("No grants. / 没有授权。")
    for g in rows:
        note = f"  ⚠ {g['reminder']['en']}" if g["reminder"] else ""
        print(
            f"#{g['id']:<4} {g['status']:<8} {g['organisation']:<14} {g['dataset']:<17} "
            f"ε left {g['budget']['epsilon_remaining']:g}/{g['budget']['epsilon']:g}  "
            f"until {g['expires_at'][:16]}{note}"
        )
    return 0


def cmd_grant_show(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        gov = _governance(settings, book)
        grant = gov.grant_view(book.get_grant(args.id), book.now())
    if args.json:
        print_json(grant)
        return 0
    budget = grant["budget"]
    print(f"grant {grant['id']}: {grant['organisation']} on {grant['dataset']} ({', '.join(grant['modes'])})")
    print(f"  status (状态)      {grant['status']}")
    print(f"  purpose (用途)     {grant['purpose']}")
    print(f"  approved by (批准) {grant['approved_by']}")
    print(f"  created (创建)     {grant['created_at']}")
    print(f"  expires (到期)     {grant['expires_at']}")
    print(f"  budget (预算)      ε {budget['epsilon_remaining']:g} of {budget['epsilon']:g} left")
    if grant["revoked_at"]:
        print(f"  revoked (撤销)     {grant['revoked_at']}: {grant['revoke_reason']}")
    return 0


def cmd_grant_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as book:
        grant = _governance(settings, book).revoke(_operator(args.actor), args.id, {"reason": args.reason})
    print(
        f"grant {grant['id']} revoked; MinIO access of {grant['organisation']} updated "
        f"/ 授权 {grant['id']} 已撤销，访问权限已更新"
    )
    return 0


# --- budget agreements --------------------------------------------------------------------


def _agreement_scope(settings: Settings, org: str, dataset: str) -> tuple[str, str]:
    """The organisation and dataset, checked: a known organisation, a dataset with a policy."""
    from lab import validate
    from lab.extracts import organisation
    from lab.registry.datasets import policies as registry_policies
    from lab.registry.datasets import require_dataset

    org = validate.name(org, "organisation")
    organisation(settings, org)
    return org, require_dataset(registry_policies(settings), dataset).dataset


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
        print_json(rows)
        return 0
    if not rows:
        print("No agreements recorded. / 没有已记录的协议额度。")
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
    p.add_argument("--as", "--actor", dest="actor", required=True, help="the operator who seals (checked)")
    p.set_defaults(func=cmd_audit_archive)

    app = sub.add_parser("application", help="applications for access").add_subparsers(
        dest="verb", required=True
    )
    p = app.add_parser("list", help="applications, newest first")
    p.add_argument("--state", choices=["pending", "approved", "rejected"])
    p.add_argument("--json", action="store_true", help="one object per application (docs/cli.md)")
    p.set_defaults(func=cmd_application_list)
    p = app.add_parser("show", help="one application: what was asked, its state and decision")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_application_show)
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
    p.add_argument("--org", help="only this organisation's grants (an unknown one is an error)")
    p.add_argument("--json", action="store_true", help="one object per grant (docs/cli.md)")
    p.set_defaults(func=cmd_grant_list)
    p = grant.add_parser("show", help="one grant: terms, budget left, expiry, revocation")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_grant_show)
    p = grant.add_parser("revoke", help="revoke now: gateway and MinIO access end at once")
    p.add_argument("id", type=int)
    p.add_argument("--as", dest="actor", required=True, help="the operator who revokes")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_grant_revoke)
