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

import json
import logging
import math
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url
from starlette.middleware.sessions import SessionMiddleware

from privsynth._version import __version__
from privsynth.data.schema import Schema
from privsynth.data.sources import load_source
from privsynth.errors import BudgetExceeded, PrivsynthError
from privsynth.pipeline import check_schema
from privsynth.privacy.budget import Budget, epsilon_from_rho_delta
from privsynth.privacy.ledger import DatasetRecord
from privsynth.provenance.card import render_card_html
from privsynth.service.exports import safe_csv
from privsynth.service.jobs import DEFAULT_MAX_MINUTES, DEFAULT_MEMORY_MB, Worker, open_dataset, public_error
from privsynth.service.limits import (
    ANALYST_MAX_ROWS,
    ANALYST_PARAMS,
    MAX_ACTIVE_JOBS,
    MAX_SEED,
    check_analyst_conditions,
    check_analyst_params,
    check_public_conditions,
    default_share,
)
from privsynth.service.security import (
    Credentials,
    LoginThrottle,
    SecurityMiddleware,
    SQLAllowList,
    analyst_card,
    connect_options,
    constant_time_equal,
    private_folder,
    scrub_paths,
    session_key,
)
from privsynth.service.store import (
    ROLES,
    SESSION_HOURS,
    DatasetRow,
    JobRow,
    ReleaseRow,
    ShareExceeded,
    Store,
    TooManyJobs,
    User,
)
from privsynth.synth import available, create
from privsynth.synth.base import infer_schema
from privsynth.synth.dp import resolve_budget

__all__ = ["ServiceConfig", "create_app"]

logger = logging.getLogger(__name__)

MAX_ROWS: Final = 10_000_000
DEFAULT_HOLDOUT: Final = 0.2
CSRF_HEADER: Final = "x-privsynth-csrf"
"""Requests signed in by the session cookie must echo the session's CSRF token in this header when they change
something (the cookie is also SameSite=strict); the web UI's script does."""
UPLOAD_SUFFIXES: Final = (".csv", ".parquet")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,200}$")
RELEASE_FILES: Final = {
    "data": ("synthetic.csv", "text/csv"),
    "card": ("synthetic.card.json", "application/json"),
    "card.html": ("synthetic.card.html", "text/html"),
    "report": ("report.html", "text/html"),
    "report.json": ("report.json", "application/json"),
}


@dataclass
class ServiceConfig:
    """Where the service keeps its files and database, and its limits."""

    data_dir: Path = field(default_factory=lambda: Path("~/.privsynth/service").expanduser())
    database_url: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body other than an upload (JSON: schemas, jobs)."""
    max_cells: int = 20_000_000
    """Largest upload in rows x columns, checked before it is read (a small Parquet file can hold many cells)."""
    heartbeat: float = 2.0
    stale_after: float = 60.0
    job_max_minutes: float = DEFAULT_MAX_MINUTES
    """Wall-clock limit of one job; a job past it is stopped and its reservation settled."""
    job_memory_mb: int = DEFAULT_MEMORY_MB
    """Address-space limit of one job's process."""
    sql_allow: tuple[str, ...] = ()
    """Database servers custodians may register tables from, as ``driver://host:port``; none by default."""
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (set it whenever the service is behind HTTPS)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'service.sqlite'}"


class JobRequest(BaseModel):
    """A generation job: ``method`` (see ``/api/methods``), its budget, and how many rows. Numbers are finite
    (``NaN`` and ``Infinity``, which Python's JSON parser accepts, are refused) and a seed is 0 to 2**63 - 1, so a
    bad request is refused before any budget is reserved."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    method: str
    epsilon: float | None = Field(default=None, gt=0, le=100)
    delta: float | None = Field(default=None, gt=0, lt=1e-3)
    rows: int = Field(gt=0, le=MAX_ROWS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    conditions: dict[str, str | int | float | bool] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)


class CapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(gt=0, lt=1e-3)


class GrantRequest(BaseModel):
    """``share``: the share of the dataset's cap (0 to 1, in rho) the user's jobs may use together; by default
    the whole cap for a custodian and :data:`~privsynth.service.limits.DEFAULT_ANALYST_SHARE` for an analyst."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    user: str
    role: str
    share: float | None = Field(default=None, gt=0, le=1)


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    published: bool


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool


