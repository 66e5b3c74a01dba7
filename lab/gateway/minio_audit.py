"""Extract downloads, as MinIO reports them: its audit webhook feeds the ledger.

MinIO is started with (see ``lab.stack.components``)::

    MINIO_AUDIT_WEBHOOK_ENABLE_DATALAB=on
    MINIO_AUDIT_WEBHOOK_ENDPOINT_DATALAB=http://127.0.0.1:<gateway>/services/gateway/minio/audit
    MINIO_AUDIT_WEBHOOK_AUTH_TOKEN_DATALAB=Bearer <secret minio-audit-token>

and POSTs one JSON entry per S3 call (or several, one per line, when batching), with
the token verbatim in ``Authorization``. For STS credentials the entry carries the web
identity's claims, so ``preferred_username`` and ``org`` name the analyst. Every
``GetObject`` on the ``extracts`` bucket by someone other than the bureau's root user
becomes a ``download`` audit record (outcome ``ok`` or ``denied``, e.g. after a
revocation). Other calls are ignored. The record holds the object name, status and
byte count, never credentials or claims beyond who and which organisation.
"""

from __future__ import annotations

import hmac
import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lab import storage, validate, vault
from lab.errors import NotAuthenticated
from lab.gateway.auth import bearer_token
from lab.ledger import Kind, Ledger
from lab.settings import Settings
from lab.store import layout

TOKEN_SECRET = "minio-audit-token"
PATH = "/minio/audit"
_SEEN_MAX = 4096


@dataclass(frozen=True)
class Download:
    actor: str
    organisation: str | None
    dataset: str | None
    object: str
    status: int
    bytes: int
    request_id: str | None
    refused_object: dict[str, Any] | None = None  # an object name that is no valid path: its fingerprint

    @property
    def details(self) -> dict[str, Any]:
        return {
            "object": f"{layout.EXTRACTS_BUCKET}/{self.object}",
            **({"refused_object": self.refused_object} if self.refused_object else {}),
            "outcome": "ok" if 200 <= self.status < 300 else "denied",
            "status": self.status,
            "bytes": self.bytes,
            "request": self.request_id,
            "via": "minio",
        }


def entries(body: bytes) -> Iterator[dict[str, Any]]:
    """The JSON entries of one webhook POST (one object, a list, or one object per line)."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return
    try:
        value = json.loads(text)
    except ValueError:
        values: list[Any] = []
        for line in text.splitlines():
            try:
                values.append(json.loads(line))
            except ValueError:
                continue
        value = values
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            yield item


def _clean_path(parts: list[str]) -> bool:
    """True if every segment of an object name is a valid name (``org/dataset/version/file``)."""
    try:
        for part in parts:
            validate.column(part, "object")
        if len(parts) > 2:
            validate.name(parts[1], "dataset")
    except validate.InvalidInput:
        return False
    return 0 < len(parts) <= 8


def _or(check: Any, value: Any) -> str | None:
    """``check(value)``, or None if the value is absent or invalid."""
    try:
        return validate.optional(check, None if value is None else str(value), "value")
    except validate.InvalidInput:
        return None


def download(entry: dict[str, Any]) -> Download | None:
    """The download an audit entry reports, or None if it is not an analyst's extract read."""
    api = entry.get("api") or {}
    if api.get("name") != "GetObject" or api.get("bucket") != layout.EXTRACTS_BUCKET:
        return None
    if entry.get("accessKey") == storage.MINIO_ROOT_USER and not entry.get("parentUser"):
        return None  # the bureau's own services
    name = str(api.get("object") or "")
    parts = name.split("/")
    refused = None
    if not _clean_path(parts):  # the requester chose the name: record that it was read, never the name
        refused, name, parts = validate.fingerprint(name), "(invalid name)", []
    claims = entry.get("requestClaims") or {}
    actor = _or(validate.username, claims.get("preferred_username") or entry.get("parentUser"))
    org = _or(validate.name, claims.get("org") or (parts[0] if parts and parts[0] else None))
    return Download(
        actor=actor or "unknown-minio-user",
        organisation=org,
        dataset=parts[1] if len(parts) > 2 else None,
        object=name,
        refused_object=refused,
        status=int(api.get("statusCode") or 0),
        bytes=int(api.get("tx") or 0),
        request_id=str(entry["requestID"]) if entry.get("requestID") else None,
    )


class AuditSink:
    """Checks the webhook's token and appends ``download`` records (once per MinIO request)."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self._token = vault.secret(settings, TOKEN_SECRET, nbytes=32)
        self.ledger = ledger
        self._seen: OrderedDict[str, None] = OrderedDict()

    def authenticate(self, authorization: str | None) -> None:
        given = bearer_token(authorization) or (authorization or "").strip()  # MinIO may send it bare
        if not given or not hmac.compare_digest(given.encode(), self._token.encode()):
            raise NotAuthenticated(
                "the audit webhook needs its token / 审计回调需要令牌", reason="not-authenticated"
            )

    def _new(self, request_id: str | None) -> bool:
        if request_id is None:
            return True
        if request_id in self._seen:
            return False
        self._seen[request_id] = None
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def receive(self, items: Iterable[dict[str, Any]]) -> int:
        """Record the downloads among ``items``; how many were recorded."""
        recorded = 0
        for item in items:
            found = download(item)
            if found is None or not self._new(found.request_id):
                continue
            self.ledger.append(
                Kind.DOWNLOAD,
                actor=found.actor,
                organisation=found.organisation,
                dataset=found.dataset,
                details=found.details,
            )
            recorded += 1
        return recorded
