"""Every API route x every role: who may call it, and that everyone else gets 401, 403 or 404.

Roles: ``admin``; ``custodian`` (registered dataset A); ``analyst`` (granted A); ``outsider`` (an analyst granted
only dataset B, who guesses A's dataset, job and release ids); ``anonymous`` (no token). The route list comes
from the app itself, so a new route without a row here fails the test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from service_support import Service, make_service, quick_aim
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from privsynth.service.app import _route_table
from privsynth.service.jobs import Worker

ALL = ("admin", "custodian", "analyst", "outsider")
ON_A = ("admin", "custodian", "analyst")
CUSTODIANS = ("admin", "custodian")
_names = itertools.count()


@dataclass
class Context:
    service: Service
    dataset: str
    job: str
    release: str
    columns: list[str]
    small: pd.DataFrame
    sql_url: str


Build = Callable[[Context], tuple[str, dict[str, Any]]]


def _fresh_dataset(ctx: Context) -> str:
    return ctx.service.upload(ctx.small, f"throwaway{next(_names)}")["id"]


def _grant_then_revoke(ctx: Context) -> tuple[str, dict[str, Any]]:
    name = f"temp{next(_names)}"
    ctx.service.store.add_user(name, "analyst")
    ctx.service.client.post(
        f"/api/datasets/{ctx.dataset}/grants",
        headers=ctx.service.headers("custodian"),
        json={"user": name, "role": "analyst"},
    )
    return f"/api/datasets/{ctx.dataset}/grants/{name}", {}


def _schema(ctx: Context) -> tuple[str, dict[str, Any]]:
    current = ctx.service.client.get(f"/api/datasets/{ctx.dataset}/schema", headers=ctx.service.headers("custodian"))
    return f"/api/datasets/{ctx.dataset}/schema", {"json": current.json()}


def _queued_job(ctx: Context) -> str:
    """A job the custodian queued (the jobs queued before are cancelled: a user may have only so many)."""
    for job in ctx.service.store.jobs(status="queued"):
        ctx.service.store.fail(job.id, "cleared by the test", status="cancelled")
    response = ctx.service.client.post(
        f"/api/datasets/{ctx.dataset}/jobs",
        headers=ctx.service.headers("custodian"),
        json={"method": "aim", "epsilon": 0.01, "rows": 10, "params": quick_aim(ctx.columns)},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _temp_user(ctx: Context) -> str:
    name = f"temp{next(_names)}"
    ctx.service.store.add_user(name, "analyst")
    return name


def _sql_dataset(ctx: Context) -> tuple[str, dict[str, Any]]:
    if not ctx.sql_url:
        pytest.skip("no PostgreSQL server for the SQL route (see the postgres_url fixture)")
    body = {"name": f"sql{next(_names)}", "url": ctx.sql_url, "table": "authz_crashes", "password": "unused"}
    return "/api/datasets/sql", {"json": body}


ROUTES: dict[tuple[str, str], tuple[tuple[str, ...], Build]] = {
    ("GET", "/api/health"): (ALL, lambda c: ("/api/health", {})),
    ("GET", "/api/me"): (ALL, lambda c: ("/api/me", {})),
    ("GET", "/api/methods"): (ALL, lambda c: ("/api/methods", {})),
    ("GET", "/api/users"): (("admin",), lambda c: ("/api/users", {})),
    ("POST", "/api/users"): (
        ("admin",),
        lambda c: ("/api/users", {"json": {"name": f"u{next(_names)}", "role": "analyst"}}),
    ),
    ("GET", "/api/audit"): (("admin",), lambda c: ("/api/audit", {})),
    ("POST", "/api/users/{name}/token"): (("admin",), lambda c: (f"/api/users/{_temp_user(c)}/token", {})),
    ("PATCH", "/api/users/{name}"): (
        ("admin",),
        lambda c: (f"/api/users/{_temp_user(c)}", {"json": {"disabled": True}}),
    ),
    ("POST", "/api/datasets"): (
        CUSTODIANS,
        lambda c: ("/api/datasets", {"files": {"file": ("small.csv", c.small.to_csv(index=False).encode())}}),
    ),
    ("POST", "/api/datasets/sql"): (CUSTODIANS, _sql_dataset),
    ("GET", "/api/datasets"): (ALL, lambda c: ("/api/datasets", {})),
    ("GET", "/api/datasets/{dataset_id}"): (ON_A, lambda c: (f"/api/datasets/{c.dataset}", {})),
    ("PATCH", "/api/datasets/{dataset_id}"): (
        CUSTODIANS,
        lambda c: (f"/api/datasets/{c.dataset}", {"json": {"target": "dead"}}),
    ),
    ("DELETE", "/api/datasets/{dataset_id}"): (CUSTODIANS, lambda c: (f"/api/datasets/{_fresh_dataset(c)}", {})),
    ("GET", "/api/datasets/{dataset_id}/schema"): (ON_A, lambda c: (f"/api/datasets/{c.dataset}/schema", {})),
    ("PUT", "/api/datasets/{dataset_id}/schema"): (CUSTODIANS, _schema),
    ("PUT", "/api/datasets/{dataset_id}/cap"): (
        CUSTODIANS,
        lambda c: (f"/api/datasets/{c.dataset}/cap", {"json": {"epsilon": 50, "delta": 1e-6}}),
    ),
    ("POST", "/api/datasets/{dataset_id}/grants"): (
        CUSTODIANS,
        lambda c: (f"/api/datasets/{c.dataset}/grants", {"json": {"user": "analyst", "role": "analyst"}}),
    ),
    ("DELETE", "/api/datasets/{dataset_id}/grants/{name}"): (CUSTODIANS, _grant_then_revoke),
    ("GET", "/api/datasets/{dataset_id}/ledger"): (ON_A, lambda c: (f"/api/datasets/{c.dataset}/ledger", {})),
    ("POST", "/api/datasets/{dataset_id}/jobs"): (
        ON_A,
        lambda c: (
            f"/api/datasets/{c.dataset}/jobs",
            {"json": {"method": "aim", "epsilon": 0.01, "rows": 10, "params": quick_aim(c.columns)}},
        ),
    ),
    ("GET", "/api/jobs"): (ALL, lambda c: ("/api/jobs", {})),
    # c.job is the custodian's: an analyst sees only their own jobs (test_attacks_jobs.py)
    ("GET", "/api/jobs/{job_id}"): (CUSTODIANS, lambda c: (f"/api/jobs/{c.job}", {})),
    ("POST", "/api/jobs/{job_id}/cancel"): (CUSTODIANS, lambda c: (f"/api/jobs/{_queued_job(c)}/cancel", {})),
    ("PUT", "/api/releases/{release_id}/published"): (
        CUSTODIANS,
        lambda c: (f"/api/releases/{c.release}/published", {"json": {"published": False}}),
    ),
    ("GET", "/api/releases"): (ALL, lambda c: ("/api/releases", {})),
    ("GET", "/api/releases/{release_id}"): (ON_A, lambda c: (f"/api/releases/{c.release}", {})),
    ("GET", "/api/releases/{release_id}/{item}"): (ON_A, lambda c: (f"/api/releases/{c.release}/card", {})),
}


@pytest.fixture(scope="module")
def ctx(
    tmp_path_factory: pytest.TempPathFactory, nass_train: pd.DataFrame, request: pytest.FixtureRequest
) -> Iterator[Context]:
    root = tmp_path_factory.mktemp("authz")
    sql_url = ""
    try:
        postgres = make_url(request.getfixturevalue("postgres_url"))
    except pytest.skip.Exception:
        allowed: tuple[str, ...] = ()
    else:
        allowed = (f"postgresql://{postgres.host}:{postgres.port}",)
        sql_url = postgres.render_as_string(hide_password=False)
        nass_train.head(3000).to_sql("authz_crashes", create_engine(sql_url), index=False, if_exists="replace")
    service = make_service(root / "service", sql_allow=allowed)
    small = nass_train.head(3000)
    a = service.upload(small, "nassA")
    b = service.upload(small.tail(1000), "nassB")
    client, custodian = service.client, service.headers("custodian")
    client.post(f"/api/datasets/{a['id']}/grants", headers=custodian, json={"user": "analyst", "role": "analyst"})
    client.post(f"/api/datasets/{b['id']}/grants", headers=custodian, json={"user": "outsider", "role": "analyst"})
    client.put(f"/api/datasets/{a['id']}/cap", headers=custodian, json={"epsilon": 50, "delta": 1e-6})
    columns = [c["name"] for c in a["schema"]["columns"]]
    job = client.post(
        f"/api/datasets/{a['id']}/jobs",
        headers=custodian,
        json={"method": "aim", "epsilon": 1, "rows": 500, "seed": 0, "params": quick_aim(columns)},
    ).json()
    assert Worker(service.store, service.data_dir).run_once()
    release = client.get(f"/api/jobs/{job['id']}", headers=custodian).json()["release_id"]
    assert release, client.get(f"/api/jobs/{job['id']}", headers=custodian).json()
    yield Context(service, a["id"], job["id"], release, columns, small, sql_url)
    service.client.close()
    service.store.close()


def test_every_route_has_a_row_in_the_matrix(ctx: Context) -> None:
    routes = set(_route_table(ctx.service.app))
    assert routes == set(ROUTES), f"missing: {routes - set(ROUTES)}; stale: {set(ROUTES) - routes}"


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
@pytest.mark.parametrize("role", [*ALL, "anonymous"])
def test_route_by_role(ctx: Context, route: tuple[str, str], role: str) -> None:
    allowed, build = ROUTES[route]
    url, options = build(ctx)
    headers = {} if role == "anonymous" else ctx.service.headers(role)
    response = ctx.service.client.request(route[0], url, headers=headers, **options)
    if route == ("GET", "/api/health"):
        assert response.status_code == 200
    elif role == "anonymous":
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
    elif role in allowed:
        assert response.status_code < 300, f"{role} {route}: {response.status_code} {response.text}"
    else:
        assert response.status_code in (403, 404), f"{role} {route}: {response.status_code} {response.text}"


def test_outsider_sees_nothing_of_dataset_a(ctx: Context) -> None:
    client, headers = ctx.service.client, ctx.service.headers("outsider")
    assert ctx.dataset not in {d["id"] for d in client.get("/api/datasets", headers=headers).json()}
    assert ctx.job not in {j["id"] for j in client.get("/api/jobs", headers=headers).json()}
    assert ctx.release not in {r["id"] for r in client.get("/api/releases", headers=headers).json()}
    for item in ("data", "report", "card", "report.json", "card.html"):
        assert client.get(f"/api/releases/{ctx.release}/{item}", headers=headers).status_code == 404
    # A guessed id answers like an id that does not exist, so existence cannot be probed.
    missing = client.get("/api/datasets/0123456789abcdef0123456789abcdef", headers=headers)
    guessed = client.get(f"/api/datasets/{ctx.dataset}", headers=headers)
    assert missing.status_code == guessed.status_code == 404
    denied = [a for a in ctx.service.store.audit_log() if a["user_name"] == "outsider" and a["outcome"] == "denied"]
    assert denied, "refused requests are audited"


def test_analyst_never_sees_private_domains_or_where_the_rows_are(ctx: Context) -> None:
    client = ctx.service.client
    view = client.get(f"/api/datasets/{ctx.dataset}", headers=ctx.service.headers("analyst")).json()
    assert not {"location", "fingerprint", "grants", "table"} & set(view)
    for column in view["schema"]["columns"]:
        assert column["public"] or not {"categories", "bounds", "categories_count"} & set(column), column
    custodian = client.get(f"/api/datasets/{ctx.dataset}/schema", headers=ctx.service.headers("custodian")).json()
    assert any("categories" in c for c in custodian["columns"])


def test_analyst_cannot_run_a_non_private_method(ctx: Context) -> None:
    response = ctx.service.client.post(
        f"/api/datasets/{ctx.dataset}/jobs",
        headers=ctx.service.headers("analyst"),
        json={"method": "copula", "rows": 10},
    )
    assert response.status_code == 403
    assert "differentially private" in response.json()["detail"]


def test_reports_are_hidden_from_analysts_when_the_custodian_says_so(ctx: Context) -> None:
    client, url = ctx.service.client, f"/api/releases/{ctx.release}"
    client.patch(
        f"/api/datasets/{ctx.dataset}", headers=ctx.service.headers("custodian"), json={"reports_visible": False}
    )
    try:
        assert client.get(f"{url}/report", headers=ctx.service.headers("analyst")).status_code == 403
        assert client.get(f"{url}/data", headers=ctx.service.headers("analyst")).status_code == 200
        assert client.get(f"{url}/report", headers=ctx.service.headers("custodian")).status_code == 200
    finally:
        client.patch(
            f"/api/datasets/{ctx.dataset}", headers=ctx.service.headers("custodian"), json={"reports_visible": True}
        )


def test_a_browser_session_needs_the_csrf_token_to_change_anything(ctx: Context, tmp_path: Path) -> None:
    client = ctx.service.client
    signed = client.post(
        "/login", data={"name": "custodian", "token": ctx.service.tokens["custodian"]}, follow_redirects=False
    )
    assert signed.status_code == 303
    try:
        assert client.get("/api/me").json()["name"] == "custodian"
        refused = client.put(f"/api/datasets/{ctx.dataset}/cap", json={"epsilon": 50, "delta": 1e-6})
        assert refused.status_code == 403
        wrong = client.post("/login", data={"name": "custodian", "token": "pst_wrong"}, follow_redirects=False)
        assert wrong.status_code == 401
    finally:
        client.post("/logout")
        client.cookies.clear()
