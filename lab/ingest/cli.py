"""``datalab dataset import`` and ``datalab dataset accept`` (added to ``lab.cli``'s parser)."""

from __future__ import annotations

import argparse
from typing import Any

from lab.settings import Settings

REBUILD_HELP = "once published, rebuild the organisations' masked extracts from this version (default: keep)"


def _store(settings: Settings) -> Any:
    from lab.registry.datasets import raw_store

    return raw_store(settings)


def _audit(settings: Settings) -> Any:
    def record(kind: str, *, actor: str, dataset: str, details: dict[str, Any]) -> None:
        from lab.extracts import ledger

        with ledger(settings) as book:
            book.append(kind, actor=actor, dataset=dataset, details=details)

    return record


def store_and_audit(settings: Settings) -> tuple[Any, Any]:
    """The raw bucket and the audit ledger (a test may replace this function)."""
    return _store(settings), _audit(settings)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from lab.ingest.importer import import_source
    from lab.ingest.postgres import reject_password

    reject_password(args.source)
    store, audit = store_and_audit(settings)
    done = import_source(
        settings,
        store,
        args.source,
        name=args.name,
        actor=args.actor,
        policy=args.policy,
        new_version=args.new_version,
        encoding=args.encoding,
        audit=audit,
    )
    print(
        f"{done.dataset} version {done.version}: {done.rows:,} rows, {len(done.schema)} columns, "
        f"sha256 {done.sha256[:16]}… / 已导入第 {done.version} 版"
    )
    if done.published:
        print("Policy validated and accepted; the version is published. / 策略校验通过，已发布。")
        return _after_publish(settings, done.dataset, done.version, args)
    if done.flagged:
        print(f"Direct identifiers found (直接标识符): {', '.join(done.flagged)}")
    print(f"Draft policy (策略草案): {done.draft}")
    for problem in done.draft_problems:
        print(f"  to fix before accepting (采纳前需修改): {problem}")
    print(
        f"Not published yet (尚未发布). Review the draft, then: datalab dataset accept {done.dataset} "
        "[--policy FILE] (as a second operator, logged in with datalab login)"
    )
    return 0


def cmd_accept(args: argparse.Namespace, settings: Settings) -> int:
    from lab.ingest.importer import accept

    store, audit = store_and_audit(settings)
    meta = accept(
        settings, store, args.name, actor=args.actor, version=args.version, policy=args.policy, audit=audit
    )
    print(
        f"{meta['dataset']} version {meta['version']} published ({meta['rows']:,} rows), accepted by "
        f"{meta['accepted_by']} / 已发布"
    )
    return _after_publish(settings, meta["dataset"], int(meta["version"]), args)


def _after_publish(settings: Settings, dataset: str, version: int, args: argparse.Namespace) -> int:
    """Rebuild the extracts of earlier versions if the operator asked; else say they stay."""
    if args.rebuild_extracts:
        from lab.cli.main import rebuild_outdated

        return rebuild_outdated(settings, dataset, args.actor)
    if version > 1:
        print(
            "Extracts built from earlier versions stay readable; to rebuild them from this one: "
            f"datalab extract rebuild {dataset} "
            "/ 旧版本的提取件仍可读取，如需重建请运行上述命令"
        )
    return 0


def add_parsers(dataset: Any) -> None:
    """Add ``import`` and ``accept`` to the ``datalab dataset`` subcommands."""
    p = dataset.add_parser("import", help="import a register from CSV, Parquet, Excel or a PostgreSQL table")
    p.add_argument(
        "source",
        help="a .csv (UTF-8 or GB18030), .parquet or .xlsx file, or postgresql://[user@]host/db?table=NAME "
        "(password from PGPASSWORD or ~/.pgpass, never in the URL)",
    )
    p.add_argument("--name", required=True, help="the dataset's name (lowercase letters, digits, . _ -)")
    p.add_argument("--policy", help="its policy (validated; the version is published at once)")
    p.add_argument("--new-version", action="store_true", help="add a version to an existing dataset")
    p.add_argument("--encoding", help="of a CSV file: utf-8 or gb18030 (default: detected)")
    p.add_argument("--as", dest="actor", required=True, help="the operator who imports (recorded)")
    p.add_argument("--rebuild-extracts", action="store_true", help=REBUILD_HELP)
    p.set_defaults(func=cmd_import)
    p = dataset.add_parser("accept", help="publish an imported version once its policy validates; audited")
    p.add_argument("name")
    p.add_argument("--as", dest="actor", required=True, help="the operator who accepts (recorded)")
    p.add_argument("--version", type=int, help="the version (default: the latest)")
    p.add_argument("--policy", help="the reviewed policy (default: the draft the import wrote)")
    p.add_argument("--rebuild-extracts", action="store_true", help=REBUILD_HELP)
    p.set_defaults(func=cmd_accept)