class SQLDatasetRequest(BaseModel):
    """A table on a database server an admin allowed, read with the credentials given here (the password is kept
    in the service's credentials folder, not in its database)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    url: str
    table: str
    user: str | None = None
    password: str | None = None


class DatasetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    target: str | None = None
    sensitive: str | None = None
    reports_visible: bool | None = None


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
        """The schema as ``role`` may see it: an analyst sees no domain (nor its size) that is not public."""
        view = Schema.from_dict(dataset.schema).to_dict(private_domains=role != "analyst")
        if role == "analyst":
            for column in view["columns"]:
                column.pop("categories_count", None)
        return view

    def dataset_view(self, dataset: DatasetRow, role: str) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": dataset.id,
            "name": dataset.name,
            "your_role": role,
            "created_at": dataset.created_at.isoformat(),
            "budget": self.budget_view(dataset),
            "schema": self.schema_view(dataset, role),
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
            view["grants"] = self.store.grants(dataset.id)
        return view

    def job_budget(self, dataset: DatasetRow, request: JobRequest) -> Budget | None:
        """The budget a job reserves: what the DP method's fit will ask for (part of delta set aside for key
        discovery where the schema has categories to discover), or None for a non-DP method."""
        cls = available().get(request.method)
        if cls is None:
            raise HTTPException(
                400, f"unknown method {request.method!r}; choose one of {', '.join(sorted(available()))}"
            )
        try:
            create(request.method, **request.params)
        except TypeError as exc:
            raise HTTPException(400, f"bad params for {request.method}: {exc}") from None
        if not cls.differentially_private:
            if request.epsilon is not None:
                raise HTTPException(400, f"method {request.method!r} is not differentially private: drop epsilon")
            return None
        if request.epsilon is None:
            raise HTTPException(400, f"method {request.method!r} is differentially private: give epsilon")
        return resolve_budget(request.method, request.epsilon, request.delta, Schema.from_dict(dataset.schema))


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


def _attachment(filename: str) -> str:
    """A Content-Disposition header for ``filename`` (a dataset name may hold any character)."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename)}"


def _checked_upload_name(filename: str | None) -> str:
    """The suffix of an uploaded file's name, refusing names with folders (``../x.csv``) or odd characters."""
    name = filename or ""
    if not name or "/" in name or "\\" in name or ".." in name or not _SAFE_NAME.match(name):
        raise HTTPException(
            400, f"file name {name!r} is not allowed: use a plain name such as data.csv (letters, digits, . _ -)"
        )
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise HTTPException(415, f"upload a .csv or .parquet file, not {name!r}")
    return suffix


