"""Organisations as data: the approved enterprises, research institutes and agencies.

Each organisation is a row of ``registry_organisations`` in the ledger's database, so a
change and its audit record are one transaction (:meth:`lab.ledger.Ledger.transaction`):
an organisation is never in the registry without the record that created it, and its
``provenance`` names that record (``{"audit_seq": …, "action": "org-add", "by": …}``).
Memberships (``registry_memberships``) cite the record of the operator action that added
them the same way. Records are never deleted: ``suspend`` and ``remove`` change the status.

Schema migration follows the ledger's rule: the tables are additive, created if missing
(``CREATE TABLE IF NOT EXISTS`` through SQLAlchemy) when a registry is opened, on SQLite
and PostgreSQL alike; existing ledgers gain them without a schema version change.

Statuses: ``active`` → ``suspended`` (every grant revoked in the same transaction; the
credentials are ended by the callers, see :mod:`lab.services.onboarding`) → ``removed``.
An active organisation with live grants cannot be removed: suspend it first.

The unified social credit code (统一社会信用代码, GB 32100-2015) is checked with
:func:`lab.discovery.checks.is_credit_code`; the contact is kept in the row but never
written to the audit log (it names a person).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Table, Text, insert, select, update
from sqlalchemy.engine import Connection

from lab import validate
from lab.discovery.checks import is_credit_code
from lab.errors import AccessDenied, ConfigError, NotFound
from lab.ledger import Grant, Kind, Ledger
from lab.ledger import grants as grant_rows
from lab.ledger.db import UTCDateTime, metadata
from lab.settings import Settings
from lab.suggest import did_you_mean

log = logging.getLogger(__name__)
KINDS = ("enterprise", "research", "government")
ACTIVE, SUSPENDED, REMOVED = "active", "suspended", "removed"
STATUSES = (ACTIVE, SUSPENDED, REMOVED)
_SLUG = re.compile(r"[a-z][a-z0-9-]{1,38}[a-z0-9]")
MAX_NAME = 200
MAX_CONTACT = 500

organisations = Table(
    "registry_organisations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name_zh", Text, nullable=False),
    Column("name_en", Text, nullable=False),
    Column("credit_code", String(18), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("contact", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("provenance", Text, nullable=False),
    Column("changed_by", String(200), nullable=True),
    Column("changed_at", UTCDateTime, nullable=True),
    Column("status_reason", Text, nullable=True),
)

memberships = Table(
    "registry_memberships",
    metadata,
    Column("organisation", String(40), primary_key=True),
    Column("username", String(100), primary_key=True),
    Column("added_by", String(200), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    Column("provenance", Text, nullable=False),
    Index("ix_registry_memberships_user", "username"),
)


@dataclass(frozen=True)
class OrgSpec:
    """What an operator supplies to add an organisation (checked by :func:`check_spec`)."""

    id: str
    name_zh: str
    name_en: str
    credit_code: str
    kind: str
    contact: str


@dataclass(frozen=True)
class Organisation(OrgSpec):
    """One organisation as the registry holds it: its spec, status and provenance."""

    status: str
    created_by: str
    created_at: datetime
    provenance: dict[str, Any]
    changed_by: str | None = None
    changed_at: datetime | None = None
    status_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        for key in ("created_at", "changed_at"):
            body[key] = body[key].isoformat() if body[key] else None
        return body

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Organisation:
        values = dict(row)
        values["provenance"] = json.loads(values["provenance"])
        return cls(**values)


@dataclass(frozen=True)
class Membership:
    organisation: str
    username: str
    added_by: str
    added_at: datetime
    provenance: dict[str, Any]


def _invalid(field: str, en: str, zh: str, value: Any = None) -> validate.InvalidInput:
    return validate.InvalidInput(field, en, zh, value)


def check_slug(value: Any, field: str = "id") -> str:
    """An organisation id: 3-40 lowercase letters, digits and '-', starting with a letter."""
    if not isinstance(value, str) or not _SLUG.fullmatch(value) or "--" in value:
        raise _invalid(
            field,
            "must be 3-40 lowercase letters, digits and single '-', starting with a letter "
            "(e.g. qilu-energy)",
            "须为 3-40 位小写字母、数字和单个连字符，以字母开头（如 qilu-energy）",
            value,
        )
    return value


def check_credit_code(value: Any, field: str = "credit_code") -> str:
    """A unified social credit code with both check characters right (GB 32100 / GB 11714)."""
    if not isinstance(value, str):
        raise _invalid(field, "must be a string of 18 characters", "须为 18 位字符串", value)
    code = value.strip().upper()
    if len(code) != 18:
        raise _invalid(
            field,
            f"must have 18 characters, not {len(code)}",
            f"统一社会信用代码须为 18 位，实际为 {len(code)} 位",
            value,
        )
    if not is_credit_code(code):
        raise _invalid(
            field,
            "is not a valid unified social credit code (a check character is wrong or a letter "
            "I, O, S, V or Z is used); copy it from the business licence",
            "不是有效的统一社会信用代码（校验码不符或含有 I、O、S、V、Z），请按营业执照核对",
            value,
        )
    return code


def check_spec(spec: OrgSpec) -> OrgSpec:
    """The spec with every field checked and normalised; InvalidInput naming the field otherwise."""
    names = {}
    for field in ("name_zh", "name_en"):
        text = validate.text(getattr(spec, field), field, limit=MAX_NAME, lines=False).strip()
        if not text:
            raise _invalid(field, "must not be empty", "不能为空")
        names[field] = text
    contact = validate.text(spec.contact, "contact", limit=MAX_CONTACT, lines=False).strip()
    if not contact:
        raise _invalid("contact", "must name a contact (person, phone or e-mail)", "须填写联系人")
    return OrgSpec(
        id=check_slug(spec.id),
        credit_code=check_credit_code(spec.credit_code),
        kind=validate.choice(spec.kind, "kind", KINDS),
        contact=contact,
        **names,
    )


def _get(conn: Connection, org_id: str, *, lock: bool = False) -> Organisation:
    query = select(organisations).where(organisations.c.id == org_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        known = [str(r[0]) for r in conn.execute(select(organisations.c.id))]
        en, zh = did_you_mean(org_id, known)
        raise NotFound(
            f"there is no organisation {org_id!r};{en} see `datalab org list` "
            f"/ 没有机构 {org_id}，{zh}请用 datalab org list 查看已登记的机构",
            reason="no-such-organisation",
        )
    return Organisation.from_row(dict(row))


_migrated: weakref.WeakSet[Ledger] = weakref.WeakSet()  # ledgers whose tables exist


class Registry:
    """The organisations of one ledger database."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        if ledger not in _migrated:
            with ledger.transaction() as tx:  # the additive migration: create what is missing
                metadata.create_all(tx.conn, tables=[organisations, memberships])
            _migrated.add(ledger)

    # --- reading ------------------------------------------------------------------------

    def get(self, org_id: str) -> Organisation:
        """The organisation ``org_id`` in any status; NotFound otherwise."""
        with self.ledger.snapshot() as conn:
            return _get(conn, check_slug(org_id))

    def list_organisations(self, status: str | None = None) -> list[Organisation]:
        query = select(organisations).order_by(organisations.c.created_at, organisations.c.id)
        if status is not None:
            query = query.where(organisations.c.status == validate.choice(status, "status", STATUSES))
        with self.ledger.snapshot() as conn:
            return [Organisation.from_row(r) for r in conn.execute(query).mappings()]

    def active_ids(self) -> frozenset[str]:
        """The ids of active organisations: whose analysts may log in and hold access."""
        with self.ledger.snapshot() as conn:
            rows = conn.execute(select(organisations.c.id).where(organisations.c.status == ACTIVE))
            return frozenset(str(r[0]) for r in rows)

    def known_ids(self) -> frozenset[str]:
        """Every organisation ever registered (their records and keys are kept)."""
        with self.ledger.snapshot() as conn:
            return frozenset(str(r[0]) for r in conn.execute(select(organisations.c.id)))

    def require_active(self, org_id: str) -> Organisation:
        org = self.get(org_id)
        if not org.active:
            raise AccessDenied(
                f"organisation {org.id!r} is {org.status}; nothing can be granted to it "
                f"/ 机构 {org.id} 已{_STATUS_ZH[org.status]}",
                reason=f"organisation-{org.status}",
            )
        return org

    def members(self, org_id: str) -> list[Membership]:
        query = (
            select(memberships).where(memberships.c.organisation == org_id).order_by(memberships.c.username)
        )
        with self.ledger.snapshot() as conn:
            return [_membership(r) for r in conn.execute(query).mappings()]

    # --- changes (each one transaction with its audit record) ----------------------------

    def add(self, spec: OrgSpec, *, by: str) -> Organisation:
        """Register an organisation; its provenance is the ``org-add`` record written with it."""
        spec = check_spec(spec)
        by = validate.username(by, "--as")
        with self.ledger.transaction() as tx:
            clash = tx.conn.execute(
                select(organisations.c.id).where(
                    (organisations.c.id == spec.id) | (organisations.c.credit_code == spec.credit_code)
                )
            ).first()
            if clash is not None:
                what = "id" if clash[0] == spec.id else "credit code"
                raise ConfigError(
                    f"organisation {clash[0]!r} already has this {what}; an organisation is registered "
                    "once (records are kept, even after removal) "
                    f"/ 该{'标识' if what == 'id' else '信用代码'}已登记",
                    reason="organisation-exists",
                )
            record = tx.append(
                "org-add",
                actor=by,
                organisation=spec.id,
                details={
                    "name_zh": spec.name_zh,
                    "name_en": spec.name_en,
                    "credit_code": spec.credit_code,
                    "kind": spec.kind,
                },
            )
            provenance = {"audit_seq": record.seq, "action": "org-add", "by": by}
            tx.conn.execute(
                insert(organisations).values(
                    **asdict(spec),
                    status=ACTIVE,
                    created_by=by,
                    created_at=tx.at,
                    provenance=json.dumps(provenance, sort_keys=True),
                )
            )
            return _get(tx.conn, spec.id)

    def suspend(self, org_id: str, *, by: str, reason: str) -> tuple[Organisation, list[Grant]]:
        """Suspend: every live grant of the organisation revoked in the same transaction."""
        return self._set_status(org_id, SUSPENDED, by=by, reason=reason)

    def remove(self, org_id: str, *, by: str, reason: str) -> Organisation:
        """Mark removed (records kept); refused for an active organisation with live grants."""
        org, _ = self._set_status(org_id, REMOVED, by=by, reason=reason)
        return org

    def _set_status(
        self, org_id: str, status: str, *, by: str, reason: str
    ) -> tuple[Organisation, list[Grant]]:
        org_id, by = check_slug(org_id), validate.username(by, "--as")
        why = validate.text(reason, "reason", limit=500, lines=False).strip()
        if not why:
            raise _invalid("reason", "must say why (it is recorded)", "须说明原因（将记入审计日志）")
        with self.ledger.transaction() as tx:
            org = _get(tx.conn, org_id, lock=True)
            if org.status == status or org.status == REMOVED:
                raise ConfigError(
                    f"organisation {org.id!r} is already {org.status} "
                    f"/ 机构 {org.id} 已{_STATUS_ZH[org.status]}",
                    reason=f"organisation-{org.status}",
                )
            live = grant_rows.select_grants(tx.conn, organisation=org.id, active_at=tx.at)
            if status == REMOVED and org.status == ACTIVE and live:
                raise ConfigError(
                    f"organisation {org.id!r} holds {len(live)} live grant(s); suspend it first "
                    f"(`datalab org suspend {org.id}`) / 该机构仍有 {len(live)} 项有效授权，请先暂停",
                    reason="organisation-has-grants",
                )
            revoked: list[Grant] = []
            for grant in live:
                grant_rows.get_grant(tx.conn, grant.id, lock=True)
                revoked.append(
                    grant_rows.mark_revoked(
                        tx.conn, grant.id, by=by, reason=f"organisation {status}: {why}", now=tx.at
                    )
                )
                tx.append(
                    Kind.REVOKE,
                    actor=by,
                    organisation=org.id,
                    dataset=grant.dataset,
                    details={"grant": grant.id, "reason": f"organisation {status}: {why}"},
                )
            tx.append(
                _ACTION[status],
                actor=by,
                organisation=org.id,
                details={
                    "from": org.status,
                    "to": status,
                    "reason": why,
                    "grants_revoked": [g.id for g in revoked],
                },
            )
            tx.conn.execute(
                update(organisations)
                .where(organisations.c.id == org.id)
                .values(status=status, changed_by=by, changed_at=tx.at, status_reason=why)
            )
            return _get(tx.conn, org.id), revoked

    def add_member(self, org_id: str, username: str, *, by: str) -> Membership:
        """Record that ``by`` put ``username`` into the organisation (the ``org-member-add`` record)."""
        org_id, by = check_slug(org_id), validate.username(by, "--as")
        username = validate.username(username, "username")
        with self.ledger.transaction() as tx:
            org = _get(tx.conn, org_id)
            if not org.active:
                raise AccessDenied(
                    f"organisation {org.id!r} is {org.status}; nobody can join it "
                    f"/ 机构 {org.id} 已{_STATUS_ZH[org.status]}，不能加入成员",
                    reason=f"organisation-{org.status}",
                )
            existing = (
                tx.conn.execute(
                    select(memberships).where(
                        memberships.c.organisation == org.id, memberships.c.username == username
                    )
                )
                .mappings()
                .first()
            )
            if existing is not None:
                return _membership(existing)
            record = tx.append(
                "org-member-add", actor=by, organisation=org.id, details={"username": username}
            )
            provenance = {"audit_seq": record.seq, "action": "org-member-add", "by": by}
            values = {
                "organisation": org.id,
                "username": username,
                "added_by": by,
                "added_at": tx.at,
                "provenance": json.dumps(provenance, sort_keys=True),
            }
            tx.conn.execute(insert(memberships).values(**values))
            return _membership(values)


