"""One scan per workload, before and after (#19): MST's 91 nassCDS pair marginals counted at 10M rows by DuckDB
(the Parquet file) and by a throwaway PostgreSQL server (the file loaded with COPY, as ``scale.py`` does), once
with one ``GROUP BY`` per marginal (``Source.counts`` in a loop: how fits counted before) and once with ``GROUPING
SETS`` in the engine's batches (``privsynth.data.workload.counts_many``: how MST and AIM count now). The tables
must be equal. Recorded per variant: queries the engine answered, wall seconds, this process's CPU seconds, the
database server's CPU seconds (PostgreSQL's processes, run without parallel workers so that every query's CPU
stays in a backend that can be measured; DuckDB runs inside this process), the load average. The
machine is shared: CPU seconds are the comparable figure. Spark's variants are in ``spark_workload.py``.

    .venv/bin/python benchmarks/workload_scan.py --engine duckdb --rows 10000000 --data-dir /tmp/privsynth-scale
    .venv/bin/python benchmarks/workload_scan.py --engine postgres --rows 10000000 --data-dir /tmp/privsynth-scale
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from privsynth.bench.run_info import with_run
from privsynth.data.sources import load_source
from privsynth.data.workload import counts_many

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scale import _postgres  # noqa: E402 (the benchmarks folder is not a package)
from spark_workload import binnings  # noqa: E402


def server_cpu(folder: Path | None) -> float:
    """CPU seconds of the PostgreSQL processes serving the data folder (0 for DuckDB, which runs in-process)."""
    if folder is None:
        return 0.0
    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] == "postgres" or "postgres" in " ".join(process.info["cmdline"] or [])[:40]:
                times = process.cpu_times()
                total += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "workload_scan.json")
    args = parser.parse_args()
    path = args.data_dir / f"nassCDS-{args.rows}-seed0.parquet"
    if not path.exists():
        sys.exit(f"{path} is missing: make it with benchmarks/counts_parquet.py --rows {args.rows} --generate-only")
    bins = binnings()
    pairs = list(itertools.combinations(bins, 2))
    stop = None
    folder: Path | None = None
    if args.engine == "postgres":
        folder = Path(tempfile.mkdtemp(prefix="privsynth-pg-")) / "pg"
        url, _, (stop, _log) = _postgres(folder, path)
        # one backend per connection, no parallel workers: their CPU would leave with them, uncounted
        source = load_source(f"{url}?options=-cmax_parallel_workers_per_gather%3D0", table="nass")
    else:
        source = load_source(path)
    try:
        source.num_rows()
        variants: dict[str, Any] = {}
        tables: dict[str, list[np.ndarray]] = {}
        for name in ("one GROUP BY per marginal", "GROUPING SETS batches"):
            queries, cpu, server = source.queries, time.process_time(), server_cpu(folder)
            load, start = os.getloadavg()[0], time.perf_counter()
            if name.startswith("one"):
                tables[name] = [source.counts(list(pair), [bins[c] for c in pair], outside="drop") for pair in pairs]
            else:
                tables[name] = counts_many(source, pairs, bins, outside="drop")
            variants[name] = {
                "queries": source.queries - queries,
                "wall_seconds": round(time.perf_counter() - start, 1),
                "privsynth_cpu_seconds": round(time.process_time() - cpu, 1),
                "server_cpu_seconds": round(server_cpu(folder) - server, 1) if folder else None,
                "load_average_1min": [round(load, 1), round(os.getloadavg()[0], 1)],
            }
            print(json.dumps({name: variants[name]}), flush=True)
        for a, b in zip(*tables.values(), strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        if stop is not None:
            stop()
    report = {
        "benchmark": f"MST's {len(pairs)} nassCDS pair marginals, {args.engine}, {args.rows:,} rows",
        "engine": args.engine,
        "rows": args.rows,
        "batch": source.workload_batch,
        "tables_equal": True,
        "variants": variants,
    }
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.setdefault("benchmark", "one scan per workload: 91 nassCDS pairs, one GROUP BY each vs GROUPING SETS")
    results.setdefault("runs", {})[f"{args.engine}-{args.rows}"] = with_run(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
