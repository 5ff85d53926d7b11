"""What each role sees: the service's objects (datasets, budgets, jobs, releases) as JSON-ready dicts.

The API's routes and the web UI's pages render from these functions only, so a role sees the same thing in both:
an analyst sees no private domain (nor its size), no storage location, no grants, only their own jobs (with
errors reduced to :func:`~privsynth.service.jobs.public_error`), DP releases and published ones, and reports
only where the custodian shared them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from privsynth.data.schema import Schema
from privsynth.privacy.budget import epsilon_from_rho_delta
from privsynth.privacy.ledger import DatasetRecord
from privsynth.service.config import RELEASE_FILES
from privsynth.service.jobs import public_error
from privsynth.service.store import DatasetRow, JobRow, ReleaseRow, Store, User

__all__ = [
    "budget_view",
    "dataset_view",
    "job_view",
    "job_visible",
    "release_view",
    "release_visible",
    "schema_view",
]


def schema_view(dataset: DatasetRow, role: str) -> dict[str, Any]:
    """The schema as ``role`` may see it: an analyst sees no domain (nor its size) that is not public."""
    view = Schema.from_dict(dataset.schema).to_dict(private_domains=role != "analyst")
    if role == "analyst":
        for column in view["columns"]:
            column.pop("categories_count", None)
    return view


def dataset_view(store: Store, dataset: DatasetRow, role: str) -> dict[str, Any]:
    """A dataset as ``role`` may see it: custodians and admins also see where it is stored and who has grants."""
    view: dict[str, Any] = {
        "id": dataset.id,
        "name": dataset.name,
        "your_role": role,
        "created_at": dataset.created_at.isoformat(),
        "budget": budget_view(store.budget(dataset)),
        "schema": schema_view(dataset, role),
        "target": dataset.target,
        "sensitive": dataset.sensitive,
        "reports_visible": dataset.reports_visible,
    }
    if role != "analyst":
        view["kind"] = dataset.kind
        view["location"] = (
            make_url(dataset.location).render_as_string(hide_password=True)
            if dataset.kind == "sql"
            else Path(dataset.location).name
        )
        view["table"] = dataset.table_name
        view["holdout"] = dataset.holdout is not None
        view["fingerprint"] = dataset.fingerprint
        view["grants"] = store.grants(dataset.id)
    return view


def budget_view(record: DatasetRecord) -> dict[str, Any]:
    """A dataset's budget for people: the cap, epsilon spent, and the largest epsilon a job at the cap's delta
    can still ask for (spends compose in rho; the remaining rho is converted at the cap's delta)."""
    cap = record.cap
    if cap is None:
        return {"cap": None, "spent_epsilon": None, "remaining_epsilon": None, "remaining_rho": None}
    left_delta = cap.delta - record.spent_approx_delta - record.reserved_approx_delta
    remaining, spent = record.remaining_rho, record.spent_epsilon
    return {
        "cap": {"epsilon": cap.epsilon, "delta": cap.delta},
        "spent_epsilon": None if spent is None or math.isinf(spent) else spent,
        "spent_rho": record.spent_rho,
        "reserved_rho": record.reserved_rho,
        "remaining_rho": remaining,
        "remaining_epsilon": epsilon_from_rho_delta(remaining, left_delta) if remaining > 0 and left_delta > 0 else 0.0,
        "with_reserved_epsilon": epsilon_from_rho_delta(record.spent_rho + record.reserved_rho, left_delta)
        if left_delta > 0
        else None,
    }


def job_visible(job: JobRow, user: User, role: str) -> bool:
    """An analyst sees their own jobs only; custodians and admins every job on their datasets."""
    return role != "analyst" or job.user_id == user.id


def release_visible(release: ReleaseRow, role: str) -> bool:
    """An analyst sees DP releases, and a non-DP release only once a custodian published it: its rows were fitted
    without a privacy guarantee."""
    return role != "analyst" or release.epsilon is not None or release.published


def job_view(job: JobRow, role: str = "custodian") -> dict[str, Any]:
    """A job as ``role`` may see it: an analyst reads :func:`~privsynth.service.jobs.public_error` of its error
    (the detail may quote the data), custodians and admins the error itself."""
    out = {
        key: getattr(job, key)
        for key in ("id", "dataset_id", "method", "epsilon", "delta", "rows", "seed", "status", "progress", "error")
    }
    if role == "analyst":
        out["error"] = public_error(job.error)
    out["conditions"], out["params"] = job.conditions, job.params
    out["release_id"] = job.release_id
    for key in ("created_at", "started_at", "finished_at"):
        value = getattr(job, key)
        out[key] = None if value is None else value.isoformat()
    return out


def release_view(release: ReleaseRow, dataset: DatasetRow, role: str) -> dict[str, Any]:
    files = {
        name: f"/api/releases/{release.id}/{name}"
        for name in RELEASE_FILES
        if not name.startswith("report") or role != "analyst" or dataset.reports_visible
    }
    return {
        "id": release.id,
        "job_id": release.job_id,
        "dataset_id": release.dataset_id,
        "dataset": dataset.name,
        "rows": release.rows,
        "method": release.method,
        "epsilon": release.epsilon,
        "delta": release.delta,
        "created_at": release.created_at.isoformat(),
        "published": release.published,
        "files": files,
    }
