"""What operators, auditors and analysts do about access, independent of HTTP.

Every method takes the :class:`~lab.gateway.auth.Caller` and checks its role first, so
the bearer API, the consoles and the ``datalab`` CLI enforce the same rules:

=====================  =================================================================
analyst                apply for a dataset; see the organisation's applications, grants
                       (with expiry reminders); the exports (:mod:`lab.services.airlock`)
operator               decide applications (never their own), list and revoke grants,
                       see the catalogue with policies; check exports (the same module)
auditor                search the audit log, verify it, budget spent over time, flags of
                       suspicious patterns, audit packages (:mod:`lab.services.audit_trail`)
=====================  =================================================================

After a change of access (approval, revocation) the MinIO policies are provisioned at
once (:class:`lab.access.Provisioner`); an approval with the ``masked`` mode builds the
organisation's extract in the background (``build`` is called with the grant).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from lab import access, riskreports, suspicious, validate
from lab.airlock import Airlock
from lab.errors import AccessDenied, ConfigError, LabError, NotFound
from lab.gateway.auth import Caller
from lab.ledger import Grant, Ledger
from lab.ledger.applications import check_reason
from lab.policy import Policy
from lab.registry import listing, organisations
from lab.registry.datasets import current, raw_store
from lab.services.airlock import AirlockDesk
from lab.services.audit_trail import AuditTrail
from lab.settings import Settings
from lab.suggest import did_you_mean

Build = Callable[[Grant, str], None]


def _int(value: Any, name: str) -> int:
    return validate.ident(value, name)


def _number(body: Mapping[str, Any], name: str, high: float = 1e6) -> float | None:
    return validate.number(body.get(name), name, high=high)


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    return None if value is None else validate.text(value, name)


def _modes(value: Any) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if isinstance(value, list) and len(value) <= 10:
        return [validate.name(m, "modes") for m in value]
    raise ConfigError(
        "modes must be a list such as ['dp', 'masked'] / modes 必须是列表，例如 ['dp', 'masked']",
        reason="invalid-value",
    )


def _state(value: Any) -> str | None:
    return validate.optional(validate.name, value, "state")


def _columns(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise ConfigError(
            f"{name} must be a list of column names / {name} 必须是列名列表", reason="invalid-value"
        )
    return [validate.column(c, name) for c in value]


def _search(value: Any) -> str | None:
    return validate.optional(lambda v, n: validate.text(v, n, limit=200, lines=False), value, "q")


class Governance(AuditTrail, AirlockDesk):
    """Applications, grants, exports and the audit trail, by role."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        policies: Mapping[str, Policy],
        provisioner: access.Provisioner,
        build: Build | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.policies = policies
        self.provisioner = provisioner
        self.airlock = Airlock(settings, ledger, policies)
        self._build = build or (lambda grant, actor: None)
        # Dataset profiles for the singling-out flags (set by the gateway, which reads the data).
        self.profiles: suspicious.Profiles | None = None
        self.previews = riskreports.Previews(settings)

    # --- grants and applications ------------------------------------------------------

    def grant_view(self, grant: Grant, now: datetime) -> dict[str, Any]:
        status = self.ledger.budget(grant.id)
        return {
            "id": grant.id,
            "organisation": grant.organisation,
            "dataset": grant.dataset,
            "purpose": grant.purpose,
            "modes": list(grant.modes),
            "status": grant.status(now),
            "created_at": grant.created_at.isoformat(),
            "expires_at": grant.expires_at.isoformat(),
            "term_days": round((grant.expires_at - grant.created_at).total_seconds() / 86400, 2),
            "approved_by": grant.approved_by,
            "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
            "revoke_reason": grant.revoke_reason,
            "budget": {
                "epsilon": status.epsilon_budget,
                "delta": status.delta_budget,
                "epsilon_spent": status.epsilon_spent,
                "epsilon_remaining": status.epsilon_remaining,
                "delta_remaining": status.delta_remaining,
            },
            "reminder": access.reminder(grant, now),
        }

    def apply(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        caller.require("analyst")
        if not caller.org:
            raise AccessDenied("only analysts of an organisation can apply / 仅机构分析人员可以申请")
        dataset = validate.name(body.get("dataset"), "dataset")
        policy = self.policies.get(dataset)
        if policy is None:
            close = did_you_mean(dataset, self.policies)
            raise NotFound(
                f"unknown dataset {dataset!r};{close[0]} known: {', '.join(sorted(self.policies))} "
                f"/ 未知数据集 {dataset}，{close[1]}请从数据目录中选择",
                reason="no-such-dataset",
            )
        purpose = _text(body, "purpose")
        modes = _modes(body.get("modes")) or ["dp"]
        refused = [m for m in modes if m not in policy.release_modes]
        if refused:
            raise AccessDenied(
                f"dataset {policy.dataset!r} cannot be released as {', '.join(refused)}; "
                f"allowed: {', '.join(policy.release_modes)} / 该数据集不允许此发布方式",
                reason="mode-not-allowed",
            )
        app = self.ledger.apply(
            organisation=caller.org,
            dataset=policy.dataset,
            purpose=purpose,  # type: ignore[arg-type]  # presence checked by the ledger
            modes=modes,
            epsilon=_number(body, "epsilon") or 0.0,
            delta=_number(body, "delta", high=1.0) or 0.0,
            term_days=_number(body, "term_days", high=1e5) or 0.0,
            applicant=caller.username,
        )
        return app.as_dict()

    def applications(
        self, caller: Caller, state: str | None = None, *, outlook: bool = True
    ) -> list[dict[str, Any]]:
        """Operators see every application (``outlook``: with :meth:`outlook` for pending ones);
        analysts their organisation's."""
        if "operator" in caller.roles:
            found = [a.as_dict() for a in self.ledger.list_applications(state=_state(state))]
            return [self.outlook(a) for a in found] if outlook else found
        caller.require("analyst")
        if not caller.org:
            return []
        theirs = self.ledger.list_applications(organisation=caller.org, state=_state(state))
        return [a.as_dict() for a in theirs]

    def outlook(self, app: dict[str, Any]) -> dict[str, Any]:
        """A pending application with what approving it would bring its organisation's total to."""
        if app["state"] == "pending":
            app["organisation_budget"] = self.ledger.budget_outlook(
                app["organisation"], app["dataset"], app["epsilon"], app["delta"]
            )
            app["risk"] = self.risk_outlook(app["organisation"], app["dataset"], app["purpose"], app["modes"])
        return app

    def application(self, caller: Caller, application_id: Any) -> dict[str, Any]:
        """One application for the operator's detail page: what was asked and (once approved)
        what was granted, the organisation's cumulative budget on the dataset across its grants
        (spent and limits, and the total the dataset caps, if any), and the extract's risk."""
        caller.require("operator")
        app = self.outlook(self.ledger.get_application(_int(application_id, "application id")).as_dict())
        now = self.ledger.now()
        theirs = self.ledger.list_grants(organisation=app["organisation"], dataset=app["dataset"])
        views = [self.grant_view(g, now) for g in reversed(theirs)]
        app["granted"] = next((v for v in views if v["id"] == app.get("grant_id")), None)
        active = [v for v in views if v["status"] == "active"]
        app["cumulative"] = {
            "grants": views,
            "active": len(active),
            "epsilon_limit": sum(v["budget"]["epsilon"] for v in active),
            "epsilon_spent": sum(v["budget"]["epsilon_spent"] for v in views),
            "epsilon_spent_active": sum(v["budget"]["epsilon_spent"] for v in active),
            "total": self.ledger.organisation_spending(app["organisation"], app["dataset"]),
        }
        if "risk" not in app and "masked" in app["modes"]:  # decided: the latest published extract
            try:
                published = riskreports.latest(self.settings, app["organisation"], app["dataset"])
            except LabError as exc:
                published = {"error": exc.message}
            app["risk"] = {"preview": None, "published": published}
        return app

    def risk_outlook(
        self, organisation: str, dataset: str, purpose: str | None, modes: list[str]
    ) -> dict[str, Any] | None:
        """For an application with the masked mode: the dry-run risk report of the extract an
        approval would build (``state``: ready, computing or failed) and the organisation's
        latest published report of the dataset (None: not yet built). None for DP only."""
        policy = self.policies.get(dataset)
        if policy is None or "masked" not in modes:
            return None
        try:
            published = riskreports.latest(self.settings, organisation, dataset)
        except LabError as exc:
            published = {"error": exc.message}
        return {"preview": self.previews.get(policy, organisation, purpose), "published": published}

    def risk_reports(self, caller: Caller, limit: int = 100) -> list[dict[str, Any]]:
        """Risk reports of the published masked extracts, newest first (auditors and operators)."""
        caller.require("auditor", "operator")
        orgs = sorted(organisations.statuses(self.settings))
        return riskreports.published(self.settings, orgs, sorted(self.policies), limit=limit)

    def approve(self, caller: Caller, application_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        caller.require("operator")
        application_id = _int(application_id, "application id")
        # The form is checked first: a bad value is named whatever the application.
        modes, note = _modes(body.get("modes")), _text(body, "note")
        epsilon, delta = _number(body, "epsilon"), _number(body, "delta", high=1.0)
        term_days = _number(body, "term_days", high=1e5)
        # Nothing is granted to a suspended or removed organisation (lab.registry.organisations).
        organisations.Registry(self.ledger).require_active(
            self.ledger.get_application(application_id).organisation
        )
        app, grant = self.ledger.approve(
            application_id,
            by=caller.username,
            by_org=caller.org,
            modes=modes,
            epsilon=epsilon,
            delta=delta,
            term_days=term_days,
            note=note,
        )
        self.provisioner.provision()
        if "masked" in grant.modes:
            self._build(grant, caller.username)
        return {"application": app.as_dict(), "grant": self.grant_view(grant, self.ledger.now())}

    def withdraw(self, caller: Caller, application_id: Any) -> dict[str, Any]:
        """An analyst withdraws their organisation's pending application."""
        caller.require("analyst")
        app = self.ledger.withdraw(
            _int(application_id, "application id"), by=caller.username, by_org=caller.org
        )
        return app.as_dict()

    def reject(self, caller: Caller, application_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        caller.require("operator")
        app = self.ledger.reject(
            _int(application_id, "application id"),
            by=caller.username,
            by_org=caller.org,
            reason=_text(body, "reason"),  # type: ignore[arg-type]  # presence checked by the ledger
        )
        return app.as_dict()

    def grants(self, caller: Caller, *, active: bool = False) -> list[dict[str, Any]]:
        """Operators see every grant; analysts their organisation's."""
        now = self.ledger.now()
        if "operator" in caller.roles:
            found = self.ledger.list_grants(active=active)
        else:
            caller.require("analyst")
            found = self.ledger.list_grants(organisation=caller.org, active=active) if caller.org else []
        return [self.grant_view(g, now) for g in reversed(found)]

    def grant(self, caller: Caller, grant_id: Any) -> dict[str, Any]:
        """One grant as the operator's lists show it."""
        caller.require("operator")
        return self.grant_view(self.ledger.get_grant(_int(grant_id, "grant id")), self.ledger.now())

    def application_of(self, caller: Caller, application_id: Any) -> dict[str, Any]:
        """One application's record (no outlook): what the confirmation of a rejection names."""
        caller.require("operator")
        return self.ledger.get_application(_int(application_id, "application id")).as_dict()

    def revoke(self, caller: Caller, grant_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        caller.require("operator")
        reason = check_reason(_text(body, "reason"))
        grant = self.ledger.revoke(_int(grant_id, "grant id"), by=caller.username, reason=reason)
        self.provisioner.provision()
        return self.grant_view(grant, self.ledger.now())

    def catalogue(self, caller: Caller, search: str | None = None) -> list[dict[str, Any]]:
        """The catalogue (数据目录) as ``caller`` may see it, filtered by ``search``: every role
        browses it; only operators and auditors see which organisations hold grants."""
        caller.require("operator", "auditor", "analyst")
        search = _search(search)
        store = raw_store(self.settings)
        held = listing.holders(self.ledger.list_grants(active=True))
        entries = listing.search(listing.catalogue(current(self.policies), store, held), search)
        return [listing.view(e, roles=caller.roles, org=caller.org) for e in entries]

    @staticmethod
    def search_catalogue(entries: list[dict[str, Any]], search: str | None) -> list[dict[str, Any]]:
        """``entries`` (from ``catalogue``) filtered by ``search``, checked as ``catalogue`` does."""
        return listing.search(entries, _search(search))

    def catalogue_entry(self, caller: Caller, name: Any) -> dict[str, Any]:
        dataset = validate.name(name, "dataset")
        return listing.find(self.catalogue(caller), dataset)

    # --- events from outside ----------------------------------------------------------

    def record_login(self, caller: Caller, *, via: str) -> None:
        self.ledger.append(
            "login",
            actor=caller.username,
            organisation=caller.org,
            details={"via": via, "roles": sorted(caller.roles)},
        )
