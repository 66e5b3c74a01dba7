"""Masked extracts: build one for an organisation, publish it atomically, trace a leak.

``build`` reads the raw register from the restricted bucket, masks it under the dataset's
policy with the organisation's key (``lab.masking``), and publishes
``extracts/<org>/<dataset>/<version>/{data.parquet, manifest.json}`` (``storage.publish``:
the manifest is written last, and a failed build leaves nothing visible). The build is
recorded in the ledger's audit log together with its fingerprint, which ``trace`` uses to
name the recipient of a leaked file.

Organisation keys are generated secrets in the state directory (one per organisation,
``org-key-<org>``): the tag and mark keys are derived from them, the pseudonym keys per
**scope** and family. The scope is the grant (``grant/<id>``), so two extracts join on
pseudonyms only when both datasets' policies name each other in ``linked_datasets``
(scope ``link/<a>+<b>``); two organisations' extracts never join. Rows are shuffled per build.

Every build carries a risk report (``lab.risk``, docs/risk.md), published beside the data
as ``risk.json`` and summarised in the manifest; a linked build is also measured joined with
the organisation's latest extract of each linked dataset. A build above the policy's risk
threshold is refused (``PolicyError`` reason ``risk``) and publishes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from lab import dpextract, registers, storage
from lab import risk as risk_model
from lab.errors import ConfigError, NotFound
from lab.ledger import Grant, Kind, Ledger
from lab.masking import Fingerprint, MaskReport, OrgKey, mask_parquet, trace
from lab.masking.trace import TraceResult
from lab.policy import Policy, require_release
from lab.rawtables import RawTables
from lab.registry import organisations
from lab.registry.datasets import policies as registry_policies
from lab.registry.organisations import Organisation
from lab.settings import Settings
from lab.store import layout
from lab.store.layout import MASKED_DATA as DATA
from lab.store.layout import RISK_REPORT as RISK
from lab.store.ledgers import open_ledger
from lab.suggest import did_you_mean


@dataclass(frozen=True)
class Built:
    prefix: str
    manifest: dict[str, Any]
    report: MaskReport


def organisation(settings: Settings, org: str, *, active: bool = False) -> Organisation:
    """The registered organisation ``org``; any status (its extracts are kept) unless ``active``."""
    return organisations.lookup(settings, org, active=active)


def org_key(settings: Settings, org: str) -> OrgKey:
    return OrgKey(org, bytes.fromhex(organisations.org_key_secret(settings, org)))


def ledger(settings: Settings) -> Ledger:
    return open_ledger(settings)


def _version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def scope(policy: Policy, grant: Grant | None, version: str) -> str:
    """The pseudonym scope of a build: linked datasets share one, otherwise one per grant."""
    if policy.linked_datasets:
        return "link/" + "+".join(sorted({policy.dataset, *policy.linked_datasets}))
    return f"grant/{grant.id}" if grant is not None else f"build/{version}"


def _grant(settings: Settings, org: str, dataset: str, grant: Grant | None) -> Grant | None:
    """The grant a build is for: the one given, else the newest active masked grant (or none)."""
    if grant is not None:
        return grant
    with ledger(settings) as book:
        held = [
            g for g in book.list_grants(organisation=org, dataset=dataset, active=True) if "masked" in g.modes
        ]
    return max(held, key=lambda g: g.id) if held else None


def build(settings: Settings, dataset: str, org: str, *, actor: str, grant: Grant | None = None) -> Built:
    """Build, publish and record a masked extract of ``dataset`` for ``org`` (for ``grant``).

    Without ``grant`` the newest active masked grant of ``org`` on ``dataset`` is used; with
    none, the build has its own scope and no purpose (so no household link).
    """
    organisation(settings, org, active=True)
    policies = registry_policies(settings)
    policy = policies.get(dataset)
    client = storage.root_client(settings)
    if policy is None:
        known, (en, zh) = ", ".join(sorted(policies)), did_you_mean(dataset, policies)
        raise NotFound(
            f"unknown dataset {dataset!r}: it has no policy;{en} known: {known}; add {dataset}.yaml to "
            f"the policy directory or import and accept it. / 未知数据集 {dataset}：没有策略，{zh}"
            "请改正名称或先导入并采纳该数据集。",
            reason="no-such-dataset",
        )
    meta = registers.require_raw(client, dataset)  # no published data yet
    require_release(policy, "masked")
    version = _version()
    prefix = layout.extract_prefix(org, dataset, version)
    grant = _grant(settings, org, dataset, grant)
    key = org_key(settings, org).scoped(scope(policy, grant, version))
    with tempfile.TemporaryDirectory(dir=_work(settings)) as tmp:
        source = Path(tmp) / "raw.parquet"
        client.fget_object(layout.RAW_BUCKET, layout.raw_object(dataset), str(source))
        report = mask_parquet(
            source,
            Path(tmp) / DATA,
            policy,
            key,
            build_id=version,
            purpose=None if grant is None else grant.purpose,
        )
        source.unlink()
        assert report.risk is not None
        joined = joined_views(settings, client, policies, policy, org, key.scope, Path(tmp))
        risk = dataclasses.replace(report.risk, joined=joined)
        risk_model.refuse_if_exceeded(risk)
        (Path(tmp) / RISK).write_text(
            json.dumps(risk.to_dict(), ensure_ascii=False, indent=2, sort_keys=True)
        )
        manifest = {
            "kind": "masked",
            "dataset": dataset,
            "organisation": org,
            "version": version,
            "grant": None if grant is None else grant.id,
            "scope": key.scope,
            "source_sha256": meta["sha256"],
            "source_version": meta.get("version"),  # an imported register's version (None: generated)
            "policy_sha256": policy.digest,
            "rows_in": report.rows_in,
            "rows_out": report.rows_out,
            "rows_suppressed": report.rows_suppressed,
            "k_required": report.k_required,
            "k_achieved": report.k_achieved,
            "l_required": report.l_required,
            "l_achieved": report.l_achieved,
            "risk": _summary(risk),
            "data_sha256": report.output_sha256,
            "created_by": actor,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        files = {DATA: Path(tmp) / DATA, RISK: Path(tmp) / RISK}
        storage.publish(client, layout.EXTRACTS_BUCKET, prefix, files, manifest)
    with ledger(settings) as book:
        book.append(
            Kind.EXTRACT_BUILD,
            actor=actor,
            organisation=org,
            dataset=dataset,
            details={
                "version": version,
                "rows_in": report.rows_in,
                "rows_out": report.rows_out,
                "k_achieved": report.k_achieved,
                "risk": _summary(risk),
                "fingerprint": report.fingerprint.to_dict(),
            },
        )
    return Built(prefix, manifest, dataclasses.replace(report, risk=risk))


def _summary(risk: risk_model.RiskReport) -> dict[str, Any]:
    """The headline figures of a risk report (the whole report is ``risk.json``)."""
    return {
        "threshold": risk.threshold,
        "prosecutor_max": risk.records.prosecutor_max,
        "prosecutor_mean": round(risk.records.prosecutor_mean, 6),
        "household_link": risk.household_link,
        "household_risk_max": None if risk.household is None else risk.household.risk_max,
        "households_suppressed": risk.households_suppressed,
        "trajectory_level": risk.trajectory_level,
        "trajectory_risk_max": None if risk.trajectory is None else risk.trajectory.risk_max,
        "spells_suppressed": risk.spells_suppressed,
        "joined_risk_max": max((v["prosecutor_max"] for v in risk.joined), default=None),
        "row_order": risk.row_order,
    }


def joined_views(
    settings: Settings,
    client: Any,
    policies: Mapping[str, Policy],
    policy: Policy,
    org: str,
    scope: str,
    tmp: Path,
) -> list[dict[str, Any]]:
    """Risk of this build joined with the organisation's latest extract of each linked dataset
    in the same scope (whichever of two linked extracts is built second measures the join)."""
    views = []
    for other in policy.linked_datasets:
        latest = [m for m in versions(settings, org, other) if m.get("scope") == scope]
        if not latest or other not in policies:
            continue
        path = tmp / f"linked-{other}.parquet"
        client.fget_object(
            layout.EXTRACTS_BUCKET, layout.extract_object(org, other, latest[-1]["version"], DATA), str(path)
        )
        views.append(
            risk_model.joined_view(
                [(pl.scan_parquet(tmp / DATA), policy), (pl.scan_parquet(path), policies[other])]
            )
        )
    return views


def risk_report(settings: Settings, org: str, dataset: str, version: str | None = None) -> dict[str, Any]:
    """The risk report stored beside a masked extract (the latest version unless named)."""
    organisation(settings, org)
    built = [m for m in versions(settings, org, dataset) if m.get("kind", "masked") == "masked"]
    if version is not None:
        built = [m for m in built if m["version"] == version]
    if not built:
        raise NotFound(
            f"No masked extract of {dataset!r} for {org!r}{f' version {version}' if version else ''}; "
            f"list them with 'datalab extract list {dataset} --org {org}'. / 没有找到该脱敏数据集。"
        )
    name = layout.extract_object(org, dataset, built[-1]["version"], RISK)
    report = storage.read_json(storage.root_client(settings), layout.EXTRACTS_BUCKET, name)
    if report is None:
        raise NotFound(
            f"Extract {name} was built before risk reports; rebuild it. / 该版本没有风险报告，请重新生成。"
        )
    return report


def build_dp(
    settings: Settings,
    dataset: str,
    org: str,
    *,
    kind: str,
    spec: Any,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Build, charge and publish a DP extract (``dp-table`` or ``dp-synthetic``) for ``org``.

    The spec is checked before anything is charged; the grant's budget is reserved for the
    exact ε of the plan and the release recorded in the ledger before the files are
    published (``lab.dpextract.build_extract``). ``request_id`` (the client's, kept in the
    manifest) makes a retry free: the same actor asking again with the same id gets the
    extract already built, marked ``"repeated": true``, and nothing is charged twice.
    """
    organisation(settings, org, active=True)
    if kind not in dpextract.KINDS:
        en, zh = did_you_mean(kind, dpextract.KINDS)
        kinds = ", ".join(dpextract.KINDS)
        raise ConfigError(
            f"Unknown DP extract kind {kind[:64]!r}; choose {kinds}.{en} "
            f"/ 未知的数据类型，可选：{kinds}。{zh}",
            reason="dpx-kind",
        )
    if request_id is None:
        return _build_dp(settings, dataset, org, kind=kind, spec=spec, actor=actor, request_id=None)
    with _request_lock(request_id):
        for done in versions(settings, org, dataset):
            if done.get("request_id") == request_id and done.get("created_by") == actor:
                return {**done, "repeated": True}
        return _build_dp(settings, dataset, org, kind=kind, spec=spec, actor=actor, request_id=request_id)


