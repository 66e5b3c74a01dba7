"""Generated requests over every route of the gateway, as every role: no answer is a 5xx.

Hypothesis draws at least :data:`REQUESTS` requests over every operation of the real
gateway's OpenAPI schema (the bearer API and the console pages and forms), each sent as
an analyst, an operator, an auditor (real Keycloak access tokens and real console
sessions, with the session's CSRF token on most form posts) or nobody (no credentials, a
forged token, a login-flow cookie in place of the session cookie). Values are drawn to
break things: huge, negative and non-numeric ids, names of 10,000 characters, NUL, control,
right-to-left and zero-width characters, look-alike letters, non-finite numbers, malformed
or deeply nested JSON, wrong types, and now and then a valid value so that the deeper
checks run too.

Afterwards: no answer was 500 or above, no audit record written during the run holds an
unvalidated name or text, and the audit chain verifies.

Ids in paths are never those of existing rows (they are above every id the lab has), so an
operator's approve or revoke that slipped through would change nothing; DP queries that
happen to be valid spend at most ε = 0.001 each.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from contextlib import ExitStack, closing
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lab.extracts import ledger as open_ledger
from lab.settings import Settings
from tests.integration import keycloak_test_client as kct
from tests.integration.console_client import console_login, csrf
from tests.security.test_inputs import record_problems

pytestmark = [pytest.mark.integration, pytest.mark.security]

REQUESTS = int(os.environ.get("DATALAB_FUZZ_REQUESTS", "5000"))
USERS = {"analyst": "li.na", "operator": "op.wang", "auditor": "audit.zhao"}
ROLES = (*USERS, "none")
PREFIX = "/services/gateway"
# Query parameters the console reads without declaring them (filters, search, pages).
PAGING = ["page", "size"]
AUDIT_FILTERS = ["organisation", "actor", "dataset", "kind", "since", "until"]
SECTION = [*PAGING, "state", "organisation", "dataset", "q"]
EXTRA_QUERY = {
    f"{PREFIX}/console/auditor": [*AUDIT_FILTERS, *PAGING, "period"],
    f"{PREFIX}/console/auditor/records.csv": AUDIT_FILTERS,
    f"{PREFIX}/console/operator": SECTION,
    f"{PREFIX}/console/operator/grants": SECTION,
    f"{PREFIX}/console/operator/organisations": [*PAGING, "state", "q"],
    f"{PREFIX}/console/operator/datasets": [*PAGING, "q", "organisation", "mode"],
}
FIELDS = [
    "dataset",
    "purpose",
    "modes",
    "epsilon",
    "delta",
    "term_days",
    "note",
    "reason",
    "decision",
    "override",
    "name",
    "content_b64",
    "counts",
    "by",
    "kind",
    "spec",
    "aggregate",
    "group_by",
    "filters",
    "alpha",
    "csrf",
    "confirm",
    "back",
    "item",
    "modes_field",
]

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "population",
            "legal_entity",
            "dp",
            "masked",
            "dp-table",
            "dp-synthetic",
            "approve",
            "reject",
            "pending",
            "held",
            "day",
            "hour",
            "count",
            "district",
            "p\u043epulation",
            "\uff50\uff4f\uff50",
            "popu\x00lation",
            "\u202eevil",
            "a\u200bb",
            "\x1b[31m",
            "../../etc/passwd",
            "' OR 1=1 --",
            "%00",
            "\ud800",
            "x" * 10_000,
            "张店区",
            "2026-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
            "nan",
            "inf",
            "-1e309",
            "99999999999999999999999",
            "-1",
            str(10**30),
            "1e3",
            "２",
            "detail",
            "ended",
            "all",
        ]
    ),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, 0.001, 1e-9, 1e308, 2**63, 2**31]),
)
json_scalars = st.one_of(st.none(), st.booleans(), numbers, nasty_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def bodies(draw: Any) -> Any:
    """A JSON body: mostly an object over the gateway's field names, sometimes garbage."""
    how = draw(st.integers(0, 9))
    if how == 0:
        return (
            "raw",
            draw(st.sampled_from(["{", "NaN", '{"epsilon": NaN}', "[" * 3000, "\xff\xfe", "null"])),
        )
    if how == 1:
        return ("json", draw(json_values))
    if how == 2:  # a nearly valid DP query: the engine's own checks run
        query = {
            "dataset": draw(st.sampled_from(["population", "utility", "legal_entity", "nope"])),
            "aggregate": draw(
                st.one_of(
                    st.fixed_dictionaries(
                        {"kind": st.sampled_from(["count", "sum", "mean", "median", "quantile", "x"])},
                        optional={"column": nasty_text, "q": numbers, "bounds": json_values},
                    ),
                    json_values,
                )
            ),
            "epsilon": draw(st.one_of(st.sampled_from([0.001, 0, -1, 1e-12, 1e9]), nasty_text)),
        }
        extra = draw(st.dictionaries(st.sampled_from(["group_by", "filters", "alpha", "delta"]), json_values))
        return ("json", {**query, **extra})
    if how == 3:  # an export request with real base64
        content = draw(st.binary(max_size=200))
        return (
            "json",
            {
                "name": draw(nasty_text),
                "purpose": draw(nasty_text),
                "content_b64": base64.b64encode(content).decode(),
                **draw(
                    st.dictionaries(st.sampled_from(["dataset", "counts", "by"]), json_values, max_size=2)
                ),
            },
        )
    return ("json", draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)))


