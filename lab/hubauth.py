"""Who may use the notebooks: the hub's login through Keycloak.

``LabAuthenticator`` is oauthenticator's ``GenericOAuthenticator`` with the lab's rule:
analysts of an approved organisation may log in; operators may too; everyone else
(auditors, analysts of an unapproved or no organisation) is refused with a page that
says why and what to do.

Nobody is a hub admin. The authenticator manages roles (``manage_roles``): operators get
:data:`OPERATOR_ROLE`, which opens the admin page to list people and servers and stop
servers, and nothing else — no ``tokens`` (minting tokens for others), no
``access:servers`` (opening someone's notebook or kernel), no ``admin:users`` or
``admin:groups``. Everyone keeps JupyterHub's own ``user`` role (``self``).
"""

from __future__ import annotations

from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from traitlets import Set, Unicode, default

REFUSED = (
    "Only analysts of an approved organisation (and bureau operators) can open notebooks. "
    "Your account is not an analyst of an approved organisation: ask your organisation to apply "
    "to the data bureau, or use the operator and auditor consoles. / "
    "仅已获批机构的分析人员（以及数据局运营人员）可以使用笔记本。您的账号不属于已获批机构的分析人员："
    "请由所在机构向数据局提出申请，或使用运营/审计控制台。"
)


OPERATOR_ROLE = {
    "name": "lab-operator",
    "description": "Bureau operators: see people and servers, stop servers; never act as them",
    "scopes": ["admin-ui", "list:users", "read:users", "read:servers", "delete:servers"],
}
USER_ROLE = {"name": "user", "description": "Standard user privileges", "scopes": ["self"]}


class LabAuthenticator(GenericOAuthenticator):
    approved_organisations = Set(
        Unicode(),
        config=True,
        help="Organisations (the token's ``org`` claim) whose analysts may log in.",
    )
    analyst_role = Unicode("analyst", config=True, help="The realm role that makes someone an analyst.")
    admin_role = Unicode(
        "operator",
        config=True,
        help="The realm role whose holders get the hub role lab-operator (never hub admin).",
    )

    @default("manage_roles")
    def _manage_roles_default(self) -> bool:
        return True  # operators' narrow hub role comes from here, wherever the hub runs

    def _claims(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        return dict((auth_model.get("auth_state") or {}).get("oauth_user") or {})

    async def load_managed_roles(self) -> list[dict[str, Any]]:
        return [dict(OPERATOR_ROLE)]

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        roles = set(self._claims(auth_model).get("roles") or [])
        auth_model["admin"] = False  # also takes admin away from anyone who had it
        hub_roles = [dict(USER_ROLE)]
        if self.admin_role in roles:
            hub_roles.append(dict(OPERATOR_ROLE))
        auth_model["roles"] = hub_roles
        return auth_model

    async def check_allowed(self, username: str, auth_model: dict[str, Any]) -> bool:
        if auth_model is None:
            return True
        claims = self._claims(auth_model)
        if self.admin_role in set(claims.get("roles") or []):
            return True
        allowed = (
            self.analyst_role in set(claims.get("roles") or [])
            and claims.get("org") in self.approved_organisations
        )
        if not allowed:
            self.log.info("Refused %s: not an analyst of an approved organisation", username)
        return bool(allowed)
