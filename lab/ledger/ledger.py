"""The :class:`Ledger`: grants, budget reservations and the audit log behind one object.

The rule for a failure after a reservation
------------------------------------------
A reservation ends in exactly one of these ways, each written to the audit log (record
of the reservation's kind, ``details.outcome`` naming the way) in the same transaction:

- the result was released to the caller: :meth:`Ledger.commit`, budget **spent**
  (``released``);
- the operation failed before any row was read (invalid query, unknown column, data
  unreadable): :meth:`Ledger.release`, budget **refunded** (``failed-before-noise``, with
  ``refunded: true`` and ``data_read: false`` in the record);
- the operation failed after noise was drawn (timeout, lost connection, error while
  serialising the result): :meth:`Ledger.charge_failure`, budget **spent**
  (``failed-after-noise``);
- the reservation was never settled (the process died): :meth:`Ledger.settle_abandoned`,
  budget **spent** (``abandoned``), called by the gateway's reservation sweeper after a
  timeout; until then it counts as outstanding.

Once a mechanism has touched the data the privacy loss has happened, whether or not the
caller saw the value (it may sit in a log, a retry may repeat it); so only a failure
before any computation on the data is refunded. When in doubt the budget is spent: a
failure is never silently free. :meth:`Ledger.spend` applies the rule for you.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from lab.errors import AccessDenied, BudgetExhausted, ConfigError, LabError
from lab.ledger import budget, grants, totals
from lab.ledger.chain import lock_head
from lab.ledger.db import DELTA_SCALE, EPS_SCALE, lock_scope, read_tx, to_units
from lab.ledger.models import (
    ABANDONED,
    FAILED_AFTER_NOISE,
    FAILED_BEFORE_NOISE,
    REFUNDED,
    REFUSED,
    RELEASED,
    SPENT,
    BudgetStatus,
    Grant,
    Kind,
    Reservation,
)
from lab.ledger.spend import Spend
from lab.ledger.workflow import Workflow


class Ledger(Workflow):
    """Grants, budgets and the hash-chained audit log on SQLite or PostgreSQL.

    See :class:`~lab.ledger.base.LedgerCore` for construction and the audit-log methods, and
    :class:`~lab.ledger.workflow.Workflow` for applications, expiries and export requests.
    """

    # --- grants -----------------------------------------------------------------------

    def create_grant(
        self,
        *,
        organisation: str,
        dataset: str,
        purpose: str,
        modes: Iterable[str],
        epsilon: float,
        delta: float,
        expires_at: datetime,
        approved_by: str,
    ) -> Grant:
        """Record a grant and its ``grant`` audit record in one transaction.

        Refused (BudgetExhausted, with the numbers) if the grant would take the organisation
        past the dataset's caps (:mod:`lab.ledger.totals`).
        """
        eps_units = to_units(epsilon, EPS_SCALE, name="epsilon budget", round_up=False)
        delta_units = to_units(delta, DELTA_SCALE, name="delta budget", round_up=False)
        with self._write() as tx:
            lock_scope(tx.conn, organisation, dataset)
            totals.check_grant(tx.conn, organisation, dataset, eps_units, delta_units, tx.at)
            grant = grants.insert_grant(
                tx.conn,
                organisation=organisation,
                dataset=dataset,
                purpose=purpose,
                modes=modes,
                epsilon=epsilon,
                delta=delta,
                expires_at=expires_at,
                approved_by=approved_by,
                now=tx.at,
            )
            tx.append(
                Kind.GRANT,
                actor=grant.approved_by,
                organisation=grant.organisation,
                dataset=grant.dataset,
                details={
                    "grant": grant.id,
                    "purpose": grant.purpose,
                    "modes": list(grant.modes),
                    "epsilon": grant.epsilon,
                    "delta": grant.delta,
                    "expires_at": grant.expires_at.isoformat(),
                },
            )
        return grant

    def get_grant(self, grant_id: int) -> Grant:
        """The grant with this id; NotFound otherwise."""
        with read_tx(self._engine) as conn:
            return grants.get_grant(conn, grant_id)

    def list_grants(
        self, *, organisation: str | None = None, dataset: str | None = None, active: bool = False
    ) -> list[Grant]:
        """Grants, optionally of one organisation or dataset, optionally only active ones."""
        with read_tx(self._engine) as conn:
            return grants.select_grants(
                conn, organisation=organisation, dataset=dataset, active_at=self._now() if active else None
            )

    def expiring_grants(self, within: timedelta) -> list[Grant]:
        """Active grants that expire within ``within`` from now (for reminders)."""
        now = self._now()
        with read_tx(self._engine) as conn:
            return grants.select_expiring(conn, now=now, before=now + within)

    def revoke(self, grant_id: int, *, by: str, reason: str) -> Grant:
        """Revoke a grant now, with a ``revoke`` audit record; revoking twice changes nothing."""
        with self._write() as tx:
            grant = grants.get_grant(tx.conn, grant_id, lock=True)
            if grant.revoked_at is not None:
                return grant
            grant = grants.mark_revoked(tx.conn, grant_id, by=by, reason=reason, now=tx.at)
            tx.append(
                Kind.REVOKE,
                actor=by,
                organisation=grant.organisation,
                dataset=grant.dataset,
                details={"grant": grant.id, "reason": grant.revoke_reason},
            )
        return grant

    def active_grant(
        self,
        organisation: str,
        dataset: str,
        *,
        mode: str | None = None,
        actor: str | None = None,
        kind: str = Kind.DP_QUERY,
    ) -> Grant:
        """The active grant of ``dataset`` to ``organisation`` (allowing ``mode``).

        Raises AccessDenied naming the reason: no grant, expired on DATE, revoked, mode not
        granted. If ``actor`` is given, a refusal is also written to the audit log.
        """
        try:
            with read_tx(self._engine) as conn:
                return grants.find_active(conn, organisation, dataset, now=self._now(), mode=mode)
        except AccessDenied as exc:
            if actor is not None:
                self.append(
                    kind,
                    actor=actor,
                    organisation=organisation,
                    dataset=dataset,
                    details={"outcome": REFUSED, "reason": exc.reason, "mode": mode},
                )
            raise

    def check_grant(self, grant_id: int, *, mode: str | None = None) -> Grant:
        """The grant if it is active now (and allows ``mode``); AccessDenied saying why not."""
        return grants.ensure_active(self.get_grant(grant_id), self._now(), mode=mode)

    # --- budget -----------------------------------------------------------------------

    def budget(self, grant_id: int) -> BudgetStatus:
        """Budget, spent, outstanding and remaining ε and δ of one grant."""
        with read_tx(self._engine) as conn:
            grant = grants.get_grant(conn, grant_id)
            eps_budget, delta_budget = budget.budget_units(conn, grant_id)
            return budget.status(grant, budget.usage(conn, grant_id), eps_budget, delta_budget)

    def reserve(
        self,
        grant_id: int,
        epsilon: float,
        delta: float = 0.0,
        *,
        actor: str,
        kind: str = Kind.DP_QUERY,
        query: str | None = None,
    ) -> Reservation:
        """Set budget aside for one operation, atomically; settle it with commit/release.

        Raises AccessDenied (grant not active or without ``dp``) or BudgetExhausted (with
        what remains); a refusal is written to the audit log. ``query`` is the canonical
        query text, copied into the settlement's audit record.
        """
        eps_units = to_units(epsilon, EPS_SCALE, name="epsilon", round_up=True)
        delta_units = to_units(delta, DELTA_SCALE, name="delta", round_up=True)
        if eps_units == 0 and delta_units == 0:
            raise ConfigError(
                "a reservation must cost some ε or δ / 预算预留必须消耗一定的 ε 或 δ", reason="invalid-value"
            )
        refusal: LabError | None = None
        reservation: Reservation | None = None
        with self._write() as tx:
            scope = grants.get_grant(tx.conn, grant_id)  # organisation and dataset never change
            lock_scope(tx.conn, scope.organisation, scope.dataset)
            grant = grants.get_grant(tx.conn, grant_id, lock=True)
            try:
                grants.ensure_active(grant, tx.at, mode="dp")
                budget.check_affordable(tx.conn, grant, eps_units, delta_units)
                totals.check_spend(tx.conn, grant.organisation, grant.dataset, eps_units, delta_units, tx.at)
            except (AccessDenied, BudgetExhausted) as exc:
                refusal = exc
                tx.append(
                    kind,
                    actor=actor,
                    organisation=grant.organisation,
                    dataset=grant.dataset,
                    details={
                        "outcome": REFUSED,
                        "reason": exc.reason,
                        "grant": grant.id,
                        "query": query,
                        "epsilon": epsilon,
                        "delta": delta,
                    },
                )
            else:
                reservation = budget.insert_reservation(
                    tx.conn,
                    grant,
                    eps_units=eps_units,
                    delta_units=delta_units,
                    actor=actor,
                    kind=kind,
                    query=query,
                    now=tx.at,
                )
        if refusal is not None:
            raise refusal
        assert reservation is not None
        return reservation

    def commit(
        self,
        reservation: Reservation | int,
        *,
        result_digest: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Spend the reservation and write its audit record in one transaction.

        When this returns, the record is durable and the result may be released. A retry
        of a commit that already succeeded returns the reservation unchanged.
        """
        return self._settle(reservation, SPENT, RELEASED, {"result_digest": result_digest, **(details or {})})

    def release(
        self, reservation: Reservation | int, *, reason: str, details: Mapping[str, Any] | None = None
    ) -> Reservation:
        """Refund the reservation: the operation failed before any value was computed from the data."""
        return self._settle(reservation, REFUNDED, FAILED_BEFORE_NOISE, {"reason": reason, **(details or {})})

    def charge_failure(
        self, reservation: Reservation | int, *, reason: str, details: Mapping[str, Any] | None = None
    ) -> Reservation:
        """Spend the reservation of an operation that failed after noise was drawn."""
        return self._settle(reservation, SPENT, FAILED_AFTER_NOISE, {"reason": reason, **(details or {})})

    def settle_abandoned(self, older_than: timedelta, *, actor: str = "ledger") -> list[Reservation]:
        """Charge every reservation left outstanding for longer than ``older_than``.

        Each gets its audit record (``outcome: abandoned``, who settled it, how long it was
        left). One already settled meanwhile (the query finished after all) is skipped.
        """
        now = self._now()
        with read_tx(self._engine) as conn:
            ids = budget.stale_ids(conn, created_before=now - older_than)
        settled = []
        for rid in ids:
            try:
                result = self._settle(
                    rid, SPENT, ABANDONED, {"settled_by": actor, "timeout_s": older_than.total_seconds()}
                )
            except LabError as exc:
                if exc.reason != "already-settled":
                    raise
                continue
            if result.outcome == ABANDONED:
                settled.append(result)
        return settled

    # --- totals across grants ---------------------------------------------------------

    def set_budget_limits(self, dataset: str, limits: Mapping[str, totals.Limits], *, actor: str) -> bool:
        """Store the dataset's caps (``*`` → default, else per organisation); True if they changed.

        A change is written to the audit log (``budget-limits``) in the same transaction.
        """
        wanted = dict(limits)
        with read_tx(self._engine) as conn:
            if totals.all_limits(conn, dataset) == wanted:
                return False
        with self._write() as tx:
            # Two gateway replicas start together and both sync the policies' caps: the audit
            # head's lock (taken first, as every append takes it last) orders them, and the
            # second finds the caps already stored.
            lock_head(tx.conn)
            if totals.all_limits(tx.conn, dataset) == wanted:
                return False
            totals.replace_limits(tx.conn, dataset, wanted, tx.at)
            tx.append(
                "budget-limits",
                actor=actor,
                dataset=dataset,
                details={"limits": {org: lim.as_dict() for org, lim in sorted(wanted.items())}},
            )
        return True

    def set_agreement(
        self,
        organisation: str,
        dataset: str,
        *,
        epsilon: float | None,
        delta: float | None,
        window_days: float | None,
        grant_epsilon: float | None = None,
        grant_delta: float | None = None,
        by: str,
        reason: str,
    ) -> dict[str, Any]:
        """Record an organisation's own total on a dataset (it replaces the policy's caps for it).

        ``None`` means no cap (ε, δ, per grant) or a lifetime total (``window_days``). Written
        with its ``budget-agreement`` audit record in one transaction; decided under the
        scope lock, so no approval or query of the organisation on the dataset runs meanwhile.
        """

        def units(value: float | None, scale: int, name: str) -> int | None:
            return None if value is None else to_units(value, scale, name=name, round_up=False)

        if window_days is not None and not 0 < window_days < 1e6:
            raise ConfigError(
                f"window_days must be a number of days in (0, 1e6), got {window_days!r} / 窗口天数须大于 0",
                reason="invalid-value",
            )
        limits = totals.Limits(
            epsilon_units=units(epsilon, EPS_SCALE, "epsilon"),
            delta_units=units(delta, DELTA_SCALE, "delta"),
            window_seconds=None if window_days is None else round(window_days * 86400),
            grant_epsilon_units=units(grant_epsilon, EPS_SCALE, "per-grant epsilon"),
            grant_delta_units=units(grant_delta, DELTA_SCALE, "per-grant delta"),
        )
        with self._write() as tx:
            lock_scope(tx.conn, organisation, dataset)
            totals.put_agreement(tx.conn, organisation, dataset, limits, by=by, reason=reason, now=tx.at)
            shown = {k: v for k, v in limits.as_dict().items() if k != "source"}
            tx.append(
                "budget-agreement",
                actor=by,
                organisation=organisation,
                dataset=dataset,
                details={"action": "set", "limits": shown, "reason": reason},
            )
        return {"organisation": organisation, "dataset": dataset, **shown, "set_by": by, "reason": reason}

    def remove_agreement(self, organisation: str, dataset: str, *, by: str, reason: str) -> bool:
        """Remove an agreement (the policy's caps apply again); True if there was one, audited."""
        with self._write() as tx:
            lock_scope(tx.conn, organisation, dataset)
            if not totals.drop_agreement(tx.conn, organisation, dataset):
                return False
            tx.append(
                "budget-agreement",
                actor=by,
                organisation=organisation,
                dataset=dataset,
                details={"action": "remove", "reason": reason},
            )
        return True

    def agreements(self) -> list[dict[str, Any]]:
        """The agreements operators recorded (organisation, dataset, caps, who, why, when)."""
        with read_tx(self._engine) as conn:
            return totals.agreements(conn)

    def organisation_spending(self, organisation: str, dataset: str) -> dict[str, Any] | None:
        """The organisation's spending on the dataset in the window, its total and what is left."""
        with read_tx(self._engine) as conn:
            return totals.spending(conn, organisation, dataset, self._now())

    def budget_outlook(
        self, organisation: str, dataset: str, epsilon: float = 0.0, delta: float = 0.0
    ) -> dict[str, Any] | None:
        """What granting (ε, δ) would bring the organisation's total on the dataset to.

        None when the dataset has no caps. ``fits`` says whether an approval would pass;
        ``problems`` says why not (en, zh); ``line`` is one sentence for the operator.
        """
        eps_units = to_units(epsilon, EPS_SCALE, name="epsilon", round_up=False)
        delta_units = to_units(delta, DELTA_SCALE, name="delta", round_up=False)
        with read_tx(self._engine) as conn:
            return totals.preview(conn, organisation, dataset, eps_units, delta_units, self._now())

    @contextmanager
    def spend(
        self,
        grant_id: int,
        epsilon: float,
        delta: float = 0.0,
        *,
        actor: str,
        kind: str = Kind.DP_QUERY,
        query: str | None = None,
    ) -> Iterator[Spend]:
        """Reserve, run the block, then settle by the rule in this module's docstring.

        Inside the block call ``spend.reading_data()`` just before the first row is read
        (or ``spend.noise_drawn()`` just before the mechanism runs), and
        ``spend.result(digest, ...)`` once the value exists. Normal exit commits (the
        audit record is durable before the ``with`` statement ends); an exception
        refunds if no noise was drawn and charges otherwise, then propagates.
        """
        reservation = self.reserve(grant_id, epsilon, delta, actor=actor, kind=kind, query=query)
        handle = Spend(reservation)
        try:
            yield handle
        except BaseException as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            if handle.drawn:
                handle.reservation = self.charge_failure(reservation, reason=reason, details=handle.details)
            else:
                refund = {**handle.details, "data_read": False, "refunded": True}
                handle.reservation = self.release(reservation, reason=reason, details=refund)
            raise
        handle.reservation = self.commit(reservation, result_digest=handle.digest, details=handle.details)

    def _settle(
        self, reservation: Reservation | int, state: str, outcome: str, extra: Mapping[str, Any]
    ) -> Reservation:
        reservation_id = reservation.id if isinstance(reservation, Reservation) else reservation
        with self._write() as tx:
            current, pending = budget.lock_for_settlement(tx.conn, reservation_id, state=state)
            if not pending:
                return current
            details = {
                **{k: v for k, v in extra.items() if v is not None},
                "outcome": outcome,
                "reservation": current.id,
                "grant": current.grant_id,
                "query": current.query,
                "epsilon": current.epsilon,
                "delta": current.delta,
            }
            record = tx.append(
                current.kind,
                actor=current.actor,
                organisation=current.organisation,
                dataset=current.dataset,
                details=details,
            )
            return budget.mark_settled(
                tx.conn, current.id, state=state, outcome=outcome, now=tx.at, audit_seq=record.seq
            )
