"""What the store hands out: frozen rows (users, datasets, jobs, releases), the ledger key of a dataset, and
the errors a job submission can meet."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.database import utc
from privsynth.service.security import Credentials, with_password


class TooManyJobs(ParameterError):
    """A user already has as many jobs queued or running as a user may have at once."""


class ShareExceeded(BudgetExceeded):
    """A job would take its user's jobs past the user's share of the dataset's cap."""


@dataclass(frozen=True)
class User:
    """A person (or script) with a role: ``admin`` manages users and sees everything; a ``custodian`` registers
    datasets and is custodian of those; an ``analyst`` sees only the releases of datasets granted to them."""

    id: int
    name: str
    role: str


@dataclass(frozen=True)
class DatasetRow:
    """A registered dataset: where its rows are (a stored file, or a database the rows never leave), and for an
    upload the real rows held out of synthesis to evaluate releases on (``holdout``)."""

    id: str
    name: str
    kind: str
    location: str
    table_name: str | None
    holdout: str | None
    fingerprint: str
    schema: dict[str, Any]
    target: str | None
    sensitive: str | None
    reports_visible: bool
    created_by: int
    created_at: datetime
    deleted_at: datetime | None

    @property
    def ledger_key(self) -> str:
        """The name the dataset's budget is kept under in the ledger (see :func:`ledger_key`)."""
        return ledger_key(self.id)


@dataclass(frozen=True)
class JobRow:
    """A generation job: queued, running (a worker holds it and beats its heartbeat), done or failed."""

    id: str
    dataset_id: str
    user_id: int
    method: str
    epsilon: float | None
    delta: float | None
    rows: int
    seed: int | None
    conditions: dict[str, Any]
    params: dict[str, Any]
    status: str
    progress: dict[str, Any]
    reservation_id: int | None
    error: str | None
    worker: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    release_id: str | None


@dataclass(frozen=True)
class ReleaseRow:
    """A finished release: synthetic rows, report and card in ``directory``."""

    id: str
    job_id: str
    dataset_id: str
    directory: str
    rows: int
    method: str
    epsilon: float | None
    delta: float | None
    created_at: datetime
    published: bool = False


def ledger_key(dataset_id: str) -> str:
    """The name a service dataset's budget is kept under in the ledger: its service id, so two datasets over the
    same rows or the same table (registered by two custodians) have two budgets, each capped by its custodians."""
    return f"service:{dataset_id}"


def hash_token(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


def dataset_row(row: Row[Any], credentials: Credentials | None = None) -> DatasetRow:
    values = row._asdict()
    if values["kind"] == "sql" and credentials is not None:
        values["location"] = with_password(values["location"], credentials.get(values["id"]))
    values["schema"] = json.loads(values["schema"])
    values["created_at"] = utc(values["created_at"])
    values["deleted_at"] = utc(values["deleted_at"])
    return DatasetRow(**values)


def job_row(row: Row[Any]) -> JobRow:
    values = row._asdict()
    for key in ("conditions", "params", "progress"):
        values[key] = json.loads(values[key])
    for key in ("heartbeat_at", "created_at", "started_at", "finished_at"):
        values[key] = utc(values[key])
    return JobRow(**values)


def release_row(row: Row[Any]) -> ReleaseRow:
    values = row._asdict()
    values["created_at"] = utc(values["created_at"])
    return ReleaseRow(**values)
