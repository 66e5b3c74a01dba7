"""Import a register, keep its versions, and publish a version once its policy is accepted.

Layout in the raw bucket (``lab.ingest.store``) for a dataset ``NAME``::

    NAME/versions/000001/data.parquet        the table as imported (never rewritten)
    NAME/versions/000001/policy.draft.yaml   the scanner's draft (imports without --policy)
    NAME/versions/000001/manifest.json       schema, rows, SHA-256, source: written last, so a
                                             version exists only once it is complete
    NAME/versions/000001/policy.yaml         the accepted policy   } written by accept,
    NAME/versions/000001/accepted.json       who accepted, when    } before the pointer
    NAME/NAME.parquet, NAME/meta.json        the published version, where the raw-table
                                             readers look (data first, meta.json last)

The content hash is the SHA-256 of the Parquet file as stored (hashed while it is written),
the same digest the raw-table readers check after a download. It names the stored bytes: the
same rows written by another library version may hash differently.

Import streams the source through the typing of ``lab.ingest.frames`` into a Parquet file in
the state directory's scratch space, feeding the scanner's sampler on the way when no policy
is given; only a complete file is uploaded, and only as a new version whose manifest is
written last. A version is *published* (visible to the raw-table readers and listed in the
catalogue) only by :func:`accept`, which validates the policy against the version's schema
and the negative list and records the acceptance in the audit ledger. With ``--policy`` the
policy is validated before the first row is written and again with the column types, and the
import accepts it at once, as the same operator.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.discovery import DEFAULT_CAP, draft_yaml
from lab.discovery.scan import scan_sample
from lab.discovery.source import Sampler
from lab.errors import ConfigError, LabError, NotFound, PolicyError
from lab.ingest.frames import ParquetSink, Widen, Written, conform, infer, polars_schema
from lab.ingest.sources import Source, open_source
from lab.ingest.store import RawStore, get_json, put_json
from lab.policy import NEGATIVE_LIST_FILE, NegativeList, Policy, load_negative_list, load_policy
from lab.settings import Settings
from lab.store import layout
from lab.validate import name as valid_name
from lab.validate import username

Audit = Callable[..., Any]  # audit(kind, *, actor, dataset, details): the ledger's append
MANIFEST = layout.VERSION_MANIFEST
ACCEPTED = "accepted.json"


def version_key(dataset: str, version: int, file: str) -> str:
    return layout.raw_version(dataset, version, file)


@dataclass(frozen=True)
class Imported:
    """What an import wrote."""

    dataset: str
    version: int
    rows: int
    sha256: str
    schema: list[dict[str, str]]
    published: bool
    draft: Path | None  # the draft policy to review (imports without --policy)
    draft_problems: tuple[str, ...] = ()  # why the draft would not be accepted as it is
    flagged: tuple[str, ...] = ()  # columns the scanner found to be direct identifiers


def manifests(store: RawStore, dataset: str) -> list[dict[str, Any]]:
    """The complete versions of ``dataset``, oldest first, each with ``accepted`` (or None)."""
    found = []
    for key in store.keys(layout.raw_versions(dataset)):
        if key.endswith(f"/{MANIFEST}"):
            manifest = get_json(store, key)
            if manifest is not None:
                manifest["accepted"] = get_json(store, key.removesuffix(MANIFEST) + ACCEPTED)
                found.append(manifest)
    return sorted(found, key=lambda m: int(m["version"]))


def draft_path(settings: Settings, dataset: str, version: int) -> Path:
    """Where the import leaves a version's draft policy for the operator to review and edit."""
    return settings.home / "imports" / dataset / f"v{version}.draft.yaml"


@contextlib.contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    """One import or acceptance at a time on this server (version numbers are allocated here)."""
    path = settings.home / "imports" / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_name(store: RawStore, dataset: str, new_version: bool) -> int:
    """The next version number; refuses an existing name without ``--new-version``."""
    existing = manifests(store, dataset)
    if not existing and get_json(store, layout.raw_meta(dataset)) is not None:
        raise ConfigError(
            f"dataset {dataset!r} is a generated register (datalab dataset generate); import under "
            f"another name (数据集 {dataset} 为生成的登记库，请换一个名称)",
            reason="exists",
        )
    if existing and not new_version:
        last = existing[-1]["version"]
        raise ConfigError(
            f"dataset {dataset!r} already exists (version {last}); pass --new-version to add version "
            f"{last + 1} (数据集已存在；如需新增版本请加 --new-version)",
            reason="exists",
        )
    if new_version and not existing:
        raise ConfigError(
            f"--new-version: dataset {dataset!r} has no version yet; import it without --new-version "
            f"(数据集尚无版本，请去掉 --new-version)",
            reason="not-found",
        )
    return int(existing[-1]["version"]) + 1 if existing else 1


