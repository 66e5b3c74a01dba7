"""The operator console's sections: applications (with each one's detail), grants and datasets.

Under ``/console/operator`` (the role guard, :mod:`lab.gateway.guard`, and each route's own
dependency refuse anyone without the operator role). Each list has a search, filters and
pages (:mod:`lab.gateway.paging`); a bad parameter is a 400 page saying which. Forms carry
the session's CSRF token; the destructive ones (reject an application, revoke a grant) first
answer a confirmation page, and act only on a post that carries that page's confirmation
token (:meth:`lab.gateway.console.Console.confirmed`). Every action says what it did.
The organisations section is :mod:`lab.gateway.console_orgs`; exports live at
``/console/exports`` (:mod:`lab.gateway.console_airlock`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lab.errors import LabError
from lab.gateway import paging
from lab.gateway.console import NO_MODE, Console, Operator, reason_given, ticked
from lab.gateway.sessions import Session
from lab.validate import InvalidInput

APPS, GRANTS, DATASETS = "operator", "operator/grants", "operator/datasets"
APP_STATES = ("pending", "approved", "rejected", "withdrawn", "all")
GRANT_STATES = ("active", "ended", "revoked", "expired", "all")


def _grant_line(g: Mapping[str, Any]) -> tuple[str, str]:
    return (
        f"授权 #{g['id']}（机构 {g['organisation']}，数据集 {g['dataset']}）",
        f"grant #{g['id']} (organisation {g['organisation']}, dataset {g['dataset']})",
    )


def approved(done: Mapping[str, Any]) -> str:
    a, g = done["application"], done["grant"]
    modes = ", ".join(g["modes"])
    return (
        f"已批准申请 #{a['id']}，生成授权 #{g['id']}（机构 {g['organisation']}，数据集 {g['dataset']}，"
        f"ε {g['budget']['epsilon']:g}，{g['term_days']:g} 天，{modes}）。 / Application #{a['id']} approved "
        f"as grant #{g['id']} (organisation {g['organisation']}, dataset {g['dataset']}, "
        f"ε {g['budget']['epsilon']:g}, {g['term_days']:g} days, {modes})."
    )


def rejected(a: Mapping[str, Any]) -> str:
    return (
        f"已驳回申请 #{a['id']}（机构 {a['organisation']}，数据集 {a['dataset']}）。 / Application "
        f"#{a['id']} rejected (organisation {a['organisation']}, dataset {a['dataset']})."
    )


def revoked(g: Mapping[str, Any]) -> str:
    zh, en = _grant_line(g)
    return (
        f"已撤销{zh}；该机构的凭证 60 秒内失效。 / {en[0].upper()}{en[1:]} revoked; the organisation's "
        "credentials for it stop working within 60 s."
    )


def router(console: Console) -> APIRouter:
    pages = APIRouter(prefix="/console")
    gov = console.gov

    def listing(
        request: Request,
        session: Session,
        template: str,
        title: str,
        build: Callable[[Mapping[str, str]], dict[str, Any]],
    ) -> Response:
        """A list page: ``build`` reads the checked parameters; a bad one is a 400 page."""
        params = request.query_params
        try:
            values, status, refused = build(params), 200, ""
        except InvalidInput as exc:
            shown = {k: paging.plain(v) for k, v in params.items()}
            values, status, refused = {"rows": None, "filters": shown}, 400, exc.message
        return console.render(request, template, title, session, status=status, refused=refused, **values)

    # --- applications -----------------------------------------------------------------
    @pages.get(f"/{APPS}")
    def applications_page(request: Request, session: Operator) -> Response:
        who = session.caller

        def build(params: Mapping[str, str]) -> dict[str, Any]:
            page, size = paging.page_size(params)
            state = paging.choice(params, "state", APP_STATES, "pending")
            org, dataset, q = (
                paging.name(params, "organisation"),
                paging.name(params, "dataset"),
                paging.text(params),
            )
            every = gov.applications(who, outlook=False)  # newest first
            chosen = [
                a
                for a in every
                if (not org or a["organisation"] == org)
                and (not dataset or a["dataset"] == dataset)
                and paging.matches(a, q, ("id", "organisation", "dataset", "purpose", "applicant"))
            ]
            counts = Counter(a["state"] for a in chosen)
            rows = [a for a in chosen if state == "all" or a["state"] == state]
            filters = {"state": state, "organisation": org, "dataset": dataset, "q": q}
            w = paging.window(rows, page, size, f"{console.base}/{APPS}", filters)
            w.rows = [gov.outlook(a) for a in w.rows]  # budget and risk outlook: this page's only
            w.counts = {**counts, "all": len(chosen)}
            return {
                "rows": w,
                "filters": filters,
                "organisations": sorted({a["organisation"] for a in every}),
                "datasets": sorted(gov.policies),
                "states": APP_STATES,
                "to_check": len(gov.exports(who, "pending")) + len(gov.exports(who, "held")),
            }

        return listing(request, session, "operator.html", "applications", build)

    @pages.get(f"/{APPS}/applications/{{item}}")
    def application_page(request: Request, session: Operator, item: str) -> Response:
        try:
            app = gov.application(session.caller, item)
        except LabError as exc:
            status = 400 if isinstance(exc, InvalidInput) else 404
            return console.render(
                request,
                "op_application.html",
                "application",
                session,
                a=None,
                refused=exc.message,
                status=status,
            )
        return console.render(
            request, "op_application.html", "application_detail", session, a=app, refused=""
        )

    def _back(form: Mapping[str, Any], item: str) -> str:
        return f"{APPS}/applications/{item}" if form.get("back") == "detail" else APPS

    @pages.post(f"/{APPS}/applications/{{item}}/approve")
    async def approve(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        back = _back(form, item)
        if not ticked(form):  # the form showed the boxes and none is ticked
            return console.flash(back, error=NO_MODE, keep=form)
        body = {k: v for k, v in form.items() if k not in ("modes_field", "back", "item")}
        return await console.act(
            back,
            lambda: gov.approve(session.caller, item, body),
            said=approved,
            keep=form,
        )

    @pages.post(f"/{APPS}/applications/{{item}}/reject")
    async def reject(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        back = _back(form, item)
        if not console.confirmed(session, form, "reject", item):
            try:
                reason_given(form)  # what was typed is checked before the item is looked up
                a = await run_in_threadpool(gov.application_of, session.caller, item)
            except LabError as exc:
                return console.flash(back, error=exc.message)
            facts = [
                ("id", f"#{a['id']}"),
                ("organisation", a["organisation"]),
                ("dataset", a["dataset"]),
                ("applicant", a["applicant"]),
                ("purpose", a["purpose"]),
                ("state", a["state"]),
            ]
            return console.confirmation(
                request,
                session,
                action="reject",
                item=item,
                url=f"{console.base}/{APPS}/applications/{item}/reject",
                question="confirm_reject",
                facts=facts,
                cancel=back,
                reason=str(form.get("reason") or ""),
                hidden={"back": "detail"} if back != APPS else None,
            )
        return await console.act(
            back, lambda: gov.reject(session.caller, item, form), said=rejected, keep=form
        )

    # --- grants -----------------------------------------------------------------------
    @pages.get(f"/{GRANTS}")
    def grants_page(request: Request, session: Operator) -> Response:
        def build(params: Mapping[str, str]) -> dict[str, Any]:
            page, size = paging.page_size(params)
            state = paging.choice(params, "state", GRANT_STATES, "active")
            org, dataset, q = (
                paging.name(params, "organisation"),
                paging.name(params, "dataset"),
                paging.text(params),
            )
            every = sorted(gov.grants(session.caller), key=lambda g: -g["id"])  # newest first
            chosen = [
                g
                for g in every
                if (not org or g["organisation"] == org)
                and (not dataset or g["dataset"] == dataset)
                and paging.matches(g, q, ("id", "organisation", "dataset", "purpose", "approved_by"))
            ]
            counts = Counter(g["status"] for g in chosen)
            wanted = {"ended": ("revoked", "expired"), "all": ()}.get(state, (state,))
            rows = [g for g in chosen if not wanted or g["status"] in wanted]
            filters = {"state": state, "organisation": org, "dataset": dataset, "q": q}
            w = paging.window(rows, page, size, f"{console.base}/{GRANTS}", filters)
            w.counts = {
                **counts,
                "ended": counts["revoked"] + counts["expired"],
                "all": len(chosen),
            }
            return {
                "rows": w,
                "filters": filters,
                "organisations": sorted({g["organisation"] for g in every}),
                "datasets": sorted(gov.policies),
                "states": GRANT_STATES,
            }

        return listing(request, session, "op_grants.html", "grants", build)

    @pages.post(f"/{GRANTS}/{{item}}/revoke")
    async def revoke(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        if not console.confirmed(session, form, "revoke", item):
            try:
                reason_given(form)
                g = await run_in_threadpool(gov.grant, session.caller, item)
            except LabError as exc:
                return console.flash(GRANTS, error=exc.message)
            b = g["budget"]
            facts = [
                ("id", f"#{g['id']}"),
                ("organisation", g["organisation"]),
                ("dataset", g["dataset"]),
                ("purpose", g["purpose"]),
                ("status", g["status"]),
                ("spent", f"{b['epsilon_spent']:.4g} / {b['epsilon']:g}"),
                ("expires", g["expires_at"]),
            ]
            return console.confirmation(
                request,
                session,
                action="revoke",
                item=item,
                url=f"{console.base}/{GRANTS}/{item}/revoke",
                question="confirm_revoke",
                facts=facts,
                cancel=GRANTS,
                reason=str(form.get("reason") or ""),
            )
        return await console.act(
            GRANTS, lambda: gov.revoke(session.caller, item, form), said=revoked, keep=form
        )

    # --- datasets ---------------------------------------------------------------------
    @pages.get(f"/{DATASETS}")
    def datasets_page(request: Request, session: Operator) -> Response:
        def build(params: Mapping[str, str]) -> dict[str, Any]:
            page, size = paging.page_size(params)
            q, org = paging.text(params), paging.name(params, "organisation")
            mode = paging.choice(params, "mode", ("", "dp", "masked", "dp-table", "dp-synthetic"), "")
            every = gov.catalogue(session.caller)
            rows = [
                d
                for d in gov.search_catalogue(every, q)
                if (not org or org in d.get("holders", []))
                and (not mode or mode in d.get("release_modes", []))
            ]
            rows.sort(key=lambda d: d["name"])
            filters = {"q": q, "organisation": org, "mode": mode}
            return {
                "rows": paging.window(rows, page, size, f"{console.base}/{DATASETS}", filters),
                "filters": filters,
                "organisations": sorted({h for d in every for h in d.get("holders", [])}),
                "total": len(every),
            }

        return listing(request, session, "op_datasets.html", "catalogue", build)

    return pages
