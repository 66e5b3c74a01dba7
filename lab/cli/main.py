"""The ``datalab`` command: run the lab on one machine (more verbs come with each concern)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lab import demo, stack, vault
from lab.cli.governance import add_parsers as add_governance_parsers
from lab.cli.org import add_parsers as add_org_parsers
from lab.cli.output import print_json
from lab.cli.session import add_parsers as add_session_parsers
from lab.cli.session import checked_operator, mark_operator_options
from lab.errors import ConfigError, LabError
from lab.ingest.cli import add_parsers as add_ingest_parsers
from lab.settings import Settings, load_settings
from lab.stack import procs
from lab.stack.ui import Progress


def _summary(settings: Settings) -> str:
    password = vault.secret(settings, "demo-password", nbytes=6)
    lines = [
        "",
        "Data Lab is up. 数据实验室已启动。",
        f"  Notebooks (JupyterHub)   {settings.hub_url}/",
        f"  Your notebook server     http://<user>.{settings.domain}:{settings.ports.hub}/user/<user>/"
        "  (its own origin)",
        f"  Consoles                 {settings.console_url}/",
        f"  Gateway API              {settings.gateway_public_url}/api/",
        f"  Gateway (direct)         {settings.gateway_url}/  (the proxy's and the notebooks' target)",
        f"  Keycloak (realm datalab) {settings.issuer}/account/",
        f"  Keycloak admin console   {settings.keycloak_url}/admin/  "
        f"(user admin, password in {settings.secrets_dir / 'keycloak-admin-password'})",
        f"  MinIO S3 endpoint        http://{settings.minio_endpoint}",
        "",
        f"Demo accounts (password for all: {password}):",
    ]
    from lab.registry.organisations import closing_registry

    with closing_registry(settings) as registry:
        orgs = {o.id: o for o in registry.list_organisations()}
    for person in demo.PEOPLE:
        org = orgs.get(person.org) if person.org else None
        where = f"{org.name_en} / {org.name_zh}" if org else "Data bureau / 大数据局"
        lines.append(f"  {person.username:<12} {person.role:<9} {where}")
    lines += [
        "",
        "Operators on this server log in first: datalab login op.wang / 运营人员请先登录：datalab login",
        f"State and logs: {settings.home}   Stop: make down",
    ]
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    stack.up(settings, Progress(quiet=args.quiet))
    print(_summary(settings))
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = stack.down(settings)
    print("Stopped: " + ", ".join(stopped) if stopped else "Nothing was running.")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    states = stack.status(settings)
    if args.json:
        print(json.dumps({s.component: "up" if s.up else "down" for s in states}))
    else:
        for s in states:
            pid = f"pid {s.pid}" if s.pid else "not started by this lab"
            print(f"{s.component:<9} {'up' if s.up else 'down':<5} {pid}")
    return 0 if all(s.up for s in states) else 1


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    path = stack.log_file(settings, args.component)
    for line in procs.tail(path, args.lines):
        print(vault.scrub(line, settings))
    return 0


def cmd_dataset_generate(args: argparse.Namespace, settings: Settings) -> int:
    from lab.stack import demodata
    from lab.store import layout

    ui = Progress()
    with ui.step(f"Generating registers at {args.rows:,} residents (seed {args.seed})"):
        tables = demodata.generate(
            settings,
            rows=args.rows,
            seed=args.seed,
            names=args.dataset or None,
            progress=_progress_printer(ui),
        )
    for table in tables:
        print(f"{table.dataset:<17} {table.rows:>12,} rows  {layout.RAW_BUCKET}/{table.object_name}")
    return 0


def _progress_printer(ui: Progress) -> Callable[[str, int, int], None]:
    last: dict[str, int] = {}

    def report(name: str, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent // 10 != last.get(name, -1):
            last[name] = percent // 10
            ui.note(f"{name}: {percent}%")

    return report


def _catalogue(settings: Settings) -> list[dict[str, Any]]:
    """Every register's catalogue entry, with the organisations holding active grants."""
    from lab.extracts import ledger
    from lab.registry import datasets, listing

    store = datasets.raw_store(settings)
    book = ledger(settings)
    try:
        held = listing.holders(book.list_grants(active=True))
    finally:
        book.close()
    return listing.catalogue(datasets.policies(settings, store), store, held)


