"""Jobs: submission (the budget reserved in the same transaction), claiming, heartbeats, finishing and failing."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from privsynth.errors import ParameterError
from privsynth.privacy.budget import Budget
from privsynth.privacy.database import utc
from privsynth.service.store.audit import AuditTables
from privsynth.service.store.datasets import DatasetTables
from privsynth.service.store.records import (
    DatasetRow,
    JobRow,
    ShareExceeded,
    TooManyJobs,
    User,
    job_row,
    utc_now,
)
from privsynth.service.store.tables import datasets_table, jobs_table, releases_table

logger = logging.getLogger(__name__)


class JobTables(AuditTables, DatasetTables):
    """Jobs, from submission to release or failure; the reservation is closed in the transaction that ends the job."""

    def submit(
        self,
        dataset: DatasetRow,
        user: User,
        *,
        method: str,
        rows: int,
        budget: Budget | None,
        seed: int | None,
        conditions: dict[str, Any],
        params: dict[str, Any],
        share: float = 1.0,
        max_active: int | None = None,
    ) -> JobRow:
        """Queue a job; a DP job's whole budget is reserved in the same transaction (or nothing is stored).

        Raises :class:`~privsynth.errors.BudgetExceeded` when the dataset's cap cannot hold it, or when ``user``'s
        jobs on the dataset (reserved or spent) and this one would pass ``share`` of the cap (in rho); and
        :class:`TooManyJobs` when ``user`` already has ``max_active`` jobs queued or running.
        """
        job_id = uuid.uuid4().hex
        with self.ledger.begin() as connection:
            current = connection.execute(
                select(datasets_table.c.deleted_at).where(datasets_table.c.id == dataset.id).with_for_update()
            ).first()
            if current is None or current.deleted_at is not None:
                raise ParameterError(f"dataset {dataset.id} was deleted; no job can run on it")
            reservation = None
            if budget is not None and share < 1:
                self._check_share(connection, dataset, user, budget, share)
            if budget is not None:
                reservation = self.ledger.reserve(
                    dataset.ledger_key,
                    budget.rho,
                    delta=budget.approx_delta,
                    purpose=f"service job {job_id} ({method}, epsilon={budget.epsilon:g}, delta={budget.delta:g})",
                    connection=connection,
                )
            if max_active is not None:
                active = connection.execute(
                    select(jobs_table.c.id).where(
                        jobs_table.c.user_id == user.id, jobs_table.c.status.in_(("queued", "running"))
                    )
                ).all()
                if len(active) >= max_active:
                    raise TooManyJobs(
                        f"you have {len(active)} jobs queued or running, the most a user may have at once; wait "
                        "for one to finish, or cancel one (POST /api/jobs/<id>/cancel)"
                    )
            connection.execute(
                insert(jobs_table).values(
                    id=job_id,
                    dataset_id=dataset.id,
                    user_id=user.id,
                    method=method,
                    epsilon=None if budget is None else budget.epsilon,
                    delta=None if budget is None else budget.delta,
                    rows=rows,
                    seed=seed,
                    conditions=json.dumps(conditions),
                    params=json.dumps(params),
                    status="queued",
                    progress=json.dumps({}),
                    reservation_id=reservation,
                    created_at=utc_now(),
                )
            )
        found = self.job(job_id)
        assert found is not None
        return found

    def _check_share(
        self, connection: Connection, dataset: DatasetRow, user: User, budget: Budget, share: float
    ) -> None:
        """Refuse a job that would take ``user``'s jobs on the dataset past ``share`` of its cap (in rho:
        reservations still held and spends committed count, cancelled ones do not)."""
        record = self.budget(dataset)
        if record.cap is None:
            return
        held = connection.execute(
            select(jobs_table.c.reservation_id).where(
                jobs_table.c.dataset_id == dataset.id,
                jobs_table.c.user_id == user.id,
                jobs_table.c.reservation_id.is_not(None),
            )
        ).scalars()
        ids = set(held)
        used = sum(s.rho for s in self.ledger.entries(record.fingerprint) if s.id in ids and s.status != "cancelled")
        allowed = share * record.cap.rho
        if used + budget.rho > allowed * (1 + 1e-12):
            raise ShareExceeded(
                f"refused: your jobs on '{dataset.name}' may use {share:.0%} of its budget (rho={allowed:.6g}); "
                f"they hold rho={used:.6g} and this job asks for rho={budget.rho:.6g}; ask the dataset's custodian "
                "for a larger share, or a smaller epsilon; nothing was reserved"
            )

    def job(self, job_id: str) -> JobRow | None:
        with self._read.connect() as connection:
            row = connection.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
        return None if row is None else job_row(row)

    def jobs(self, dataset_ids: list[str] | None = None, *, status: str | None = None) -> list[JobRow]:
        query = select(jobs_table).order_by(jobs_table.c.created_at.desc())
        if dataset_ids is not None:
            query = query.where(jobs_table.c.dataset_id.in_(dataset_ids))
        if status is not None:
            query = query.where(jobs_table.c.status == status)
        with self._read.connect() as connection:
            return [job_row(row) for row in connection.execute(query)]

    def claim(self, worker: str) -> JobRow | None:
        """Take the oldest queued job for ``worker`` (atomically: two workers never take the same job)."""
        with self.ledger.begin() as connection:
            query = (
                select(jobs_table.c.id)
                .where(jobs_table.c.status == "queued")
                .order_by(jobs_table.c.created_at)
                .limit(1)
            )
            if not self.sqlite:
                query = query.with_for_update(skip_locked=True)
            job_id = connection.execute(query).scalar()
            if job_id is None:
                return None
            now = utc_now()
            claimed = connection.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job_id, jobs_table.c.status == "queued")
                .values(status="running", worker=worker, started_at=now, heartbeat_at=now)
            )
            if claimed.rowcount != 1:
                return None
        return self.job(str(job_id))

    def beat(self, job_id: str, progress: dict[str, Any] | None = None) -> None:
        """The worker is alive (and, optionally, how far the job is)."""
        values: dict[str, Any] = {"heartbeat_at": utc_now()}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with self.ledger.begin() as connection:
            connection.execute(
                update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.status == "running").values(**values)
            )

    def finish(self, job: JobRow, release_id: str, directory: str, rows: int) -> bool:
        """Record the release and commit the job's reservation in one transaction.

        Returns False (and records nothing) when the job is no longer running: a sweeper declared its worker
        dead and settled the reservation, so the release must not be published.
        """
        with self.ledger.begin() as connection:
            status = connection.execute(
                select(jobs_table.c.status).where(jobs_table.c.id == job.id).with_for_update()
            ).scalar()
            if status != "running":
                return False
            if job.reservation_id is not None:
                self.ledger.commit(job.reservation_id, release_id=release_id, connection=connection)
            connection.execute(
                insert(releases_table).values(
                    id=release_id,
                    job_id=job.id,
                    dataset_id=job.dataset_id,
                    directory=directory,
                    rows=rows,
                    method=job.method,
                    epsilon=job.epsilon,
                    delta=job.delta,
                    created_at=utc_now(),
                )
            )
            connection.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job.id)
                .values(status="done", finished_at=utc_now(), release_id=release_id, progress=json.dumps({"done": 1}))
            )
        self.audit(None, "job done", f"job:{job.id}", detail=f"release:{release_id} ({rows} rows, {job.method})")
        return True

    def fail(
        self, job_id: str, error: str, *, only_if_stale: datetime | None = None, status: str = "failed"
    ) -> str | None:
        """Mark a queued or running job failed (or ``status="cancelled"``) and settle its reservation (committed if
        a mechanism drew noise under it, cancelled otherwise), in one transaction. ``only_if_stale``: only if its
        heartbeat is older.

        Returns how the reservation was settled (``committed``, ``cancelled``, ``none``), or None when the job was
        not failed (already finished, or alive).
        """
        with self.ledger.begin() as connection:
            row = connection.execute(select(jobs_table).where(jobs_table.c.id == job_id).with_for_update()).first()
            if row is None or row.status not in ("queued", "running"):
                return None
            heartbeat = utc(row.heartbeat_at)
            if only_if_stale is not None and heartbeat is not None and heartbeat >= only_if_stale:
                return None
            outcome = "none"
            if row.reservation_id is not None:
                outcome = self.ledger.settle(row.reservation_id, connection=connection) or "already settled"
            connection.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job_id)
                .values(status=status, error=error, finished_at=utc_now())
            )
        logger.info("job %s failed (%s); reservation %s", job_id, error, outcome)
        self.audit(None, "job failed", f"job:{job_id}", "error", f"{error} (reservation: {outcome})")
        return outcome

    def sweep(self, stale_after: float) -> list[str]:
        """Fail the running jobs whose worker has not beaten for ``stale_after`` seconds (it was killed, or the
        server restarted); returns their ids."""
        limit = utc_now() - timedelta(seconds=stale_after)
        failed = []
        for job in self.jobs(status="running"):
            if job.heartbeat_at is None or job.heartbeat_at < limit:
                outcome = self.fail(
                    job.id,
                    f"the worker ({job.worker}) stopped while running the job (no heartbeat for {stale_after:g} s); "
                    "submit it again",
                    only_if_stale=limit,
                )
                if outcome is not None:
                    failed.append(job.id)
        return failed
