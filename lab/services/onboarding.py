"""Adding, suspending and removing organisations: the registry and everything that follows it.

One path for every caller (``datalab org …``, the operator console, ``datalab up`` for the
demo organisations). Each operation writes the registry first (one transaction with its
audit record, :mod:`lab.registry.organisations`), then brings the services in line:

- **add**: the Keycloak group with its attributes (``lab.iam.apply_organisation``), the
  MinIO extracts and members policies (``lab.storage.organisation_policies``) and the
  organisation key (``org-key-<org>`` in the state directory, read by ``lab.extracts.org_key``).
  Adding again with the same id and credit code re-applies them (a failed add is repaired so).
- **suspend**: the registry revokes every grant in the suspending transaction; then the group
  loses its ``minio_policy`` attribute (new tokens carry no policy), both MinIO policies are
  rewritten to admit nothing (credentials already issued lose access on their next request),
  every member's Keycloak sessions are ended (refresh tokens die) and their notebook servers
  stopped through the hub's API (``lab.hub.servers``). The gateway's
  directory reads the registry (``Statuses``, ≤ 10 s) and Keycloak (≤ 20 s), so the
  gateway refuses the organisation's analysts within 30 s; the sweepers keep it so.
- **remove**: only after suspension, or for an organisation without live grants.
- **add-user**: the account must exist in Keycloak and belong to no other organisation;
  the membership is recorded (citing its audit record), then the account joins the group.

Only an enabled Keycloak account holding the ``operator`` realm role may do any of this
(:func:`require_operator`); the CLI's logged-in name (``lab.cli.login``) is checked again, not trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.errors import AccessDenied, ConfigError, LabError, NotFound, StackError
from lab.ledger import Grant
from lab.registry.organisations import Membership, Organisation, OrgSpec, Registry, check_spec, org_key_secret
from lab.settings import Settings

log = logging.getLogger(__name__)
OPERATOR = "operator"


def _group(settings: Settings, org: Organisation) -> list[str]:
    from lab import iam

    return iam.apply_organisation(settings, org)


def _policies(settings: Settings, org: Organisation) -> list[str]:
    from lab import storage

    return storage.organisation_policies(settings, org.id, active=org.active)


def _key(settings: Settings, org: Organisation) -> list[str]:
    org_key_secret(settings, org.id)  # generated on first use, kept after removal
    return []


def _join(settings: Settings, org_id: str, username: str) -> bool:
    from lab import iam

    return iam.add_member(settings, org_id, username)


def _logout(settings: Settings, org_id: str) -> list[str]:
    from lab import iam

    return iam.end_sessions(settings, org_id)


def _stop(settings: Settings, usernames: list[str]) -> list[str]:
    from lab.hub.servers import stop_servers

    return stop_servers(settings, usernames)


@dataclass
class Effects:
    """The services outside the ledger that follow the registry (replaceable in tests)."""

    group: Callable[[Settings, Organisation], list[str]] = _group
    policies: Callable[[Settings, Organisation], list[str]] = _policies
    key: Callable[[Settings, Organisation], list[str]] = _key
    join: Callable[[Settings, str, str], bool] = _join
    logout: Callable[[Settings, str], list[str]] = _logout  # the members logged out
    stop: Callable[[Settings, list[str]], list[str]] = _stop  # their notebook servers stopped


@dataclass
class Outcome:
    organisation: Organisation
    changes: list[str] = field(default_factory=list)
    revoked: list[Grant] = field(default_factory=list)
    sessions_ended: int = 0
    servers_stopped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "organisation": self.organisation.as_dict(),
            "changes": self.changes,
            "grants_revoked": [g.id for g in self.revoked],
            "sessions_ended": self.sessions_ended,
            "servers_stopped": self.servers_stopped,
        }


def require_operator(directory: Any, name: str) -> str:
    """``name`` if Keycloak says it is an enabled operator now; AccessDenied otherwise."""
    from lab import validate

    name = validate.username(name, "--as")
    person = directory.person(name)
    if person is None or not person.enabled or OPERATOR not in person.roles:
        raise AccessDenied(
            f"{name!r} is not an enabled operator in Keycloak; log in with your own operator account "
            f"(datalab login; an administrator gives it the operator role in Keycloak) "
            f"/ {name} 不是统一身份认证中的有效运营人员，请用您本人的运营人员账号登录"
            f"（由管理员在统一身份认证中授予运营人员角色）",
            reason="not-operator",
        )
    return str(person.username)


class Onboarding:
    """The organisation use cases over one registry, for an operator checked in ``directory``."""

    def __init__(
        self, settings: Settings, registry: Registry, directory: Any, *, effects: Effects | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.directory = directory
        self.effects = effects or Effects()

    def _apply(self, org: Organisation, what: str) -> list[str]:
        """Bring Keycloak, MinIO and the key in line with ``org``; StackError naming the step."""
        changes: list[str] = []
        for step, effect in (("Keycloak", self.effects.group), ("MinIO", self.effects.policies)):
            try:
                changes += effect(self.settings, org)
            except LabError:
                raise
            except Exception as exc:
                log.error("%s of organisation %s: %s failed: %s", what, org.id, step, type(exc).__name__)
                raise StackError(
                    f"organisation {org.id!r} is {org.status} in the registry, but {step} could not be "
                    f"updated ({type(exc).__name__}); start the lab (`datalab up`) and run the same "
                    f"command again / 机构已登记，但 {step} 未能更新，请启动实验室后重试",
                    reason="organisation-sync",
                ) from None
        if org.active:
            changes += self.effects.key(self.settings, org)
        return changes

    def add(self, actor: str, spec: OrgSpec) -> Outcome:
        by = require_operator(self.directory, actor)
        spec = check_spec(spec)
        try:
            org = self.registry.add(spec, by=by)
        except ConfigError as exc:
            if exc.reason != "organisation-exists":
                raise
            known = self.registry.get(spec.id) if spec.id in self.registry.known_ids() else None
            if known is None or not known.active or known.credit_code != spec.credit_code:
                raise
            return Outcome(known, ["already registered; re-applied"] + self._apply(known, "re-add"))
        return Outcome(org, [f"registered organisation {org.id}"] + self._apply(org, "add"))

    def suspend(self, actor: str, org_id: str, reason: str) -> Outcome:
        by = require_operator(self.directory, actor)
        org, revoked = self.registry.suspend(org_id, by=by, reason=reason)
        return self._withdraw(org, revoked, "suspend")

    def remove(self, actor: str, org_id: str, reason: str) -> Outcome:
        by = require_operator(self.directory, actor)
        org = self.registry.remove(org_id, by=by, reason=reason)
        return self._withdraw(org, [], "remove")

    def _withdraw(self, org: Organisation, revoked: list[Grant], what: str) -> Outcome:
        outcome = Outcome(org, self._apply(org, what), revoked)
        members: list[str] = []
        try:
            members = self.effects.logout(self.settings, org.id)
            outcome.sessions_ended = len(members)
        except Exception as exc:  # the policies are already closed; sessions die with their tokens
            log.error("%s of %s: ending Keycloak sessions failed: %s", what, org.id, type(exc).__name__)
            outcome.changes.append("Keycloak sessions not ended (tokens expire within 5 minutes)")
        try:
            outcome.servers_stopped = len(self.effects.stop(self.settings, members))
        except Exception as exc:  # their data access is already closed; the idle culler stops them later
            log.error("%s of %s: stopping notebook servers failed: %s", what, org.id, type(exc).__name__)
            outcome.changes.append(
                "notebook servers not stopped (the hub did not answer): stop them on the hub's admin page "
                "/ 未能停止笔记本服务，请在 JupyterHub 管理页面停止"
            )
        forget = getattr(self.directory, "forget", None)
        if forget is not None:
            forget()
        return outcome

    def add_user(self, actor: str, org_id: str, username: str) -> tuple[Membership, bool]:
        """Record and apply ``username``'s membership; True if Keycloak's group changed."""
        by = require_operator(self.directory, actor)
        org = self.registry.require_active(org_id)
        person = self.directory.person(username)
        if person is None:
            raise NotFound(
                f"Keycloak has no account {username!r}; create it first / 统一身份认证中没有账号 {username}",
                reason="no-such-user",
            )
        others = set(person.orgs) - {org.id}
        if others:
            raise ConfigError(
                f"{person.username!r} already belongs to {', '.join(sorted(others))}; an analyst belongs "
                f"to one organisation / 该账号已属于其他机构",
                reason="member-elsewhere",
            )
        membership = self.registry.add_member(org.id, person.username, by=by)
        joined = self.effects.join(self.settings, org.id, person.username)
        forget = getattr(self.directory, "forget", None)
        if forget is not None:
            forget()
        return membership, joined


def describe(registry: Registry, org_id: str) -> dict[str, Any]:
    """The organisation, its members and its grants, each with the action it came from.

    Creation and memberships cite their audit record (``provenance``); a grant cites the
    application whose approval created it (``application``; None for a grant made
    straight in the ledger, e.g. by a test) and the approving operator.
    """
    org = registry.get(org_id)
    book = registry.ledger
    origin = {a.grant_id: a for a in book.list_applications(organisation=org.id) if a.grant_id is not None}
    now = book.now()
    grants = []
    for grant in book.list_grants(organisation=org.id):
        app = origin.get(grant.id)
        grants.append(
            {
                "id": grant.id,
                "dataset": grant.dataset,
                "modes": list(grant.modes),
                "status": grant.status(now),
                "expires_at": grant.expires_at.isoformat(),
                "provenance": {
                    "application": app.id if app else None,
                    "applicant": app.applicant if app else None,
                    "approved_by": grant.approved_by,
                },
            }
        )
    members = [
        {
            "username": m.username,
            "added_by": m.added_by,
            "added_at": m.added_at.isoformat(),
            "provenance": m.provenance,
        }
        for m in registry.members(org.id)
    ]
    return {**org.as_dict(), "members": members, "grants": grants}
