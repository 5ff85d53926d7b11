"""MST and AIM where the rows live: a resampled nassCDS of 1M / 10M / 100M rows in DuckDB (Parquet), PostgreSQL or
Spark (local[2] or a master URL), read only through counts.

Each run is a fresh Python process (the child) that forbids every way of reading rows (``to_pandas``,
``iter_chunks``, ``head``, ``sample``, ``poisson_sample``), fits at epsilon 1 with nothing declared public (bounds,
bins and categories learned under DP; from the storage types, or ``--schema nassCDS`` for the bundled table's
inferred schema), and samples 20,000 rows. Recorded per run: fit wall and CPU seconds of the privsynth process,
queries sent to the engine, peak resident memory of the privsynth process (``VmHWM``) and the peak of the engine's
processes (the Spark JVM; PostgreSQL's server processes) sampled every half second, the CPU seconds the Spark JVM
spent during the fit, the machine's load average (before, after, and its mean over the run, sampled every 5 s: the
machine is shared, so wall times depend on it and CPU times are the comparable figure), rounds, the model's size,
and the 1/2/3-way TVD of the synthetic rows against 200,000 rows drawn from the file. Each counts query is timed
(wall, privsynth's CPU, the engine's CPU: ``query_log``, also printed to stderr as it ends, with the fit's
progress), the profile of where a fit's time goes. PostgreSQL runs log every statement (``log_statement=all``) and
the result says how many there were and whether any could return raw rows (a SELECT of the table without GROUP BY or
aggregate).

The data file is the one ``counts_parquet.py`` makes (``<data-dir>/nassCDS-<rows>-seed0.parquet``, made if missing;
not committed; ``--data-dir /tmp/...`` for 100M rows). PostgreSQL: a throwaway server in a temporary folder
(Debian's binaries, as the tests use), the file loaded with COPY. Every run is appended to ``results/scale.jsonl``
with its run metadata (or written to ``--output``); ``--plot`` draws time and memory against rows per method and
engine (``results/scale.png``, the latest run of each). It replaces ``aim_10m.py``, whose runs are ``--method aim
--max-minutes 45 --schema nassCDS --output results/aim_10m.json`` (``--method mst ... mst_10m.json``).

    .venv/bin/python benchmarks/scale.py --engine duckdb --method mst --rows 10000000
    .venv/bin/python benchmarks/scale.py --engine spark --method mst --rows 100000000 --data-dir /tmp/privsynth-scale
    .venv/bin/python benchmarks/scale.py --engine postgres --method aim --rows 10000000
    .venv/bin/python benchmarks/scale.py --method aim --max-minutes 45 --schema nassCDS --output /tmp/aim_10m.json
    .venv/bin/python benchmarks/scale.py --plot
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scale.jsonl"
DELTA = 1e-7  # below 1 / n for 10 million rows


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the live descendants of ``pid`` (the Spark JVM)."""
    import psutil

    total = 0.0
    for process in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class Load:
    """The machine's 1-minute load average before, after, and its mean over a run (sampled every 5 s)."""

    def __init__(self) -> None:
        self.before = os.getloadavg()[0]
        self._samples = [self.before]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self._samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        after = os.getloadavg()[0]
        mean = sum([*self._samples, after]) / (len(self._samples) + 1)
        return {"before": round(self.before, 2), "mean": round(mean, 2), "after": round(after, 2)}


