"""The rules of :mod:`lab.validate`, one by one (no services; the attacks run in test_inputs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from lab import validate
from lab.airlock import _exactly, canonical_result
from lab.gateway.auth import Caller
from lab.gateway.sessions import Sessions, Signer
from lab.validate import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("good", ["population", "legal_entity", "dp-table", "a", "x" * 64, "v1.2"])
def test_names_that_pass(good: str) -> None:
    assert validate.name(good, "dataset") == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x" * 65,
        "Population",
        "p\u043epulation",
        "\uff50op",
        "popu\x00lation",
        "\u202epop",
        "a b",
        "-a",
        1,
        None,
    ],
)
def test_names_that_fail_say_the_field_and_never_the_value(bad: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate.name(bad, "dataset")
    message = caught.value.message
    assert message.startswith("dataset:") and "请改正" in message
    if isinstance(bad, str) and bad:
        assert bad not in message
    assert caught.value.reason == "invalid-input" and len(caught.value.fingerprint["sha256"]) == 64


@pytest.mark.parametrize("good,expected", [("1", 1), (7, 7), (" 42 ", 42), ("2147483647", 2**31 - 1)])
def test_ids_that_pass(good: object, expected: int) -> None:
    assert validate.ident(good, "export id") == expected


@pytest.mark.parametrize(
    "bad", ["99999999999999999999999", 2**31, 0, -1, "-1", "1e3", "\u0663", "1 OR 1=1", True, 1.0, None, ""]
)
def test_ids_that_fail(bad: object) -> None:
    with pytest.raises(InvalidInput):
        validate.ident(bad, "export id")


def test_text_is_kept_in_nfkc_form_without_control_or_format_characters() -> None:
    assert validate.text("用途（研究）", "purpose") == "用途(研究)"
    assert validate.text("two\nlines\tok", "purpose") == "two\nlines\tok"
    for bad in ("a\x00b", "\u202eabc", "a\u200bb", "\x1b[31m", "x" * 2001, "\ud800"):
        with pytest.raises(InvalidInput):
            validate.text(bad, "purpose")
    with pytest.raises(InvalidInput):
        validate.text("a\nb", "name", lines=False)


def test_numbers_times_and_bodies() -> None:
    assert validate.number("0.5", "epsilon") == 0.5 and validate.number(None, "epsilon") is None
    for bad in ("nan", "inf", float("nan"), 1e308 * 10, "1e999", -1, True, "x"):
        with pytest.raises(InvalidInput):
            validate.number(bad, "epsilon")
    assert validate.moment("2026-01-01T08:00:00", "since") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    for bad in ("yesterday", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        with pytest.raises(InvalidInput):
            validate.moment(bad, "since")
    body = {"dataset": "population", "filters": [{"column": "district", "value": "张店区"}]}
    assert validate.body(body) == body
    for bad_body in (
        {"epsilon": float("nan")},
        {"n": 2**64},
        {"k\x00": 1},
        {"x" * 65: 1},
        {"a": "\u202e"},
        json.loads("[" * 40 + "]" * 40),
    ):
        with pytest.raises(InvalidInput):
            validate.body(bad_body)
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(InvalidInput):
        validate.body({"a": deep})


class _KeycloakAgrees:
    """Stands in for the Keycloak re-check: the directory still knows the caller as they were."""

    def current(self, caller: Caller) -> Caller:
        return caller


def test_a_signed_cookie_that_is_no_session_reads_as_none() -> None:
    signer = Signer(b"k" * 32)
    sessions = Sessions.__new__(Sessions)
    sessions.signer = signer
    sessions.verifier = _KeycloakAgrees()  # type: ignore[assignment]
    flow = signer.dumps({"state": "s", "nonce": "n", "pkce": "p", "next": "/"}, 600)
    assert sessions.read(flow) is None
    assert sessions.read(signer.dumps({"u": "li.na", "o": None, "r": "analyst", "c": "x"}, 600)) is None
    assert sessions.read("\u00e9t\u00e9.\u00e9") is None
    good = sessions.read(signer.dumps({"u": "li.na", "o": "qilu-energy", "r": ["analyst"], "c": "x"}, 600))
    assert good is not None and good.caller.username == "li.na"


def test_only_the_kept_result_itself_is_recognised() -> None:
    kept = {"digest": "d", "rows": [{"value": 1}], "budget": {"epsilon": 1.0}, "reservation_id": 3}
    bare = {"digest": "d", "rows": [{"value": 1}]}
    assert _exactly(dict(kept), kept) and _exactly(bare, kept)
    assert not _exactly({**kept, "extra": []}, kept)
    assert not _exactly({**bare, "budget": {"epsilon": 1.0, "rows": [1]}}, kept)
    assert canonical_result(kept) == canonical_result(json.loads(json.dumps(kept, indent=2)))