def _time(value: str | None) -> str:
    from lab.localtime import local_time

    return local_time(value) if value else "-"


def cmd_dataset_list(args: argparse.Namespace, settings: Settings) -> int:
    from lab.registry import listing

    entries = listing.search(_catalogue(settings), args.search)
    if args.json:
        print_json(entries)
        return 0
    if not entries:
        none = f"No dataset matches {args.search!r}. / 没有匹配的数据集。" if args.search else None
        print(none or "No datasets. / 没有数据集。")
        return 0
    for entry in entries:
        rows = f"{entry['rows']:,} rows" if entry["rows"] is not None else "no data yet / 尚无数据"
        frequency = (entry["update_frequency_label"] or {}).get("en", "-")
        holders = ", ".join(entry["holders"]) or "-"
        print(
            f"{entry['name']} — {entry['title']['zh']} / {entry['title']['en']} ({entry['owner'] or '-'}); "
            f"{rows}; version {entry['version'] or '-'}; updated {_time(entry['updated_at'])}; "
            f"{frequency}; modes {', '.join(entry['release_modes'])}; held by {holders}"
        )
    return 0


def cmd_dataset_show(args: argparse.Namespace, settings: Settings) -> int:
    from lab.registry import listing

    entry = listing.find(_catalogue(settings), args.name)
    if args.json:
        print_json(entry)
        return 0
    frequency = entry["update_frequency_label"] or {"zh": "-", "en": "-"}
    unit = entry["privacy_unit"]
    print(f"{entry['name']} — {entry['title']['zh']} / {entry['title']['en']}")
    print(f"  owner (数据提供部门): {entry['owner'] or '-'}")
    print(f"  description (描述): {entry['description'] or '-'}")
    print(f"  update frequency (更新频率): {frequency['zh']} / {frequency['en']}")
    print(f"  release modes (发布方式): {', '.join(entry['release_modes']) or '-'}")
    print(f"  quasi-identifiers (准标识符): {', '.join(entry['quasi_identifiers']) or '-'}; k = {entry['k']}")
    if unit:
        print(f"  privacy unit (隐私单元): {unit['column']}, at most {unit['max_rows']} row(s) each")
    print(f"  held by (持有授权的机构): {', '.join(entry['holders']) or '-'}")
    print("  versions (版本):")
    for v in entry["versions"] or []:
        mark = "  [published / 已发布]" if v["published"] else ""
        rows = f"{v['rows']:,}" if v["rows"] is not None else "-"
        digest = str(v["sha256"])[:16]
        print(f"    {v['version']}: {rows} rows, {_time(v['created_at'])}, sha256 {digest}…{mark}")
    print("  columns (字段): name, grading (分级), PI class (个人信息), identifier, rule")
    for column in entry["columns"]:
        flag = "  [negative list / 负面清单]" if column["negative_list"] else ""
        print(
            f"    {column['name']:<22} {column['level']:<9} {column['pi']:<9} {column['identifier']:<6} "
            f"{column['rule']}{flag}"
        )
    return 0


def cmd_dataset_scan(args: argparse.Namespace, settings: Settings) -> int:
    from lab import discovery

    if args.sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {args.sample} / --sample 样本数至少为 1")
    result = discovery.scan_source(args.source, cap=args.sample)
    if args.json:
        print_json(result.to_json())
    else:
        print(discovery.to_text(result))
    return 0


def _imported_policies(settings: Settings) -> tuple[dict[str, Any], list[Any]]:
    """The accepted imports' policies and their problems; a problem if MinIO cannot be read."""
    from lab.errors import PolicyError
    from lab.ingest.importer import negative_list
    from lab.policy import NegativeList, PolicyProblem
    from lab.registry import datasets

    try:
        negative = negative_list(settings) or NegativeList()
    except PolicyError:
        negative = NegativeList()  # its problems are the directory's, reported there
    try:
        return datasets.checked_imports(datasets.raw_store(settings), negative)
    except Exception as exc:  # MinIO down: say so rather than pass the imports unchecked
        where = f"{settings.minio_endpoint}"
        return {}, [
            PolicyProblem(
                "imported registers",
                0,
                f"could not be read from MinIO at {where} ({type(exc).__name__}); start the lab "
                "(datalab up) and check again / 无法读取已导入数据集的策略，请启动实验室后重新检查",
            )
        ]


