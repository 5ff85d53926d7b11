"""Workers: claim a queued job, run the generate -> evaluate -> document pipeline, publish the release.

Budget. A DP job's whole budget is reserved when the job is accepted (:meth:`Store.submit`). The fit sees the
ledger through :class:`HeldLedger`, which hands it that reservation instead of taking a new one, so every
mechanism's spend is recorded under the job's reservation. The reservation is then closed exactly once, in one
transaction with the job's final state: committed with the release (:meth:`Store.finish`), or settled when the
job fails (:meth:`Store.fail`: committed if any mechanism drew noise, since its output may have been seen,
cancelled otherwise). A worker killed mid-job stops beating its heartbeat; any worker or server sweeping finds
the job and fails it the same way, and a late finish from a worker that was presumed dead publishes nothing.

Limits. Each job runs in a process of its own (forked from a server process that has imported privsynth once, so
a job starts in a fraction of a second), under a memory limit (``RLIMIT_AS``) and a wall-clock limit: a job past
its time is killed, a job that runs out of memory fails, and either way its reservation is settled like any
failed job's. A job cancelled through the API is killed the same way. The process exits on its own when the
worker that started it is gone.

Errors. A job's error may quote the data (a schema check names a value), so it is for the dataset's custodians;
analysts see :data:`GENERIC_ERROR`, or one of the service's own messages, which say nothing of the data
(:func:`public_error`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import resource
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import Connection

from privsynth.data.schema import Schema
from privsynth.data.sources import Source, load_source
from privsynth.errors import BudgetExceeded, ParameterError, PrivsynthError
from privsynth.evaluate import write_report
from privsynth.pipeline import evaluate_release, synthesize
from privsynth.privacy.ledger import DatasetRecord, Ledger, Spend
from privsynth.progress import ProgressEvent, listen
from privsynth.service.store import DatasetRow, JobRow, Store

__all__ = ["GENERIC_ERROR", "HeldLedger", "Worker", "public_error", "run_job"]

logger = logging.getLogger(__name__)

EVALUATION_ROWS: Final = 50_000
"""A release is evaluated against at most this many real rows (a database source's are sampled by ``head``)."""

DEFAULT_MAX_MINUTES: Final = 60.0
"""Wall-clock limit of one job (the job is killed past it)."""
DEFAULT_MEMORY_MB: Final = 8192
"""Address-space limit of one job's process (``RLIMIT_AS``): it counts reserved, not only used, memory, and
thread pools (DuckDB, Arrow, JAX) reserve much: a small AIM job on 2,000 rows needs about 4 GB of it."""
GENERIC_ERROR: Final = "the job failed; the dataset's custodian can see why"
_PUBLIC_ERRORS: Final = (
    re.compile(r"the job ran past its time limit of [0-9.]+ minutes? and was stopped"),
    re.compile(r"the job ran out of its memory limit of [0-9]+ MB"),
    re.compile(
        r"the job's process stopped unexpectedly \(exit code -?[0-9]+\); "
        r"it may have run out of its memory limit of [0-9]+ MB"
    ),
    re.compile(r"cancelled by [^ ]+"),
    re.compile(r"the dataset was deleted before the job ran"),
    re.compile(r"the service stopped while the job ran; submit it again"),
)
"""The service's own job errors: they say nothing of the data, so analysts may read them."""


def public_error(error: str | None) -> str | None:
    """What an analyst may read of a job's error: the service's own messages as they are, anything else (it may
    quote the data) as :data:`GENERIC_ERROR`."""
    if error is None:
        return None
    return error if any(p.fullmatch(error) for p in _PUBLIC_ERRORS) else GENERIC_ERROR


class HeldLedger(Ledger):
    """The ledger as a fit inside a service job sees it: the job's reservation, taken when the job was accepted,
    is handed to the fit instead of a new one, and is closed by the service (with the release, or when the job
    fails), not by the fit. Spends under it are recorded in the real ledger as they happen.

    Whatever name the fit registers the data under, its budget is the service dataset's (``key``, the
    dataset's ledger key): the service, not the fit, decides which dataset a job spends on.

    It wraps the service's ledger rather than being a second one: it opens no connection of its own (it does not
    run :meth:`Ledger.__init__`, which would open another pair of engines on the same database). It is a
    :class:`Ledger` only so that a fit accepts it; the calls a fit makes are redirected below, and anything else
    is answered by the wrapped ledger.
    """

    def __init__(self, ledger: Ledger, key: str, reservation: int, rho: float, approx_delta: float) -> None:
        self.ledger = ledger
        self.url = ledger.url
        self.key = key
        self.reservation_id = reservation
        self.rho = rho
        self.approx_delta = approx_delta

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this object does not hold itself: the wrapped ledger's engines and helpers.
        if name == "ledger":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.ledger, name)

    def register(self, *_args: Any, **_kwargs: Any) -> DatasetRecord:
        return self.ledger.dataset(self.key)

    def dataset(self, *_args: Any, **_kwargs: Any) -> DatasetRecord:
        return self.ledger.dataset(self.key)

    def spend(self, dataset: str, rho: float, **options: Any) -> Spend:
        return self.ledger.spend(self.key, rho, **{**options, "reservation": self.reservation_id})

    def reserve(
        self,
        dataset: str,
        rho: float,
        *,
        purpose: str,
        release_id: str | None = None,
        delta: float = 0.0,
        connection: Connection | None = None,
    ) -> int:
        if rho > self.rho or delta > self.approx_delta:
            raise BudgetExceeded(
                f"the fit asks for rho={rho:.6g} (approximate delta {delta:.3g}) but the job reserved "
                f"rho={self.rho:.6g} ({self.approx_delta:.3g}); nothing was spent"
            )
        return self.reservation_id

    def commit(self, reservation: int, *, release_id: str | None = None, connection: Connection | None = None) -> None:
        """Left to the service, which commits the reservation in the transaction that publishes the release."""

    def cancel(self, reservation: int, *, connection: Connection | None = None) -> None:
        """Left to the service, which settles the reservation in the transaction that fails the job."""


