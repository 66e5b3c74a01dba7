"""Helpers for the airlock's tests: a module's own organisation, analysts and grant; exports by API.

Each test module calls :func:`new_org` once: a new organisation (unique to the run, records
are never deleted) with two analysts (the requester and a colleague) and a DP grant on the
population register, provisioned as an approval does.
"""

from __future__ import annotations

import base64
import io
import secrets
import struct
import zlib
from typing import Any

import httpx
import polars as pl

from lab import access, cli
from lab.ledger import Ledger
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.org_support import create_analyst, credit_code
from tests.security.identity_support import api, bearer


def new_org(lab: Settings, label: str) -> dict[str, str]:
    """A new organisation with analysts ``user`` and ``colleague`` and an active DP grant."""
    suffix = secrets.token_hex(3)
    org = {"id": f"{label}-{suffix}", "user": f"an.{suffix}", "colleague": f"co.{suffix}"}
    added = cli.main(
        kct.operator_argv(lab, [  # logged in as the operator its --as names
            "org", "add", org["id"], "--name-zh", "测试导出审核有限公司", "--name-en", "Airlock Test Co.",
            "--credit-code", credit_code(), "--kind", "enterprise", "--contact", "Data office / 数据办",
            "--as", "op.wang",
        ])
    )  # fmt: skip
    assert added == 0
    for user in (org["user"], org["colleague"]):
        create_analyst(lab, user)
        assert cli.main(kct.operator_argv(lab, ["org", "add-user", org["id"], user, "--as", "op.wang"])) == 0
    with Ledger(lab.ledger_url, anchor_path=lab.ledger_anchor) as book:
        app = book.apply(
            organisation=org["id"], dataset="population", purpose="airlock tests",
            modes=["dp"], epsilon=0.5, delta=1e-7, term_days=30, applicant=org["user"],
        )  # fmt: skip
        assert cli.main(kct.operator_argv(lab, ["application", "approve", str(app.id), "--as", "op.li"])) == 0
        access.Provisioner(lab, book).provision()
    return org


def token(lab: Settings, user: str) -> dict[str, str]:
    return bearer(kct.access_token(lab, user))


def table_csv(small: bool = False) -> bytes:
    """A frequency table that passes the disclosure checks (or, ``small``, fails min-cell)."""
    counts = [3, 40, 55] if small else [120, 340, 55]
    frame = pl.DataFrame({"district": ["历下区", "市中区", "槐荫区"], "count": counts})
    return frame.write_csv().encode()


def png(width: int = 40, height: int = 20) -> bytes:
    """A small real PNG (a blue bar), written without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x1f\x5f\xbf" * width
    raw = zlib.compress(row * height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def request(
    lab: Settings, user: str, name: str, data: bytes, purpose: str = "report / 报告", **extra: Any
) -> httpx.Response:
    body = {"name": name, "purpose": purpose, "content_b64": base64.b64encode(data).decode(), **extra}
    return httpx.post(f"{api(lab)}/exports", headers=token(lab, user), json=body, timeout=120)


def exported(lab: Settings, user: str, name: str, data: bytes, **extra: Any) -> dict[str, Any]:
    response = request(lab, user, name, data, **extra)
    assert response.status_code == 200, response.text
    return dict(response.json())


def view(lab: Settings, operator: str, export_id: int) -> httpx.Response:
    """The reviewer's detail (records an export-view)."""
    return httpx.get(f"{api(lab)}/operator/exports/{export_id}", headers=token(lab, operator), timeout=60)


def decide(lab: Settings, user: str, export_id: int, decision: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{api(lab)}/operator/exports/{export_id}/review",
        headers=token(lab, user),
        json={"decision": decision, **extra},
        timeout=60,
    )


def parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