_request_locks: dict[str, threading.Lock] = {}
_request_locks_guard = threading.Lock()


def _request_lock(request_id: str) -> threading.Lock:
    """One lock per request id (two retries racing in one gateway build once)."""
    with _request_locks_guard:
        if len(_request_locks) > 10_000:
            _request_locks.clear()
        return _request_locks.setdefault(request_id, threading.Lock())


def _build_dp(
    settings: Settings, dataset: str, org: str, *, kind: str, spec: Any, actor: str, request_id: str | None
) -> dict[str, Any]:
    policies = registry_policies(settings)
    tables = RawTables(settings, policies)
    table = tables.table(dataset)  # unknown dataset or not generated yet
    policy = tables.policy(dataset)
    client = storage.root_client(settings)
    version = _version()
    prefix = layout.extract_prefix(org, dataset, version)
    meta = registers.require_raw(client, dataset)
    with ledger(settings) as book:
        grant = book.active_grant(org, dataset, mode="dp", actor=actor, kind="dp-extract")
        with tempfile.TemporaryDirectory(dir=_work(settings)) as tmp:
            built = dpextract.build_extract(
                kind,
                spec,
                table,
                policy,
                reserve=lambda eps, delta, request: book.spend(
                    grant.id, eps, delta, actor=actor, kind="dp-extract", query=request
                ),
                publish=lambda files, document: storage.publish(
                    client, layout.EXTRACTS_BUCKET, prefix, dict(files), document
                ),
                workdir=Path(tmp),
                about={
                    "organisation": org,
                    "version": version,
                    "created_by": actor,
                    "source_sha256": meta["sha256"],
                    **({"request_id": request_id} if request_id else {}),
                },
            )
    return dict(built.manifest)