def _store_upload(
    service: Service, user: User, request: Request, file: UploadFile, name: str | None, holdout: float
) -> DatasetRow:
    """Check, read and register an uploaded file; on any refusal nothing stays on disk or in the database.

    With ``holdout`` > 0 a random share of the rows (fresh randomness, not a fixed seed) is kept apart in
    ``holdout.parquet``: releases are evaluated on it (utility, membership and distance attacks) and never
    trained on it; the rest is stored as ``data.parquet``, the data the dataset's budget and fingerprint cover.
    """
    store, limit = service.store, service.config.max_upload_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + 64 * 1024:
        raise HTTPException(413, f"the upload is {declared:,} bytes; the limit is {limit:,}")
    suffix = _checked_upload_name(file.filename)
    dataset_name = _checked_name(name or Path(file.filename or "data").stem)
    dataset_id = uuid.uuid4().hex
    staging = Path(tempfile.mkdtemp(prefix="upload-", dir=service.config.data_dir))
    final = service.config.data_dir / "datasets" / dataset_id
    try:
        staged = _receive(file, staging / f"data{suffix}", limit)
        _check_cells(staged, service.config.max_cells, file.filename or "")
        try:
            source = load_source(staged, name=dataset_name)
            frame = source.to_pandas()
        except PrivsynthError as exc:
            said = str(exc).replace(str(staged), file.filename or "the file")
            raise HTTPException(400, service.scrub(f"cannot read {file.filename}: {said}")) from None
        except Exception as exc:
            said = str(exc).replace(str(staged), file.filename or "the file")
            raise HTTPException(400, service.scrub(f"cannot read {file.filename} as {suffix[1:]}: {said}")) from None
        if frame.empty or frame.shape[1] == 0:
            raise HTTPException(400, f"{file.filename} has no rows or no columns")
        held = None
        if holdout > 0:
            if round(len(frame) * holdout) < 1 or round(len(frame) * (1 - holdout)) < 2:
                raise HTTPException(400, f"{len(frame)} rows are too few to hold out {holdout:g} of them")
            order = np.random.default_rng().permutation(len(frame))
            cut = round(len(frame) * holdout)
            staged.unlink()
            staged = staging / "data.parquet"
            frame.iloc[np.sort(order[cut:])].to_parquet(staged, index=False)
            frame.iloc[np.sort(order[:cut])].to_parquet(staging / "holdout.parquet", index=False)
            held = final / "holdout.parquet"
            source = load_source(staged, name=dataset_name)
            frame = source.to_pandas()
        schema = infer_schema(frame)
        fingerprint = source.fingerprint()
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)
        return store.add_dataset(
            name=dataset_name,
            kind="file",
            location=str(final / staged.name),
            table_name=None,
            fingerprint=fingerprint,
            schema=schema.to_dict(),
            owner=user,
            dataset_id=dataset_id,
            holdout=None if held is None else str(held),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if store.dataset(dataset_id) is None:
            shutil.rmtree(final, ignore_errors=True)


def _check_cells(path: Path, max_cells: int, filename: str) -> None:
    """Refuse (413) an upload of more than ``max_cells`` rows x columns before it is read: a Parquet file's
    footer says how many rows and columns (and bytes, uncompressed) it holds; a CSV file's lines are counted while
    streaming it, 1 MB at a time."""
    if path.suffix == ".parquet":
        try:
            metadata = pq.ParquetFile(path).metadata
        except Exception:
            raise HTTPException(400, f"{filename} is not a Parquet file (its footer cannot be read)") from None
        rows, columns = metadata.num_rows, metadata.num_columns
        unpacked = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        if unpacked > 4 * max_cells * 8:
            raise HTTPException(413, f"{filename} unpacks to {unpacked:,} bytes; the limit is {4 * max_cells * 8:,}")
    else:
        with path.open("rb") as data:
            header = data.readline()
            columns = max(header.count(separator) for separator in (b",", b";", b"\t", b"|")) + 1
            rows = sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1024 * 1024), b""))
    if rows * columns > max_cells:
        raise HTTPException(
            413,
            f"{filename} holds {rows:,} rows x {columns:,} columns; this service accepts up to {max_cells:,} cells "
            "(an admin sets --max-cells)",
        )


def _receive(file: UploadFile, path: Path, limit: int) -> Path:
    """Copy an upload to ``path``, refusing it (413) once it passes ``limit`` bytes."""
    copied = 0
    with path.open("wb") as out:
        while chunk := file.file.read(1024 * 1024):
            copied += len(chunk)
            if copied > limit:
                raise HTTPException(413, f"the upload is over the limit of {limit:,} bytes")
            out.write(chunk)
    return path


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise HTTPException(400, "a dataset name is 1 to 200 characters")
    return name


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


