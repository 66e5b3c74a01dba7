"""The operator, auditor and analyst consoles: server-rendered pages under ``/console/``.

Reached through the hub's proxy at ``/services/gateway/console/``. Every page and every
form post resolves the session (:mod:`lab.gateway.sessions`) and checks the role in a
dependency before anything else runs, so a person without the role gets a 403 page
whatever the request looks like; :class:`~lab.services.governance.Governance` checks the
role again. Forms carry the session's CSRF token. Pages are in Chinese by default; the
header switches to English (a cookie remembers it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from lab import validate
from lab.errors import AccessDenied, LabError, NotAuthenticated
from lab.gateway import i18n
from lab.gateway.charts import budget_chart
from lab.gateway.governance_api import attachment
from lab.gateway.origins import console_target
from lab.gateway.sessions import FLOW_COOKIE, LANG_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Session, Sessions
from lab.ledger import Kind
from lab.localtime import ZONE, local_time
from lab.services.governance import Governance
from lab.validate import InvalidInput

KINDS = sorted(
    {v for k, v in vars(Kind).items() if k.isupper()}
    | {"expire", "export-review", "export-revoke", "export-download", "audit-seal", "anchor-reset"}
    | {"export-comment", "export-withdraw", "export-view"}
    | {"budget-limits", "budget-agreement"}
    | {"org-add", "org-suspend", "org-remove", "org-member-add"}
    | {"dataset-import", "dataset-accept"}
)
FLASH_COOKIE = "datalab_flash"
FLASH_CHARS = 400
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
)
_TEMPLATES.filters["local"] = local_time
CELL_CHARS = 80  # a table cell shows at most this much of a value …
TITLE_CHARS = 1000  # … and its tooltip at most this much (the full value is in the audit package)


def clip(value: Any, limit: int = CELL_CHARS) -> str:
    """A value shortened for a table cell (``…`` marks the cut)."""
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_TEMPLATES.filters["clip"] = clip
_TEMPLATES.globals["TITLE_CHARS"] = TITLE_CHARS


def _naive(value: str) -> bool:
    """True if a (valid) time text names no zone."""
    try:
        return datetime.fromisoformat(value).tzinfo is None
    except ValueError:  # valid only once normalised (validate.moment): read it as it was read
        return False


def style_hashes() -> list[str]:
    """CSP sources (``'sha256-…'``) of the pages' inline ``<style>`` blocks, which hold no variables."""
    source = (Path(__file__).with_name("templates") / "base.html").read_text(encoding="utf-8")
    blocks = re.findall(r"<style>(.*?)</style>", source, flags=re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks]


class ConsoleDenied(AccessDenied):
    """A console request without the role: a 403 page."""


class ConsoleLogin(NotAuthenticated):
    """A console request without a session: off to the login."""


def summary(details: Mapping[str, Any]) -> str:
    """One line of an audit record's details for the table."""
    parts = []
    for key, value in details.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text[:120]}")
    return "; ".join(parts)[:400]


