"""The privsynth service's HTTP API (FastAPI; the OpenAPI spec is at ``/openapi.json``, its pages at ``/docs``).

Every route but ``/api/health`` needs a user: an API token (``Authorization: Bearer pst_...``) or the signed
session cookie of the web UI. What a user may do on a dataset follows from :meth:`Store.access`:

============================  =====  =========  =======
action                        admin  custodian  analyst
============================  =====  =========  =======
list / read its releases       yes     yes       DP ones and those published (reports if shared)
publish a non-DP release       yes     yes       no
budget and ledger              yes     yes       yes
schema: public part            yes     yes       yes
schema: domains, edit          yes     yes       no
register, cap, grants, delete  yes     yes       no
jobs: DP methods               yes     yes       yes, within the grant's share of the cap (see below)
jobs: non-DP methods           yes     yes       no
read, cancel jobs              all     all       their own (errors generic)
============================  =====  =========  =======

An analyst's job is held to :mod:`privsynth.service.limits`: the parameters listed there, within bounds; at most
a million rows; conditions only on columns whose domain is public; two jobs queued or running at once; and a
quarter of the cap unless the custodian granted another share. Every job runs in its own process under a time and
a memory limit (:mod:`privsynth.service.jobs`).

A dataset the user has no grant on answers 404, like one that does not exist, so ids cannot be probed. No route
returns the raw rows. Every request that changes something, and every refusal, is written to the audit log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware.sessions import SessionMiddleware

from privsynth._version import __version__
from privsynth.errors import BudgetExceeded, PrivsynthError
from privsynth.service import ui
from privsynth.service.config import ServiceConfig
from privsynth.service.deps import Service, current_user
from privsynth.service.jobs import Worker
from privsynth.service.routes import ROUTERS
from privsynth.service.security import SecurityMiddleware, session_key
from privsynth.service.store import SESSION_HOURS

__all__ = ["ServiceConfig", "create_app"]


def create_app(config: ServiceConfig | None = None, *, worker: bool = False) -> FastAPI:
    """The service app; ``worker=True`` also runs a worker thread in this process (``privsynth serve``)."""
    service = Service(config or ServiceConfig())
    settings = service.config

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runner = None
        if worker:
            runner = Worker(
                service.store,
                settings.data_dir,
                heartbeat=settings.heartbeat,
                stale_after=settings.stale_after,
                max_minutes=settings.job_max_minutes,
                memory_mb=settings.job_memory_mb,
            )
            runner.start_thread()
        yield
        if runner is not None:
            runner.stop()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        title="privsynth service",
        version=__version__,
        description="Custodians register sensitive datasets and cap their privacy budget; analysts request "
        "differentially private synthetic releases and read their reports and data cards.",
    )
    app.state.service = service
    _add_middleware(app, service)
    _add_error_handlers(app, service)
    for router in (*ROUTERS, ui.router):
        app.include_router(router)
    app.state.routes_table = _route_table
    return app


def _add_middleware(app: FastAPI, service: Service) -> None:
    """The security middleware (body limits, authentication before an upload is read, headers) and sessions."""
    settings = service.config

    async def authenticate(scope: Any) -> tuple[int, str, dict[str, str]] | None:
        try:
            await run_in_threadpool(current_user, Request(scope))
        except HTTPException as exc:
            return exc.status_code, str(exc.detail), dict(exc.headers or {})
        return None

    app.add_middleware(
        SecurityMiddleware,
        upload_limit=settings.max_upload_bytes,
        body_limit=settings.max_body_bytes,
        authenticate=authenticate,
        sandboxed=lambda path: path.startswith("/api/releases/") and path.count("/") == 4,
        secure=settings.secure_cookies,
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_key(settings.data_dir),
        same_site="strict",
        session_cookie="privsynth_session",
        https_only=settings.secure_cookies,
        max_age=SESSION_HOURS * 3600,
    )


def _add_error_handlers(app: FastAPI, service: Service) -> None:
    """Errors as JSON a user can act on, without the server's folders."""

    @app.exception_handler(RequestValidationError)
    def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming the field and the rule; the input is not echoed (a NaN in it cannot be written as JSON,
        and a long input would be sent back whole)."""
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(BudgetExceeded)
    def _budget(_request: Request, exc: BudgetExceeded) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": service.scrub(str(exc))})

    @app.exception_handler(PrivsynthError)
    def _privsynth(_request: Request, exc: PrivsynthError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": service.scrub(str(exc))})


def _route_table(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every API route, for the authorization tests (the routers are included without a prefix;
    FastAPI may keep an included router as one entry of ``app.routes``, so its routes are walked too)."""
    out = []
    pending = list(app.routes)
    while pending:
        route = pending.pop(0)
        included = getattr(route, "original_router", None)
        if included is not None:
            pending[:0] = included.routes
            continue
        path = getattr(route, "path", "")
        for method in sorted(getattr(route, "methods", None) or ()):
            if path.startswith("/api/") and method != "HEAD":
                out.append((method, path))
    return out
