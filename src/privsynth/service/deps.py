"""What every route and page depends on: the :class:`Service` (store, configuration, access checks), the
signed-in user (:func:`current_user`) and the role checks, as FastAPI dependencies.

This module sits below both the API's routers (:mod:`privsynth.service.routes`) and the web UI
(:mod:`privsynth.service.ui`), so neither imports the app.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from privsynth.data.schema import Schema
from privsynth.privacy.budget import Budget
from privsynth.service.config import CSRF_HEADER, ServiceConfig
from privsynth.service.models import JobRequest
from privsynth.service.security import LoginThrottle, SQLAllowList, constant_time_equal, private_folder, scrub_paths
from privsynth.service.store import DatasetRow, JobRow, ReleaseRow, Store, User
from privsynth.service.views import budget_view, dataset_view, job_view, job_visible, release_visible, schema_view
from privsynth.synth import available, create
from privsynth.synth.dp import resolve_budget

__all__ = [
    "Authed",
    "Service",
    "ServiceDep",
    "admin_only",
    "current_user",
    "custodian_or_admin",
    "get_service",
]


class Service:
    """The store, the configuration and the helpers every route uses."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        private_folder(config.data_dir)
        self.store = Store(config.url, data_dir=config.data_dir)
        self.sql_allow = SQLAllowList(tuple(config.sql_allow), self.store.url)
        self.throttle = LoginThrottle()

    def scrub(self, message: str) -> str:
        """``message`` without the server's folders, for a user's eyes."""
        roots: list[str | Path] = [self.config.data_dir, self.config.data_dir.resolve(), tempfile.gettempdir()]
        roots.append(Path.home())
        return scrub_paths(message, roots)

    # ---- access ----------------------------------------------------------------------------------------------

    def dataset_for(self, user: User, dataset_id: str, *, need: str = "analyst") -> tuple[DatasetRow, str]:
        """The dataset and ``user``'s role on it; 404 without access, 403 below ``need`` (``custodian``)."""
        dataset = self.store.dataset(dataset_id)
        role = None if dataset is None else self.store.access(user, dataset_id)
        if dataset is None or role is None:
            self.store.audit(user, "access dataset", f"dataset:{dataset_id}", "denied", "no such dataset or no grant")
            raise HTTPException(404, f"no dataset {dataset_id} (or it is not shared with you)")
        if need == "custodian" and role not in ("admin", "custodian"):
            self.store.audit(user, "custodian action", f"dataset:{dataset_id}", "denied", f"role {role}")
            raise HTTPException(403, f"only the custodians of dataset '{dataset.name}' can do this")
        return dataset, role

    def job_for(self, user: User, job_id: str) -> tuple[JobRow, str]:
        """The job and ``user``'s role on its dataset; 404 without access, and for an analyst's view of another
        user's job (its parameters, conditions and errors are that user's and the custodians')."""
        job = self.store.job(job_id)
        role = None if job is None else self.store.access(user, job.dataset_id)
        if job is None or role is None or not job_visible(job, user, role):
            self.store.audit(user, "access job", f"job:{job_id}", "denied", "no such job or no grant")
            raise HTTPException(404, f"no job {job_id} (or it is not shared with you)")
        return job, role

    def jobs_for(self, user: User, dataset_ids: list[str]) -> list[dict[str, Any]]:
        """The jobs on these datasets ``user`` may see, as ``user`` may see them."""
        roles = {i: self.store.access(user, i) or "analyst" for i in dataset_ids}
        return [
            job_view(job, roles[job.dataset_id])
            for job in self.store.jobs(dataset_ids)
            if job_visible(job, user, roles[job.dataset_id])
        ]

    def release_for(self, user: User, release_id: str) -> tuple[ReleaseRow, DatasetRow, str]:
        release = self.store.release(release_id)
        dataset = None if release is None else self.store.dataset(release.dataset_id)
        role = None if dataset is None else self.store.access(user, dataset.id)
        if release is None or dataset is None or role is None or not release_visible(release, role):
            self.store.audit(user, "access release", f"release:{release_id}", "denied", "no such release or no grant")
            raise HTTPException(404, f"no release {release_id} (or it is not shared with you)")
        return release, dataset, role

    # ---- views -----------------------------------------------------------------------------------------------

    def budget_view(self, dataset: DatasetRow) -> dict[str, Any]:
        return budget_view(self.store.budget(dataset))

    @staticmethod
    def schema_view(dataset: DatasetRow, role: str) -> dict[str, Any]:
        return schema_view(dataset, role)

    def dataset_view(self, dataset: DatasetRow, role: str) -> dict[str, Any]:
        return dataset_view(self.store, dataset, role)

    def job_budget(self, dataset: DatasetRow, request: JobRequest) -> Budget | None:
        """The budget a job reserves: what the DP method's fit will ask for (part of delta set aside for key
        discovery where the schema has categories to discover), or None for a non-DP method."""
        cls = available().get(request.method)
        if cls is None:
            raise HTTPException(
                400, f"unknown method {request.method!r}; choose one of {', '.join(sorted(available()))}"
            )
        create(request.method, **request.params)  # a bad parameter is a ParameterError: 400 with its message
        if not cls.differentially_private:
            if request.epsilon is not None:
                raise HTTPException(400, f"method {request.method!r} is not differentially private: drop epsilon")
            return None
        if request.epsilon is None:
            raise HTTPException(400, f"method {request.method!r} is differentially private: give epsilon")
        return resolve_budget(request.method, request.epsilon, request.delta, Schema.from_dict(dataset.schema))


def current_user(request: Request) -> User:
    """The signed-in user: from the bearer token, else from the UI's session cookie (401 without either).

    A browser request signed in by the cookie that changes something must echo the session's CSRF token.
    """
    store: Store = request.app.state.service.store
    header = request.headers.get("authorization", "")
    user = None
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            user = store.user_by_token(token.strip())
    elif isinstance(request.session.get("sid"), str):
        user = store.session_user(request.session["sid"])
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
        if (
            user is not None
            and unsafe
            and not constant_time_equal(request.headers.get(CSRF_HEADER), request.session.get("csrf"))
        ):
            raise HTTPException(403, f"a signed-in browser request that changes something must send {CSRF_HEADER}")
    if user is None:
        raise HTTPException(401, "sign in: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    return user


Authed = Annotated[User, Depends(current_user)]


def get_service(request: Request) -> Service:
    """The app's :class:`Service` (set by :func:`~privsynth.service.app.create_app`)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def admin_only(service: Service, user: User, action: str) -> None:
    """403 (and an audit line) unless ``user`` is an admin."""
    if user.role != "admin":
        service.store.audit(user, action, None, "denied", f"role {user.role}")
        raise HTTPException(403, "only an admin can do this")


def custodian_or_admin(service: Service, user: User, action: str) -> None:
    """403 (and an audit line) for an analyst: only custodians and admins register datasets."""
    if user.role == "analyst":
        service.store.audit(user, action, None, "denied", "analysts cannot register datasets")
        raise HTTPException(403, "only custodians and admins can register datasets")
