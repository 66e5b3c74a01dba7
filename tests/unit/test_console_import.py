"""The console's import path without the lab: the streamed upload and the use cases.

``read_upload`` runs inside a small FastAPI app (Starlette's test client posts real
multipart bodies); ``Imports`` runs over a directory store and an audit spy, with a stand-in
for Keycloak's answer to "is this person an enabled operator". The Chromium journey over
the running lab is in ``tests/integration/test_onboarding.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from lab.errors import AccessDenied, ConfigError, LabError, PolicyError
from lab.gateway.console import ConsoleDenied
from lab.gateway.console_import import _file_name, read_upload
from lab.ingest import DirStore
from lab.services.imports import Imports
from lab.settings import Settings
from tests.unit.ingest_support import Audit, settings_fixture, store_fixture  # noqa: F401  (fixtures)
from tests.unit.ingest_support import rows as _rows
from tests.unit.ingest_support import write_csv as _csv
from tests.unit.test_ingest import POLICY

pytestmark = pytest.mark.unit
CSRF = "token-of-this-session"


def _app(folder: Path, max_bytes: int) -> TestClient:
    app = FastAPI()

    @app.post("/up")
    async def up(request: Request) -> JSONResponse:
        try:
            fields, path = await read_upload(request, CSRF, folder, max_bytes)
        except ConsoleDenied as exc:
            return JSONResponse({"denied": exc.message}, status_code=403)
        except LabError as exc:
            return JSONResponse({"error": exc.message, "reason": exc.reason}, status_code=400)
        return JSONResponse({"fields": fields, "file": path.name, "bytes": path.stat().st_size})

    return TestClient(app)


def _post(
    client: TestClient, data: dict[str, str], name: str = "people.csv", body: bytes = b"a,b\n1,2\n"
) -> Any:
    return client.post("/up", data=data, files={"source": (name, body, "text/csv")})


def test_an_upload_streams_to_the_folder_with_its_fields(tmp_path: Path) -> None:
    answer = _post(_app(tmp_path, 1 << 20), {"csrf": CSRF, "name": "people", "new_version": "1"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "fields": {"csrf": CSRF, "name": "people", "new_version": "1"},
        "file": "people.csv",
        "bytes": 8,
    }


@pytest.mark.security
def test_a_post_without_the_csrf_token_writes_no_byte(tmp_path: Path) -> None:
    """A cross-site form riding an operator's cookie is refused before the file is stored."""
    for data in ({}, {"csrf": "guessed"}):
        answer = _post(_app(tmp_path, 1 << 20), data)
        assert answer.status_code == 403 and "请刷新页面" in answer.json()["denied"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.security
def test_a_file_name_cannot_leave_the_scratch_folder(tmp_path: Path) -> None:
    folder = tmp_path / "scratch"
    folder.mkdir()
    answer = _post(_app(folder, 1 << 20), {"csrf": CSRF}, name="../../etc/cron.d/x.csv")
    assert answer.status_code == 200 and answer.json()["file"] == "x.csv"
    assert [p.name for p in folder.iterdir()] == ["x.csv"] and not (tmp_path / "etc").exists()
    assert _file_name("..\\..\\自来水 用户.CSV") == "自来水_用户.csv"
    assert _file_name(".csv") == "upload.csv"
    for bad in ("run.sh", "notes", "data.csv.exe"):
        with pytest.raises(ConfigError, match="upload a .csv"):
            _file_name(bad)


def test_a_file_over_the_limit_is_refused_with_the_limit(tmp_path: Path) -> None:
    answer = _post(_app(tmp_path, 1 << 20), {"csrf": CSRF}, body=b"x" * ((1 << 20) + 1))
    assert answer.status_code == 400 and answer.json()["reason"] == "too-large"
    assert "1 MB" in answer.json()["error"] and "命令行" in answer.json()["error"]


def test_a_malformed_or_incomplete_form_names_what_to_do(tmp_path: Path) -> None:
    client = _app(tmp_path, 1 << 20)
    no_file = client.post("/up", data={"csrf": CSRF, "name": "x"}, files={"other": ("a.csv", b"1")})
    assert no_file.status_code == 400 and "unexpected field" in no_file.json()["error"]
    urlencoded = client.post("/up", data={"csrf": CSRF})
    assert urlencoded.status_code == 400 and "import page" in urlencoded.json()["error"]
    cut = client.post(
        "/up",
        content=b'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n' + CSRF.encode() + b"\r\n--b\r\n"
        b'Content-Disposition: form-data; name="source"; filename="a.csv"\r\n\r\na,b\n1,',
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert cut.status_code == 400 and "上传中断" in cut.json()["error"]  # never imported half a file


# --- the use cases ---------------------------------------------------------------------------


class _Directory:
    """Keycloak's answer for two people: an enabled operator and an analyst."""

    def person(self, name: str) -> Any:
        roles = {"op.wang": {"operator"}, "li.na": {"analyst"}}.get(name)
        return None if roles is None else SimpleNamespace(username=name, enabled=True, roles=roles)


def _imports(settings: Settings, store: DirStore, audit: Audit) -> Imports:
    return Imports(settings, _Directory(), lambda: store, audit)


def test_upload_review_edit_and_accept(settings: Settings, store: DirStore, tmp_path: Path) -> None:
    audit = Audit()
    imports = _imports(settings, store, audit)
    path = _csv(tmp_path / "people.csv", _rows(200))
    done = imports.upload("op.wang", path, "people")
    assert done.version == 1 and not done.published
    [pending] = imports.pending()
    assert pending["dataset"] == "people" and pending["rows"] == 200 and pending["problems"] == []
    assert "person_id" in pending["draft"]
    broken = pending["draft"] + "  ghost: {level: general, pi: none, rule: keep}\n"
    with pytest.raises(PolicyError) as error:
        imports.accept("op.wang", "people", 1, broken)
    assert "'ghost' is not in dataset" in error.value.message
    assert str(settings.work_dir) not in error.value.message  # named "policy", not a scratch path
    assert imports.pending() != [] and not (store.root / "people" / "meta.json").exists()
    meta = imports.accept("op.wang", "people", 1, POLICY.format(name="people"))
    assert meta["version"] == 1 and meta["accepted_by"] == "op.wang"
    assert imports.pending() == [] and audit.kinds == ["dataset-import", "dataset-accept"]
    assert list(settings.work_dir.iterdir()) == []  # no policy text left in the scratch space


def test_a_policy_given_with_the_upload_publishes_at_once(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    imports = _imports(settings, store, Audit())
    done = imports.upload(
        "op.wang", _csv(tmp_path / "p.csv", _rows(50)), "people", policy=POLICY.format(name="people")
    )
    assert done.published and imports.pending() == []


@pytest.mark.security
def test_only_an_enabled_operator_imports_or_accepts(
    settings: Settings, store: DirStore, tmp_path: Path
) -> None:
    imports = _imports(settings, store, Audit())
    path = _csv(tmp_path / "people.csv", _rows(20))
    for who in ("li.na", "mallory"):
        with pytest.raises(AccessDenied, match="not an enabled operator"):
            imports.upload(who, path, "people")
        with pytest.raises(AccessDenied):
            imports.table(who, "postgresql://r@127.0.0.1/db?table=t", "pw", "people")
    imports.upload("op.wang", path, "people")
    with pytest.raises(AccessDenied):
        imports.accept("li.na", "people", 1)
    assert not (store.root / "people" / "meta.json").exists()


@pytest.mark.security
def test_the_gateway_connects_only_to_listed_database_servers(settings: Settings, store: DirStore) -> None:
    """An operator cannot point the restricted zone's gateway at any other server (refused before
    any connection is tried: nothing resolves or dials the name)."""
    imports = _imports(settings, store, Audit())
    for url in (
        "postgresql://r@db.internal.example:5432/x?table=t",
        "postgresql://r@10.1.2.3/x?table=t",
        "postgresql://r@/x?host=/var/run/other&table=t",
        "postgresql://r@127.0.0.1.example/x?table=t",
    ):
        with pytest.raises(AccessDenied, match="DATALAB_IMPORT_PG_HOSTS") as error:
            imports.table("op.wang", url, "s3cret-pw", "people")
        assert "s3cret-pw" not in error.value.message + error.value.detail
    with pytest.raises(ConfigError, match="password"):  # a password in the URL is still refused
        imports.table("op.wang", "postgresql://r:pw@127.0.0.1/x?table=t", "", "people")
    with pytest.raises(ConfigError, match="PostgreSQL URL"):
        imports.table("op.wang", "/etc/passwd", "", "people")
    assert store.names() == []