@st.composite
def ids(draw: Any, floor: int) -> str:
    """A path id that is never an existing row's."""
    return str(
        draw(
            st.one_of(
                st.integers(min_value=floor, max_value=2**31 - 1),
                st.integers(min_value=2**31, max_value=10**30),
                st.integers(max_value=0),
                nasty_text.filter(lambda t: t and "/" not in t and t not in (".", "..")),
            )
        )
    )


class Caller:
    """How one role calls: a bearer token (refreshed each minute) and a console session."""

    def __init__(self, settings: Settings, role: str, stack: ExitStack) -> None:
        self.settings, self.role = settings, role
        self._token: tuple[float, str] = (0.0, "")
        self.console: httpx.Client | None = None
        self.csrf = ""
        self.origin = settings.public_url  # the consoles' origin, as the browser sends it
        if role in USERS:
            self.console = stack.enter_context(closing(console_login(settings, USERS[role])))
            if role != "auditor":  # the auditor's page has no form
                self.csrf = csrf(self.console.get(f"{settings.console_url}/{role}").text)

    def headers(self) -> dict[str, str]:
        if self.role not in USERS:
            return {}
        at, token = self._token
        if time.monotonic() - at > 60:
            self._token = (time.monotonic(), kct.access_token(self.settings, USERS[self.role]))
        return {"Authorization": f"Bearer {self._token[1]}"}

    def cookies(self) -> dict[str, str]:
        if self.console is None:
            return {}
        return {k: v for k, v in self.console.cookies.items() if k == "datalab_console"}


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            found.append((method.upper(), path, op))
    return found


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        segment = quote(value.encode("utf-8", errors="surrogatepass"), safe="") or "x"
        path = path.replace("{" + name + "}", segment)
    return path


