"""Who may use the notebooks: the hub's login through Keycloak.

``LabAuthenticator`` is oauthenticator's ``GenericOAuthenticator`` with the lab's rule:
analysts of an approved organisation may log in; operators may too; everyone else
(auditors, analysts of an unapproved or no organisation) is refused with a page that
says why and what to do.

Nobody is a hub admin. Holders of the operator realm role are put in the hub group
:data:`OPERATOR_GROUP` at every login (hub groups are managed by this authenticator, so
nobody can join one through the hub's API), and ``lab.hub.config`` gives that group
:data:`OPERATOR_ROLE`: the admin page, listing people and servers, stopping servers, and
nothing else — no ``tokens`` (minting tokens for others), no ``access:servers`` (opening
someone's notebook or kernel), no ``admin:users`` or ``admin:groups``.

(JupyterHub's ``manage_roles`` would do the same, but 6.1.1 fails to restart once a user
holds an authenticator-managed role unless ``reset_managed_roles_on_startup`` is on:
``KeyError: 'users'`` in ``init_role_assignment``.)
"""

from __future__ import annotations

from typing import Any

from jupyterhub.utils import subdomain_hook_idna
from oauthenticator.generic import GenericOAuthenticator
from traitlets import Any as AnyTrait
from traitlets import Set, Unicode

REFUSED = (
    "Only analysts of an approved organisation (and bureau operators) can open notebooks. "
    "Your account is not an analyst of an approved organisation: ask your organisation to apply "
    "to the data bureau, or use the operator and auditor consoles. / "
    "仅已获批机构的分析人员（以及数据局运营人员）可以使用笔记本。您的账号不属于已获批机构的分析人员："
    "请由所在机构向数据局提出申请，或使用运营/审计控制台。"
)


OPERATOR_GROUP = "lab-operators"
OPERATOR_ROLE = {
    "name": "lab-operator",
    "description": "Bureau operators: see people and servers, stop servers; never act as them",
    "scopes": ["admin-ui", "list:users", "read:users", "read:servers", "delete:servers"],
    "groups": [OPERATOR_GROUP],
}


def subdomain_hook(name: str, domain: str, kind: str) -> str:
    """``JupyterHub.subdomain_hook``: each user on a host of their own (``<name>.<domain>``,
    JupyterHub's IDNA rule); services on the hub's host, so the consoles' origin is the hub's
    and no user's. Here, beside the authenticator, because both deployments load this module
    (one machine through ``lab.hub.config``, Kubernetes through the chart's ``hub.extraConfig``)."""
    if kind == "service":
        return domain
    return str(subdomain_hook_idna(name, domain, kind))


class LabAuthenticator(GenericOAuthenticator):
    approved_organisations = Set(
        Unicode(),
        config=True,
        help="Organisations (the token's ``org`` claim) whose analysts may log in.",
    )
    approved_organisations_source = AnyTrait(
        None,
        allow_none=True,
        config=True,
        help="A callable given the token's organisations, returning those approved now (the lab's "
        "registry, lab.registry.organisations.Statuses.active_among: an organisation added a moment "
        "ago counts at once); when set, it replaces approved_organisations.",
    )
    analyst_role = Unicode("analyst", config=True, help="The realm role that makes someone an analyst.")
    admin_role = Unicode(
        "operator",
        config=True,
        help="The realm role whose holders get the hub role lab-operator (never hub admin).",
    )

    def _claims(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        return dict((auth_model.get("auth_state") or {}).get("oauth_user") or {})

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        auth_model["admin"] = False  # also takes admin away from anyone who had it
        return auth_model

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        """Keycloak's groups, plus :data:`OPERATOR_GROUP` exactly for holders of the operator role."""
        groups = await super().get_user_groups(auth_state)
        groups = {str(g) for g in groups or ()} - {OPERATOR_GROUP}
        claims = (auth_state or {}).get("oauth_user") or {}
        if self.admin_role in set(claims.get("roles") or []):
            groups.add(OPERATOR_GROUP)
        return groups

    async def check_allowed(self, username: str, auth_model: dict[str, Any]) -> bool:
        if auth_model is None:
            return True
        claims = self._claims(auth_model)
        if self.admin_role in set(claims.get("roles") or []):
            return True
        source = self.approved_organisations_source
        org = claims.get("org")
        approved = set(source({str(org)})) if callable(source) else self.approved_organisations
        allowed = self.analyst_role in set(claims.get("roles") or []) and org in approved
        if not allowed:
            self.log.info("Refused %s: not an analyst of an approved organisation", username)
        return bool(allowed)
