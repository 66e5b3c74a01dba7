"""Object storage: MinIO buckets, their policies, and short-lived analyst credentials.

Buckets (created by ``bootstrap``; their names and every object key: ``lab.store.layout``):

- ``raw``: the registers' raw tables. Restricted: only the bureau's services, holding
  the root credentials in the state directory, can read it;
- ``extracts``: masked and DP extracts under ``extracts/<org>/<dataset>/<version>/``;
- ``audit-archive``: sealed audit-log segments, created with object lock and a
  COMPLIANCE default retention, so not even the root user can delete them early.

An analyst never holds static keys: ``analyst_credentials`` exchanges their Keycloak
access token at MinIO's STS (AssumeRoleWithWebIdentity). MinIO maps the token's
``policy`` claim to ``extracts-read-<org>``, which reads only ``extracts/<org>/<dataset>/``
of the datasets the organisation holds an active grant for: ``bootstrap`` creates it
empty, ``set_extracts_access`` (called by ``lab.access`` on every approval, revocation
and expiry) rewrites it. MinIO evaluates a policy's current content on every request,
so credentials already issued lose access as soon as the policy changes.

Each organisation also has a *members* policy, ``members-<org>`` (the group's
``minio_policy`` attribute names both): one Deny statement for every subject (``jwt:sub``,
the Keycloak user id) that is not one of the organisation's current, enabled analysts.
``set_members`` rewrites it (the gateway's sweeper does, from Keycloak, every
``lab.gateway.revocation.SWEEP_SECONDS``), so disabling an account or removing it from
the organisation ends the S3 access of credentials it already holds within a minute.

How long STS credentials live is capped by MinIO itself: the stack starts it with
``MINIO_STS_DURATION`` = :data:`STS_DURATION`, which replaces whatever
``DurationSeconds`` a caller asks for; a request without ``DurationSeconds`` gets
credentials that expire with the access token (5 minutes). A presigned URL works only as
long as the credentials that signed it, so it cannot outlive them either.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from minio import Minio
from minio.commonconfig import COMPLIANCE, CopySource
from minio.credentials import Credentials, StaticProvider, WebIdentityProvider
from minio.error import MinioAdminException, S3Error
from minio.minioadmin import MinioAdmin
from minio.objectlockconfig import DAYS, ObjectLockConfig

from lab import vault
from lab.ledger.chain import ObjectAnchor
from lab.settings import Settings
from lab.store import layout
from lab.store.layout import AUDIT_BUCKET, EXTRACTS_BUCKET, MANIFEST, RAW_BUCKET

MINIO_ROOT_USER = "datalab-root"
AUDIT_RETENTION_DAYS = 365
REGION = "us-east-1"  # MinIO's default; naming it spares a GetBucketLocation call
# MinIO's minimum and the cap on anything a DurationSeconds asks for (MINIO_STS_DURATION).
STS_DURATION_SECONDS = 900
STS_DURATION = f"{STS_DURATION_SECONDS}s"
NOBODY = "-"  # no Keycloak subject is "-": a members policy naming nobody denies everyone


def root_client(settings: Settings) -> Minio:
    """A client with the root credentials (bureau services only)."""
    return Minio(
        settings.minio_endpoint,
        access_key=MINIO_ROOT_USER,
        secret_key=vault.secret(settings, "minio-root-password"),
        secure=settings.minio_secure,
        region=REGION,
    )


def _admin(settings: Settings) -> MinioAdmin:
    provider = StaticProvider(MINIO_ROOT_USER, vault.secret(settings, "minio-root-password"))
    return MinioAdmin(endpoint=settings.minio_endpoint, credentials=provider, secure=settings.minio_secure)


def extracts_read_policy(org: str, datasets: Iterable[str] | None = None) -> dict[str, Any]:
    """Read-only access to ``extracts/<org>/`` (all of it, or only the named datasets' prefixes)."""
    if datasets is None:
        prefixes = [layout.org_prefix(org)]
    else:
        prefixes = [layout.dataset_prefix(org, d) for d in sorted(set(datasets))]
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation"],
            "Resource": [f"arn:aws:s3:::{EXTRACTS_BUCKET}"],
        }
    ]
    if prefixes:
        statements[:0] = [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{EXTRACTS_BUCKET}/{p}*" for p in prefixes],
            }
        ]
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{EXTRACTS_BUCKET}"],
                "Condition": {"StringLike": {"s3:prefix": [v for p in prefixes for v in (p, f"{p}*")]}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def set_extracts_access(settings: Settings, org: str, datasets: Iterable[str]) -> bool:
    """Let ``org``'s analysts read the extracts of exactly ``datasets``; True if the policy changed."""
    admin = _admin(settings)
    name = extracts_policy(org)
    desired = extracts_read_policy(org, datasets)
    return _put_policy(admin, name, desired)


def extracts_policy(org: str) -> str:
    """The MinIO policy that lets an organisation's analysts read its own extracts."""
    return f"extracts-read-{org}"


def members_policy(org: str) -> str:
    """The name of the MinIO policy that admits only ``org``'s current members."""
    return f"members-{org}"


def members_deny_policy(subjects: Iterable[str]) -> dict[str, Any]:
    """Deny everything to any web identity whose ``sub`` is not one of ``subjects``."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OnlyCurrentMembers",
                "Effect": "Deny",
                "Action": ["s3:*"],
                "Resource": ["arn:aws:s3:::*"],
                "Condition": {"StringNotEquals": {"jwt:sub": sorted(set(subjects)) or [NOBODY]}},
            }
        ],
    }


def set_members(settings: Settings, org: str, subjects: Iterable[str]) -> bool:
    """Admit exactly ``subjects`` (Keycloak user ids) as ``org``'s members; True if it changed."""
    admin = _admin(settings)
    name = members_policy(org)
    desired = members_deny_policy(subjects)
    return _put_policy(admin, name, desired)


def bootstrap(settings: Settings) -> list[str]:
    """Create the buckets and policies if missing; the list of changes made."""
    client = root_client(settings)
    changes: list[str] = []
    for bucket in (RAW_BUCKET, EXTRACTS_BUCKET):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
            changes.append(f"created bucket {bucket}")
    if not client.bucket_exists(AUDIT_BUCKET):
        client.make_bucket(AUDIT_BUCKET, object_lock=True)
        client.set_object_lock_config(AUDIT_BUCKET, ObjectLockConfig(COMPLIANCE, AUDIT_RETENTION_DAYS, DAYS))
        changes.append(f"created bucket {AUDIT_BUCKET} (object lock, {AUDIT_RETENTION_DAYS} days)")
    from lab.registry.organisations import statuses

    admin = _admin(settings)
    existing = json.loads(admin.policy_list() or "{}")
    for org, status in statuses(settings).items():  # every registered organisation
        changes += _org_policies(admin, org, active=status == "active", existing=existing)
    return changes


def organisation_policies(settings: Settings, org: str, *, active: bool) -> list[str]:
    """Create ``org``'s two policies if missing; for an organisation no longer active, make
    both admit nothing (credentials already issued lose access on their next request)."""
    admin = _admin(settings)
    return _org_policies(admin, org, active=active, existing=json.loads(admin.policy_list() or "{}"))


def _org_policies(admin: MinioAdmin, org: str, *, active: bool, existing: dict[str, Any]) -> list[str]:
    changes = []
    extracts_name, members = extracts_policy(org), members_policy(org)
    if not active:
        for name, closed in (
            (extracts_name, extracts_read_policy(org, ())),
            (members, members_deny_policy(())),
        ):
            if _put_policy(admin, name, closed):
                changes.append(f"closed policy {name}")
        return changes
    if extracts_name not in existing:  # its content follows the grants (set_extracts_access)
        admin.policy_add(extracts_name, policy=extracts_read_policy(org, datasets=()))
        changes.append(f"created policy {extracts_name}")
    if members not in existing:  # nobody until the gateway's sweeper reads Keycloak
        admin.policy_add(members, policy=members_deny_policy(()))
        changes.append(f"created policy {members}")
    return changes


def publish(
    client: Minio, bucket: str, prefix: str, files: dict[str, Path], manifest: dict[str, Any]
) -> None:
    """Publish ``files`` and ``manifest.json`` under ``bucket/prefix/`` as one version.

    Files are uploaded under ``.staging/`` (outside every organisation's prefix, so no
    analyst can read them), copied into place server-side, and ``manifest.json`` is
    written last: a version exists for readers only once its manifest does. If any step
    fails, everything written for the version is removed again.
    """
    staging = layout.staging_prefix(uuid.uuid4().hex)
    written: list[str] = []
    try:
        for name, path in files.items():
            client.fput_object(bucket, f"{staging}/{name}", str(path))
            written.append(f"{staging}/{name}")
        for name in files:
            client.copy_object(bucket, f"{prefix}/{name}", CopySource(bucket, f"{staging}/{name}"))
            written.append(f"{prefix}/{name}")
        put_json(client, bucket, f"{prefix}/{MANIFEST}", manifest)
    except BaseException:
        for name in reversed(written):
            with contextlib.suppress(Exception):
                client.remove_object(bucket, name)
        raise
    finally:
        for name in files:
            with contextlib.suppress(Exception):
                client.remove_object(bucket, f"{staging}/{name}")


def put_json(client: Minio, bucket: str, name: str, value: dict[str, Any]) -> None:
    """Store ``value`` as a JSON object (one PUT: readers see all of it or nothing)."""
    body = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True).encode()
    client.put_object(bucket, name, io.BytesIO(body), len(body), content_type="application/json")


