"""The auditor console: integrity, the budget chart, flags, risk reports and the audit search.

Under ``/console/auditor`` (the role guard and each route's dependency refuse anyone else).
Every parameter is checked and a bad one is a 400 page saying which, with the form as typed
(never a value the refusal is about). The search is paged from the ledger (:mod:`lab.gateway.paging`:
at most 200 rows a page, a count of all) and its whole result downloads as CSV, read in
batches and recorded in the audit log (``audit-export``). Each flag links to the search that
finds the records behind it. Times are in the lab's zone (:mod:`lab.localtime`), named.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from lab import validate
from lab.errors import ConfigError, LabError
from lab.gateway import i18n, paging
from lab.gateway.charts import budget_chart, budget_rows
from lab.gateway.console import KINDS, Auditor, Console, summary
from lab.gateway.governance_api import attachment
from lab.gateway.sessions import Session
from lab.localtime import ZONE
from lab.validate import InvalidInput

PAGE = "auditor"
FILTERS = ("organisation", "actor", "dataset", "kind", "since", "until")
CSV_COLUMNS = ("seq", f"time ({ZONE.key})", "actor", "organisation", "dataset", "kind", "details", "hash")


def _naive(value: str) -> bool:
    """True if a (valid) time text names no zone."""
    try:
        return datetime.fromisoformat(value).tzinfo is None
    except ValueError:  # valid only once normalised (validate.moment): read it as it was read
        return False


def _time(value: str | None) -> datetime | None:
    """A filter's time; one without a zone (the form's datetime-local) is in the lab's zone, as shown."""
    moment = validate.moment(value, "since/until")  # a 400 naming the format, never a 500
    if moment is not None and value and _naive(value):
        moment = moment.replace(tzinfo=ZONE).astimezone(UTC)
    return moment


def _typed(request: Request) -> dict[str, str | None]:
    q = request.query_params
    return {k: q.get(k) or None for k in FILTERS}


def _checked(typed: Mapping[str, str | None]) -> dict[str, Any]:
    since, until = validate.span(_time(typed["since"]), _time(typed["until"]))
    return {**typed, "since": since, "until": until}


def _local_form(value: Any) -> str:
    """A stored time as the search form's datetime-local value (the lab's zone, to the second)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M:%S")


def flag_search(base: str, flag: Mapping[str, Any]) -> str:
    """The search that lists the records behind ``flag`` (its organisation, user, dataset, span)."""
    last = datetime.fromisoformat(str(flag["last"])) + timedelta(seconds=1)  # until is exclusive
    query = {
        "organisation": flag.get("organisation") or "",
        "actor": flag.get("actor") or "",
        "dataset": flag.get("dataset") or "",
        "kind": "dp-query",
        "since": _local_form(flag["first"]),
        "until": _local_form(last),
    }
    return f"{base}/{PAGE}?{urlencode({k: v for k, v in query.items() if v})}#search"


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def router(console: Console) -> APIRouter:
    pages = APIRouter(prefix="/console")
    gov = console.gov

    def page(request: Request, session: Session, status: int = 200, error: str = "") -> Response:
        who, lang = session.caller, console.lang(request)
        t = i18n.translator(lang)
        typed = _typed(request)  # shown back in the form as typed, also when refused
        params = request.query_params
        window = None
        period = "hour" if params.get("period") == "hour" else "day"
        try:
            number, size = paging.page_size(params)
            filters = _checked(typed)
            if not error:
                total = gov.search_count(who, filters)
                query: dict[str, str] = {k: v or "" for k, v in typed.items()}
                query["period"] = period
                window = paging.counted(
                    total,
                    lambda offset, limit: gov.search(who, filters, limit=limit, offset=offset),
                    number,
                    size,
                    f"{console.base}/{PAGE}",
                    query,
                )
        except ConfigError as exc:  # a 400 page saying what was wrong, never a 500
            status, error = 400, exc.message
        if error:  # typed values are kept, but never one the refusal is about (control, bidi, huge)
            typed = {k: paging.plain(v) for k, v in typed.items()}
        for record in window.rows if window else []:
            record["summary"] = summary(record["details"])
        spending = gov.spending(who, period, ZONE)
        keys = sorted({(p["organisation"], p["dataset"]) for p in spending})
        caps = gov.budget_caps(who, keys) if keys else {}
        words = {"cap": t("cap"), "granted": t("granted_eps"), "no_cap": t("no_cap"), "periods": t("periods")}
        flags = gov.flags(who)
        for flag in flags:
            flag["search"] = flag_search(console.base, flag)
        return console.render(
            request,
            "auditor.html",
            "auditor",
            session,
            verification=gov.verify(who),
            chart=budget_chart(
                spending, title=f"{t('chart')} ({ZONE.key})", empty=t("no_data"), caps=caps, words=words
            ),
            budget=budget_rows(spending, caps),
            zone=ZONE.key,
            flags=flags,
            risk_reports=gov.risk_reports(who),
            filters=typed,
            records=window,
            kinds=KINDS,
            period=period,
            status=status,
            refused=error,
        )

    @pages.get(f"/{PAGE}")
    def auditor_page(request: Request, session: Auditor) -> Response:
        return page(request, session)

    @pages.get(f"/{PAGE}/records.csv")
    def records_csv(request: Request, session: Auditor) -> Response:
        try:
            filters = _checked(_typed(request))
            rows = gov.search_export(session.caller, filters)  # recorded before the first row
        except InvalidInput as exc:
            return page(request, session, 400, exc.message)

        def lines() -> Iterator[bytes]:
            out = io.StringIO()
            writer = csv.writer(out)
            out.write("\ufeff")  # spreadsheets read the file as UTF-8 (中文 names)
            writer.writerow(CSV_COLUMNS)
            for n, r in enumerate(rows, 1):
                at = datetime.fromisoformat(r["at"]) if isinstance(r["at"], str) else r["at"]
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                details = json.dumps(r["details"], ensure_ascii=False, sort_keys=True)
                writer.writerow(
                    [
                        _cell(v)
                        for v in (
                            r["seq"],
                            at.astimezone(ZONE).isoformat(),
                            r["actor"],
                            r["organisation"],
                            r["dataset"],
                            r["kind"],
                            details,
                            r["hash"],
                        )
                    ]
                )
                if n % 500 == 0:
                    yield out.getvalue().encode()
                    out.seek(0)
                    out.truncate()
            yield out.getvalue().encode()

        name = f"audit-records-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.csv"
        return StreamingResponse(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )

    @pages.get(f"/{PAGE}/records/{{seq}}")
    def record_page(request: Request, session: Auditor, seq: str) -> Response:
        who = session.caller
        try:
            record, status, refused = gov.record(who, seq), 200, ""
        except LabError as exc:
            record, status, refused = None, 400 if isinstance(exc, ConfigError) else 404, exc.message
        body = json.dumps(record["details"], ensure_ascii=False, indent=2, sort_keys=True) if record else ""
        return console.render(
            request,
            "audit_record.html",
            "audit_record",
            session,
            r=record,
            body=body,
            verification=gov.verify(who),
            zone=ZONE.key,
            status=status,
            refused=refused,
        )

    @pages.get(f"/{PAGE}/package")
    def package(request: Request, session: Auditor, since: str = "", until: str = "") -> Response:
        try:
            start, end = validate.span(_time(since), _time(until))
        except InvalidInput as exc:
            return page(request, session, 400, exc.message)
        body = gov.package(session.caller, start, end)
        data = json.dumps(body, ensure_ascii=False, indent=2).encode()
        return attachment(f"audit-package-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json", data)

    return pages
