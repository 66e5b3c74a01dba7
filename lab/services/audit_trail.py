"""What auditors do, independent of HTTP: search the audit log (paged, counted, exported),
read one record, verify the chain, budget spent over time and its caps, flags of
suspicious patterns, audit packages.

A mixin of :class:`lab.services.governance.Governance` (which sets ``ledger`` and
``profiles``); every method checks the auditor role first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from lab import auditpkg, suspicious, validate
from lab.errors import ConfigError, NotFound
from lab.gateway.auth import Caller
from lab.ledger import Ledger


class AuditTrail:
    ledger: Ledger
    profiles: suspicious.Profiles | None

    AUDIT_FILTERS = ("organisation", "actor", "dataset", "kind", "since", "until")

    @staticmethod
    def _audit_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
        """The audit search's filters, each checked (a 400 naming the one that is wrong)."""
        checks = {
            "organisation": validate.name,
            "actor": validate.username,
            "dataset": validate.name,
            "kind": validate.name,
            "since": validate.moment,
            "until": validate.moment,
        }
        unknown = {k for k, v in filters.items() if v not in (None, "")} - set(checks)
        if unknown:
            raise ConfigError(
                f"unknown filter(s): {', '.join(sorted(validate.column(k, 'filter') for k in unknown))}; "
                f"use {', '.join(checks)} / 未知的筛选条件",
                reason="invalid-value",
            )
        kept = {k: validate.optional(checks[k], v, k) for k, v in filters.items()}
        kept = {k: v for k, v in kept.items() if v is not None}
        validate.span(kept.get("since"), kept.get("until"))
        return kept

    def search(
        self, caller: Caller, filters: Mapping[str, Any], limit: int = 200, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Audit records matching ``filters``, newest first: ``limit`` (≤ 5,000) from ``offset``."""
        caller.require("auditor")
        kept = self._audit_filters(filters)
        if isinstance(limit, bool) or not isinstance(limit, int):
            limit = validate.ident(limit, "limit")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            offset = validate.ident(offset, "offset")
        records = self.ledger.records(
            **kept, newest_first=True, limit=max(1, min(limit, 5000)), offset=offset
        )
        return [r.as_dict() for r in records]

    def record(self, caller: Caller, seq: Any) -> dict[str, Any]:
        """One audit record, whole (the search's cells are shortened)."""
        caller.require("auditor")
        number = validate.ident(seq, "seq")
        found = self.ledger.records(after_seq=number - 1, limit=1)
        if not found or found[0].seq != number:
            raise NotFound(f"there is no audit record {number} / 没有该审计记录", reason="no-such-record")
        return found[0].as_dict()

    def search_count(self, caller: Caller, filters: Mapping[str, Any]) -> int:
        """How many audit records ``search`` would find with no limit."""
        caller.require("auditor")
        return self.ledger.count_records(**self._audit_filters(filters))

    def search_export(
        self, caller: Caller, filters: Mapping[str, Any], batch: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every record matching ``filters``, newest first, read ``batch`` at a time (memory stays
        bounded whatever the result's size). The export itself is recorded (``audit-export``:
        who, the filters, how many records) before the first record is read."""
        caller.require("auditor")
        kept = self._audit_filters(filters)
        total = self.ledger.count_records(**kept)
        shown = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in kept.items()}
        self.ledger.append(
            "audit-export",
            actor=caller.username,
            organisation=caller.org,
            details={"filters": shown, "records": total, "format": "csv"},
        )

        def rows() -> Iterator[dict[str, Any]]:
            before: int | None = None
            while True:
                found = self.ledger.records(**kept, newest_first=True, limit=batch, before_seq=before)
                yield from (r.as_dict() for r in found)
                if len(found) < batch:
                    return
                before = found[-1].seq

        return rows()

    def verify(self, caller: Caller) -> dict[str, Any]:
        caller.require("auditor")
        return self.ledger.verify().as_dict()

    def spending(self, caller: Caller, period: str = "day", zone: tzinfo = UTC) -> list[dict[str, Any]]:
        """ε spent per period; periods are days or hours of ``zone`` (the console's: the lab's)."""
        caller.require("auditor")
        period = validate.choice(period, "period", ("hour", "day", "month"))
        return [vars(p) for p in self.ledger.spending(period=period, zone=zone)]

    def budget_caps(self, caller: Caller, keys: Iterable[tuple[str, str]]) -> dict[str, dict[str, Any]]:
        """Per ``organisation / dataset``: its cap (the organisation's total on the dataset, None
        without one), the cap's window, and the ε its active grants allow."""
        caller.require("auditor")
        active = self.ledger.list_grants(active=True)
        out = {}
        for organisation, dataset in keys:
            total = self.ledger.organisation_spending(organisation, dataset)
            out[f"{organisation} / {dataset}"] = {
                "cap": total["epsilon_total"] if total else None,
                "window": total["window"] if total else None,
                "granted": sum(
                    g.epsilon for g in active if (g.organisation, g.dataset) == (organisation, dataset)
                ),
            }
        return out

    def flags(self, caller: Caller, days: float = 30) -> list[dict[str, Any]]:
        caller.require("auditor")
        span = validate.number(days, "days", low=0.0, high=36500.0)
        since = self.ledger.now() - timedelta(days=30.0 if span is None else span)
        records = self.ledger.records(kind="dp-query", since=since)
        found = suspicious.flags(records, self.ledger.list_grants(), profiles=self.profiles)
        return [f.as_dict() for f in found]

    def package(self, caller: Caller, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        caller.require("auditor")
        start, end = validate.span(validate.moment(since, "since"), validate.moment(until, "until"))
        return auditpkg.package(self.ledger, start, end)
