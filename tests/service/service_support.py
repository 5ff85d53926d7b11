"""Helpers of the service tests: a service on a temporary folder with its users, and quick AIM jobs.

AIM jobs here run with a small workload (the target against six columns, one round per column) so that a job
takes seconds: the service is under test, not AIM.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the service needs the 'service' extra (pip install 'privsynth[service]')")

from fastapi import FastAPI
from fastapi.testclient import TestClient

from privsynth.privacy.budget import Budget
from privsynth.service import ServiceConfig, create_app
from privsynth.service.store import Store

ROLES = ("admin", "custodian", "analyst", "outsider")


def quick_aim(columns: list[str], target: str = "dead") -> dict[str, Any]:
    """AIM parameters for a job of a few seconds on nassCDS."""
    others = [c for c in columns if c != target][:6]
    return {"rounds": len(columns), "iters": 100, "workload": [[target, c] for c in others]}


@dataclass
class Service:
    app: FastAPI
    client: TestClient
    store: Store
    data_dir: Path
    tokens: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[role]}"}

    def upload(self, frame: pd.DataFrame, name: str, role: str = "custodian") -> dict[str, Any]:
        body = frame.to_csv(index=False).encode()
        response = self.client.post(
            "/api/datasets", headers=self.headers(role), files={"file": (f"{name}.csv", body)}, data={"name": name}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


def make_service(data_dir: Path, **config: Any) -> Service:
    app = create_app(ServiceConfig(data_dir=data_dir, **config))
    store = app.state.service.store
    tokens = {}
    for name, role in (("admin", "admin"), ("custodian", "custodian"), ("analyst", "analyst"), ("outsider", "analyst")):
        tokens[name] = store.add_user(name, role)[1]
    return Service(app, TestClient(app), store, data_dir, tokens)


def privsynth_process(*args: str, **options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "privsynth", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **options,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(data_dir: Path, port: int, *options: str) -> subprocess.Popen[str]:
    """``privsynth serve`` on ``port`` (``options``: more of its options, such as ``--no-worker``)."""
    server = privsynth_process(
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *options,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
        if server.poll() is not None:
            pytest.fail(f"the server exited: {server.stdout.read() if server.stdout else ''}")
    server.kill()
    pytest.fail("the server did not start in 60 s")


def race_for_budget(url: str, dataset_id: str, user: str, barrier: Any, results: Any) -> None:
    """Submit an epsilon-1 job once the barrier opens (in a process of its own); put the outcome on ``results``."""
    store = Store(url)
    dataset = store.dataset(dataset_id)
    owner = store.user(name=user)
    assert dataset is not None and owner is not None
    budget = Budget.from_epsilon_delta(1.0, 1e-6)
    barrier.wait()
    try:
        store.submit(dataset, owner, method="aim", rows=10, budget=budget, seed=None, conditions={}, params={})
        results.put("accepted")
    except Exception as exc:
        results.put(type(exc).__name__)
    finally:
        store.close()
