"""MST and AIM where the rows live: a resampled nassCDS of 1M / 10M / 100M rows in DuckDB (Parquet), PostgreSQL or
Spark (local[2] or a master URL), read only through counts.

Each run is a fresh Python process (the child) that forbids every way of reading rows (``to_pandas``,
``iter_chunks``, ``head``, ``sample``), fits at epsilon 1 with nothing declared public (bounds, bins and categories
learned under DP), and samples 20,000 rows. Recorded per run: fit wall and CPU seconds, queries sent to the engine,
peak resident memory of the privsynth process (``VmHWM``) and the peak of the engine's processes (the Spark JVM;
PostgreSQL's server processes) sampled every half second, rounds, and the 1/2/3-way TVD of the synthetic rows
against 200,000 rows drawn from the file (``aim_10m.py``'s scorer). PostgreSQL runs log every statement
(``log_statement=all``) and the result says how many there were and whether any could return raw rows (a SELECT
of the table without GROUP BY or aggregate).

The data file is the one ``counts_parquet.py`` makes (``benchmarks/data/nassCDS-<rows>-seed0.parquet``, made if
missing; not committed). PostgreSQL: a throwaway server in a temporary folder (Debian's binaries, as the tests use),
the file loaded with COPY. Every run is appended to ``results/scale.jsonl`` with its run metadata;
``--plot`` draws time and memory against rows per method and engine (``results/scale.png``).

    .venv/bin/python benchmarks/scale.py --engine duckdb --method mst --rows 10000000
    .venv/bin/python benchmarks/scale.py --engine spark --method mst --rows 100000000
    .venv/bin/python benchmarks/scale.py --engine postgres --method aim --rows 10000000
    .venv/bin/python benchmarks/scale.py --plot
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aim_10m import _cpu, _status, pandas_size, score

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scale.jsonl"
DELTA = 1e-7


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


def child(engine: str, target: str, method: str, epsilon: float, master: str | None) -> dict[str, Any]:
    """The fit and sample, in this fresh process."""
    import psutil

    from privsynth.data.source_base import Source
    from privsynth.data.sources import load_source
    from privsynth.synth.marginal import AIM, MST

    def no_rows(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the method must read the data only through counts")

    for reader in ("to_pandas", "iter_chunks", "head", "sample"):
        setattr(Source, reader, no_rows)
    if engine == "postgres":
        source = load_source(target, table="nass")
    elif engine == "spark":
        source = load_source(target, engine="spark", spark_master=master)
    else:
        source = load_source(target)
    me = os.getpid()
    engine_rss = PeakRSS(lambda: [p.pid for p in psutil.Process(me).children(recursive=True)])
    rss_before = _status("VmRSS")
    cpu, start = _cpu(), time.perf_counter()
    synthesizer = AIM() if method == "aim" else MST()
    model = synthesizer.fit(source, epsilon=epsilon, delta=DELTA, ledger=False)  # storage types, no schema
    fit_seconds, fit_cpu = time.perf_counter() - start, _cpu() - cpu
    synthetic = model.sample(20_000, seed=0)
    synthetic.to_parquet(Path(os.environ["SCALE_SYNTHETIC"]))
    return {
        "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu, 1),
        "queries": source.queries,
        "peak_rss_bytes": _status("VmHWM"),
        "rss_after_imports_bytes": rss_before,
        "engine_children_peak_rss_bytes": engine_rss.stop(),
        "rounds": getattr(model, "rounds_", None),
        "time_limited": getattr(model, "time_limited_", None),
        "measurements": len(model.measurements_),
    }


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
    path = HERE / "data" / f"nassCDS-{args.rows}-seed0.parquet"
    if not path.exists():
        counts = HERE / "data" / f"counts_parquet-{args.rows}.json"
        subprocess.run(
            [sys.executable, str(HERE / "counts_parquet.py"), "--rows", str(args.rows), "--output", str(counts)],
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
    try:
        if args.engine == "postgres":
            import psutil

            engine_rss = PeakRSS(
                lambda: [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]
            )
        command = [sys.executable, __file__, "--child", args.engine, target, args.method, str(args.epsilon)]
        if args.spark_master:
            command.append(args.spark_master)
        start = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "SCALE_SYNTHETIC": str(synthetic)}, check=False
        )
        wall = time.perf_counter() - start
    finally:
        server_peak = engine_rss.stop() if engine_rss is not None else None
        if stop is not None:
            stop()
    if done.returncode != 0:
        sys.exit(f"the run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(
        engine=args.engine,
        method=args.method,
        rows=args.rows,
        epsilon=args.epsilon,
        delta=DELTA,
        spark_master=args.spark_master or ("local[2]" if args.engine == "spark" else None),
        process_wall_seconds=round(wall, 1),
        pandas_frame_bytes_estimate=pandas_size(path),
        fidelity_vs_200k_real_rows=score(path, synthetic),
    )
    if args.engine == "postgres":
        result["load_seconds"] = load_seconds
        result["server_peak_rss_bytes"] = server_peak
        result["server_log"] = _statements(log) if log is not None else None
    return result


def plot(output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["method"], r["engine"]) for r in rows}):
        points = sorted((r["rows"], r) for r in rows if (r["method"], r["engine"]) == key)
        xs = [p[0] for p in points]
        time_axis.plot(xs, [p[1]["fit_seconds"] for p in points], marker="o", label=f"{key[0]} / {key[1]}")
        memory_axis.plot(xs, [p[1]["peak_rss_bytes"] / 2**20 for p in points], marker="o", label=f"{key[0]} / {key[1]}")
    for axis, label in ((time_axis, "fit wall seconds"), (memory_axis, "privsynth peak RSS (MiB)")):
        axis.set_xscale("log")
        axis.set_xlabel("rows")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    time_axis.set_yscale("log")
    memory_axis.legend(fontsize=8)
    figure.suptitle("MST and AIM where the rows live (epsilon 1, nothing public)")
    figure.tight_layout()
    figure.savefig(output, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=("duckdb", "postgres", "spark"), default="duckdb")
    parser.add_argument("--method", choices=("mst", "aim"), default="mst")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--spark-master", help="Spark master URL (default local[2])")
    parser.add_argument("--plot", action="store_true", help="draw results/scale.png from results/scale.jsonl")
    args = parser.parse_args()
    if args.child:
        engine, target, method, epsilon, *master = args.child
        print(json.dumps(child(engine, target, method, float(epsilon), master[0] if master else None)))
        return
    if args.plot:
        plot(RESULTS.with_suffix(".png"))
        print(f"wrote {RESULTS.with_suffix('.png')}", file=sys.stderr)
        return
    result = run(args)
    from privsynth.bench.run_info import with_run

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(with_run(result)) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "server_log"}, indent=1))


if __name__ == "__main__":
    main()
