"""Load test of the service's read endpoints on loopback: N concurrent clients for S seconds, p50/p99 latency.

A fresh service folder gets a custodian and an analyst, nassCDS (uploaded through the API) with a cap, and one
finished AIM release (run by a worker in this process). Then ``privsynth serve --no-worker`` starts in its own
process and N asyncio clients (one process, httpx) signed in as the analyst loop over the read endpoints an
analyst's pages use: the dataset list, the dataset (budget and schema), its ledger, the release list, a release,
a job, and the release's card. Every response must be 200. The client shares the machine's cores with the server,
so the numbers are a floor for a dedicated server.

    .venv/bin/python benchmarks/service_load.py     # 50 clients, 60 s -> benchmarks/results/service_load.json
    .venv/bin/python benchmarks/service_load.py --clients 10 --seconds 10 --output /tmp/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare(data_dir: Path) -> tuple[str, dict[str, str]]:
    """Users, nassCDS with a cap and one release; returns the analyst's token and the read URLs."""
    from fastapi.testclient import TestClient

    from privsynth.data.datasets import load_dataset
    from privsynth.service import ServiceConfig, create_app
    from privsynth.service.jobs import Worker

    app = create_app(ServiceConfig(data_dir=data_dir))
    store = app.state.service.store
    custodian = {"authorization": f"Bearer {store.add_user('custodian', 'custodian')[1]}"}
    analyst_token = store.add_user("analyst", "analyst")[1]
    analyst = {"authorization": f"Bearer {analyst_token}"}
    frame = load_dataset("nassCDS", "train")
    with TestClient(app) as client:
        body = frame.to_csv(index=False).encode()
        dataset = client.post("/api/datasets", headers=custodian, files={"file": ("nassCDS.csv", body)}).json()
        base = f"/api/datasets/{dataset['id']}"
        client.put(f"{base}/cap", headers=custodian, json={"epsilon": 2, "delta": 1e-6})
        client.post(f"{base}/grants", headers=custodian, json={"user": "analyst", "role": "analyst", "share": 1})
        others = [c for c in frame.columns if c != "dead"][:6]
        params = {"rounds": frame.shape[1], "iters": 100, "workload": [["dead", c] for c in others]}
        # the analyst's own job: an analyst sees only the jobs they submitted (#18)
        job = client.post(
            f"{base}/jobs", headers=analyst, json={"method": "aim", "epsilon": 1, "rows": 2000, "params": params}
        ).json()
        Worker(store, data_dir).run_once()
        release = client.get(f"/api/jobs/{job['id']}", headers=analyst).json()["release_id"]
    store.close()
    urls = {
        "datasets": "/api/datasets",
        "dataset": base,
        "ledger": f"{base}/ledger",
        "releases": "/api/releases",
        "release": f"/api/releases/{release}",
        "job": f"/api/jobs/{job['id']}",
        "card": f"/api/releases/{release}/card",
    }
    return analyst_token, urls


async def _client(
    base: str, token: str, urls: list[str], stop: float, latencies: dict[str, list[float]], errors: list[str]
) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=30) as client:
        index = 0
        while time.monotonic() < stop:
            url = urls[index % len(urls)]
            index += 1
            started = time.perf_counter()
            try:
                response = await client.get(url)
                ok = response.status_code == 200
            except httpx.HTTPError as exc:
                ok, response = False, None
                errors.append(f"{url}: {type(exc).__name__}")
            latencies[url].append(time.perf_counter() - started)
            if not ok and response is not None:
                errors.append(f"{url}: {response.status_code}")


async def _load(base: str, token: str, urls: list[str], clients: int, seconds: float) -> tuple[Any, list[str], float]:
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    started = time.monotonic()
    stop = started + seconds
    await asyncio.gather(*(_client(base, token, urls[i:] + urls[:i], stop, latencies, errors) for i in range(clients)))
    return latencies, errors, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "service_load.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="privsynth-load-") as folder:
        data_dir = Path(folder)
        token, urls = _prepare(data_dir)
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "privsynth",
                "serve",
                "--no-worker",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            latencies, errors, wall = asyncio.run(_load(base, token, list(urls.values()), args.clients, args.seconds))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    names = {url: name for name, url in urls.items()}
    every = np.concatenate([np.asarray(v) for v in latencies.values()]) * 1000
    result = {
        "clients": args.clients,
        "seconds": round(wall, 1),
        "requests": int(every.size),
        "errors": len(errors),
        "error_examples": errors[:10],
        "requests_per_second": round(every.size / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(every, 50)), 1),
            "p99": round(float(np.percentile(every, 99)), 1),
        },
        "by_endpoint_ms": {
            names[url]: {
                "requests": len(values),
                "p50": round(float(np.percentile(np.asarray(values) * 1000, 50)), 1),
                "p99": round(float(np.percentile(np.asarray(values) * 1000, 99)), 1),
            }
            for url, values in latencies.items()
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "server": "privsynth serve --no-worker (uvicorn, one process), SQLite in WAL mode, client on the same machine",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    from privsynth.bench.run_info import with_run

    args.output.write_text(json.dumps(with_run(result), indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("requests", "errors", "requests_per_second", "latency_ms")}))


if __name__ == "__main__":
    main()