def negative_list(settings: Settings) -> NegativeList | None:
    """The negative list of the policy directory (None if it has none)."""
    path = settings.policies_dir / NEGATIVE_LIST_FILE
    return load_negative_list(path) if path.exists() else None


def check_policy(settings: Settings, path: Path, dataset: str, schema: Any) -> Policy:
    """The policy at ``path``, validated for ``dataset`` (its columns, or names to types)."""
    policy = load_policy(path, schema, negative_list(settings))
    if policy.dataset != dataset:
        raise PolicyError(
            f"{path}:1: the policy is for dataset {policy.dataset!r}, not {dataset!r}; set 'dataset: "
            f"{dataset}' (策略中的数据集名称不符)",
            reason="policy",
        )
    return policy


def _stream(source: Source, path: Path, sampler: Callable[[], Sampler] | None, first: Callable[..., None]):
    """Write the source to ``path``; (what was written, the filled sampler or None)."""
    kinds: dict[str, str] | None = None
    for _ in range(1000):  # a restart per widened column at most
        sample = sampler() if sampler else None
        try:
            with ParquetSink(path) as sink:
                for i, frame in enumerate(source.read()):
                    if i == 0:
                        first(frame.columns)
                    if sample is not None:  # as read: a CSV is scanned as 'dataset scan' would
                        sample.add(frame)
                    if source.text:
                        kinds = kinds if kinds is not None else infer(frame)
                        frame = conform(frame, kinds)
                    sink.write(frame)
                return sink.close(), sample
        except Widen as widen:
            assert kinds is not None
            kinds[widen.column] = widen.to
    raise ConfigError(f"{source.display}: the column types did not settle (列类型无法确定)")


def _schema(written: Written) -> list[dict[str, str]]:
    return [{"name": n, "type": str(t)} for n, t in polars_schema(written.schema).items()]


