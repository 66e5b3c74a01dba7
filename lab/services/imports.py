"""Importing registers from the operator console: an uploaded file or a PostgreSQL table.

The same path as ``datalab dataset import | accept`` (:mod:`lab.ingest`): the source is
streamed into a new version in the raw bucket, the scanner writes a draft policy when none
is given, and a version is published only when an operator accepts a policy that validates
(both recorded in the audit ledger, with the operator as actor). What the console adds:

- an upload is written by the page (:mod:`lab.gateway.console_import`) into a private
  scratch directory and removed after the import, whatever happens;
- a PostgreSQL server must be one the bureau listed (``DATALAB_IMPORT_PG_HOSTS``): the
  gateway sits in the restricted zone and connects nowhere else on an operator's say-so;
  the password comes in its own field, never in the URL, and is never stored or recorded;
- a policy arrives as text (the reviewed draft, edited in the page), checked like a file;
- every call checks the operator in Keycloak again (:func:`require_operator`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.errors import AccessDenied, ConfigError, LabError
from lab.ingest import Imported, RawStore, accept, import_source, manifests
from lab.ingest.importer import check_policy, column_types, draft_path, version_key
from lab.ingest.postgres import host as pg_host
from lab.ingest.sources import POSTGRES_SCHEMES
from lab.services.onboarding import require_operator
from lab.settings import Settings
from lab.validate import name as valid_name

Audit = Callable[..., Any]
POLICY_MAX = 256 * 1024  # characters of a policy given as text


class Imports:
    """The import use cases of the operator console."""

    def __init__(
        self,
        settings: Settings,
        directory: Any,
        store: Callable[[], RawStore],
        audit: Audit,
        published: Callable[[], object] = lambda: None,
        rebuild: Callable[[str, str], int] = lambda dataset, actor: 0,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.store = store
        self.audit = audit
        self.published = published  # told after a version is published (the catalogue re-reads)
        self.rebuild = rebuild  # (dataset, actor) → extracts of earlier versions queued for a rebuild

    def upload(
        self,
        actor: str,
        path: Path,
        name: str,
        *,
        new_version: bool = False,
        encoding: str | None = None,
        policy: str = "",
    ) -> Imported:
        """Import an uploaded file (``path``, in the scratch directory) as ``name``."""
        actor = require_operator(self.directory, actor)
        return self._import(actor, str(path), name, new_version, encoding or None, policy, None)

    def table(
        self, actor: str, url: str, password: str, name: str, *, new_version: bool = False, policy: str = ""
    ) -> Imported:
        """Import a PostgreSQL table of a listed server."""
        actor = require_operator(self.directory, actor)
        if not url.startswith(POSTGRES_SCHEMES):
            raise ConfigError(
                "give a PostgreSQL URL: postgresql://user@host:port/database?table=name "
                "(请填写 PostgreSQL 地址)",
                reason="bad-source",
            )
        server = pg_host(url)
        if server not in self.settings.import_pg_hosts:
            raise AccessDenied(
                f"the gateway imports only from the PostgreSQL servers the bureau listed "
                f"({', '.join(self.settings.import_pg_hosts)}); {server[:80]!r} is not one of them — ask "
                "the lab's administrator to add it to DATALAB_IMPORT_PG_HOSTS "
                "(该数据库服务器不在允许导入的列表中，请联系管理员添加)",
                reason="source-not-allowed",
            )
        return self._import(actor, url, name, new_version, None, policy, password or None)

    def _import(
        self,
        actor: str,
        spec: str,
        name: str,
        new_version: bool,
        encoding: str | None,
        policy: str,
        password: str | None,
    ) -> Imported:
        with self._policy_file(policy) as policy_path:
            imported = import_source(
                self.settings,
                self.store(),
                spec,
                name=name,
                actor=actor,
                policy=policy_path,
                new_version=new_version,
                encoding=encoding,
                audit=self.audit,
                password=password,
            )
        if imported.published:
            self.published()
        return imported

    def accept(
        self, actor: str, dataset: str, version: int, policy: str = "", *, rebuild: bool = False
    ) -> dict[str, Any]:
        """Publish ``version`` of ``dataset`` with ``policy`` (text; default: its draft); with
        ``rebuild``, queue the organisations' extracts of earlier versions to be built again
        (``rebuilding`` in the answer: how many). Otherwise they stay as they are."""
        actor = require_operator(self.directory, actor)
        with self._policy_file(policy) as path:
            meta = accept(
                self.settings,
                self.store(),
                dataset,
                actor=actor,
                version=version,
                policy=path,
                audit=self.audit,
            )
        self.published()
        return {**meta, "rebuilding": self.rebuild(dataset, actor) if rebuild else 0}

    def pending(self) -> list[dict[str, Any]]:
        """Imported versions not yet accepted, newest first, each with its draft and its problems."""
        store = self.store()
        found = []
        for dataset in store.names():
            for manifest in manifests(store, dataset):
                if manifest["accepted"] is None:
                    found.append(self._draft(store, dataset, manifest))
        return sorted(found, key=lambda m: str(m["imported_at"]), reverse=True)

    def _draft(self, store: RawStore, dataset: str, manifest: dict[str, Any]) -> dict[str, Any]:
        number = int(manifest["version"])
        path = draft_path(self.settings, dataset, number)
        if path.is_file():
            text = path.read_text(encoding="utf-8")
        else:
            text = (store.get_bytes(version_key(dataset, number, str(manifest["policy"]))) or b"").decode()
        problems: list[str] = []
        with self._policy_file(text) as checked:
            try:
                assert checked is not None
                types = {c["name"]: c["type"] for c in manifest["schema"]}
                check_policy(self.settings, checked, dataset, column_types(types))
            except LabError as exc:
                problems = exc.detail.splitlines()
        return {**manifest, "draft": text, "problems": problems}

    def _policy_file(self, text: str) -> Any:
        """A context giving ``text`` as a policy file in the scratch space (None for no text)."""
        return _PolicyFile(self.settings, text)


class _PolicyFile:
    def __init__(self, settings: Settings, text: str) -> None:
        self.settings = settings
        self.text = text.replace("\r\n", "\n")
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path | None:
        if not self.text.strip():
            return None
        if len(self.text) > POLICY_MAX:
            raise ConfigError(
                f"the policy is longer than {POLICY_MAX // 1024} KiB; shorten it (策略过长)",
                reason="too-large",
            )
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = tempfile.TemporaryDirectory(dir=self.settings.work_dir, prefix="policy-")
        path = Path(self.tmp.name) / "policy.yaml"
        path.write_text(self.text, encoding="utf-8")
        return path

    def __exit__(self, kind: object, exc: object, trace: object) -> None:
        if self.tmp is None:
            return
        if isinstance(exc, LabError):  # name the policy as the operator knows it, not the scratch path
            scratch = str(Path(self.tmp.name) / "policy.yaml")
            exc.message = exc.message.replace(scratch, "policy")
            exc.detail = exc.detail.replace(scratch, "policy")
            exc.args = (exc.message,)
        self.tmp.cleanup()


def check_dataset_name(name: str) -> str:
    """The dataset name of a form, validated (a clear error before any upload is read)."""
    return valid_name(name.strip(), "name")