class PeakRSS:
    """The peak summed resident memory of some processes, polled every half second in a thread."""

    def __init__(self, pids: Any) -> None:
        self._pids = pids  # a callable returning the pids to sum
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for pid in self._pids():
                with contextlib.suppress(psutil.Error):
                    total += psutil.Process(pid).memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(0.5)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def child(options: dict[str, Any]) -> dict[str, Any]:
    """The fit and sample, in this fresh process (``options``: engine, target, method, epsilon, master, schema,
    max_minutes)."""
    import psutil

    from privsynth.data.source_base import Source
    from privsynth.data.sources import load_source
    from privsynth.progress import listen
    from privsynth.synth import marginal as _marginal  # noqa: F401  (JAX and mbi imported before the clock)
    from privsynth.synth.marginal import AIM, MST

    engine, target, method = options["engine"], options["target"], options["method"]
    schema = None
    if options["schema"] == "nassCDS":
        from privsynth.data.datasets import load_dataset
        from privsynth.data.schema import Schema

        schema = Schema.infer(load_dataset("nassCDS")).synthesized()

    def no_rows(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the method must read the data only through counts")

    for reader in ("to_pandas", "iter_chunks", "head", "sample", "poisson_sample"):
        setattr(Source, reader, no_rows)
    if engine == "postgres":
        source = load_source(target, table="nass")
    elif engine == "spark":
        source = load_source(target, engine="spark", spark_master=options["master"])
    else:
        source = load_source(target)
    me = os.getpid()
    engine_rss = PeakRSS(lambda: [p.pid for p in psutil.Process(me).children(recursive=True)])
    rss_before = _status("VmRSS")
    engine_cpu = _children_cpu(me)
    cpu, start = _cpu(), time.perf_counter()
    query_log: list[dict[str, Any]] = []
    run_counts = source._run_counts

    def timed(query: Any) -> list[tuple[Any, ...]]:
        """Each counts query's wall seconds, privsynth's and the engine's CPU seconds during it (the profile)."""
        began, began_cpu, began_engine = time.perf_counter(), _cpu(), _children_cpu(me)
        rows = run_counts(query)
        entry = {
            "query": len(query_log) + 1,
            "at_seconds": round(began - start, 1),
            "seconds": round(time.perf_counter() - began, 2),
            "privsynth_cpu_seconds": round(_cpu() - began_cpu, 2),
            "engine_children_cpu_seconds": round(_children_cpu(me) - began_engine, 2),
            "grouping_flags": str(query).upper().count("GROUPING("),  # columns of a GROUPING SETS scan; 0: GROUP BY
            "rows_returned": len(rows),
        }
        query_log.append(entry)
        print(json.dumps({"query_done": entry, "load": round(os.getloadavg()[0], 1)}), file=sys.stderr, flush=True)
        return rows

    source._run_counts = timed  # type: ignore[method-assign]

    def progress(event: Any) -> None:
        rss = _status("VmRSS")
        print(
            json.dumps({"at_seconds": round(time.perf_counter() - start, 1), "step": event.detail, "rss": rss}),
            file=sys.stderr,
            flush=True,
        )

    synthesizer = AIM(max_minutes=options["max_minutes"]) if method == "aim" else MST()
    with listen(progress):
        model = synthesizer.fit(source, schema, epsilon=options["epsilon"], delta=DELTA, ledger=False)
    fit_seconds, fit_cpu = time.perf_counter() - start, _cpu() - cpu
    engine_fit_cpu = _children_cpu(me) - engine_cpu
    cpu, start = _cpu(), time.perf_counter()
    synthetic = model.sample(20_000, seed=0)
    sample_seconds, sample_cpu = time.perf_counter() - start, _cpu() - cpu
    synthetic.to_parquet(Path(os.environ["SCALE_SYNTHETIC"]))
    versions: dict[str, str] = {}
    if engine == "spark":
        import pyspark

        versions["pyspark"] = pyspark.__version__
        versions["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.split("\n")[0]
    return {
        "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu, 1),
        "engine_children_fit_cpu_seconds": round(engine_fit_cpu, 1),
        "sample_seconds": round(sample_seconds, 2),
        "sample_cpu_seconds": round(sample_cpu, 2),
        "queries": source.queries,
        "query_log": query_log,
        "peak_rss_bytes": _status("VmHWM"),
        "rss_after_imports_bytes": rss_before,
        "engine_children_peak_rss_bytes": engine_rss.stop(),
        "schema": options["schema"],
        "max_minutes": options["max_minutes"] if method == "aim" else None,
        "rounds": getattr(model, "rounds_", None),
        "time_limited": getattr(model, "time_limited_", None),
        "size_capped": getattr(model, "size_capped_", None),
        "measurements": len(model.measurements_),
        "rows_estimate": round(float(model.rows_estimate_), 1),
        "model_size_mb": round(model.model_.size_mb, 3),
        "model_cliques": [list(c) for c in model.model_.potentials],
        "rho": model.rho_,
        "rho_preprocessing": sum(s["rho"] for s in model.spends_ if s["purpose"].startswith("domain of")),
        "cells": {c: d.size for c, d in model.domains_.items()},
        "engine_versions": versions,
    }


def score(path: Path, synthetic_path: Path) -> dict[str, float | None]:
    """1-, 2- and 3-way TVD of the synthetic rows against 200,000 rows of the file (after the fit, outside it), on
    ``evaluate``'s encoding and marginals (its fidelity part only: the rest of the report needs a holdout)."""
    import duckdb
    import numpy as np
    import pandas as pd

    from privsynth.data.datasets import load_dataset
    from privsynth.data.schema import Schema
    from privsynth.evaluate.fidelity import MAX_TRIPLES, column_subsets, marginal_tvd
    from privsynth.evaluate.prepared import prepare

    schema = Schema.infer(load_dataset("nassCDS"))
    columns = ", ".join(f'"{c.name}"' for c in schema.synthesized())
    sample = "USING SAMPLE reservoir(200000 ROWS) REPEATABLE (0)"
    real = duckdb.sql(f"SELECT {columns} FROM read_parquet('{path}') {sample}")
    data = prepare(real.df(), pd.read_parquet(synthetic_path), None, None, None, schema)
    rng = np.random.default_rng(0)
    out: dict[str, float | None] = {}
    for k in (1, 2, 3):
        combos = column_subsets(len(data.columns), k, MAX_TRIPLES if k == 3 else None, rng)
        out[f"tvd_{k}way"] = marginal_tvd(data, combos, rng, 1)[0]
    return out


def pandas_size(path: Path) -> int:
    """Bytes the whole file would take as a pandas frame, from its first million rows."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    rows = table.metadata.num_rows
    first = table.iter_batches(batch_size=1_000_000).__next__().to_pandas()
    return int(first.memory_usage(deep=True).sum() * rows / len(first))


def _postgres(folder: Path, parquet: Path) -> tuple[str, list[subprocess.Popen[bytes]] | None, Any]:
    """A throwaway PostgreSQL server with the file in table ``nass``; its URL, and a stop function."""
    import glob
    import pwd
    import socket

    import duckdb

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        sys.exit("PostgreSQL's server binaries are missing (Debian: apt-get install postgresql)")
    bin_dir = Path(bins[-1])
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    folder.mkdir(parents=True, exist_ok=True)
    if owner is not None:  # the server runs as postgres: it must reach its folder
        os.chown(folder.parent, owner.pw_uid, owner.pw_gid)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    user = owner.pw_name if owner is not None else None

    def run(*args: str) -> None:
        subprocess.run([str(bin_dir / args[0]), *args[1:]], user=user, cwd=folder, check=True, capture_output=True)

    data, log = folder / "data", folder / "server.log"
    run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "-N", "--no-instructions")
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
        "-c log_statement=all -c shared_buffers=256MB -c work_mem=64MB"
    )
    run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    csv = folder / "nass.csv"
    duckdb.sql(f"COPY (SELECT * FROM read_parquet('{parquet}')) TO '{csv}' (HEADER, DELIMITER ',')")
    if owner is not None:
        os.chown(csv, owner.pw_uid, owner.pw_gid)
    columns = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{parquet}')").fetchall()
    types = {"BIGINT": "bigint", "INTEGER": "integer", "DOUBLE": "double precision", "VARCHAR": "text"}
    ddl = ", ".join(f'"{name}" {types.get(kind, "text")}' for name, kind, *_ in columns)
    psql = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-c"]
    subprocess.run([*psql, f"CREATE TABLE nass ({ddl})"], check=True, capture_output=True)
    subprocess.run([*psql, f"COPY nass FROM '{csv}' CSV HEADER"], check=True, capture_output=True)
    subprocess.run([*psql, "ANALYZE nass"], check=True, capture_output=True)
    csv.unlink()
    log.write_text("")  # keep only the fit's statements

    def stop() -> None:
        run("pg_ctl", "-D", str(data), "-m", "fast", "stop")

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", None, (stop, log)


def _statements(log: Path) -> dict[str, Any]:
    """The statements the server ran (simple and extended protocol), and whether any SELECT of the table could
    return raw rows (no GROUP BY and no aggregate)."""
    import re

    entries: list[str] = []
    for line in log.read_text().splitlines():  # an entry starts with the log line prefix's timestamp
        if re.match(r"\d{4}-\d{2}-\d{2} ", line) or not entries:
            entries.append(line)
        else:
            entries[-1] += " " + line.strip()
    statements = [
        found.group(1) for entry in entries if (found := re.search(r"(?:statement|execute [^:]*): (.*)", entry))
    ]
    on_table = [s for s in statements if re.search(r"\bFROM\s+\(?\s*\"?nass\b", s) and "SELECT" in s.upper()]
    raw = [s[:300] for s in on_table if "GROUP BY" not in s.upper() and "COUNT(" not in s.upper()]
    return {"statements": len(statements), "selects_of_table": len(on_table), "could_return_rows": raw}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from counts_parquet import data_path

    path = data_path(args.data_dir, args.rows)
    if not path.exists():
        counts = args.data_dir / f"counts_parquet-{args.rows}.json"
        subprocess.run(
            [
                *(sys.executable, str(HERE / "counts_parquet.py"), "--rows", str(args.rows)),
                *("--data-dir", str(args.data_dir), "--output", str(counts), "--generate-only"),
            ],
            check=True,
        )
    synthetic = path.with_suffix(f".{args.engine}-{args.method}-synthetic.parquet")
    target, stop, log = str(path), None, None
    folder = Path(tempfile.mkdtemp(prefix="privsynth-scale-"))
    load_seconds = None
    if args.engine == "postgres":
        started = time.perf_counter()
        target, _, (stop, log) = _postgres(folder / "pg", path)
        load_seconds = round(time.perf_counter() - started, 1)
    engine_rss = None
    options = {
        "engine": args.engine,
        "target": target,
        "method": args.method,
        "epsilon": args.epsilon,
        "master": args.spark_master,
        "schema": args.schema,
        "max_minutes": args.max_minutes,
    }
    try:
        if args.engine == "postgres":
            import psutil

            engine_rss = PeakRSS(
                lambda: [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]
            )
        command = [sys.executable, __file__, "--child", json.dumps(options)]
        load, start = Load(), time.perf_counter()
        done = _watch(command, {**os.environ, "SCALE_SYNTHETIC": str(synthetic)}, args.timeout_minutes)
        wall, load_average = time.perf_counter() - start, load.stop()
    finally:
        server_peak = engine_rss.stop() if engine_rss is not None else None
        if stop is not None:
            stop()
    common = {
        "engine": args.engine,
        "method": args.method,
        "rows": args.rows,
        "epsilon": args.epsilon,
        "delta": DELTA,
        "spark_master": args.spark_master or ("local[2]" if args.engine == "spark" else None),
        "process_wall_seconds": round(wall, 1),
        "load_average_1min": load_average,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "file_bytes": path.stat().st_size,
        "schema": args.schema,
        "max_minutes": args.max_minutes,
    }
    if done["stopped"]:  # how far it got: the progress and queries the child printed, the memory polled from here
        return {**common, "finished": False, **{k: v for k, v in done.items() if k not in ("stdout", "returncode")}}
    if done["returncode"] != 0:
        sys.exit(f"the run failed (exit {done['returncode']}; its error is above)")
    result: dict[str, Any] = json.loads(done["stdout"].strip().splitlines()[-1])
    result.update(
        common,
        finished=True,
        pandas_frame_bytes_estimate=pandas_size(path),
        fidelity_vs_200k_real_rows=score(path, synthetic),
    )
    if args.engine == "postgres":
        result["load_seconds"] = load_seconds
        result["server_peak_rss_bytes"] = server_peak
        result["server_log"] = _statements(log) if log is not None else None
    return result


def _watch(command: list[str], env: dict[str, str], timeout_minutes: float | None) -> dict[str, Any]:
    """Run the child, echoing its stderr (progress and per-query lines) and keeping those lines; poll the peak RSS
    of the child and of its own children (the Spark JVM). After ``timeout_minutes`` the child and its children are
    stopped (by their process ids) and the result says how far the fit got."""
    import psutil

    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[dict[str, Any]] = []

    def echo() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            sys.stderr.write(line)
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    me = psutil.Process(child.pid)
    own = PeakRSS(lambda: [child.pid])
    engine = PeakRSS(lambda: [p.pid for p in me.children(recursive=True)])
    out = {"stopped": False}
    try:
        stdout, _ = child.communicate(timeout=None if timeout_minutes is None else timeout_minutes * 60)
    except subprocess.TimeoutExpired:
        cpu = {"privsynth_cpu_seconds": None, "engine_children_cpu_seconds": None}
        with contextlib.suppress(psutil.Error):
            times = me.cpu_times()
            cpu = {
                "privsynth_cpu_seconds": round(times.user + times.system, 1),
                "engine_children_cpu_seconds": round(_children_cpu(child.pid), 1),
            }
        for process in [*me.children(recursive=True), me]:
            with contextlib.suppress(psutil.Error):
                process.kill()
        stdout, _ = child.communicate()
        out = {"stopped": True, "stopped_after_minutes": timeout_minutes, **cpu}
    reader.join(timeout=10)
    return {
        **out,
        "stdout": stdout,
        "returncode": child.returncode,
        "polled_peak_rss_bytes": own.stop(),
        "polled_engine_children_peak_rss_bytes": engine.stop(),
        "progress": [e for e in lines if "step" in e],
        "query_log": [e["query_done"] for e in lines if "query_done" in e],
    }


def plot(output: Path) -> None:
    """Fit wall time, CPU seconds and peak RSS against rows, one line per method and engine, from the latest run
    of each (method, engine, rows) in ``results/scale.jsonl`` that used the storage types (the default) and no time
    limit. CPU and memory show privsynth's process (solid) and the engine's processes where they are separate (the
    Spark JVM, PostgreSQL's server: dotted); DuckDB runs inside privsynth's process, so its memory is in the solid
    line. Wall times carry the machine's mean load average over the run (the machine is shared)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for line in RESULTS.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("schema", "storage") == "storage" and not r.get("max_minutes") and r.get("finished", True):
                latest[(r["method"], r["engine"], r["rows"])] = r  # later lines are later runs
    figure, (time_axis, cpu_axis, memory_axis) = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (method, engine) in enumerate(sorted({(m, e) for m, e, _ in latest})):
        points = sorted((rows, r) for (m, e, rows), r in latest.items() if (m, e) == (method, engine))
        xs = [rows for rows, _ in points]
        color = colors[index % len(colors)]
        style = {"marker": "o", "color": color, "linestyle": "-" if method == "mst" else "--"}
        label = f"{method} / {engine}"
        own = "privsynth + DuckDB" if engine == "duckdb" else "privsynth"  # DuckDB runs in privsynth's process
        time_axis.plot(xs, [r["fit_seconds"] for _, r in points], label=label, **style)
        cpu_axis.plot(xs, [r["fit_cpu_seconds"] for _, r in points], label=f"{label}: {own}", **style)
        memory_axis.plot(xs, [r["peak_rss_bytes"] / 2**20 for _, r in points], label=f"{label}: {own}", **style)
        engine_cpu = [(x, r.get("engine_children_fit_cpu_seconds")) for x, (_, r) in zip(xs, points, strict=True)]
        engine_cpu = [(x, c) for x, c in engine_cpu if c]
        if engine_cpu:
            cpu_axis.plot(*zip(*engine_cpu, strict=True), marker="s", color=color, linestyle=":", label=f"{label}: JVM")
        engine_rss = [
            (x, r.get("engine_children_peak_rss_bytes") or r.get("server_peak_rss_bytes"))
            for x, (_, r) in zip(xs, points, strict=True)
        ]
        engine_rss = [(x, b / 2**20) for x, b in engine_rss if b]
        if engine_rss:
            name = "JVM" if engine == "spark" else "server"
            memory_axis.plot(
                *zip(*engine_rss, strict=True), marker="s", color=color, linestyle=":", label=f"{label}: {name}"
            )
        for x, (_, r) in zip(xs, points, strict=True):
            load = (r.get("load_average_1min") or {}).get("mean")
            if load is not None:
                time_axis.annotate(f"load {load:.0f}", (x, r["fit_seconds"]), fontsize=7, alpha=0.8)
    for axis, label in (
        (time_axis, "fit wall seconds (shared machine: mean load annotated)"),
        (cpu_axis, "fit CPU seconds"),
        (memory_axis, "peak RSS (MiB)"),
    ):
        axis.set_xscale("log")
        axis.set_xlabel("rows")
        axis.set_ylabel(label, fontsize=8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    time_axis.set_yscale("log")
    cpu_axis.set_yscale("log")
    memory_axis.set_ylim(bottom=0)
    figure.suptitle("MST and AIM where the rows live (epsilon 1, nothing public; 2 cores shared with other work)")
    figure.tight_layout()
    figure.savefig(output, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=("duckdb", "postgres", "spark"), default="duckdb")
    parser.add_argument("--method", choices=("mst", "aim"), default="mst")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--spark-master", help="Spark master URL (default local[2])")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="where the Parquet files are")
    parser.add_argument(
        "--schema",
        choices=("storage", "nassCDS"),
        default="storage",
        help="no schema (the storage types; the default) or the bundled nassCDS table's inferred schema",
    )
    parser.add_argument("--max-minutes", type=float, help="AIM's max_minutes (default: no time limit)")
    parser.add_argument(
        "--timeout-minutes", type=float, help="stop the fit after this long and record how far it got (its progress)"
    )
    parser.add_argument("--output", type=Path, help="write the result here (JSON) instead of appending to scale.jsonl")
    parser.add_argument("--plot", action="store_true", help="draw results/scale.png from results/scale.jsonl")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.plot:
        plot(RESULTS.with_suffix(".png"))
        print(f"wrote {RESULTS.with_suffix('.png')}", file=sys.stderr)
        return
    result = run(args)
    from privsynth.bench.run_info import with_run

    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(with_run(result), indent=2) + "\n")
    else:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as out:
            out.write(json.dumps(with_run(result)) + "\n")
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("server_log", "model_cliques", "query_log")}, indent=1)
    )


if __name__ == "__main__":
    main()
