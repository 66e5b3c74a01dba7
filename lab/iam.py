"""Identity: the Keycloak realm of the lab, kept in code and applied with python-keycloak.

``bootstrap`` brings realm ``datalab`` to its desired state and returns the list of
changes it made; run twice, the second run returns an empty list. It creates:

- realm roles ``analyst``, ``operator``, ``auditor``;
- one group per organisation of the registry (``lab.registry.organisations``; the demo
  organisations are registered first, through the same path as ``datalab org add``) with
  attributes ``org``, ``status``, names, kind, credit code and ``minio_policy`` (the
  organisation's extracts policy and its members policy, see ``lab.storage``; none for a
  suspended or removed organisation);
- client scope ``datalab`` whose mappers put into an access token: ``org`` (from the group
  attribute), ``roles`` (realm roles), ``groups``, ``policy`` (the MinIO policy names) and
  the audience ``datalab-gateway``; client scope ``datalab-storage`` adds the audience
  ``minio``. Neither is a realm default scope: a client created later gets none of the
  lab's claims or audiences. ``datalab`` is a default scope of ``jupyterhub``,
  ``datalab-gateway`` and ``datalab-cli``, ``datalab-storage`` of ``jupyterhub`` only (the
  notebooks read extracts from MinIO; the consoles do not);
- confidential clients ``jupyterhub``, ``datalab-gateway``, ``minio`` and ``datalab-cli``,
  whose secrets are generated into the state directory. ``datalab-cli`` is the one client
  that accepts the password grant (``datalab login`` on the bureau's server, see
  ``lab.cli.login``): it has no redirect URI, and only someone who can read the state
  directory's secrets can use it;
- the demo people of ``lab.demo``.

It also hardens the realm: brute-force detection (after :data:`FAILURE_FACTOR` wrong
passwords the account is locked for a while), and no public client of the realm — the
built-in ``admin-cli`` included — accepts the password grant.
"""

from __future__ import annotations

from typing import Any

from keycloak import KeycloakAdmin

from lab import demo, storage, vault
from lab.errors import NotFound
from lab.registry.organisations import Organisation, closing_registry, org_key_secret, register
from lab.settings import Settings

BOOTSTRAP_ACTOR = "datalab-bootstrap"  # who registers the demo organisations at `make up`
KEYCLOAK_ADMIN_USER = "admin"  # the bootstrap admin of the master realm
MINIO_CLIENT_ID = "minio"
HUB_CLIENT_ID = "jupyterhub"
GATEWAY_CLIENT_ID = "datalab-gateway"
CLI_CLIENT_ID = "datalab-cli"  # `datalab login`: the password grant, for the bureau's server only
CLAIMS_SCOPE = "datalab"
STORAGE_SCOPE = "datalab-storage"
HUB_TOKEN_MAX_SECONDS = 8 * 3600  # the longest a JupyterHub token may live (hub and gateway)
FAILURE_FACTOR = 10  # wrong passwords before Keycloak locks the account for a while
BRUTE_FORCE = {
    "bruteForceProtected": True,
    "permanentLockout": False,
    "failureFactor": FAILURE_FACTOR,
    "waitIncrementSeconds": 60,
    "maxFailureWaitSeconds": 900,
    "maxDeltaTimeSeconds": 43200,
    "quickLoginCheckMilliSeconds": 1000,
    "minimumQuickLoginWaitSeconds": 60,
}


def admin(settings: Settings) -> KeycloakAdmin:
    """An admin client for realm ``datalab``, logged in through the master realm."""
    return KeycloakAdmin(
        server_url=settings.keycloak_url + "/",
        username=KEYCLOAK_ADMIN_USER,
        password=vault.secret(settings, "keycloak-admin-password"),
        realm_name=settings.realm,
        user_realm_name="master",
        timeout=30,
    )


def _mapper(name: str, kind: str, **config: str) -> dict[str, Any]:
    return {"name": name, "protocol": "openid-connect", "protocolMapper": kind, "config": config}


def _claim(name: str, attribute: str, *, multivalued: bool) -> dict[str, Any]:
    return _mapper(
        name,
        "oidc-usermodel-attribute-mapper",
        **{
            "user.attribute": attribute,
            "claim.name": name,
            "jsonType.label": "String",
            "multivalued": str(multivalued).lower(),
            "aggregate.attrs": "true",
            "access.token.claim": "true",
            "id.token.claim": "true",
            "userinfo.token.claim": "true",
        },
    )


