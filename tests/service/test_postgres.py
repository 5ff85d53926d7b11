"""The service on PostgreSQL (``--database postgresql://...``): a job runs to a release, and four processes racing
for the last budget get it once (``SELECT ... FOR UPDATE`` on the dataset's ledger row instead of SQLite's lock)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd
from service_support import make_service, quick_aim, race_for_budget

from privsynth.service.jobs import Worker


def test_a_service_on_postgresql_runs_jobs_and_keeps_the_cap(
    postgres_url: str, tmp_path: Path, nass_train: pd.DataFrame
) -> None:
    service = make_service(tmp_path / "service", database_url=postgres_url)
    try:
        dataset = service.upload(nass_train.head(2000), "nass-on-postgres")
        headers, base = service.headers("custodian"), f"/api/datasets/{dataset['id']}"
        service.client.put(f"{base}/cap", headers=headers, json={"epsilon": 2, "delta": 1e-6})
        columns = [c["name"] for c in dataset["schema"]["columns"]]
        job = service.client.post(
            f"{base}/jobs",
            headers=headers,
            json={"method": "aim", "epsilon": 1, "rows": 300, "params": quick_aim(columns)},
        ).json()
        assert Worker(service.store, service.data_dir).run_once()
        done = service.store.job(job["id"])
        assert done is not None and done.status == "done", done
        # Left: rho(2) - rho(1) holds two more epsilon-1 jobs (rho 0.0244 of 0.0882 each) but not three.
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(3), context.Queue()
        racers = [
            context.Process(target=race_for_budget, args=(postgres_url, dataset["id"], "custodian", barrier, results))
            for _ in range(3)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(120)
        outcomes = sorted(results.get(timeout=10) for _ in racers)
        assert outcomes == ["BudgetExceeded", "accepted", "accepted"]
        record = service.store.budget(service.store.dataset(dataset["id"]))  # type: ignore[arg-type]
        assert record.cap is not None and record.spent_rho + record.reserved_rho <= record.cap.rho
    finally:
        service.client.close()
        service.store.close()