class Console:
    def __init__(self, gov: Governance, sessions: Sessions, base: str) -> None:
        self.gov = gov
        self.sessions = sessions
        self.base = base

    def lang(self, request: Request) -> str:
        return i18n.pick(request.cookies.get(LANG_COOKIE))

    def session(self, request: Request) -> Session:
        found = self.sessions.read(request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise ConsoleLogin("Log in to use the console. / 请先登录。")
        return found

    def render(
        self, request: Request, name: str, title: str, session: Session | None, **values: Any
    ) -> HTMLResponse:
        lang = self.lang(request)
        t = i18n.translator(lang)
        caller = session.caller if session else None
        flash = self.sessions.signer.loads(request.cookies.get(FLASH_COOKIE)) or {}
        html = _TEMPLATES.get_template(name).render(
            t=t,
            lang=lang,
            title=t(title),
            base=self.base,
            here=str(request.url.path),
            user=caller.username if caller else None,
            org=caller.org if caller else None,
            roles=caller.roles if caller else frozenset(),
            csrf=session.csrf if session else "",
            message=(flash.get("said") or t("done")) if flash.get("ok") else None,
            error=flash.get("error"),
            **values,
        )
        response = HTMLResponse(html, status_code=values.get("status", 200))
        if flash:
            response.delete_cookie(FLASH_COOKIE, path=self.sessions.cookie_path)
        return response

    async def form(self, request: Request, session: Session) -> dict[str, Any]:
        """The posted form (urlencoded), after checking its CSRF token."""
        fields = parse_qs((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)
        if fields.get("csrf", [""])[0] != session.csrf:
            raise ConsoleDenied(
                "The form's security token is missing or stale; reload the page. / 请刷新页面。"
            )
        return {k: (v if k == "modes" else v[0]) for k, v in fields.items() if k != "csrf"}

    async def act(
        self, page: str, action: Callable[[], Any], *, said: Callable[[Any], str] | None = None
    ) -> RedirectResponse:
        """Run a console action; back to ``page``, with a signed one-shot cookie saying how it went.

        ``said`` turns the action's result into the message shown (default: "done").
        """
        try:
            result = await run_in_threadpool(action)
            flash: dict[str, Any] = {"ok": True}
            if said is not None:
                flash["said"] = said(result)
        except LabError as exc:
            flash = {"error": exc.message}
        return self._back(page, flash)

    def flash(self, page: str, *, error: str) -> RedirectResponse:
        """Back to ``page`` showing ``error`` (a refusal found before any action ran)."""
        return self._back(page, {"error": error})

    def _back(self, page: str, flash: dict[str, Any]) -> RedirectResponse:
        # a cookie holds ~4 KB: a long message is shortened (the page it came from shows the rest)
        flash = {
            k: v[:FLASH_CHARS] + "…" if isinstance(v, str) and len(v) > FLASH_CHARS else v
            for k, v in flash.items()
        }
        response = RedirectResponse(f"{self.base}/{page}", status_code=303)
        response.set_cookie(
            FLASH_COOKIE,
            self.sessions.signer.dumps(flash, 60),
            max_age=60,
            httponly=True,
            samesite="lax",
            path=self.sessions.cookie_path,
        )
        return response


def _session(request: Request) -> Session:
    console: Console = request.app.state.console
    return console.session(request)


def _role(*roles: str) -> Callable[[Request], Session]:
    def check(request: Request) -> Session:
        found = _session(request)
        if not found.caller.roles & set(roles):
            raise ConsoleDenied(
                f"This page needs the role {' or '.join(roles)}; {found.caller.username} has "
                f"{', '.join(sorted(found.caller.roles)) or 'none'}. / 需要角色 {' 或 '.join(roles)}。"
            )
        return found

    return check


AnySession = Annotated[Session, Depends(_session)]
Operator = Annotated[Session, Depends(_role("operator"))]
Auditor = Annotated[Session, Depends(_role("auditor"))]
Analyst = Annotated[Session, Depends(_role("analyst"))]
Reader = Annotated[Session, Depends(_role("analyst", "operator"))]


def install(app: FastAPI, console: Console) -> None:
    """The 403 page and the redirect to the login, for console requests only."""

    async def denied(request: Request, exc: Exception) -> Response:
        found = console.sessions.read(request.cookies.get(SESSION_COOKIE))
        reason = exc.message if isinstance(exc, LabError) else "forbidden"
        return console.render(request, "forbidden.html", "forbidden", found, reason=reason, status=403)

    async def login(request: Request, exc: Exception) -> Response:
        if request.method != "GET":
            return HTMLResponse("401 · log in first / 请先登录", status_code=401)
        return RedirectResponse(f"{console.base}/login?next={quote(request.url.path)}", status_code=303)

    app.state.console = console
    app.add_exception_handler(ConsoleDenied, denied)
    app.add_exception_handler(ConsoleLogin, login)


def router(console: Console) -> APIRouter:
    pages = APIRouter(prefix="/console")
    gov, sessions = console.gov, console.sessions
    secure = {"httponly": True, "samesite": "lax", "path": sessions.cookie_path}

    # --- login, logout, language ------------------------------------------------------
    @pages.get("/login")
    def login(next: str = "") -> Response:
        target = console_target(next, console.base)
        url, flow = sessions.start(target)
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(FLOW_COOKIE, flow, max_age=600, **secure)  # type: ignore[arg-type]
        return response

    @pages.get("/callback")
    def callback(request: Request, state: str | None = None, code: str | None = None) -> Response:
        caller, target = sessions.finish(request.cookies.get(FLOW_COOKIE), state, code)
        gov.record_login(caller, via="console")
        response = RedirectResponse(console_target(target, console.base), status_code=303)
        response.delete_cookie(FLOW_COOKIE, path=sessions.cookie_path)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.issue(caller),
            max_age=SESSION_SECONDS,
            **secure,  # type: ignore[arg-type]
        )
        return response

    @pages.get("/logout")
    def logout() -> Response:
        response = RedirectResponse(sessions.logout_url(), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=sessions.cookie_path)
        return response

    @pages.get("/lang/{code}")
    def language(code: str, next: str = "") -> Response:
        target = console_target(next, console.base)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(LANG_COOKIE, i18n.pick(code), max_age=365 * 86400, **secure)  # type: ignore[arg-type]
        return response

    @pages.get("/")
    def landing(request: Request, session: AnySession) -> Response:
        roles = session.caller.roles
        only = [r for r in ("operator", "auditor", "analyst") if r in roles]
        if len(only) == 1:
            return RedirectResponse(f"{console.base}/{only[0]}", status_code=303)
        return console.render(request, "landing.html", "home", session)

    # --- operator ---------------------------------------------------------------------
    @pages.get("/operator")
    def operator_page(request: Request, session: Operator, q: str = "") -> Response:
        who = session.caller
        applications = gov.applications(who)
        return console.render(
            request,
            "operator.html",
            "operator",
            session,
            pending=[a for a in applications if a["state"] == "pending"],
            decided=[a for a in applications if a["state"] != "pending"][:30],
            grants=gov.grants(who),
            to_check=len(gov.exports(who, "pending")) + len(gov.exports(who, "held")),
            catalogue=gov.catalogue(who, q),
            q=q,
        )

    @pages.post("/operator/applications/{item}/approve")
    async def approve(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act("operator", lambda: gov.approve(session.caller, item, form))

    @pages.post("/operator/applications/{item}/reject")
    async def reject(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act("operator", lambda: gov.reject(session.caller, item, form))

    @pages.post("/operator/grants/{item}/revoke")
    async def revoke(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act("operator", lambda: gov.revoke(session.caller, item, form))

    @pages.get("/exports/{item}/download")
    def download(session: Reader, item: str) -> Response:
        return attachment(*gov.download_export(session.caller, item, via="console"))

    # --- auditor ----------------------------------------------------------------------
    def _filters(request: Request) -> dict[str, Any]:
        q = request.query_params
        return {k: q.get(k) or None for k in ("organisation", "actor", "dataset", "kind", "since", "until")}

    def _plain(value: str | None) -> str | None:
        if value is None or len(value) > 200:
            return None
        return None if any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") for c in value) else value

    def _time(value: str | None) -> datetime | None:
        """A filter's time; one without a zone (the form's datetime-local) is Beijing time, as shown."""
        moment = validate.moment(value, "since/until")  # a 400 naming the format, never a 500
        if moment is not None and value and _naive(value):
            moment = moment.replace(tzinfo=ZONE).astimezone(UTC)
        return moment

    def _auditor(
        request: Request, session: Session, period: str, status: int = 200, error: str = ""
    ) -> Response:
        who, lang = session.caller, console.lang(request)
        t = i18n.translator(lang)
        filters = _filters(request)  # shown back in the form as typed, also when refused
        records: list[dict[str, Any]] = []
        try:
            since, until = validate.span(_time(filters["since"]), _time(filters["until"]))
            if not error:
                records = gov.search(who, {**filters, "since": since, "until": until}, limit=300)
        except InvalidInput as exc:  # a 400 page saying what was wrong, never a 500
            status, error = 400, exc.message
        if error:  # typed values are kept, but never one the refusal is about (control, bidi, huge)
            filters = {k: _plain(v) for k, v in filters.items()}
        for record in records:
            record["summary"] = summary(record["details"])
        period = period if period in ("day", "hour") else "day"
        return console.render(
            request,
            "auditor.html",
            "auditor",
            session,
            verification=gov.verify(who),
            chart=budget_chart(
                gov.spending(who, period, ZONE), title=f"{t('chart')} (Asia/Shanghai)", empty=t("no_data")
            ),
            flags=gov.flags(who),
            risk_reports=gov.risk_reports(who),
            filters=filters,
            records=records,
            kinds=KINDS,
            period=period,
            status=status,
            refused=error,
        )

    @pages.get("/auditor")
    def auditor_page(request: Request, session: Auditor, period: str = "day") -> Response:
        return _auditor(request, session, period)

    @pages.get("/auditor/package")
    def package(request: Request, session: Auditor, since: str = "", until: str = "") -> Response:
        try:
            start, end = validate.span(_time(since), _time(until))
        except InvalidInput as exc:
            return _auditor(request, session, "day", 400, exc.message)
        body = gov.package(session.caller, start, end)
        data = json.dumps(body, ensure_ascii=False, indent=2).encode()
        return attachment(f"audit-package-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json", data)

    # --- analyst ----------------------------------------------------------------------
    @pages.get("/analyst")
    def analyst_page(request: Request, session: Analyst, q: str = "", dataset: str = "") -> Response:
        who = session.caller
        everything = gov.catalogue(who)  # read once: the table is filtered, the apply form is not
        grants = gov.grants(who)
        return console.render(
            request,
            "analyst.html",
            "analyst",
            session,
            grants=grants,
            applications=gov.applications(who),
            granted={g["id"]: g for g in grants},  # what each approval gave, beside what was asked
            exports=gov.exports(who),
            catalogue=gov.search_catalogue(everything, q),
            q=q,
            datasets=everything,  # the apply form offers every register, marking those held
            chosen=dataset,
        )

    @pages.post("/analyst/apply")
    async def apply(request: Request, session: Analyst) -> Response:
        form = await console.form(request, session)
        return await console.act(
            "analyst",
            lambda: gov.apply(session.caller, form),
            said=lambda app: (
                f"申请 {app['id']} 已提交，等待运营人员审批。 / Application {app['id']} is submitted and "
                "awaits an operator's decision."
            ),
        )

    @pages.post("/analyst/applications/{application_id}/withdraw")
    async def withdraw(request: Request, session: Analyst, application_id: str) -> Response:
        await console.form(request, session)
        return await console.act(
            "analyst",
            lambda: gov.withdraw(session.caller, application_id),
            said=lambda app: f"申请 {app['id']} 已撤回。 / Application {app['id']} is withdrawn.",
        )

    return pages
