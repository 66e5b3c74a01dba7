"""The governance half of the ledger: applications, decisions, expiries and export requests.

:class:`Workflow` is a base of :class:`lab.ledger.Ledger`. Each method is one transaction
that changes its rows *and* appends the audit record(s) saying so: an approval creates
the grant, writes the ``grant`` record, marks the application and writes the
``decision`` record, all or nothing. The rules themselves are in
:mod:`lab.ledger.applications` and :mod:`lab.ledger.exports`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from lab.ledger import applications as apps
from lab.ledger import grants, totals
from lab.ledger.applications import Application
from lab.ledger.db import DELTA_SCALE, EPS_SCALE, lock_scope, read_tx, to_units
from lab.ledger.db import grants as grants_table
from lab.ledger.export_flow import ExportFlow
from lab.ledger.models import Grant, Kind

EXPIRE = "expire"


class Workflow(ExportFlow):
    """Applications → decisions → grants, expiries; the export airlock's requests (:class:`ExportFlow`)."""

    # --- applications -----------------------------------------------------------------

    def apply(
        self,
        *,
        organisation: str,
        dataset: str,
        purpose: str,
        modes: Iterable[str],
        epsilon: float,
        delta: float,
        term_days: float,
        applicant: str,
    ) -> Application:
        """Record an application and its ``application`` audit record."""
        purpose, chosen, eps, dlt, term = apps.check_request(
            purpose=purpose, modes=list(modes), epsilon=epsilon, delta=delta, term_days=term_days
        )
        with self._write() as tx:
            lock_scope(tx.conn, organisation, dataset)  # two identical submissions: one is refused
            apps.check_not_pending_twice(tx.conn, organisation, dataset, purpose)
            app = apps.insert_application(
                tx.conn,
                organisation=organisation,
                dataset=dataset,
                purpose=purpose,
                modes=chosen,
                epsilon=eps,
                delta=dlt,
                term_days=term,
                applicant=applicant,
                now=tx.at,
            )
            tx.append(
                Kind.APPLICATION,
                actor=applicant,
                organisation=app.organisation,
                dataset=app.dataset,
                details={
                    "application": app.id,
                    "purpose": app.purpose,
                    "modes": list(app.modes),
                    "epsilon": app.epsilon,
                    "delta": app.delta,
                    "term_days": app.term_days,
                },
            )
        return app

    def get_application(self, application_id: int) -> Application:
        with read_tx(self._engine) as conn:
            return apps.get_application(conn, application_id)

    def list_applications(
        self, *, organisation: str | None = None, state: str | None = None, applicant: str | None = None
    ) -> list[Application]:
        """Applications, newest first, optionally filtered."""
        with read_tx(self._engine) as conn:
            return apps.select_applications(conn, organisation=organisation, state=state, applicant=applicant)

    def approve(
        self,
        application_id: int,
        *,
        by: str,
        by_org: str | None = None,
        modes: Iterable[str] | None = None,
        epsilon: float | None = None,
        delta: float | None = None,
        term_days: float | None = None,
        note: str | None = None,
    ) -> tuple[Application, Grant]:
        """Approve (possibly with smaller terms) and create the grant, in one transaction."""
        with self._write() as tx:
            app = apps.get_application(tx.conn, application_id, lock=True)
            apps.check_decider(app, by, by_org)
            terms = apps.approved_terms(app, modes=modes, epsilon=epsilon, delta=delta, term_days=term_days)
            # The organisation's totals across its grants on the dataset, decided one at a time.
            lock_scope(tx.conn, app.organisation, app.dataset)
            totals.check_grant(
                tx.conn,
                app.organisation,
                app.dataset,
                to_units(terms.epsilon, EPS_SCALE, name="epsilon budget", round_up=False),
                to_units(terms.delta, DELTA_SCALE, name="delta budget", round_up=False),
                tx.at,
            )
            grant = grants.insert_grant(
                tx.conn,
                organisation=app.organisation,
                dataset=app.dataset,
                purpose=app.purpose,
                modes=terms.modes,
                epsilon=terms.epsilon,
                delta=terms.delta,
                expires_at=terms.expires_at(tx.at),
                approved_by=by,
                now=tx.at,
            )
            tx.append(
                Kind.GRANT,
                actor=by,
                organisation=grant.organisation,
                dataset=grant.dataset,
                details={
                    "grant": grant.id,
                    "application": app.id,
                    "purpose": grant.purpose,
                    "modes": list(grant.modes),
                    "epsilon": grant.epsilon,
                    "delta": grant.delta,
                    "expires_at": grant.expires_at.isoformat(),
                },
            )
            reason = note.strip() if note and note.strip() else None
            app = apps.mark_decided(
                tx.conn, app.id, state=apps.APPROVED, by=by, now=tx.at, reason=reason, grant_id=grant.id
            )
            reduced = {
                "epsilon": terms.epsilon < app.epsilon,
                "delta": terms.delta < app.delta,
                "term": terms.term_days < app.term_days,
                "modes": terms.modes != app.modes,
            }
            tx.append(
                Kind.DECISION,
                actor=by,
                organisation=app.organisation,
                dataset=app.dataset,
                details={
                    "application": app.id,
                    "decision": apps.APPROVED,
                    "grant": grant.id,
                    "reduced": sorted(k for k, v in reduced.items() if v),
                    "note": reason,
                },
            )
        return app, grant

    def reject(self, application_id: int, *, by: str, reason: str, by_org: str | None = None) -> Application:
        """Reject with a reason (shown to the applicant), with its ``decision`` record."""
        why = apps.check_reason(reason)
        with self._write() as tx:
            app = apps.get_application(tx.conn, application_id, lock=True)
            apps.check_decider(app, by, by_org)
            app = apps.mark_decided(tx.conn, app.id, state=apps.REJECTED, by=by, now=tx.at, reason=why)
            tx.append(
                Kind.DECISION,
                actor=by,
                organisation=app.organisation,
                dataset=app.dataset,
                details={"application": app.id, "decision": apps.REJECTED, "reason": why},
            )
        return app

    def withdraw(self, application_id: int, *, by: str, by_org: str | None) -> Application:
        """An analyst of the applying organisation withdraws a pending application (recorded)."""
        with self._write() as tx:
            app = apps.get_application(tx.conn, application_id, lock=True)
            apps.check_withdrawer(app, by_org)
            app = apps.mark_decided(
                tx.conn,
                app.id,
                state=apps.WITHDRAWN,
                by=by,
                now=tx.at,
                reason="申请人已撤回 / withdrawn by the applicant",
            )
            tx.append(
                Kind.DECISION,
                actor=by,
                organisation=app.organisation,
                dataset=app.dataset,
                details={"application": app.id, "decision": apps.WITHDRAWN},
            )
        return app

    # --- expiry -----------------------------------------------------------------------

    def record_expiries(self, *, actor: str = "ledger") -> list[Grant]:
        """Write one ``expire`` record for each grant that expired since the last call."""
        g = grants_table.c

        def unnoticed(now: datetime) -> Any:
            noticed = select(apps.expiries.c.grant_id)
            return (
                select(grants_table)
                .where(g.revoked_at.is_(None), g.expires_at <= now, g.id.not_in(noticed))
                .order_by(g.expires_at)
            )

        with read_tx(self._engine) as conn:  # the common case writes nothing
            if conn.execute(unnoticed(self._now()).limit(1)).first() is None:
                return []
        expired: list[Grant] = []
        with self._write() as tx:
            rows = tx.conn.execute(unnoticed(tx.at)).mappings().all()
            for row in rows:
                grant = Grant.from_row(row)
                record = tx.append(
                    EXPIRE,
                    actor=actor,
                    organisation=grant.organisation,
                    dataset=grant.dataset,
                    details={"grant": grant.id, "expired_at": grant.expires_at.isoformat()},
                )
                tx.conn.execute(
                    insert(apps.expiries).values(grant_id=grant.id, recorded_at=tx.at, audit_seq=record.seq)
                )
                expired.append(grant)
        return expired

    def now(self) -> datetime:
        """The ledger's clock (the time its records are stamped with)."""
        return self._now()