def _work(settings: Settings) -> Path:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    return settings.work_dir


def versions(settings: Settings, org: str, dataset: str) -> list[dict[str, Any]]:
    """Manifests of the published versions (oldest first); a version without one is invisible."""
    client = storage.root_client(settings)
    manifests = []
    for item in client.list_objects(layout.EXTRACTS_BUCKET, prefix=layout.dataset_prefix(org, dataset)):
        name = f"{item.object_name}{layout.MANIFEST}"
        manifest = _published.get(name)
        if manifest is None:
            manifest = storage.read_json(client, layout.EXTRACTS_BUCKET, name)
            if manifest is not None and len(_published) < 10_000:
                _published[name] = manifest
        if manifest is not None:
            manifests.append(manifest)
    return sorted(manifests, key=lambda m: str(m["version"]))


# A published manifest never changes (a version is written once, manifest last), so each is
# read from MinIO once per process instead of on every catalogue listing.
_published: dict[str, dict[str, Any]] = {}


def trace_file(settings: Settings, path: str | Path) -> TraceResult:
    """Name the organisation whose extract ``path`` (or a sample of its rows) came from."""
    file = Path(path)
    if not file.is_file():
        raise NotFound(f"No such file: {file} / 文件不存在：{file}")
    with ledger(settings) as book:
        builds = [
            Fingerprint.from_dict(r.details["fingerprint"])
            for r in book.records(kind=Kind.EXTRACT_BUILD)
            if "fingerprint" in r.details
        ]
    keys = [org_key(settings, org) for org in sorted(organisations.statuses(settings))]
    return trace(pl.read_parquet(file), keys, builds)