_STATUS_ZH = {ACTIVE: "启用", SUSPENDED: "暂停", REMOVED: "移除"}
_ACTION = {SUSPENDED: "org-suspend", REMOVED: "org-remove"}


def _membership(row: Mapping[str, Any]) -> Membership:
    values = dict(row)
    values["provenance"] = json.loads(values["provenance"])
    return Membership(**values)


# --- for callers that hold only the settings ------------------------------------------------


@contextmanager
def closing_registry(settings: Settings) -> Iterator[Registry]:
    """The registry of the lab's ledger database, closed on leaving the block."""
    from lab.store.ledgers import open_ledger  # the registry's ledger, with the lab's anchor

    registry = Registry(open_ledger(settings))
    try:
        yield registry
    finally:
        registry.ledger.close()


def statuses(settings: Settings) -> dict[str, str]:
    """Every registered organisation's id → status, read now."""
    with closing_registry(settings) as registry:
        return {org.id: org.status for org in registry.list_organisations()}


def lookup(settings: Settings, org_id: str, *, active: bool = False) -> Organisation:
    """The registered organisation ``org_id`` (any status unless ``active``); NotFound names the known."""
    with closing_registry(settings) as registry:
        try:
            return registry.require_active(org_id) if active else registry.get(org_id)
        except NotFound:
            ids = sorted(registry.known_ids())
            en, zh = did_you_mean(org_id, ids)
            raise NotFound(
                f"Unknown organisation {org_id!r};{en} registered: {', '.join(ids) or 'none'} "
                f"/ 未知机构 {org_id}，{zh}请用 datalab org list 查看",
                reason="no-such-organisation",
            ) from None