def open_dataset(dataset: DatasetRow) -> Source:
    """The dataset's rows where they are: the stored file, or the database table (queried in place), under the
    dataset's name (cards and reports name it, not the server's path)."""
    source = load_source(dataset.location, table=dataset.table_name)
    source.name = dataset.name
    return source


def run_job(store: Store, job: JobRow, data_dir: Path, on_progress: Any = None) -> str | None:
    """Run ``job`` (claimed by this worker) to a release in ``data_dir/releases/<release id>``.

    Returns the release id, or None when the job could not be published (it failed, or was swept meanwhile).
    """
    dataset = store.dataset(job.dataset_id)
    if dataset is None:
        store.fail(job.id, "the dataset was deleted before the job ran")
        return None
    directory: Path | None = None
    try:
        source = open_dataset(dataset)
        schema = Schema.from_dict(dataset.schema)
        ledger: Ledger | Literal[False] = False  # a non-DP job records nothing
        if job.reservation_id is not None:
            held = next(s for s in store.ledger.entries(dataset.ledger_key) if s.id == job.reservation_id)
            ledger = HeldLedger(store.ledger, dataset.ledger_key, job.reservation_id, held.rho, held.approx_delta)
        with listen(on_progress or (lambda _event: None)):
            release = synthesize(
                source,
                job.method,
                job.rows,
                schema=schema,
                seed=job.seed,
                conditions=job.conditions or None,
                epsilon=job.epsilon,
                delta=job.delta,
                params=job.params,
                ledger=ledger,
                registry=False,
                datasheet={"motivation.purpose": f"released by the privsynth service, job {job.id}"},
            )
            # The report goes on a non-DP card; a DP card stays within its guarantee, the report kept beside it.
            report = evaluate_release(
                release,
                source.head(EVALUATION_ROWS, schema.names),
                holdout=None if dataset.holdout is None else load_source(dataset.holdout).head(EVALUATION_ROWS),
                target=dataset.target,
                sensitive=dataset.sensitive,
                schema=schema,
            )
        directory = data_dir / "releases" / release.release_id
        directory.mkdir(parents=True)
        release.write(directory / "synthetic.csv")
        write_report(report, directory / "report.html")
        if store.finish(job, release.release_id, str(directory), len(release.data)):
            return release.release_id
        logger.warning("job %s was failed by a sweeper while it ran; its release is not published", job.id)
    except PrivsynthError as exc:
        store.fail(job.id, str(exc))
    except MemoryError:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        store.fail(job.id, f"the job ran out of its memory limit of {max(limit, 0) // 2**20} MB")
    except Exception as exc:
        logger.exception("job %s failed", job.id)
        store.fail(job.id, f"internal error ({type(exc).__name__}: {exc}); the service log has the details")
    if directory is not None and directory.exists():
        shutil.rmtree(directory)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Worker:
    """Runs queued jobs one at a time; ``heartbeat`` is how often a running job says it is alive and
    ``stale_after`` how long a job may go without a heartbeat before it is declared dead.

    Each job runs in a process of its own limited to ``max_minutes`` of wall-clock time and ``memory_mb`` of
    address space; ``isolate=False`` runs it in this thread instead, without limits (for debugging)."""

    store: Store
    data_dir: Path
    poll: float = 1.0
    heartbeat: float = 5.0
    stale_after: float = 60.0
    max_minutes: float = DEFAULT_MAX_MINUTES
    memory_mb: int = DEFAULT_MEMORY_MB
    isolate: bool = True

    def __post_init__(self) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._stop = threading.Event()

    def sweep(self) -> list[str]:
        """Fail jobs whose worker is gone: silent for ``stale_after``, or a process on this host that has exited."""
        failed = self.store.sweep(self.stale_after)
        host = socket.gethostname()
        for job in self.store.jobs(status="running"):
            parts = (job.worker or "").split(":")
            dead = len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _alive(int(parts[1]))
            if dead and self.store.fail(job.id, f"the worker process ({job.worker}) exited mid-job") is not None:
                failed.append(job.id)
        return failed

    def run_once(self) -> bool:
        """Sweep, then run one queued job if there is one (in a process of its own unless ``isolate`` is off);
        returns whether a job ran."""
        self.sweep()
        job = self.store.claim(self.name)
        if job is None:
            return False
        logger.info("worker %s runs job %s (%s on dataset %s)", self.name, job.id, job.method, job.dataset_id)
        if not self.isolate:
            _run_beating(self.store, job, self.data_dir, self.heartbeat, None)
            return True
        process = _job_context().Process(
            target=_job_process,
            args=(self.store.url, job.id, str(self.data_dir), self.heartbeat, self.memory_mb, os.getpid()),
            name=f"privsynth-job-{job.id}",
            daemon=True,
        )
        process.start()
        self._supervise(job, process)
        return True

    def _supervise(self, job: JobRow, process: multiprocessing.process.BaseProcess) -> None:
        """Wait for the job's process; kill it past the time limit, once the job is no longer running (cancelled,
        or swept), or when the worker stops; fail the job if its process died without settling it."""
        deadline = time.monotonic() + self.max_minutes * 60
        error = None
        while process.is_alive():
            process.join(0.25)
            if not process.is_alive():
                break
            if time.monotonic() > deadline:
                error = f"the job ran past its time limit of {self.max_minutes:g} minutes and was stopped"
            elif self._stop.is_set():
                error = "the service stopped while the job ran; submit it again"
            else:
                current = self.store.job(job.id)
                if current is not None and current.status == "running":
                    continue
                logger.info("job %s is no longer running; stopping its process", job.id)
            process.kill()
            process.join(30)
            break
        current = self.store.job(job.id)
        if current is not None and current.status == "running":
            if error is None:
                error = (
                    f"the job's process stopped unexpectedly (exit code {process.exitcode}); it may have run out "
                    f"of its memory limit of {self.memory_mb} MB"
                )
            self.store.fail(job.id, error)

    def run_forever(self) -> None:
        """Run jobs until :meth:`stop` is called."""
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:
                logger.exception("worker %s: could not take a job", self.name)
                ran = False
            if not ran:
                self._stop.wait(self.poll)

    def stop(self) -> None:
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        """Run the worker in a background thread of this process (``privsynth serve``'s default)."""
        thread = threading.Thread(target=self.run_forever, name="privsynth-worker", daemon=True)
        thread.start()
        return thread