def cmd_policy_check(args: argparse.Namespace, settings: Settings) -> int:
    from lab.policy import check_policies
    from lab.registry.catalogue import DATASETS

    imported, problems = _imported_policies(settings)
    problems = check_policies(settings.policies_dir, expected=list(DATASETS), imported=imported) + problems
    if args.json:
        print_json(
            {
                "ok": not problems,
                "policies_dir": str(settings.policies_dir),
                "imported": sorted(imported),
                "problems": [{"path": p.path, "line": p.line, "reason": p.reason} for p in problems],
            }
        )
        return 1 if problems else 0
    for problem in problems:
        print(str(problem), file=sys.stderr)
    if problems:
        print(
            f"{len(problems)} problem(s) in {settings.policies_dir} and the accepted imports; fix them "
            "and run datalab policy check again / 发现问题，请修改后重新检查",
            file=sys.stderr,
        )
        return 1
    print(
        f"All policies in {settings.policies_dir} and {len(imported)} accepted import(s) are valid. "
        "/ 所有策略均有效。"
    )
    return 0


def cmd_extract_build(args: argparse.Namespace, settings: Settings) -> int:
    from lab import extracts

    if args.mode != "masked":
        if not args.spec:
            raise ConfigError(
                f"--mode {args.mode} needs --spec SPEC.yaml (see docs/dp-extracts.md). "
                f"/ --mode {args.mode} 需要 --spec 规格文件（见 docs/dp-extracts.md）。"
            )
        m = extracts.build_dp(
            settings, args.dataset, args.org, kind=args.mode, spec=args.spec, actor=args.actor
        )
        files = ", ".join(sorted(m["files"]))
        print(
            f"extracts/{m['organisation']}/{m['dataset']}/{m['version']}/: {m['kind']}, "
            f"ε={m['epsilon']:g}, δ={m['delta']:g}; files {files}"
        )
        return 0
    built = extracts.build(settings, args.dataset, args.org, actor=args.actor)
    m = built.manifest
    print(
        f"extracts/{built.prefix}/: rows in {m['rows_in']:,}, suppressed {m['rows_suppressed']:,}, "
        f"out {m['rows_out']:,}; k achieved {m['k_achieved']} (required {m['k_required']}), "
        f"l achieved {m['l_achieved']} (required {m['l_required']}); risk max "
        f"{m['risk']['prosecutor_max']:.3f} (threshold {m['risk']['threshold']:g}), household link "
        f"{m['risk']['household_link']}; report: datalab extract risk {args.dataset} --org {args.org}"
    )
    return 0


def _known_dataset(settings: Settings, name: str) -> str:
    """``name`` if a register of that name has a policy; NotFound with the closest name otherwise."""
    from lab.registry.datasets import policies, require_dataset

    return require_dataset(policies(settings), name).dataset


def cmd_extract_list(args: argparse.Namespace, settings: Settings) -> int:
    from lab import extracts

    extracts.organisation(settings, args.org)
    _known_dataset(settings, args.dataset)
    manifests = extracts.versions(settings, args.org, args.dataset)
    if args.json:
        print_json(manifests)
        return 0
    if not manifests:
        print(
            f"No extract of {args.dataset} for {args.org} yet; build one with datalab extract build "
            f"{args.dataset} --org {args.org} / 尚无提取件"
        )
    for manifest in manifests:
        kind = manifest.get("kind", "masked")
        if kind == "masked":
            what = f"{manifest['rows_out']:>10,} rows  k={manifest['k_achieved']}"
        else:
            what = f"ε={manifest['epsilon']:g} δ={manifest['delta']:g}" + (
                "  SYNTHETIC" if manifest["synthetic"] else ""
            )
        who = f"by {manifest['created_by']} at {_time(manifest['created_at'])}"
        print(f"{manifest['version']}  {kind:<12} {what}  {who}")
    return 0