def import_source(
    settings: Settings,
    store: RawStore,
    spec: str,
    *,
    name: str,
    actor: str,
    policy: str | Path | None = None,
    new_version: bool = False,
    encoding: str | None = None,
    audit: Audit | None = None,
    cap: int = DEFAULT_CAP,
    password: str | None = None,
) -> Imported:
    """Import ``spec`` (a file or a PostgreSQL URL) as a new version of dataset ``name``.

    ``password``: a PostgreSQL password given apart from the URL (the console's form).
    """
    dataset = valid_name(name, "--name")
    actor = username(actor, "--as")
    policy_path = Path(policy) if policy is not None else None
    if policy_path is not None and not policy_path.is_file():
        raise NotFound(f"{policy_path}: no such policy file (策略文件不存在)", reason="not-found")
    source = open_source(spec, encoding, password)
    _check_name(store, dataset, new_version)

    def first(columns: list[str]) -> None:  # before the first row is written
        if policy_path is not None:
            check_policy(settings, policy_path, dataset, list(columns))

    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix="import-") as tmp:
        make_sampler = None if policy_path else (lambda: Sampler(cap, Path(source.display)))
        written, sample = _stream(source, Path(tmp) / layout.VERSION_DATA, make_sampler, first)
        source.verify()
        schema = _schema(written)
        flagged: tuple[str, ...] = ()
        if policy_path is not None:
            check_policy(settings, policy_path, dataset, polars_schema(written.schema))
            policy_text, policy_file = policy_path.read_text(encoding="utf-8"), "policy.given.yaml"
        else:
            assert sample is not None
            result = scan_sample(sample.sample(source.display, source.format, source.encoding), cap)
            policy_text, policy_file = draft_yaml(result, dataset), "policy.draft.yaml"
            flagged = tuple(c.column for c in result.columns if c.identifier == "direct")
        manifest = {
            "dataset": dataset,
            "format": source.format,
            "encoding": source.encoding,
            "source": source.display,
            "rows": written.rows,
            "bytes": written.bytes,
            "sha256": written.sha256,
            "schema": schema,
            "policy": policy_file,
            "imported_by": actor,
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with _lock(settings):
            version = _check_name(store, dataset, new_version)
            manifest["version"] = version
            _put_version(store, dataset, version, written.path, policy_file, policy_text, manifest)
    if audit is not None:
        details = {k: manifest[k] for k in ("version", "rows", "sha256", "format", "policy")}
        audit("dataset-import", actor=actor, dataset=dataset, details=details)
    if policy_path is not None:
        accept(settings, store, dataset, actor=actor, version=version, policy=policy_path, audit=audit)
        return Imported(dataset, version, written.rows, written.sha256, schema, True, None)
    draft = draft_path(settings, dataset, version)
    draft.parent.mkdir(parents=True, exist_ok=True)
    draft.write_text(policy_text, encoding="utf-8")
    try:
        check_policy(settings, draft, dataset, polars_schema(written.schema))
        problems: tuple[str, ...] = ()
    except LabError as exc:
        problems = tuple(exc.detail.splitlines())
    return Imported(dataset, version, written.rows, written.sha256, schema, False, draft, problems, flagged)


def _put_version(
    store: RawStore, dataset: str, version: int, data: Path, policy_file: str, policy: str, manifest: dict
) -> None:
    """Data, policy, then the manifest: the version exists once its manifest does."""
    written: list[str] = []
    try:
        for key, put in (
            (version_key(dataset, version, layout.VERSION_DATA), lambda k: store.put_file(k, data)),
            (version_key(dataset, version, policy_file), lambda k: store.put_bytes(k, policy.encode())),
            (version_key(dataset, version, MANIFEST), lambda k: put_json(store, k, manifest)),
        ):
            put(key)
            written.append(key)
    except BaseException:
        for key in reversed(written):
            with contextlib.suppress(Exception):
                store.remove(key)
        raise


def accept(
    settings: Settings,
    store: RawStore,
    name: str,
    *,
    actor: str,
    version: int | None = None,
    policy: str | Path | None = None,
    audit: Audit | None = None,
) -> dict[str, Any]:
    """Publish a version of an imported dataset once its policy validates; recorded.

    The policy is ``policy`` if given, else the draft file the import wrote (the operator may
    have edited it), else the draft stored with the version. Returns the published metadata.
    """
    dataset = valid_name(name, "dataset")
    actor = username(actor, "--as")
    with _lock(settings):
        found = manifests(store, dataset)
        if not found:
            raise NotFound(
                f"no imported dataset {dataset!r}; import it first with datalab dataset import "
                f"(没有此导入数据集)",
                reason="not-found",
            )
        chosen = [m for m in found if version is None or m["version"] == version]
        if not chosen:
            raise NotFound(f"dataset {dataset!r} has no version {version} (没有此版本)", reason="not-found")
        manifest = chosen[-1]
        number = int(manifest["version"])
        if manifest["accepted"] is not None:
            raise ConfigError(
                f"version {number} of {dataset!r} is already accepted (此版本已被采纳)", reason="exists"
            )
        path = Path(policy) if policy is not None else draft_path(settings, dataset, number)
        if not path.is_file():
            stored = store.get_bytes(version_key(dataset, number, str(manifest["policy"])))
            if policy is not None or stored is None:
                raise NotFound(f"{path}: no such policy file (策略文件不存在)", reason="not-found")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(stored)
        types = {c["name"]: c["type"] for c in manifest["schema"]}
        check_policy(settings, path, dataset, column_types(types))
        text = path.read_bytes()
        digest = hashlib.sha256(text).hexdigest()
        store.put_bytes(version_key(dataset, number, "policy.yaml"), text)
        if audit is not None:
            details = {"version": number, "rows": manifest["rows"], "sha256": manifest["sha256"]}
            audit(
                "dataset-accept", actor=actor, dataset=dataset, details={**details, "policy_sha256": digest}
            )
        at = datetime.now(UTC).isoformat(timespec="seconds")
        put_json(
            store, version_key(dataset, number, ACCEPTED), {"by": actor, "at": at, "policy_sha256": digest}
        )
        store.copy(version_key(dataset, number, layout.VERSION_DATA), layout.raw_object(dataset))
        meta = {
            "dataset": dataset,
            "rows": manifest["rows"],
            "sha256": manifest["sha256"],
            "version": number,
            "source": "import",
            "format": manifest["format"],
            "schema": manifest["schema"],
            "policy_sha256": digest,
            "accepted_by": actor,
            "updated_at": at,
        }
        put_json(store, layout.raw_meta(dataset), meta)  # last: readers see the new version from now on
    return meta


def column_types(types: dict[str, str]) -> dict[str, Any]:
    """Polars types from a manifest's type names (what policy validation checks rules against)."""
    import polars as pl

    parsed: dict[str, Any] = {}
    for column, text in types.items():
        base = text.split("(")[0]
        parsed[column] = getattr(pl, base, pl.String)
    return parsed