def _audience(client_id: str) -> dict[str, Any]:
    return _mapper(
        f"audience-{client_id}",
        "oidc-audience-mapper",
        **{"included.client.audience": client_id, "access.token.claim": "true", "id.token.claim": "false"},
    )


MAPPERS = (
    _claim("org", "org", multivalued=False),
    _claim("policy", "minio_policy", multivalued=True),
    _mapper(
        "roles",
        "oidc-usermodel-realm-role-mapper",
        **{
            "claim.name": "roles",
            "multivalued": "true",
            "jsonType.label": "String",
            "access.token.claim": "true",
            "id.token.claim": "true",
            "userinfo.token.claim": "true",
        },
    ),
    _mapper(
        "groups",
        "oidc-group-membership-mapper",
        **{
            "claim.name": "groups",
            "full.path": "false",
            "access.token.claim": "true",
            "id.token.claim": "true",
            "userinfo.token.claim": "true",
        },
    ),
    _audience(GATEWAY_CLIENT_ID),
)
STORAGE_MAPPERS = (_audience(MINIO_CLIENT_ID),)
SCOPES: dict[str, tuple[str, tuple[dict[str, Any], ...]]] = {
    CLAIMS_SCOPE: ("Data Lab claims: org, roles, groups, policy; audience datalab-gateway", MAPPERS),
    STORAGE_SCOPE: ("Data Lab storage: audience minio (MinIO STS)", STORAGE_MAPPERS),
}
# The lab's scopes each client gets by default; any other client gets none of them.
CLIENT_SCOPES = {
    HUB_CLIENT_ID: (CLAIMS_SCOPE, STORAGE_SCOPE),
    GATEWAY_CLIENT_ID: (CLAIMS_SCOPE,),
    CLI_CLIENT_ID: (CLAIMS_SCOPE,),
    MINIO_CLIENT_ID: (),
}


def _clients(settings: Settings) -> list[dict[str, Any]]:
    hub = settings.hub_url
    common = {
        "protocol": "openid-connect",
        "publicClient": False,
        "enabled": True,
        "directAccessGrantsEnabled": False,
        "implicitFlowEnabled": False,
    }
    return [
        {
            **common,
            "clientId": HUB_CLIENT_ID,
            "name": "Data Lab notebooks (JupyterHub)",
            "secret": vault.secret(settings, "hub-client-secret"),
            "standardFlowEnabled": True,
            "redirectUris": [f"{hub}/hub/oauth_callback"],
            "webOrigins": [settings.public_url],
            "attributes": {"post.logout.redirect.uris": f"{hub}/*"},
        },
        {
            **common,
            "clientId": GATEWAY_CLIENT_ID,
            "name": "Data Lab gateway",
            "secret": vault.secret(settings, "gateway-client-secret"),
            "standardFlowEnabled": True,
            "redirectUris": [f"{settings.console_url}/callback"],
            "webOrigins": [settings.public_url],
        },
        {
            **common,
            "clientId": MINIO_CLIENT_ID,
            "name": "MinIO (STS web identity)",
            "secret": vault.secret(settings, "minio-client-secret"),
            "standardFlowEnabled": False,
        },
        {
            **common,
            "clientId": CLI_CLIENT_ID,
            "name": "Data Lab command line (datalab login)",
            "secret": vault.secret(settings, "cli-client-secret"),
            "standardFlowEnabled": False,
            "directAccessGrantsEnabled": True,
        },
    ]


