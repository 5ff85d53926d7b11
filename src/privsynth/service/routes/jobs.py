"""``/api/jobs``: submitting a generation job (checked against the role's limits, the grant's share and the
dataset's cap before any budget is reserved), reading and cancelling jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from privsynth.data.schema import Schema
from privsynth.errors import BudgetExceeded, PrivsynthError
from privsynth.service.deps import Authed, ServiceDep
from privsynth.service.limits import (
    ANALYST_MAX_ROWS,
    ANALYST_PARAMS,
    MAX_ACTIVE_JOBS,
    check_analyst_conditions,
    check_analyst_params,
    check_public_conditions,
    default_share,
)
from privsynth.service.models import JobRequest
from privsynth.service.store import ShareExceeded, TooManyJobs
from privsynth.service.views import job_view

router = APIRouter()


@router.post("/api/datasets/{dataset_id}/jobs", tags=["jobs"], status_code=202)
def submit(dataset_id: str, body: JobRequest, user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, role = service.dataset_for(user, dataset_id)
    schema = Schema.from_dict(dataset.schema)
    try:
        if role == "analyst" and body.method in ANALYST_PARAMS:  # before the method sees the parameters
            if body.rows > ANALYST_MAX_ROWS:
                raise PrivsynthError(f"analysts may ask for at most {ANALYST_MAX_ROWS:,} rows, not {body.rows:,}")
            check_analyst_params(body.method, body.params, schema)
    except PrivsynthError as exc:
        service.store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
        raise HTTPException(422, str(exc)) from None
    budget = service.job_budget(dataset, body)
    if budget is None and role == "analyst":
        service.store.audit(user, "submit job", f"dataset:{dataset.id}", "denied", f"non-DP method {body.method}")
        raise HTTPException(403, f"analysts can only request differentially private methods, not {body.method!r}")
    for column in body.conditions:
        if column not in schema:
            raise HTTPException(400, f"condition on {column!r}: no such column; columns are {schema.names}")
    try:
        if role == "analyst":
            check_analyst_conditions(body.conditions, schema)
        check_public_conditions(body.conditions, schema)
    except PrivsynthError as exc:
        service.store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
        raise HTTPException(422, str(exc)) from None
    share = service.store.grant_share(dataset.id, user) if role in ("analyst", "custodian") else None
    share = default_share(role) if share is None else share
    record = service.store.budget(dataset)
    if budget is not None and record.cap is None:
        service.store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", "no cap")
        raise HTTPException(409, f"dataset '{dataset.name}' has no privacy budget cap; its custodian sets one first")
    try:
        job = service.store.submit(
            dataset,
            user,
            method=body.method,
            rows=body.rows,
            budget=budget,
            seed=body.seed,
            conditions=dict(body.conditions),
            params=body.params,
            share=share,
            max_active=MAX_ACTIVE_JOBS.get(user.role),
        )
    except TooManyJobs as exc:
        service.store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
        raise HTTPException(429, str(exc)) from None
    except ShareExceeded as exc:
        service.store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
        raise HTTPException(409, {"message": str(exc), "budget": service.budget_view(dataset)}) from None
    except BudgetExceeded as exc:
        view = service.budget_view(dataset)
        service.store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
        left = view["remaining_epsilon"]
        raise HTTPException(
            409,
            {
                "message": f"refused: epsilon={body.epsilon:g} does not fit in the budget left on "
                f"'{dataset.name}' (about epsilon={left:.3g} at delta={view['cap']['delta']:g}, of a cap of "
                f"epsilon={view['cap']['epsilon']:g})",
                "budget": view,
                "ledger": str(exc),
            },
        ) from None
    service.store.audit(user, "submit job", f"job:{job.id}", detail=f"{body.method} on dataset:{dataset.id}")
    return job_view(job, role)


@router.get("/api/jobs", tags=["jobs"])
def list_jobs(user: Authed, service: ServiceDep, dataset: str | None = None) -> list[dict[str, Any]]:
    ids = [d.id for d in service.store.datasets(user)]
    if dataset is not None:
        ids = [i for i in ids if i == dataset]
    return service.jobs_for(user, ids)


@router.get("/api/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    job, role = service.job_for(user, job_id)
    return job_view(job, role)


@router.post("/api/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(job_id: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    """Stop a queued or running job (its submitter, or the dataset's custodians). Its reservation is settled
    like a failed job's: committed if a mechanism already drew noise (its output may have been seen),
    cancelled, and so given back, otherwise. The worker stops the job's process within a second."""
    job, role = service.job_for(user, job_id)
    if role not in ("admin", "custodian") and job.user_id != user.id:
        service.store.audit(user, "cancel job", f"job:{job.id}", "denied", f"role {role}")
        raise HTTPException(403, "only the job's submitter and the dataset's custodians can cancel it")
    outcome = service.store.fail(job.id, f"cancelled by {user.name}", status="cancelled")
    if outcome is None:
        raise HTTPException(409, f"job {job.id} is {job.status} already; only a queued or running job can be cancelled")
    service.store.audit(user, "cancel job", f"job:{job.id}", detail=f"reservation {outcome}")
    cancelled, _ = service.job_for(user, job.id)
    return {**job_view(cancelled, role), "reservation": outcome}