def org_key_secret(settings: Settings, org_id: str) -> str:
    """The organisation's key (``org-key-<org>``, hex), generated on first use and never deleted."""
    from lab import vault

    return vault.secret(settings, f"org-key-{check_slug(org_id)}", nbytes=32)


def register(registry: Registry, specs: Iterable[OrgSpec], *, by: str) -> list[str]:
    """Register the organisations of ``specs`` not registered yet (``datalab up``: the demo ones)."""
    known = registry.known_ids()
    return [
        f"registered organisation {registry.add(spec, by=by).id}" for spec in specs if spec.id not in known
    ]


class Statuses:
    """Every organisation's status, re-read from the registry at most every ``ttl`` seconds.

    For the processes that check an organisation on every request (the gateway's
    directory, the hub's login): a suspension reaches them within ``ttl``. If the database
    cannot be read, the last answer is kept for one more ``ttl`` and then nobody is active
    (fail closed). A name it does not know yet (an organisation added a moment ago) makes
    :meth:`active_among` read again at once, and the same unknown name at most every
    ``MISS_SECONDS`` (a Keycloak group that is no organisation): adding is seen at once,
    however recently another request read, and a suspension never later than ``ttl``.
    """

    MISS_SECONDS = 2.0

    def __init__(
        self, settings: Settings, *, ttl: float = 10.0, read: Callable[[], dict[str, str]] | None = None
    ):
        self.ttl = ttl
        self._read = read or (lambda: statuses(settings))
        self._lock = threading.Lock()
        self._at = -math.inf
        self._value: dict[str, str] = {}
        self._missed: dict[str, float] = {}  # unknown names, when they were last looked up

    def current(self, within: float | None = None) -> dict[str, str]:
        """The statuses, read again if older than ``within`` (default ``ttl``) seconds."""
        within = self.ttl if within is None else within
        now = time.monotonic()
        if now - self._at < within:
            return self._value
        with self._lock:
            if time.monotonic() - self._at >= within:
                try:
                    self._value = self._read()
                    self._at = time.monotonic()
                except Exception as exc:  # the ledger unreachable: keep one ttl, then fail closed
                    log.warning("organisation registry unreadable: %s", type(exc).__name__)
                    if now - self._at >= 2 * self.ttl:
                        self._value = {}
            return self._value

    def __deepcopy__(self, memo: dict[int, Any]) -> Statuses:
        return self  # one shared cache (traitlets deep-copies config values; a lock cannot be)

    def active(self) -> frozenset[str]:
        return frozenset(org for org, status in self.current().items() if status == ACTIVE)

    def active_among(self, names: Iterable[str]) -> frozenset[str]:
        """Which of ``names`` (a person's Keycloak groups) are active organisations."""
        names = set(names)
        value = self.current()
        now = time.monotonic()
        if any(now - self._missed.get(n, -math.inf) >= self.MISS_SECONDS for n in names - value.keys()):
            value = self.current(within=0.0)
            if len(self._missed) > 10_000:  # bounded: Keycloak's groups, not a request's words
                self._missed.clear()
            for name in names - value.keys():
                self._missed[name] = now
        return frozenset(org for org in names if value.get(org) == ACTIVE)

    def known(self) -> frozenset[str]:
        return frozenset(self.current())

    def forget(self) -> None:
        self._at = -math.inf
