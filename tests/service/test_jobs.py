"""Jobs against bad input and faults: each bad request a clear 4xx with nothing stored; a killed worker, a
restarted server and racing requests leave the ledger exact (every reservation settled exactly once); what a job
releases (the pipeline's release, card and report)."""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from service_support import Service, free_port, privsynth_process, quick_aim, race_for_budget, serve

from privsynth.service.jobs import Worker, wait_for
from privsynth.service.store import Store

HTTP_TIMEOUT = 60.0
"""Seconds an HTTP call to a real server may take (the machine running the tests may be loaded)."""
SERVICE_FILES = ("service.sqlite", "session.key")
"""The service's own files in its data folder (the database, the session-signing key)."""


def _files(root: Path) -> list[Path]:
    """Files in the data folder other than the service's own: what an upload left behind."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(SERVICE_FILES))


def _key(dataset: dict[str, Any]) -> str:
    """The name a dataset's budget is kept under in the ledger."""
    return f"service:{dataset['id']}"


def _reservations(store: Store, key: str) -> list[Any]:
    return [s for s in store.ledger.entries(key) if s.mechanism == "reservation"]


# ---- bad input ---------------------------------------------------------------------------------------------------


def test_an_oversized_upload_is_refused_and_nothing_is_kept(service_factory: Any, nass_train: pd.DataFrame) -> None:
    service: Service = service_factory(max_upload_bytes=50_000)
    body = nass_train.to_csv(index=False).encode()
    assert len(body) > 50_000
    response = service.client.post(
        "/api/datasets", headers=service.headers("custodian"), files={"file": ("big.csv", body)}
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert _files(service.data_dir) == []
    assert service.client.get("/api/datasets", headers=service.headers("admin")).json() == []


@pytest.mark.parametrize(
    ("name", "content", "status", "says"),
    [
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6,7\n8\n", 400, "cannot read ragged.csv"),
        ("header-only.csv", b"a,b\n", 400, "no rows"),
        ("fake.parquet", b"a,b\n1,2\n", 400, "fake.parquet is not a Parquet file"),
        ("../../escape.csv", b"a,b\n1,2\n", 400, "not allowed"),
        ("..\\..\\escape.csv", b"a,b\n1,2\n", 400, "not allowed"),
        ("notes.txt", b"a,b\n1,2\n", 415, ".csv or .parquet"),
    ],
)
def test_a_bad_upload_is_a_clear_4xx_and_stores_nothing(
    service_factory: Any, tmp_path: Path, name: str, content: bytes, status: int, says: str
) -> None:
    service: Service = service_factory()
    response = service.client.post(
        "/api/datasets", headers=service.headers("custodian"), files={"file": (name, content)}
    )
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert _files(service.data_dir) == []
    assert not list(tmp_path.rglob("escape.csv"))
    refused = [a for a in service.store.audit_log() if a["action"] == "register dataset"]
    assert refused and refused[0]["outcome"] == "refused"


def test_bad_job_requests_are_refused_and_reserve_nothing(service_factory: Any, nass_train: pd.DataFrame) -> None:
    service: Service = service_factory()
    dataset = service.upload(nass_train.head(2000), "nass")
    url, headers = f"/api/datasets/{dataset['id']}/jobs", service.headers("custodian")
    columns = [c["name"] for c in dataset["schema"]["columns"]]
    no_cap = service.client.post(url, headers=headers, json={"method": "aim", "epsilon": 1, "rows": 10})
    assert no_cap.status_code == 409 and "no privacy budget cap" in no_cap.json()["detail"]
    service.client.put(f"/api/datasets/{dataset['id']}/cap", headers=headers, json={"epsilon": 1, "delta": 1e-6})
    cases = [
        ({"method": "aim", "epsilon": "lots", "rows": 10}, 422, "epsilon"),
        ({"method": "aim", "epsilon": 1, "rows": 0}, 422, "rows"),
        ({"method": "aim", "epsilon": 1, "rows": 10, "delta": 0.5}, 422, "delta"),
        ({"method": "nope", "epsilon": 1, "rows": 10}, 400, "unknown method"),
        ({"method": "aim", "rows": 10}, 400, "give epsilon"),
        ({"method": "aim", "epsilon": 1, "rows": 10, "conditions": {"colour": "red"}}, 400, "no such column"),
        ({"method": "aim", "epsilon": 1, "rows": 10, "params": {"rounds": "many"}}, 400, "rounds"),
        ({"method": "aim", "epsilon": 1, "rows": 10, "params": {"colour": 1}}, 400, "bad parameter for 'aim'"),
        ({"method": "aim", "epsilon": 5, "rows": 10, "params": quick_aim(columns)}, 409, "does not fit"),
    ]
    for body, status, says in cases:
        response = service.client.post(url, headers=headers, json=body)
        assert response.status_code == status, (body, response.text)
        assert says in str(response.json()["detail"]), (body, response.text)
    assert service.store.jobs() == []
    assert _reservations(service.store, _key(dataset)) == []


def test_a_job_for_a_deleted_dataset_is_refused_or_fails_cleanly(
    service_factory: Any, nass_train: pd.DataFrame
) -> None:
    service: Service = service_factory()
    dataset = service.upload(nass_train.head(2000), "nass")
    headers, base = service.headers("custodian"), f"/api/datasets/{dataset['id']}"
    columns = [c["name"] for c in dataset["schema"]["columns"]]
    service.client.put(f"{base}/cap", headers=headers, json={"epsilon": 2, "delta": 1e-6})
    request = {"method": "aim", "epsilon": 1, "rows": 10, "params": quick_aim(columns)}
    queued = service.client.post(f"{base}/jobs", headers=headers, json=request).json()
    assert service.client.delete(base, headers=headers).status_code == 200
    after = service.client.post(f"{base}/jobs", headers=headers, json=request)
    assert after.status_code == 404
    assert Worker(service.store, service.data_dir).run_once()
    job = service.store.job(queued["id"])
    assert job is not None and job.status == "failed" and "deleted" in (job.error or "")
    (reservation,) = _reservations(service.store, _key(dataset))
    assert reservation.status == "cancelled"
    assert service.store.budget(service.store.dataset(dataset["id"], include_deleted=True)).reserved_rho == 0  # type: ignore[arg-type]


def test_a_schema_edit_is_checked_against_the_data(service_factory: Any, nass_train: pd.DataFrame) -> None:
    service: Service = service_factory()
    dataset = service.upload(nass_train.head(2000), "nass")
    url, headers = f"/api/datasets/{dataset['id']}/schema", service.headers("custodian")
    schema = service.client.get(url, headers=headers).json()
    dead = next(c for c in schema["columns"] if c["name"] == "dead")
    dead["categories"], dead["public"] = ["alive"], True  # a public label set the data contradicts
    response = service.client.put(url, headers=headers, json=schema)
    assert response.status_code == 400 and "dead" in response.json()["detail"]
    garbage = service.client.put(url, headers=headers, json={"columns": "no"})
    assert garbage.status_code == 400
    dead["categories"], dead["public"] = ["alive", "dead"], True
    assert service.client.put(url, headers=headers, json=schema).status_code == 200
    analyst_view = service.store.dataset(dataset["id"])
    assert analyst_view is not None
    assert next(c for c in analyst_view.schema["columns"] if c["name"] == "dead")["public"] is True


# ---- faults ------------------------------------------------------------------------------------------------------


def _slow_job(service: Service, dataset: dict[str, Any]) -> str:
    """An AIM job that runs long enough to be killed mid-way (default workload, many rounds)."""
    response = service.client.post(
        f"/api/datasets/{dataset['id']}/jobs",
        headers=service.headers("custodian"),
        json={"method": "aim", "epsilon": 1, "rows": 100, "params": {"rounds": 400, "iters": 300}},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_until_noise_is_drawn(store: Store, key: str, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.job(job_id)
        assert job is not None
        drawn = [s for s in store.ledger.entries(key) if s.reservation_id == job.reservation_id]
        if job.status == "running" and len(drawn) >= 3:
            return
        assert job.status in ("queued", "running"), job
        time.sleep(0.2)
    pytest.fail("the job did not start spending in time")


def test_a_worker_killed_mid_job_leaves_the_job_failed_and_the_reservation_committed_once(
    service_factory: Any, nass_train: pd.DataFrame
) -> None:
    service: Service = service_factory()
    dataset = service.upload(nass_train.head(3000), "nass")
    service.client.put(
        f"/api/datasets/{dataset['id']}/cap", headers=service.headers("custodian"), json={"epsilon": 3, "delta": 1e-6}
    )
    job_id = _slow_job(service, dataset)
    worker = privsynth_process("worker", "--data-dir", str(service.data_dir))
    try:
        _wait_until_noise_is_drawn(service.store, _key(dataset), job_id)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    finally:
        worker.kill()
    assert Worker(service.store, service.data_dir).sweep() == [job_id]
    job = service.store.job(job_id)
    assert job is not None and job.status == "failed" and "exited" in (job.error or "")
    (reservation,) = _reservations(service.store, _key(dataset))
    assert reservation.status == "committed"  # noise was drawn: spent for good
    record = service.store.budget(service.store.dataset(dataset["id"]))  # type: ignore[arg-type]
    assert record.reserved_rho == 0
    assert record.spent_rho == pytest.approx(reservation.rho, rel=1e-12)
    assert Worker(service.store, service.data_dir).sweep() == []  # settled exactly once
    assert service.store.releases([dataset["id"]]) == []


def test_a_late_finish_after_the_sweep_publishes_nothing(service_factory: Any, nass_train: pd.DataFrame) -> None:
    service: Service = service_factory()
    dataset = service.upload(nass_train.head(2000), "nass")
    service.client.put(
        f"/api/datasets/{dataset['id']}/cap", headers=service.headers("custodian"), json={"epsilon": 1, "delta": 1e-6}
    )
    job_id = _slow_job(service, dataset)
    job = service.store.claim("elsewhere:1:1")
    assert job is not None and job.id == job_id
    assert service.store.fail(job_id, "declared dead") == "cancelled"  # nothing drawn yet: budget given back
    assert service.store.finish(job, "late-release", str(service.data_dir / "late"), 10) is False
    assert service.store.fail(job_id, "again") is None
    (reservation,) = _reservations(service.store, _key(dataset))
    assert reservation.status == "cancelled"
    assert service.store.releases([dataset["id"]]) == []


def test_four_processes_racing_for_the_last_budget_get_it_once(service_factory: Any, nass_train: pd.DataFrame) -> None:
    service: Service = service_factory()
    dataset = service.upload(nass_train.head(2000), "nass")
    service.client.put(
        f"/api/datasets/{dataset['id']}/cap", headers=service.headers("custodian"), json={"epsilon": 1.2, "delta": 1e-6}
    )
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    racers = [
        context.Process(target=race_for_budget, args=(service.store.url, dataset["id"], "custodian", barrier, results))
        for _ in range(4)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(120)
    outcomes = sorted(results.get(timeout=10) for _ in racers)
    assert outcomes == ["BudgetExceeded"] * 3 + ["accepted"]
    (reservation,) = _reservations(service.store, _key(dataset))
    assert reservation.status == "reserved"
    assert len(service.store.jobs([dataset["id"]])) == 1


def test_a_server_restarted_mid_job_fails_the_job_once_and_runs_the_next(
    tmp_path: Path, nass_train: pd.DataFrame
) -> None:
    data_dir, port = tmp_path / "service", free_port()
    data_dir.mkdir()
    store = Store(f"sqlite:///{data_dir / 'service.sqlite'}")
    token = store.add_user("custodian", "custodian")[1]
    headers = {"authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}"
    server = serve(data_dir, port)
    try:
        body = nass_train.head(3000).to_csv(index=False).encode()
        dataset = httpx.post(
            f"{base}/api/datasets", headers=headers, timeout=HTTP_TIMEOUT, files={"file": ("nass.csv", body)}
        ).json()
        httpx.put(
            f"{base}/api/datasets/{dataset['id']}/cap",
            headers=headers,
            timeout=HTTP_TIMEOUT,
            json={"epsilon": 3, "delta": 1e-6},
        )
        slow = {"method": "aim", "epsilon": 1, "rows": 100, "params": {"rounds": 400, "iters": 300}}
        job_id = httpx.post(
            f"{base}/api/datasets/{dataset['id']}/jobs", headers=headers, timeout=HTTP_TIMEOUT, json=slow
        ).json()["id"]
        _wait_until_noise_is_drawn(store, _key(dataset), job_id)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        server = serve(data_dir, port)
        job = wait_for(store, job_id, timeout=60)
        # the restarted server finds the worker gone ("exited"), or, when the restart took longer than the
        # heartbeat timeout (a loaded machine), its heartbeat stale: both fail the job once with a clear message
        assert job.status == "failed" and ("exited" in (job.error or "") or "no heartbeat" in (job.error or "")), job
        columns = [c["name"] for c in dataset["schema"]["columns"]]
        quick = {"method": "aim", "epsilon": 1, "rows": 200, "params": quick_aim(columns)}
        second = httpx.post(
            f"{base}/api/datasets/{dataset['id']}/jobs", headers=headers, timeout=HTTP_TIMEOUT, json=quick
        ).json()
        done = wait_for(store, second["id"], timeout=120)
        assert done.status == "done", done
        reservations = _reservations(store, _key(dataset))
        assert [r.status for r in reservations] == ["committed", "committed"]
        record = store.budget(store.dataset(dataset["id"]))  # type: ignore[arg-type]
        assert record.reserved_rho == 0
        assert record.spent_rho == pytest.approx(sum(r.rho for r in reservations), rel=1e-12)
    finally:
        server.kill()
        server.wait(30)
        store.close()


# ---- what a job releases -----------------------------------------------------------------------------------------


def test_jobs_release_through_the_pipeline_and_a_dp_report_states_the_delta_its_fit_ran_under(
    service_factory: Any, nass_train: pd.DataFrame
) -> None:
    service: Service = service_factory()
    dataset = service.upload(nass_train.head(2000), "nass")
    base, headers = f"/api/datasets/{dataset['id']}", service.headers("custodian")
    columns = [c["name"] for c in dataset["schema"]["columns"]]
    service.client.put(f"{base}/cap", headers=headers, json={"epsilon": 2, "delta": 1e-6})
    requests = (
        {"method": "aim", "epsilon": 1, "rows": 200, "params": quick_aim(columns)},
        {"method": "copula", "rows": 200},
    )
    ids = [service.client.post(f"{base}/jobs", headers=headers, json=body).json()["id"] for body in requests]
    worker = Worker(service.store, service.data_dir, isolate=False)
    assert worker.run_once() and worker.run_once()
    folders = []
    for job_id in ids:
        job = service.store.job(job_id)
        assert job is not None and job.status == "done" and job.release_id is not None, job
        stored = service.store.release(job.release_id)
        assert stored is not None
        folders.append(Path(stored.directory))
    dp_card, copula_card = (json.loads((f / "synthetic.card.json").read_text()) for f in folders)
    assert dp_card["generator"]["method"] == "aim" and dp_card["privacy"]["dataset"] == "nass"
    assert dp_card["privacy"]["delta"] == 1e-6 and dp_card["metrics"] == {}  # the report stays beside a DP card
    dp_report = json.loads((folders[0] / "report.json").read_text())
    assert dp_report["report"]["privacy_budget"] == {"epsilon": 1.0, "delta": 1e-6}  # the fit's delta, not 0
    assert copula_card["generator"]["method"] == "copula" and copula_card["privacy"]["differentially_private"] is False
    evaluated = copula_card["metrics"]["evaluated_rows"]  # the upload's rows: the fit's part and the holdout
    assert evaluated["real_rows"] + evaluated["holdout_rows"] == 2000 and evaluated["holdout_rows"] > 0
    assert "outside_the_guarantee" not in copula_card["metrics"]