def _run_beating(store: Store, job: JobRow, data_dir: Path, heartbeat: float, worker_pid: int | None) -> None:
    """Run ``job`` while a thread beats its heartbeat (with the job's progress); with ``worker_pid``, the process
    exits once that worker is gone (a killed worker must not leave its jobs running)."""
    beating = threading.Event()
    state: dict[str, Any] = {}

    def progress(event: ProgressEvent) -> None:
        state.update(task=event.task, completed=event.completed, total=event.total, detail=event.detail)

    def beat() -> None:
        while not beating.wait(heartbeat):
            if worker_pid is not None and not _alive(worker_pid):
                logger.warning("job %s: its worker (pid %d) is gone; stopping", job.id, worker_pid)
                os._exit(1)
            store.beat(job.id, dict(state) if state else None)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
    thread.start()
    try:
        run_job(store, job, data_dir, progress)
    finally:
        beating.set()
        thread.join()


def _job_process(url: str, job_id: str, data_dir: str, heartbeat: float, memory_mb: int, worker_pid: int) -> None:
    """The body of a job's process: limit its address space, then run the job (claimed by the worker)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    store = Store(url)
    try:
        job = store.job(job_id)
        if job is not None and job.status == "running":
            _run_beating(store, job, Path(data_dir), heartbeat, worker_pid)
    finally:
        store.close()


_PRELOAD: Final = ["privsynth.service.jobs", "privsynth.synth.marginal", "privsynth.synth.deep", "privsynth.evaluate"]


def _job_context() -> multiprocessing.context.ForkServerContext:
    """Processes forked from a server process that imported privsynth once (multiprocessing's forkserver):
    a job starts without re-importing (about 5 s) and without the threads of the worker's own process."""
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    context.set_forkserver_preload(_PRELOAD)
    return context


def wait_for(store: Store, job_id: str, timeout: float = 600.0) -> JobRow:
    """Block until a job is done, failed or cancelled (for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.job(job_id)
        if job is None:
            raise ParameterError(f"no job {job_id}")
        if job.status in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)
