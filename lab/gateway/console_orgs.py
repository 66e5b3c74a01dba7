"""The operator console's organisations page: list, add, suspend (``/console/operator/organisations``).

Under the operator prefix, so the role guard (:mod:`lab.gateway.guard`) and the page's
own dependency refuse anyone without the operator role before a route runs; forms carry
the session's CSRF token (:meth:`lab.gateway.console.Console.form`); and the use cases
(:class:`lab.services.onboarding.Onboarding`) check the operator in Keycloak once more.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lab.gateway.console import Console, Operator
from lab.registry.organisations import KINDS, OrgSpec
from lab.services.onboarding import Onboarding

PAGE = "operator/organisations"


def router(console: Console, onboarding: Onboarding) -> APIRouter:
    pages = APIRouter(prefix="/console")

    @pages.get(f"/{PAGE}")
    def organisations_page(request: Request, session: Operator) -> Response:
        orgs = onboarding.registry.list_organisations()
        return console.render(
            request,
            "organisations.html",
            "organisations",
            session,
            organisations=[o.as_dict() for o in orgs],
            kinds=KINDS,
        )

    @pages.post(f"/{PAGE}")
    async def add(request: Request, session: Operator) -> Response:
        form = await console.form(request, session)
        spec = OrgSpec(
            *(form.get(k, "") for k in ("id", "name_zh", "name_en", "credit_code", "kind", "contact"))
        )
        return await console.act(PAGE, lambda: onboarding.add(session.caller.username, spec))

    @pages.post(f"/{PAGE}/{{item}}/suspend")
    async def suspend(request: Request, session: Operator, item: str) -> Response:
        form = await console.form(request, session)
        return await console.act(
            PAGE, lambda: onboarding.suspend(session.caller.username, item, form.get("reason", ""))
        )

    return pages
