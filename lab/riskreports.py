"""Risk reports for the people who decide and review: before an approval, and of what was published.

An operator deciding an application for a masked extract sees the disclosure risk the
extract would carry (:func:`preview`, a dry run of the risk model of :mod:`lab.risk` on the
raw register under the dataset's policy and the application's purpose: nothing is written,
published or refused), and the report of the organisation's latest published extract of the
dataset, if any. The auditor sees the reports of the published extracts (:func:`published`,
read from the ``risk.json`` beside each one).

A dry run reads the whole register, so :class:`Previews` runs it in the background, once per
register version, policy version and household-link decision (the measures depend on those
only, not on the organisation, except for the joins of linked datasets), and the pages say
"being computed" until it is done.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab import extracts, registers, storage
from lab.errors import LabError
from lab.masking import preview_risk
from lab.policy import Policy
from lab.registry.datasets import policies as registry_policies
from lab.settings import Settings
from lab.store import layout

log = logging.getLogger(__name__)

READY, COMPUTING, FAILED = "ready", "computing", "failed"


def changes(policy: Policy) -> list[dict[str, Any]]:
    """What a masked extract does to each column that is not released as is."""
    out = []
    for column in policy.columns.values():
        if column.rule == "keep":
            continue
        params = {k: v for k, v in column.params.items() if k != "family"}
        out.append({"column": column.name, "rule": column.rule, "params": params})
    return out


def verdict(report: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the report passes its threshold, with what exceeds it (as the build decides)."""
    exceeded = list(report.get("exceeded") or [])
    return {"passes": not exceeded, "exceeded": exceeded}


def preview(settings: Settings, policy: Policy, org: str, purpose: str | None) -> dict[str, Any]:
    """The risk report a masked build of ``policy``'s dataset for ``org`` and ``purpose`` would carry.

    Linked datasets are also measured joined with the organisation's latest extract of each
    linked dataset (as the build does); otherwise the organisation does not change the measures.
    """
    client = storage.root_client(settings)
    meta = registers.require_raw(client, policy.dataset)
    linked = bool(policy.linked_datasets)
    key = extracts.org_key(settings, org).scoped(extracts.scope(policy, None, "risk-preview"))
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as tmp:
        source = Path(tmp) / "raw.parquet"
        client.fget_object(layout.RAW_BUCKET, layout.raw_object(policy.dataset), str(source))
        dest = Path(tmp) / layout.MASKED_DATA if linked else None
        report, counts = preview_risk(source, policy, key, purpose=purpose, dest=dest)
        source.unlink()
        if linked:
            policies = registry_policies(settings)
            joined = extracts.joined_views(settings, client, policies, policy, org, key.scope, Path(tmp))
            report = dataclasses.replace(report, joined=joined)
    body = report.to_dict()
    body.pop("scope")  # a dry run's pseudonym scope is its own; the approval's grant gets another
    return {
        **body,
        **verdict(body),
        **counts,
        "changes": changes(policy),
        "raw_sha256": meta["sha256"],
        "policy_sha256": policy.digest,
        "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# A published risk report never changes (a version is written once), so each is read once.
_reports: dict[str, dict[str, Any]] = {}
_reports_lock = threading.Lock()


def _stored(settings: Settings, org: str, dataset: str, version: str) -> dict[str, Any] | None:
    name = layout.extract_object(org, dataset, version, layout.RISK_REPORT)
    with _reports_lock:
        found = _reports.get(name)
    if found is None:
        found = storage.read_json(storage.root_client(settings), layout.EXTRACTS_BUCKET, name)
        if found is not None:
            with _reports_lock:
                if len(_reports) < 10_000:
                    _reports[name] = found
    return found


def _entry(settings: Settings, manifest: Mapping[str, Any]) -> dict[str, Any]:
    org, dataset, version = manifest["organisation"], manifest["dataset"], manifest["version"]
    report = _stored(settings, org, dataset, version)
    return {
        "organisation": org,
        "dataset": dataset,
        "version": version,
        "grant": manifest.get("grant"),
        "created_at": manifest.get("created_at"),
        "created_by": manifest.get("created_by"),
        "rows_out": manifest.get("rows_out"),
        "report": report,
        **(verdict(report) if report is not None else {"passes": None, "exceeded": []}),
    }


def latest(settings: Settings, org: str, dataset: str) -> dict[str, Any] | None:
    """The risk report of the organisation's latest published masked extract of ``dataset``."""
    built = [m for m in extracts.versions(settings, org, dataset) if m.get("kind", "masked") == "masked"]
    return _entry(settings, built[-1]) if built else None


def published(
    settings: Settings, orgs: Iterable[str], datasets: Iterable[str], limit: int = 100
) -> list[dict[str, Any]]:
    """Risk reports of the published masked extracts, newest first (at most ``limit``)."""
    manifests = [
        m
        for org in orgs
        for dataset in datasets
        for m in extracts.versions(settings, org, dataset)
        if m.get("kind", "masked") == "masked"
    ]
    manifests.sort(key=lambda m: str(m["version"]), reverse=True)
    return [_entry(settings, m) for m in manifests[:limit]]


class Previews:
    """Dry runs of the risk model, computed in the background and kept per input version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._done: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._running: set[tuple[Any, ...]] = set()
        self._pool: ThreadPoolExecutor | None = None

    def _key(self, policy: Policy, org: str, purpose: str | None) -> tuple[Any, ...]:
        meta = registers.require_raw(storage.root_client(self.settings), policy.dataset)
        household = None if policy.household is None else policy.household.allowed(purpose)
        linked: list[str] = []
        if policy.linked_datasets:  # the join with the organisation's latest linked extracts
            scope = extracts.scope(policy, None, "risk-preview")
            linked.append(org)
            for other in sorted(policy.linked_datasets):
                built = extracts.versions(self.settings, org, other)
                linked.append(max((m["version"] for m in built if m.get("scope") == scope), default=""))
        return (policy.dataset, policy.digest, meta["sha256"], household, tuple(linked))

    def get(self, policy: Policy, org: str, purpose: str | None) -> dict[str, Any]:
        """``{"state": ready, "report": …}``, ``{"state": computing}`` or ``{"state": failed, …}``."""
        try:
            key = self._key(policy, org, purpose)
        except LabError as exc:
            return {"state": FAILED, "error": exc.message}
        with self._lock:
            found = self._done.get(key)
            if found is not None and found["state"] == READY:  # shared by organisations: name this one
                return {**found, "report": {**found["report"], "organisation": org}}
            if found is not None:
                return found
            if key not in self._running:
                self._running.add(key)
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="risk-preview")
                self._pool.submit(self._run, key, policy, org, purpose)
        return {"state": COMPUTING}

    def _run(self, key: tuple[Any, ...], policy: Policy, org: str, purpose: str | None) -> None:
        try:
            result: dict[str, Any] = {"state": READY, "report": preview(self.settings, policy, org, purpose)}
        except LabError as exc:
            result = {"state": FAILED, "error": exc.message}
        except Exception:  # the page says it failed; the log has the cause
            log.exception("risk preview of %s failed", policy.dataset)
            result = {
                "state": FAILED,
                "error": "The dry run of the risk model failed; see the gateway log. "
                "/ 风险试算失败，请查看网关日志。",
            }
        with self._lock:
            self._done[key] = result
            self._running.discard(key)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