def rebuild_outdated(settings: Settings, dataset: str, actor: str, *, dry_run: bool = False) -> int:
    """Print (and unless ``dry_run`` rebuild) the extracts of ``dataset`` built from an earlier
    register version; 1 when a rebuild was refused."""
    from lab import access, extracts

    with extracts.ledger(settings) as book:
        stale = access.outdated_extracts(settings, book, dataset)
        if not stale:
            print(
                f"Every extract of {dataset} is built from its published version. / 所有提取件均为最新版本。"
            )
            return 0
        for item in stale:
            print(
                f"{item.grant.organisation}: extract {item.extract} is from an earlier version "
                f"(data {item.source_sha256[:12]}…) / 基于旧版本"
            )
        if dry_run:
            print(f"Rebuild them: datalab extract rebuild {dataset} / 重建命令如上")
            return 0
        done = access.rebuild_extracts(settings, book, dataset, actor=actor)
    for rebuilt in done:
        if rebuilt.prefix is not None:
            print(f"{rebuilt.organisation}: rebuilt extracts/{rebuilt.prefix}/ / 已重建")
        else:
            print(
                f"{rebuilt.organisation}: not rebuilt, the earlier extract stays: {rebuilt.error}",
                file=sys.stderr,
            )
    return 1 if any(r.prefix is None for r in done) else 0


def cmd_extract_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    return rebuild_outdated(settings, args.dataset, args.actor, dry_run=args.dry_run)


def cmd_extract_risk(args: argparse.Namespace, settings: Settings) -> int:
    from lab import extracts

    _known_dataset(settings, args.dataset)
    report = extracts.risk_report(settings, args.org, args.dataset, args.version)
    if args.json:
        print_json(report)
        return 0
    records = report["records"]
    print(
        f"{report['dataset']} for {report['organisation']} (scope {report['scope']}): threshold "
        f"{report['threshold']:g}; k {records['k']}, prosecutor risk max {records['prosecutor_max']:.3f} "
        f"mean {records['prosecutor_mean']:.4f}, journalist max {records['journalist_max']:.3f}, "
        f"marketer {records['marketer']:.4f}; l {report['l_achieved']}"
    )
    print(
        f"household link: {report['household_link']}; households suppressed {report['households_suppressed']}"
    )
    if report["household"]:
        h = report["household"]
        print(f"  households {h['households']}, risk max {h['risk_max']:.3f} mean {h['risk_mean']:.4f}")
    if report["trajectory"]:
        t = report["trajectory"]
        print(
            f"trajectories at {report['trajectory_level']}: {t['spells']} spells, "
            f"risk max {t['risk_max']:.3f}, "
            f"spells suppressed {report['spells_suppressed']}"
        )
    for view in report["joined"]:
        print(
            f"joined view {'+'.join(view['datasets'])}: {view['persons']} persons, "
            f"risk max {view['prosecutor_max']:.3f}"
        )
    print(f"row order: {report['row_order']}")
    return 0


