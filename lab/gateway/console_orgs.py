"""The operator console's organisations page: list, add, suspend (``/console/operator/organisations``).

Under the operator prefix, so the role guard (:mod:`lab.gateway.guard`) and the page's
own dependency refuse anyone without the operator role before a route runs; forms carry
the session's CSRF token (:meth:`lab.gateway.console.Console.form`); and the use cases
(:class:`lab.services.onboarding.Onboarding`) check the operator in Keycloak once more.
The list has a search, a status filter and pages (:mod:`lab.gateway.paging`); suspending
answers a confirmation page first (:meth:`lab.gateway.console.Console.confirmed`); a refused
addition comes back with what was typed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lab.errors import LabError
from lab.gateway import paging
from lab.gateway.console import Console, Operator, reason_given
from lab.registry.organisations import KINDS, OrgSpec
from lab.services.onboarding import Onboarding, Outcome
from lab.validate import InvalidInput

PAGE = "operator/organisations"
STATES = ("active", "suspended", "removed", "all")
FIELDS = ("id", "name_zh", "name_en", "credit_code", "kind", "contact")


def added(done: Outcome) -> str:
    o = done.organisation
    return f"已登记机构 {o.id}（{o.name_zh}）。 / Organisation {o.id} ({o.name_en}) is registered."


def suspended(done: Outcome) -> str:
    o, n = done.organisation, len(done.revoked)
    return (
        f"已暂停机构 {o.id}（{o.name_zh}），撤销其 {n} 项授权；其凭证 60 秒内失效。 / Organisation {o.id} "
        f"({o.name_en}) suspended: {n} grant(s) revoked, its credentials stop working within 60 s."
    )


def router(console: Console, onboarding: Onboarding) -> APIRouter:
    pages = APIRouter(prefix="/console")

    @pages.get(f"/{PAGE}")
    def organisations_page(request: Request, session: Operator) -> Response:
        params = request.query_params
        values: dict[str, Any]
        try:
            page, size = paging.page_size(params)
            state = paging.choice(params, "state", STATES, "active")
            q = paging.text(params)
            every = [o.as_dict() for o in onboarding.registry.list_organisations()]
            chosen = [
                o
                for o in every
                if paging.matches(o, q, ("id", "name_zh", "name_en", "credit_code", "contact"))
            ]
            chosen.sort(key=lambda o: o["id"])
            counts = Counter(o["status"] for o in chosen)
            rows = [o for o in chosen if state == "all" or o["status"] == state]
            filters = {"state": state, "q": q}
            w = paging.window(rows, page, size, f"{console.base}/{PAGE}", filters)
            w.counts = {**counts, "all": len(chosen)}
            values, status, refused = {"rows": w, "filters": filters}, 200, ""
        except InvalidInput as exc:
            shown = {k: paging.plain(v) for k, v in params.items()}
            values, status, refused = {"rows": None, "filters": shown}, 400, exc.message
        return console.render(
            request,
            "organisations.html",
            "organisations",
            session,
            kinds=KINDS,
            states=STATES,
            status=status,
            refused=refused,
            **values,
        )

    @pages.post(f"/{PAGE}")
    async def add(request: Request, session: Operator) -> Response:
        form = await console.form(request, session)
        spec = OrgSpec(*(form.get(k, "") for k in FIELDS))
        return await console.act(
            PAGE, lambda: onboarding.add(session.caller.username, spec), said=added, keep=form
        )

    @pages.post(f"/{PAGE}/{{item}}/suspend")
    async def suspend(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        reason = str(form.get("reason") or "")
        if not console.confirmed(session, form, "suspend", item):
            try:
                reason_given(form)
            except LabError as exc:
                return console.flash(PAGE, error=exc.message)
            known = {o.id: o for o in onboarding.registry.list_organisations()}
            org = known.get(item)
            if org is None:
                return console.flash(
                    PAGE, error="没有该机构 / there is no such organisation; pick one from the list."
                )
            active = await run_in_threadpool(console.gov.ledger.list_grants, organisation=item, active=True)
            facts = [
                ("org_id", org.id),
                ("name_zh", org.name_zh),
                ("name_en", org.name_en),
                ("status", org.status),
                ("active_grants", str(len(active))),
            ]
            return console.confirmation(
                request,
                session,
                action="suspend",
                item=item,
                url=f"{console.base}/{PAGE}/{item}/suspend",
                question="confirm_suspend",
                facts=facts,
                cancel=PAGE,
                reason=reason,
            )
        return await console.act(
            PAGE, lambda: onboarding.suspend(session.caller.username, item, reason), said=suspended
        )

    return pages