def create_app(config: ServiceConfig | None = None, *, worker: bool = False) -> FastAPI:
    """The service app; ``worker=True`` also runs a worker thread in this process (``privsynth serve``)."""
    service = Service(config or ServiceConfig())
    store = service.store

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runner = None
        if worker:
            settings = service.config
            runner = Worker(
                store,
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

    def admin_only(user: User, action: str) -> None:
        if user.role != "admin":
            store.audit(user, action, None, "denied", f"role {user.role}")
            raise HTTPException(403, "only an admin can do this")

    @app.get("/api/health", tags=["service"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/me", tags=["service"])
    def me(user: Authed) -> dict[str, Any]:
        return {"id": user.id, "name": user.name, "role": user.role}

    @app.get("/api/methods", tags=["service"])
    def methods(user: Authed) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "differentially_private": cls.differentially_private,
                "description": (cls.__doc__ or "").strip().splitlines()[0],
                "allowed": cls.differentially_private or user.role != "analyst",
                "analyst_params": {key: bound.describe() for key, bound in ANALYST_PARAMS.get(name, {}).items()},
            }
            for name, cls in available().items()
        ]

    # ---- users and audit -------------------------------------------------------------------------------------

    @app.get("/api/users", tags=["users"])
    def list_users(user: Authed) -> list[dict[str, Any]]:
        admin_only(user, "list users")
        disabled = store.disabled()
        return [{"id": u.id, "name": u.name, "role": u.role, "disabled": u.name in disabled} for u in store.users()]

    @app.post("/api/users", tags=["users"], status_code=201)
    def add_user(body: UserRequest, user: Authed) -> dict[str, Any]:
        admin_only(user, "add user")
        if body.role not in ROLES:
            raise HTTPException(400, f"role must be one of {', '.join(ROLES)}, not {body.role!r}")
        added, token = store.add_user(body.name, body.role)
        store.audit(user, "add user", f"user:{added.name}", detail=f"role {added.role}")
        return {"id": added.id, "name": added.name, "role": added.role, "token": token}

    @app.post("/api/users/{name}/token", tags=["users"])
    def rotate_token(name: str, user: Authed) -> dict[str, Any]:
        """A new token for ``name``: the old one and the user's web sessions stop working at once."""
        admin_only(user, "rotate token")
        token = store.rotate_token(name)
        store.audit(user, "rotate token", f"user:{name}")
        return {"name": name, "token": token}

    @app.patch("/api/users/{name}", tags=["users"])
    def update_user(name: str, body: UserSettings, user: Authed) -> dict[str, Any]:
        """Disable a user (their token and sessions stop working; grants and history stay) or enable them."""
        admin_only(user, "update user")
        if name == user.name and body.disabled:
            raise HTTPException(400, "you cannot disable yourself; another admin can")
        changed = store.set_disabled(name, body.disabled)
        store.audit(user, "disable user" if body.disabled else "enable user", f"user:{name}")
        return {"id": changed.id, "name": changed.name, "role": changed.role, "disabled": body.disabled}

    @app.get("/api/audit", tags=["users"])
    def audit(user: Authed, limit: int = 500) -> list[dict[str, Any]]:
        admin_only(user, "read audit log")
        return store.audit_log(min(max(limit, 1), 5000))

    # ---- datasets --------------------------------------------------------------------------------------------

    def custodian_or_admin(user: User, action: str) -> None:
        if user.role == "analyst":
            store.audit(user, action, None, "denied", "analysts cannot register datasets")
            raise HTTPException(403, "only custodians and admins can register datasets")

    @app.post("/api/datasets", tags=["datasets"], status_code=201)
    def upload_dataset(
        request: Request,
        user: Authed,
        file: Annotated[UploadFile, File(description="A CSV or Parquet file")],
        name: Annotated[str | None, Form()] = None,
        holdout: Annotated[
            float, Form(ge=0, le=0.5, description="Share of rows held out of synthesis to evaluate releases on")
        ] = DEFAULT_HOLDOUT,
    ) -> dict[str, Any]:
        custodian_or_admin(user, "register dataset")
        try:
            dataset = _store_upload(service, user, request, file, name, holdout)
        except HTTPException as exc:
            store.audit(user, "register dataset", None, "refused", str(exc.detail))
            raise
        store.audit(user, "register dataset", f"dataset:{dataset.id}", detail=f"{dataset.name} (upload)")
        return service.dataset_view(dataset, "custodian")

    @app.post("/api/datasets/sql", tags=["datasets"], status_code=201)
    def register_sql(body: SQLDatasetRequest, user: Authed) -> dict[str, Any]:
        custodian_or_admin(user, "register dataset")
        dataset_name = _checked_name(body.name)
        try:
            url, shown = service.sql_allow.check(body.url, body.table, body.user, body.password)
        except PrivsynthError as exc:
            store.audit(user, "register dataset", None, "refused", str(exc))
            raise HTTPException(403, str(exc)) from None
        try:
            source = load_source(connect_options(url).render_as_string(hide_password=False), table=body.table)
            schema = infer_schema(source)
        except Exception as exc:
            logger.info("registering %s table %s failed: %s", shown, body.table, type(exc).__name__)
            store.audit(user, "register dataset", None, "refused", f"cannot connect to {shown} ({body.table})")
            raise HTTPException(
                400,
                f"cannot connect to {shown}, or it has no table {body.table!r} this user may read: check the "
                "server, database, user, password and table name",
            ) from None
        dataset = store.add_dataset(
            name=dataset_name,
            kind="sql",
            location=url.render_as_string(hide_password=False),
            table_name=body.table,
            fingerprint=source.fingerprint(),
            schema=schema.to_dict(),
            owner=user,
        )
        store.audit(user, "register dataset", f"dataset:{dataset.id}", detail=f"{dataset.name} (SQL table)")
        return service.dataset_view(dataset, "custodian")

    @app.get("/api/datasets", tags=["datasets"])
    def list_datasets(user: Authed) -> list[dict[str, Any]]:
        out = []
        for dataset in store.datasets(user):
            role = store.access(user, dataset.id) or "analyst"
            out.append({"id": dataset.id, "name": dataset.name, "your_role": role, **service.budget_view(dataset)})
        return out

    @app.get("/api/datasets/{dataset_id}", tags=["datasets"])
    def get_dataset(dataset_id: str, user: Authed) -> dict[str, Any]:
        dataset, role = service.dataset_for(user, dataset_id)
        return service.dataset_view(dataset, role)

    @app.patch("/api/datasets/{dataset_id}", tags=["datasets"])
    def update_dataset(dataset_id: str, body: DatasetSettings, user: Authed) -> dict[str, Any]:
        dataset, role = service.dataset_for(user, dataset_id, need="custodian")
        values = body.model_dump(exclude_unset=True)
        schema = Schema.from_dict(dataset.schema)
        for key in ("target", "sensitive"):
            if values.get(key) is not None and values[key] not in schema:
                raise HTTPException(400, f"{key} {values[key]!r} is not a column; columns are {schema.names}")
        if "name" in values:
            values["name"] = _checked_name(values["name"] or "")
        store.update_dataset(dataset.id, **values)
        store.audit(user, "update dataset", f"dataset:{dataset.id}", detail=json.dumps(values))
        return service.dataset_view(store.dataset(dataset.id) or dataset, role)

    @app.get("/api/datasets/{dataset_id}/schema", tags=["datasets"])
    def get_schema(dataset_id: str, user: Authed) -> dict[str, Any]:
        dataset, role = service.dataset_for(user, dataset_id)
        return service.schema_view(dataset, role)

    @app.put("/api/datasets/{dataset_id}/schema", tags=["datasets"])
    def put_schema(dataset_id: str, body: dict[str, Any], user: Authed) -> dict[str, Any]:
        dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
        schema = Schema.from_dict(body)
        check_schema(schema, open_dataset(dataset))
        store.update_dataset(dataset.id, schema=schema.to_dict())
        store.audit(user, "edit schema", f"dataset:{dataset.id}")
        return schema.to_dict()

    @app.put("/api/datasets/{dataset_id}/cap", tags=["datasets"])
    def set_cap(dataset_id: str, body: CapRequest, user: Authed) -> dict[str, Any]:
        dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
        store.ledger.set_cap(dataset.ledger_key, body.epsilon, body.delta)
        store.audit(user, "set cap", f"dataset:{dataset.id}", detail=f"epsilon {body.epsilon:g}, delta {body.delta:g}")
        return service.budget_view(dataset)

    @app.post("/api/datasets/{dataset_id}/grants", tags=["datasets"], status_code=201)
    def grant(dataset_id: str, body: GrantRequest, user: Authed) -> list[dict[str, Any]]:
        dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
        grantee = store.user(name=body.user)
        if grantee is None:
            raise HTTPException(400, f"no user named {body.user!r}")
        store.grant(dataset.id, grantee, body.role, body.share)
        share = default_share(body.role) if body.share is None else body.share
        store.audit(user, "grant", f"dataset:{dataset.id}", detail=f"{grantee.name} as {body.role}, share {share:g}")
        return store.grants(dataset.id)

    @app.delete("/api/datasets/{dataset_id}/grants/{name}", tags=["datasets"])
    def revoke(dataset_id: str, name: str, user: Authed) -> list[dict[str, Any]]:
        dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
        grantee = store.user(name=name)
        if grantee is None or not store.revoke(dataset.id, grantee):
            raise HTTPException(404, f"{name!r} has no grant on this dataset")
        store.audit(user, "revoke", f"dataset:{dataset.id}", detail=name)
        return store.grants(dataset.id)

    @app.delete("/api/datasets/{dataset_id}", tags=["datasets"])
    def delete_dataset(dataset_id: str, user: Authed) -> dict[str, Any]:
        dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
        store.delete_dataset(dataset.id)
        if dataset.kind == "file":
            shutil.rmtree(Path(dataset.location).parent, ignore_errors=True)
        else:
            Credentials(service.config.data_dir).delete(dataset.id)
        store.audit(user, "delete dataset", f"dataset:{dataset.id}", detail=dataset.name)
        return {"deleted": dataset.id}

    @app.get("/api/datasets/{dataset_id}/ledger", tags=["datasets"])
    def ledger(dataset_id: str, user: Authed) -> dict[str, Any]:
        dataset, _ = service.dataset_for(user, dataset_id)
        entries = [
            {
                "id": spend.id,
                "mechanism": spend.mechanism,
                "purpose": spend.purpose,
                "rho": spend.rho,
                "epsilon": spend.epsilon,
                "status": spend.status,
                "reservation_id": spend.reservation_id,
                "release_id": spend.release_id,
                "created_at": spend.created_at.isoformat(),
            }
            for spend in store.ledger.entries(dataset.ledger_key)
        ]
        return {"budget": service.budget_view(dataset), "entries": entries}

    # ---- jobs ------------------------------------------------------------------------------------------------

    @app.post("/api/datasets/{dataset_id}/jobs", tags=["jobs"], status_code=202)
    def submit(dataset_id: str, body: JobRequest, user: Authed) -> dict[str, Any]:
        dataset, role = service.dataset_for(user, dataset_id)
        schema = Schema.from_dict(dataset.schema)
        try:
            if role == "analyst" and body.method in ANALYST_PARAMS:  # before the method sees the parameters
                if body.rows > ANALYST_MAX_ROWS:
                    raise PrivsynthError(f"analysts may ask for at most {ANALYST_MAX_ROWS:,} rows, not {body.rows:,}")
                check_analyst_params(body.method, body.params, schema)
        except PrivsynthError as exc:
            store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
            raise HTTPException(422, str(exc)) from None
        budget = service.job_budget(dataset, body)
        if budget is None and role == "analyst":
            store.audit(user, "submit job", f"dataset:{dataset.id}", "denied", f"non-DP method {body.method}")
            raise HTTPException(403, f"analysts can only request differentially private methods, not {body.method!r}")
        for column in body.conditions:
            if column not in schema:
                raise HTTPException(400, f"condition on {column!r}: no such column; columns are {schema.names}")
        try:
            if role == "analyst":
                check_analyst_conditions(body.conditions, schema)
            check_public_conditions(body.conditions, schema)
        except PrivsynthError as exc:
            store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
            raise HTTPException(422, str(exc)) from None
        share = store.grant_share(dataset.id, user) if role in ("analyst", "custodian") else None
        share = default_share(role) if share is None else share
        record = store.budget(dataset)
        if budget is not None and record.cap is None:
            store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", "no cap")
            raise HTTPException(
                409, f"dataset '{dataset.name}' has no privacy budget cap; its custodian sets one first"
            )
        try:
            job = store.submit(
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
            store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
            raise HTTPException(429, str(exc)) from None
        except ShareExceeded as exc:
            store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
            raise HTTPException(409, {"message": str(exc), "budget": service.budget_view(dataset)}) from None
        except BudgetExceeded as exc:
            view = service.budget_view(dataset)
            store.audit(user, "submit job", f"dataset:{dataset.id}", "refused", str(exc))
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
        store.audit(user, "submit job", f"job:{job.id}", detail=f"{body.method} on dataset:{dataset.id}")
        return job_view(job, role)

    @app.get("/api/jobs", tags=["jobs"])
    def list_jobs(user: Authed, dataset: str | None = None) -> list[dict[str, Any]]:
        ids = [d.id for d in store.datasets(user)]
        if dataset is not None:
            ids = [i for i in ids if i == dataset]
        return service.jobs_for(user, ids)

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, user: Authed) -> dict[str, Any]:
        job, role = service.job_for(user, job_id)
        return job_view(job, role)

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: str, user: Authed) -> dict[str, Any]:
        """Stop a queued or running job (its submitter, or the dataset's custodians). Its reservation is settled
        like a failed job's: committed if a mechanism already drew noise (its output may have been seen),
        cancelled, and so given back, otherwise. The worker stops the job's process within a second."""
        job, role = service.job_for(user, job_id)
        if role not in ("admin", "custodian") and job.user_id != user.id:
            store.audit(user, "cancel job", f"job:{job.id}", "denied", f"role {role}")
            raise HTTPException(403, "only the job's submitter and the dataset's custodians can cancel it")
        outcome = store.fail(job.id, f"cancelled by {user.name}", status="cancelled")
        if outcome is None:
            raise HTTPException(
                409, f"job {job.id} is {job.status} already; only a queued or running job can be cancelled"
            )
        store.audit(user, "cancel job", f"job:{job.id}", detail=f"reservation {outcome}")
        cancelled, _ = service.job_for(user, job.id)
        return {**job_view(cancelled, role), "reservation": outcome}

    # ---- releases --------------------------------------------------------------------------------------------

    @app.get("/api/releases", tags=["releases"])
    def list_releases(user: Authed, dataset: str | None = None) -> list[dict[str, Any]]:
        datasets = {d.id: d for d in store.datasets(user) if dataset is None or d.id == dataset}
        out = []
        roles = {i: store.access(user, i) or "analyst" for i in datasets}
        for release in store.releases(list(datasets)):
            owner, role = datasets[release.dataset_id], roles[release.dataset_id]
            if release_visible(release, role):
                out.append(release_view(release, owner, role))
        return out

    @app.put("/api/releases/{release_id}/published", tags=["releases"])
    def publish_release(release_id: str, body: PublishRequest, user: Authed) -> dict[str, Any]:
        """Share a non-DP release with the dataset's analysts (or stop sharing it). A DP release is theirs
        already; a non-DP one was fitted without a privacy guarantee, so only a custodian may decide to share it."""
        release, dataset, role = service.release_for(user, release_id)
        if role not in ("admin", "custodian"):
            store.audit(user, "publish release", f"release:{release.id}", "denied", f"role {role}")
            raise HTTPException(403, f"only the custodians of dataset '{dataset.name}' can publish a release")
        store.set_published(release.id, body.published)
        store.audit(user, "publish release", f"release:{release.id}", detail=f"published {body.published}")
        updated, _, _ = service.release_for(user, release.id)
        return release_view(updated, dataset, role)

    @app.get("/api/releases/{release_id}", tags=["releases"])
    def get_release(release_id: str, user: Authed) -> dict[str, Any]:
        release, dataset, role = service.release_for(user, release_id)
        return release_view(release, dataset, role)

    @app.get("/api/releases/{release_id}/{item}", tags=["releases"], response_model=None)
    def release_file(release_id: str, item: str, user: Authed) -> Response:
        release, dataset, role = service.release_for(user, release_id)
        if item not in RELEASE_FILES:
            raise HTTPException(404, f"a release has {', '.join(RELEASE_FILES)}, not {item!r}")
        if item.startswith("report") and role == "analyst" and not dataset.reports_visible:
            store.audit(user, "read report", f"release:{release.id}", "denied", "reports not shared")
            raise HTTPException(403, "the custodian has not shared this dataset's evaluation reports")
        name, media = RELEASE_FILES[item]
        path = Path(release.directory) / name
        if not path.is_file():
            raise HTTPException(404, f"the release's {item} is missing on the server")
        store.audit(user, f"download {item}", f"release:{release.id}")
        if item in ("card", "card.html") and role == "analyst":
            card = analyst_card(json.loads((Path(release.directory) / RELEASE_FILES["card"][0]).read_text("utf-8")))
            body = render_card_html(card) if item == "card.html" else json.dumps(card, indent=2)
            return Response(body, media_type=media)
        if item == "data":  # cells a spreadsheet would run as formulas are neutralised (the file stays as it is)
            filename = f"{dataset.name}-{release.id[:8]}-{name}"
            return StreamingResponse(
                safe_csv(path), media_type=media, headers={"content-disposition": _attachment(filename)}
            )
        return FileResponse(path, media_type=media)

    app.state.routes_table = _route_table
    _register_ui(app, service, current_user)
    return app


def _route_table(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every API route, for the authorization tests."""
    out = []
    for route in app.routes:
        path = getattr(route, "path", "")
        for method in sorted(getattr(route, "methods", None) or ()):
            if path.startswith("/api/") and method != "HEAD":
                out.append((method, path))
    return out


def _register_ui(app: FastAPI, service: Service, current_user: Callable[[Request], User]) -> None:
    from privsynth.service.ui import register

    register(app, service, current_user)