def cmd_extract_trace(args: argparse.Namespace, settings: Settings) -> int:
    from lab import extracts

    result = extracts.trace_file(settings, args.file)
    if args.json:
        builds = [{"dataset": b.dataset, "build_id": b.build_id} for b in result.builds]
        print_json({"organisation": result.org, "log10_p": result.log10_p, "builds": builds})
        return 0 if result.org else 1
    if result.org is None:
        print("No organisation can be named for this file. / 无法确定该文件的接收机构。")
        return 1
    versions = ", ".join(f"{b.dataset}@{b.build_id}" for b in result.builds) or "no recorded build"
    print(f"Built for {result.org} (log10 p = {result.log10_p:.1f}); matching builds: {versions}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datalab", description="Data Lab: a privacy-preserving data lab.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="install what is missing and start the lab")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the processes 'up' started; data stays").set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="is each component up? (exit 1 if any is down)")
    p.add_argument("--json", action="store_true", help='one JSON object, e.g. {"keycloak": "up", ...}')
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("logs", help="the last lines of a component's log")
    p.add_argument("component", choices=[c.name for c in stack.COMPONENTS])
    p.add_argument("-n", "--lines", type=int, default=50)
    p.set_defaults(func=cmd_logs)

    dataset = sub.add_parser("dataset", help="the bureau's registers").add_subparsers(
        dest="verb", required=True
    )
    p = dataset.add_parser("generate", help="generate the synthetic registers into the raw bucket")
    p.add_argument("--rows", type=int, default=demo.DATA_ROWS, help="residents in the synthetic city")
    p.add_argument("--seed", type=int, default=demo.DATA_SEED)
    p.add_argument("--dataset", action="append", help="only this register (repeatable)")
    p.set_defaults(func=cmd_dataset_generate)
    p = dataset.add_parser("list", help="the catalogue: title, owner, rows, versions, who holds grants")
    p.add_argument("--search", help="only datasets whose name, title, owner, keywords or columns contain it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dataset_list)
    p = dataset.add_parser("show", help="one dataset's catalogue entry: columns, grading, k, versions")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dataset_show)
    p = dataset.add_parser(
        "scan", help="find sensitive columns by their values and propose grading, PI class and rule"
    )
    p.add_argument("source", help="a CSV (UTF-8 or GB18030) or Parquet file")
    p.add_argument("--json", action="store_true", help="one JSON object per column (column, kind, ...)")
    p.add_argument("--sample", type=int, default=100_000, help="values sampled per column")
    p.set_defaults(func=cmd_dataset_scan)
    add_ingest_parsers(dataset)

    policy = sub.add_parser("policy", help="dataset policies").add_subparsers(dest="verb", required=True)
    p = policy.add_parser(
        "check", help="validate every policy file, the accepted imports and the negative list's names"
    )
    p.add_argument("--json", action="store_true", help='{"ok", "policies_dir", "imported", "problems"}')
    p.set_defaults(func=cmd_policy_check)

    extract = sub.add_parser("extract", help="masked extracts").add_subparsers(dest="verb", required=True)
    p = extract.add_parser("build", help="build a masked or DP extract for one organisation")
    p.add_argument("dataset")
    p.add_argument("--org", required=True)
    p.add_argument(
        "--mode",
        choices=["masked", "dp-table", "dp-synthetic"],
        default="masked",
        help="masked microdata, DP tables, or DP synthetic data (DP kinds spend the grant's budget)",
    )
    p.add_argument("--spec", help="YAML/JSON spec of the DP tables or synthetic data")
    p.add_argument(
        "--as", "--actor", dest="actor", required=True, help="the operator who builds it (checked, recorded)"
    )
    p.set_defaults(func=cmd_extract_build)
    p = extract.add_parser("list", help="published versions of an organisation's extract")
    p.add_argument("dataset")
    p.add_argument("--org", required=True)
    p.add_argument("--json", action="store_true", help="the manifests, oldest first")
    p.set_defaults(func=cmd_extract_list)
    p = extract.add_parser(
        "rebuild", help="rebuild the extracts built from an earlier version of a register (recorded)"
    )
    p.add_argument("dataset")
    p.add_argument("--as", dest="actor", required=True, help="the operator who rebuilds (recorded)")
    p.add_argument("--dry-run", action="store_true", help="only list the extracts that are outdated")
    p.set_defaults(func=cmd_extract_rebuild)
    p = extract.add_parser("risk", help="the risk report of a masked extract (re-identification measures)")
    p.add_argument("dataset")
    p.add_argument("--org", required=True)
    p.add_argument("--version", help="a published version (default: the latest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_extract_risk)
    p = extract.add_parser("trace", help="name the organisation a leaked extract was built for")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help='{"organisation", "log10_p", "builds"}')
    p.set_defaults(func=cmd_extract_trace)
    add_session_parsers(sub)
    add_governance_parsers(sub)
    add_org_parsers(sub)
    mark_operator_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        checked_operator(args, settings)
        return int(args.func(args, settings))
    except LabError as exc:
        print(f"datalab: error: {exc.message}", file=sys.stderr)
        return 2 if exc.reason == "config" else 1
    except BrokenPipeError:  # e.g. 'datalab dataset list | head'
        return 0
    except KeyboardInterrupt:
        print("datalab: interrupted / 已中断", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
