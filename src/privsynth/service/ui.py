"""The web UI: server-rendered pages (Jinja2) over the same store, with one small script for forms.

Pages are rendered on the server from what the signed-in user may see (the same access rules as the API). Forms
send their data to the JSON API with ``fetch`` (``static/ui.js``), so every action has exactly one
implementation, and show the API's error message next to the form. Nothing is loaded from a CDN: the style is
inline and the script is served by the app (the Content-Security-Policy allows no other), so the UI works
offline; ``/docs`` lists the API from its OpenAPI spec on a page of its own instead of Swagger UI from a CDN.

A sign-in starts a session that lives in the database: signing out ends it for every copy of the cookie.
Failed sign-ins are throttled per address and per user name; the audit log gets one line when a throttle
starts, not one per failure.
"""

from __future__ import annotations

import math
import secrets
from importlib import resources
from typing import Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from privsynth.data.schema import Schema
from privsynth.render import environment
from privsynth.service.config import CSRF_HEADER
from privsynth.service.deps import ServiceDep, current_user
from privsynth.service.store import User
from privsynth.service.views import budget_view, job_view, release_view, release_visible
from privsynth.synth import available

# Numbers read as on the card, the report and the leaderboard (the ``number`` filter). The pages were written
# without whitespace trimming.
_environment = environment("privsynth.service", trim=False)


router = APIRouter()


def _page(request: Request, template: str, user: User | None, **context: Any) -> HTMLResponse:
    csrf = request.session.get("csrf", "") if user is not None else ""
    html = _environment.get_template(template).render(
        user=user, csrf=csrf, csrf_header=CSRF_HEADER, path=request.url.path, **context
    )
    return HTMLResponse(html)


def _signed_in(request: Request) -> User | None:
    try:
        return current_user(request)
    except HTTPException:
        return None


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


@router.get("/static/ui.js", include_in_schema=False)
def script() -> Response:
    text = resources.files("privsynth.service").joinpath("static/ui.js").read_text(encoding="utf-8")
    return Response(text, media_type="text/javascript")


@router.get("/login", include_in_schema=False)
def login_form(request: Request, next: str = "/datasets") -> HTMLResponse:
    return _page(request, "login.html.j2", None, next=_local(next), error=None)


@router.post("/login", include_in_schema=False, response_model=None)
def login(
    request: Request, service: ServiceDep, name: str = Form(...), token: str = Form(...), next: str = Form("/datasets")
) -> Response:
    name = name.strip()[:128]
    keys = (f"address:{request.client.host if request.client else '-'}", f"name:{name}")
    wait = service.throttle.retry_after(*keys)
    if wait > 0:
        message = f"Too many failed sign-ins; try again in {math.ceil(wait / 60)} min."
        response = _page(request, "login.html.j2", None, next=_local(next), error=message)
        response.status_code = 429
        response.headers["retry-after"] = str(math.ceil(wait))
        return response
    user = service.store.user_by_token(token.strip())
    if user is None or user.name != name:
        if service.throttle.fail(*keys):
            service.store.audit(None, "sign in", f"user:{name}", "denied", "throttled after repeated failures")
        response = _page(request, "login.html.j2", None, next=_local(next), error="Wrong name or token.")
        response.status_code = 401
        return response
    request.session.clear()
    request.session["sid"] = service.store.start_session(user)
    request.session["csrf"] = secrets.token_urlsafe(24)
    service.store.audit(user, "sign in", f"user:{user.name}")
    return RedirectResponse(_local(next), status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, service: ServiceDep) -> RedirectResponse:
    if isinstance(request.session.get("sid"), str):
        service.store.end_session(request.session["sid"])
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    spec = request.app.openapi()
    routes = [
        {"method": method.upper(), "path": path, "summary": op.get("summary", ""), "doc": op.get("description", "")}
        for path, operations in spec["paths"].items()
        for method, op in operations.items()
    ]
    return _page(request, "docs.html.j2", _signed_in(request), routes=routes, spec=spec)


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/datasets", status_code=303)


@router.get("/datasets", include_in_schema=False, response_model=None)
def datasets_page(request: Request, service: ServiceDep) -> Response:
    user = _signed_in(request)
    if user is None:
        return _login_redirect(request)
    rows = []
    for dataset in service.store.datasets(user):
        rows.append(
            {"dataset": dataset, "role": service.store.access(user, dataset.id), **service.budget_view(dataset)}
        )
    return _page(request, "datasets.html.j2", user, rows=rows)


@router.get("/datasets/{dataset_id}", include_in_schema=False, response_model=None)
def dataset_page(request: Request, service: ServiceDep, dataset_id: str) -> Response:
    user = _signed_in(request)
    if user is None:
        return _login_redirect(request)
    dataset, role = service.dataset_for(user, dataset_id)
    schema = Schema.from_dict(dataset.schema)
    columns = service.schema_view(dataset, role)["columns"]
    releases = [
        release_view(r, dataset, role) for r in service.store.releases([dataset.id]) if release_visible(r, role)
    ]
    jobs = service.jobs_for(user, [dataset.id])[:20]
    methods = [
        {"name": name, "dp": cls.differentially_private}
        for name, cls in available().items()
        if cls.differentially_private or role != "analyst"
    ]
    return _page(
        request,
        "dataset.html.j2",
        user,
        dataset=dataset,
        role=role,
        budget=budget_view(service.store.budget(dataset)),
        columns=columns,
        names=schema.names,
        releases=releases,
        jobs=jobs,
        methods=methods,
        grants=service.store.grants(dataset.id) if role != "analyst" else [],
        ledger=[s for s in service.store.ledger.entries(dataset.ledger_key) if s.reservation_id is None],
    )


@router.get("/jobs/{job_id}", include_in_schema=False, response_model=None)
def job_page(request: Request, service: ServiceDep, job_id: str) -> Response:
    user = _signed_in(request)
    if user is None:
        return _login_redirect(request)
    job, role = service.job_for(user, job_id)
    dataset = service.store.dataset(job.dataset_id)
    return _page(request, "job.html.j2", user, job=job_view(job, role), dataset=dataset)


@router.get("/releases/{release_id}", include_in_schema=False, response_model=None)
def release_page(request: Request, service: ServiceDep, release_id: str) -> Response:
    user = _signed_in(request)
    if user is None:
        return _login_redirect(request)
    release, dataset, role = service.release_for(user, release_id)
    service.store.audit(user, "view release", f"release:{release.id}")
    view = release_view(release, dataset, role)
    return _page(request, "release.html.j2", user, release=view, dataset=dataset, role=role)


@router.get("/users", include_in_schema=False, response_model=None)
def users_page(request: Request, service: ServiceDep) -> Response:
    user = _signed_in(request)
    if user is None:
        return _login_redirect(request)
    if user.role != "admin":
        raise HTTPException(403, "only an admin can manage users")
    return _page(
        request,
        "users.html.j2",
        user,
        users=service.store.users(),
        disabled=service.store.disabled(),
        audit=service.store.audit_log(100),
    )


def _local(target: str) -> str:
    """Only redirect within the app (an open redirect would let a link send a signed-in user elsewhere)."""
    return target if target.startswith("/") and not target.startswith("//") else "/datasets"