class _Applier:
    """Creates or updates one object at a time and records what changed."""

    def __init__(self, kc: KeycloakAdmin) -> None:
        self.kc = kc
        self.changes: list[str] = []

    def realm(self, settings: Settings) -> None:
        desired = {
            "realm": settings.realm,
            "enabled": True,
            "displayName": "Data Lab 数据实验室",
            "internationalizationEnabled": True,
            "supportedLocales": ["en", "zh-CN"],
            "defaultLocale": "zh-CN",
            "accessTokenLifespan": 300,
            **BRUTE_FORCE,
        }
        realms = {r["realm"]: r for r in self.kc.get_realms()}
        if settings.realm not in realms:
            self.kc.create_realm(desired)
            self.changes.append(f"created realm {settings.realm}")
        elif _differs(realms[settings.realm], desired):
            self.kc.update_realm(settings.realm, desired)
            self.changes.append(f"updated realm {settings.realm}")

    def roles(self) -> None:
        existing = {r["name"]: r for r in self.kc.get_realm_roles()}
        for name, description in demo.ROLES.items():
            if name not in existing:
                self.kc.create_realm_role({"name": name, "description": description})
                self.changes.append(f"created role {name}")

    def public_clients(self) -> None:
        """No public client of the realm (``admin-cli`` included) accepts the password grant."""
        for client in self.kc.get_clients():
            if client.get("publicClient") and client.get("directAccessGrantsEnabled"):
                self.kc.update_client(client["id"], {**client, "directAccessGrantsEnabled": False})
                self.changes.append(f"turned off password grants for public client {client['clientId']}")

    def scopes(self) -> None:
        """The lab's client scopes with exactly their mappers, and none of them a realm default."""
        self.scope_ids: dict[str, str] = {}
        defaults = {s["name"]: s["id"] for s in self.kc.get_default_default_client_scopes()}
        for name, (description, wanted) in SCOPES.items():
            scope = self.kc.get_client_scope_by_name(name)
            if scope is None:
                scope_id = self.kc.create_client_scope(
                    {
                        "name": name,
                        "protocol": "openid-connect",
                        "description": description,
                        "attributes": {"include.in.token.scope": "false"},
                    }
                )
                self.changes.append(f"created client scope {name}")
            else:
                scope_id = scope["id"]
            mappers = {m["name"]: m for m in self.kc.get_mappers_from_client_scope(scope_id)}
            for mapper in wanted:
                current = mappers.pop(mapper["name"], None)
                if current is None:
                    self.kc.add_mapper_to_client_scope(scope_id, mapper)
                    self.changes.append(f"added mapper {mapper['name']} to {name}")
                elif _differs(current, mapper):
                    self.kc.update_mapper_in_client_scope(scope_id, current["id"], {**current, **mapper})
                    self.changes.append(f"updated mapper {mapper['name']} of {name}")
            for extra in mappers.values():  # e.g. an audience that moved to another scope
                self.kc.delete_mapper_from_client_scope(scope_id, extra["id"])
                self.changes.append(f"removed mapper {extra['name']} from {name}")
            if name in defaults:
                self.kc.delete_default_default_client_scope(scope_id)
                self.changes.append(f"{name} is no longer a realm default client scope")
            self.scope_ids[name] = scope_id

    def client(self, desired: dict[str, Any]) -> None:
        client_id = self.kc.get_client_id(desired["clientId"])
        if client_id is None:
            client_id = self.kc.create_client(desired)
            self.changes.append(f"created client {desired['clientId']}")
        else:
            current = self.kc.get_client(client_id)
            current["secret"] = self.kc.get_client_secrets(client_id).get("value")
            if _differs(current, desired):
                self.kc.update_client(client_id, desired)
                self.changes.append(f"updated client {desired['clientId']}")
        wanted = set(CLIENT_SCOPES.get(desired["clientId"], ()))
        have = {s["name"]: s["id"] for s in self.kc.get_client_default_client_scopes(client_id)}
        for name in sorted(wanted - set(have)):
            self.kc.add_client_default_client_scope(client_id, self.scope_ids[name], {})
            self.changes.append(f"added scope {name} to client {desired['clientId']}")
        for name in sorted((set(have) & set(SCOPES)) - wanted):
            self.kc.delete_client_default_client_scope(client_id, have[name])
            self.changes.append(f"removed scope {name} from client {desired['clientId']}")

    def group(self, org: Organisation) -> str:
        """The organisation's group; a suspended or removed one keeps its group, no MinIO policy."""
        policies = [storage.extracts_policy(org.id), storage.members_policy(org.id)] if org.active else []
        desired = {
            "name": org.id,
            "attributes": {
                "org": [org.id],
                "minio_policy": policies,
                "name_en": [org.name_en],
                "name_zh": [org.name_zh],
                "kind": [org.kind],
                "credit_code": [org.credit_code],
                "status": [org.status],
            },
        }
        current = self.find_group(org.id)
        if current is None:
            group_id = self.kc.create_group(desired)
            self.changes.append(f"created group {org.id}")
            assert group_id is not None
            return group_id
        if _differs(current, desired):
            self.kc.update_group(current["id"], desired)
            self.changes.append(f"updated group {org.id}")
        return str(current["id"])

    def find_group(self, org_id: str) -> dict[str, Any] | None:
        try:
            current = self.kc.get_group_by_path(f"/{org_id}")
        except Exception:  # python-keycloak raises KeycloakGetError for a missing path
            return None
        return current if current and "id" in current else None

    def person(self, person: demo.Person, password: str, groups: dict[str, str]) -> None:
        user_id = self.kc.get_user_id(person.username)
        if user_id is None:
            user_id = self.kc.create_user(
                {
                    "username": person.username,
                    "enabled": True,
                    "emailVerified": True,
                    "firstName": person.first_name,
                    "lastName": person.last_name,
                    "email": f"{person.username}@demo.datalab.invalid",
                    "credentials": [{"type": "password", "value": password, "temporary": False}],
                }
            )
            self.changes.append(f"created user {person.username}")
        roles = {r["name"] for r in self.kc.get_realm_roles_of_user(user_id)}
        if person.role not in roles:
            self.kc.assign_realm_roles(user_id, [self.kc.get_realm_role(person.role)])
            self.changes.append(f"gave {person.username} role {person.role}")
        if person.org:
            member_of = {g["name"] for g in self.kc.get_user_groups(user_id)}
            if person.org not in member_of:
                self.kc.group_user_add(user_id, groups[person.org])
                self.changes.append(f"added {person.username} to {person.org}")