def test_fuzz_every_route_as_every_role_never_answers_5xx(lab_stack: Settings) -> None:
    kct.ensure(lab_stack)
    base = lab_stack.url("gateway")
    schema = httpx.get(f"{base}{PREFIX}/openapi.json", timeout=30).json()
    ops = operations(schema)
    assert len(ops) >= 40, len(ops)
    with open_ledger(lab_stack) as book:
        start_seq = book.records(newest_first=True, limit=1)[0].seq
        floor = 1 + max(
            [0]
            + [g.id for g in book.list_grants()]
            + [a.id for a in book.list_applications()]
            + [e.id for e in book.list_exports()]
        )
    floor += 100_000  # rows created during the run stay below it too
    flow_cookie = httpx.get(f"{base}{PREFIX}/console/login", timeout=30).cookies.get("datalab_oidc") or ""

    statuses: Counter[int] = Counter()
    by_route: Counter[str] = Counter()
    failures: list[str] = []
    with ExitStack() as stack, httpx.Client(base_url=base, timeout=120, follow_redirects=False) as http:
        callers = {role: Caller(lab_stack, role, stack) for role in ROLES}

        @st.composite
        def requests(draw: Any, method: str, path: str, op: dict[str, Any], role: str) -> dict[str, Any]:
            params = op.get("parameters", [])
            path_values = {p["name"]: draw(ids(floor)) for p in params if p["in"] == "path"}
            names = [p["name"] for p in params if p["in"] == "query"] + EXTRA_QUERY.get(path, [])
            query = {n: draw(st.one_of(nasty_text, numbers.map(str))) for n in names if draw(st.booleans())}
            body = draw(bodies()) if method == "POST" else None
            form = None
            if method == "POST" and "/console/" in path:
                form = draw(st.dictionaries(st.sampled_from(FIELDS), nasty_text, max_size=5))
            trick = draw(
                st.sampled_from(
                    [
                        "none",
                        "none",
                        "none",
                        "forged",
                        "flow-cookie",
                        "bad-cookie",
                        "no-csrf",
                        "foreign-origin",
                    ]
                )
            )
            return {
                "method": method,
                "path": path,
                "url": _fill(path, path_values),
                "role": role,
                "query": query,
                "body": body,
                "form": form,
                "trick": trick,
            }

        def send(req: dict[str, Any]) -> int:
            caller = callers[req["role"]]
            headers, cookies = caller.headers(), caller.cookies()
            if req["trick"] == "forged":
                headers = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}
            if req["trick"] == "flow-cookie":
                cookies = {"datalab_console": flow_cookie}
            if req["trick"] == "bad-cookie":
                cookies = {"datalab_console": "\u00e9t\u00e9.\u00e9", "datalab_oidc": "x.\u00ff"}
            if req["method"] != "GET":  # a browser names the page a form was sent from
                origin = "http://evil.localhost:1" if req["trick"] == "foreign-origin" else caller.origin
                headers = {**headers, "Origin": origin}
            if cookies:
                cookie = "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()
                headers = {**headers, "Cookie": cookie}  # type: ignore[dict-item]  # bytes: any octets
            kwargs: dict[str, Any] = {"headers": headers, "params": req["query"]}
            if req["form"] is not None:
                form = dict(req["form"])
                if req["trick"] != "no-csrf":
                    form["csrf"] = caller.csrf
                kwargs["data"] = form
            elif req["body"] is not None:
                kind, value = req["body"]
                raw = value if kind == "raw" else json.dumps(value, ensure_ascii=False)
                kwargs["content"] = raw.encode("utf-8", errors="surrogatepass")
                kwargs["headers"] = {**headers, "content-type": "application/json"}
            try:
                response = http.request(req["method"], req["url"], **kwargs)
            except (httpx.InvalidURL, UnicodeEncodeError):
                return 0  # the client refused to send it (e.g. a NUL in the URL): nothing reached the server
            except httpx.TransportError:
                return 599  # the server dropped the connection: no answer at all is worse than a 500
            return response.status_code

        def record(req: dict[str, Any]) -> None:
            status = send(req)
            if status == 0:
                return
            statuses[status] += 1
            by_route[f"{req['method']} {req['path']}"] += 1
            if status >= 500:
                failures.append(
                    f"{status} {req['method']} {req['path']} as {req['role']} ({req['trick']}): "
                    f"query={sorted(req['query'])} body={str(req['body'])[:160]!r} "
                    f"form={str(req['form'])[:80]!r}"
                )

        # Every operation as every role, each pair its own hypothesis run; again until enough.
        pairs = [(m, p, op, role) for m, p, op in ops for role in ROLES]
        started = time.monotonic()
        while (missing := REQUESTS - sum(statuses.values())) > 0:
            per_pair = -(-missing // len(pairs))
            for method, path, op, role in pairs:
                fuzz = settings(
                    max_examples=per_pair,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )(given(requests(method, path, op, role))(record))
                fuzz()
        took = time.monotonic() - started

    sent = sum(statuses.values())
    print(
        f"\nfuzz: {sent} requests in {took:.0f} s over {len(by_route)} routes; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    assert len(by_route) == len(ops), sorted({f"{m} {p}" for m, p, _ in ops} - set(by_route))
    assert not failures, f"{len(failures)} answers ≥ 500, e.g.\n" + "\n".join(failures[:15])
    assert sent >= REQUESTS
    with open_ledger(lab_stack) as book:
        written = [r for r in book.records(newest_first=False) if r.seq > start_seq]
        problems = [p for r in written for p in record_problems(r)]
        assert not problems, problems[:10]
        verification = book.verify()
        assert verification.ok, verification
    print(f"fuzz: {len(written)} audit records written during the run, every one clean; the chain verifies")