def audit_anchor(settings: Settings, ledger_id: str) -> ObjectAnchor:
    """The head of the ledger's audit chain kept in the object-locked audit archive."""
    client, name = root_client(settings), layout.audit_anchor(ledger_id)

    def get() -> bytes | None:
        try:
            response = client.get_object(AUDIT_BUCKET, name)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def put(data: bytes) -> None:
        client.put_object(AUDIT_BUCKET, name, io.BytesIO(data), len(data), content_type="application/json")

    return ObjectAnchor(f"{AUDIT_BUCKET}/{name}", get, put)


def read_json(client: Minio, bucket: str, name: str) -> dict[str, Any] | None:
    """The JSON object stored at ``bucket/name``, or None if there is none."""
    try:
        response = client.get_object(bucket, name)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise
    try:
        return dict(json.loads(response.read()))
    finally:
        response.close()
        response.release_conn()


def analyst_credentials(settings: Settings, access_token: str) -> Credentials:
    """Temporary S3 credentials for the holder of a Keycloak access token (they expire with it)."""
    return web_identity(settings.minio_url, lambda: access_token).retrieve()


def web_identity(sts_endpoint: str, token: Any) -> WebIdentityProvider:
    """MinIO STS without ``DurationSeconds``: the credentials expire when the access token does."""
    provider = WebIdentityProvider(
        jwt_provider_func=lambda: {"access_token": token()},
        sts_endpoint=sts_endpoint,
    )
    return provider


def analyst_client(settings: Settings, access_token: str) -> Minio:
    """An S3 client acting as the analyst who holds ``access_token``."""
    creds = analyst_credentials(settings, access_token)
    return Minio(
        settings.minio_endpoint,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        session_token=creds.session_token,
        secure=settings.minio_secure,
        region=REGION,
    )


def _put_policy(admin: MinioAdmin, name: str, desired: dict[str, Any]) -> bool:
    """Write MinIO policy ``name`` unless it already says ``desired``; True if it changed."""
    try:
        current = json.loads(admin.policy_info(name) or "{}")
    except MinioAdminException:
        current = None
    if current == desired:
        return False
    admin.policy_add(name, policy=desired)
    return True