def _differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """True if any key of ``desired`` has another value in ``current`` (Keycloak drops an
    attribute whose list of values is empty, so a missing key equals an empty list)."""
    for key, value in desired.items():
        have = current.get(key, [] if value == [] else None)
        if isinstance(value, dict) and isinstance(have, dict):
            if _differs(have, value):
                return True
        elif have != value:
            return True
    return False


def bootstrap(settings: Settings) -> list[str]:
    """Bring the realm to its desired state; the list of changes made (empty if none)."""
    master = KeycloakAdmin(
        server_url=settings.keycloak_url + "/",
        username=KEYCLOAK_ADMIN_USER,
        password=vault.secret(settings, "keycloak-admin-password"),
        realm_name="master",
        timeout=30,
    )
    applier = _Applier(master)
    applier.realm(settings)
    applier.kc = admin(settings)
    applier.roles()
    applier.public_clients()
    applier.scopes()
    for client in _clients(settings):
        applier.client(client)
    with closing_registry(settings) as registry:  # the demo ones: the same path as `datalab org add`
        applier.changes += register(registry, demo.DEMO_ORGANISATIONS, by=BOOTSTRAP_ACTOR)
        orgs = registry.list_organisations()
    groups = {org.id: applier.group(org) for org in orgs}
    for org in orgs:
        org_key_secret(settings, org.id)
    password = vault.secret(settings, "demo-password", nbytes=6)
    for person in demo.PEOPLE:
        applier.person(person, password, groups)
    return applier.changes


def apply_organisation(settings: Settings, org: Organisation) -> list[str]:
    """Create or update ``org``'s group and attributes in Keycloak; the changes made."""
    applier = _Applier(admin(settings))
    applier.group(org)
    return applier.changes


def add_member(settings: Settings, org_id: str, username: str) -> bool:
    """Put ``username`` into ``org_id``'s group; False if already there. NotFound if either is absent."""
    kc = admin(settings)
    user_id = kc.get_user_id(username)
    if user_id is None:
        raise NotFound(
            f"Keycloak has no account {username!r}; create it first / 统一身份认证中没有账号 {username}",
            reason="no-such-user",
        )
    group = _Applier(kc).find_group(org_id)
    if group is None:
        raise NotFound(
            f"Keycloak has no group {org_id!r}; run `datalab up` to re-apply the realm "
            f"/ 统一身份认证中没有机构组 {org_id}",
            reason="no-such-group",
        )
    if any(g.get("id") == group["id"] for g in kc.get_user_groups(user_id)):
        return False
    kc.group_user_add(user_id, group["id"])
    return True


def end_sessions(settings: Settings, org_id: str) -> list[str]:
    """Log out every member of ``org_id`` from Keycloak (their refresh tokens die); their names."""
    kc = admin(settings)
    group = _Applier(kc).find_group(org_id)
    if group is None:
        return []
    members = kc.get_group_members(group["id"], {"max": 100000})
    for user in members:
        kc.user_logout(user["id"])
    return [str(user["username"]) for user in members]
