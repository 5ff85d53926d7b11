"""A real standalone Spark cluster (a master and two workers started from the scripts pyspark ships): the Spark
source's counts and a DP fit on it, so that nothing assumes local mode. Slow (four JVMs): `make test-slow`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'privsynth[spark]'")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java 17+ (Debian: openjdk-17-jre-headless)", allow_module_level=True)

pytestmark = pytest.mark.slow

SCRIPT = """
import sys, numpy as np
from privsynth.data.datasets import load_dataset
from privsynth.data.sources import frame_source
from privsynth.data.spark import spark_session, spark_source
from privsynth.data.workload import counts_many
from privsynth.data.binning import Categories, uniform_bins
from privsynth.synth.base import available

master, path = sys.argv[1], sys.argv[2]
session = spark_session(master)
executors = session.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
source = spark_source(path)
frame = load_dataset("nafld1", "all")
binnings = {"age": uniform_bins(18, 98, 8), "male": Categories((0, 1)), "bmi": uniform_bins(15, 50, 7, null=True)}
marginals = [("age", "male"), ("male", "bmi"), ("age", "bmi")]
got = counts_many(source, marginals, binnings, outside="drop")
reference = frame_source(frame)
for m, table in zip(marginals, got):
    assert (table == reference.counts(list(m), [binnings[c] for c in m], outside="drop")).all(), m
model = available()["mst"]().fit(source, epsilon=1.0, ledger=False, dataset="nafld1-cluster")
rows = model.sample(500)
print(f"executors={executors} queries={source.queries} rows={len(rows)} columns={len(rows.columns)}")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master on 127.0.0.1 and two workers of one core and 1 GiB each; yields the master URL."""
    folder = tmp_path_factory.mktemp("spark-cluster")
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    spark_class = str(_spark_class())
    processes = [
        subprocess.Popen(
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(_free_port()),
            ],
            stdout=(folder / "master.log").open("w"),
            stderr=subprocess.STDOUT,
            env=env,
        )
    ]
    deadline = time.monotonic() + 120
    while (
        "Starting Spark master" not in (folder / "master.log").read_text()
        or "I have been elected" not in (folder / "master.log").read_text()
    ):
        if time.monotonic() > deadline or processes[0].poll() is not None:
            raise RuntimeError("the Spark master did not start:\n" + (folder / "master.log").read_text())
        time.sleep(1)
    for i in range(2):
        log = folder / f"worker{i}.log"
        processes.append(
            subprocess.Popen(
                [
                    spark_class,
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--cores",
                    "1",
                    "--memory",
                    "1g",
                    "--webui-port",
                    str(_free_port()),
                    "--work-dir",
                    str(folder / f"work{i}"),
                ],
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    deadline = time.monotonic() + 120
    while (folder / "master.log").read_text().count("Registering worker") < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the Spark workers did not register:\n" + (folder / "master.log").read_text())
        time.sleep(1)
    try:
        yield url
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_counts_and_a_dp_fit_run_on_a_standalone_cluster(cluster: str, tmp_path: Path) -> None:
    """Two executors on two workers answer the counts (equal to DuckDB's) and an MST fit's queries."""
    from privsynth.data.datasets import load_dataset

    path = tmp_path / "nafld1.parquet"
    load_dataset("nafld1", "all").to_parquet(path)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, cluster, str(path)], capture_output=True, text=True, env=env, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert "executors=2" in line, line
    assert "rows=500" in line
