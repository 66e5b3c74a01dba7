"""Wires the governance half into the gateway app: one call from ``lab.gateway.app``.

``routes(app)`` builds :class:`~lab.services.governance.Governance` on the app's ledger,
policies and settings, and returns one router with the bearer API
(:mod:`~lab.gateway.governance_api`), MinIO's audit webhook and the consoles
(:mod:`~lab.gateway.console`), and puts the role guard (:mod:`~lab.gateway.guard`) in
front of the whole app. Its lifespan runs the access sweep
(:class:`lab.access.Sweeper`: expiries and MinIO policies, every 15 s) and a one-worker
pool that builds masked extracts after approvals, so a request never waits for a build.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from lab import access, auditpkg
from lab.gateway import console as console_pages
from lab.gateway import console_airlock, console_import, console_orgs, governance_api
from lab.gateway.guard import RoleGuard
from lab.gateway.minio_audit import AuditSink
from lab.gateway.origins import OriginGuard
from lab.gateway.sessions import Sessions
from lab.ledger import Grant
from lab.ledger.sweep import ReservationSweeper
from lab.registry.datasets import LivePolicies, raw_store
from lab.registry.organisations import Registry
from lab.services.governance import Governance
from lab.services.imports import Imports
from lab.services.onboarding import Onboarding
from lab.settings import GATEWAY_PREFIX

PREFIX = GATEWAY_PREFIX
log = logging.getLogger(__name__)


def routes(app: FastAPI) -> APIRouter:
    """The governance routes of ``app`` (whose state holds ``settings``, ``gateway``, ``verifier``)."""
    settings = app.state.settings
    ledger = app.state.gateway.ledger
    policies = app.state.gateway.tables.policies
    provisioner = access.Provisioner(settings, ledger)
    sweeper = access.Sweeper(provisioner)
    builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-build")

    def build_now(grant: Grant, actor: str) -> None:
        try:
            access.ensure_extract(settings, grant, actor=actor)
        except Exception as exc:  # recorded; an operator can rebuild with 'datalab extract build'
            log.error("extract build for grant %s failed: %s", grant.id, type(exc).__name__)
            access.record_failed_build(ledger, grant, actor, exc)

    def build(grant: Grant, actor: str) -> None:
        builds.submit(build_now, grant, actor)

    def rebuild_later(dataset: str, actor: str) -> int:
        """Queue the rebuild of ``dataset``'s outdated extracts; how many there are now."""
        count = len(access.outdated_extracts(settings, ledger, dataset))
        if count:
            builds.submit(access.rebuild_extracts, settings, ledger, dataset, actor=actor)
        return count

    gov = Governance(settings, ledger, policies, provisioner, build=build)
    sessions = Sessions(settings, app.state.verifier, f"{PREFIX}/console")
    console = console_pages.Console(gov, sessions, f"{PREFIX}/console")
    console_pages.install(app, console)
    app.add_middleware(RoleGuard, verifier=app.state.verifier, console=console)
    # Outermost: cross-origin state changes stop here, and every response gets the page headers.
    app.add_middleware(
        OriginGuard,
        origin=settings.public_url,
        keycloak=settings.keycloak_url,
        console_prefix=f"{PREFIX}/console",
        styles=console_pages.style_hashes(),
    )
    app.state.governance = gov
    gov.profiles = app.state.gateway.profile
    app.state.sweeper = sweeper
    sealer = auditpkg.Sealer(settings, ledger, interval=settings.seal_interval_s)
    reservations = ReservationSweeper(ledger, timeout_s=settings.reservation_timeout_s)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        sweeper.start()
        sealer.start()
        reservations.start()
        try:
            yield
        finally:
            sweeper.stop()
            sealer.stop()
            reservations.stop()
            builds.shutdown(wait=False, cancel_futures=True)

    router = APIRouter(prefix=PREFIX, lifespan=lifespan)
    router.include_router(governance_api.router(gov, AuditSink(settings, ledger)))
    router.include_router(console_pages.router(console))
    router.include_router(console_airlock.router(console, gov))
    onboarding = Onboarding(settings, Registry(ledger), app.state.verifier.directory)
    router.include_router(console_orgs.router(console, onboarding))
    imports = Imports(
        settings,
        app.state.verifier.directory,
        lambda: raw_store(settings),
        ledger.append,
        published=policies.refresh if isinstance(policies, LivePolicies) else lambda: None,
        rebuild=rebuild_later,
    )
    router.include_router(console_import.router(console, imports))
    return router
