"""Marginal counts over a Parquet file far larger than its rows need in memory as a pandas frame.

Generates (once, seeded) a Parquet file of resampled nassCDS rows in row groups, so generation never holds all
rows either; then runs ``load_source(path).counts(...)`` for a 1-, 2- and 3-way marginal, each in a fresh Python
process, recording wall time and the peak resident memory of that process. The reference is the file's size as
a pandas frame, estimated from its first million rows (``memory_usage(deep=True)``, scaled by rows).

    .venv/bin/python benchmarks/counts_parquet.py            # 10 million rows -> benchmarks/results/counts_parquet.json
    .venv/bin/python benchmarks/counts_parquet.py --rows 2000000 --output /tmp/small.json
    .venv/bin/python benchmarks/counts_parquet.py --rows 100000000 --data-dir /tmp/privsynth-scale --generate-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from privsynth.bench.run_info import with_run
from privsynth.data.binning import Binning, Categories, uniform_bins
from privsynth.data.datasets import load_dataset
from privsynth.data.sources import load_source

HERE = Path(__file__).resolve().parent
SAMPLE_ROWS = 1_000_000

QUERIES: dict[str, tuple[list[str], list[Binning]]] = {
    "1-way": (["dvcat"], [Categories(("1-9km/h", "10-24", "25-39", "40-54", "55+"))]),
    "2-way": (["ageOFocc", "sex"], [uniform_bins(16, 97, 9), Categories(("f", "m"))]),
    "3-way": (
        ["weight", "yearVeh", "dead"],
        [uniform_bins(0, 1000, 10), uniform_bins(1950, 2005, 11, null=True), Categories(("alive", "dead"))],
    ),
}


def data_path(folder: Path, rows: int, seed: int = 0) -> Path:
    """Where the file of ``rows`` resampled rows is (``scale.py`` reads the same names)."""
    return folder / f"nassCDS-{rows}-seed{seed}.parquet"


def generate(path: Path, rows: int, row_group: int, seed: int) -> None:
    """Resample nassCDS rows with replacement, one row group at a time, into ``path``."""
    base = load_dataset("nassCDS", "all")
    rng = np.random.default_rng(seed)
    partial = path.with_suffix(".partial")
    schema = pa.Schema.from_pandas(base, preserve_index=False)
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, rows, row_group):
            picked = base.iloc[rng.integers(0, len(base), size=min(row_group, rows - start))]
            writer.write_table(pa.Table.from_pandas(picked, schema=schema, preserve_index=False))
    partial.replace(path)


def pandas_bytes(path: Path) -> tuple[int, int]:
    """(bytes of the first rows as a pandas frame, number of those rows)."""
    batch = next(pq.ParquetFile(path).iter_batches(batch_size=SAMPLE_ROWS))
    frame = batch.to_pandas()
    return int(frame.memory_usage(deep=True).sum()), len(frame)


def duckdb_settings() -> dict[str, str]:
    """The settings a source's DuckDB connection runs with (privsynth keeps DuckDB's defaults)."""
    names = ("threads", "memory_limit", "preserve_insertion_order")
    with duckdb.connect() as con:
        return {n: str(con.execute(f"SELECT current_setting('{n}')").fetchall()[0][0]) for n in names}


def child(path: str, query: str, repeats: int) -> None:
    """Run one query in this (fresh) process and print what it cost as JSON."""
    rss_start = _max_rss()
    columns, binnings = QUERIES[query]
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        table = load_source(path).counts(columns, binnings)
        seconds.append(time.perf_counter() - started)
    result = {
        "columns": columns,
        "cells": int(table.size),
        "total": int(table.sum()),
        "seconds": [round(s, 3) for s in seconds],
        "peak_rss_bytes": _max_rss(),
        "rss_before_query_bytes": rss_start,
    }
    print(json.dumps(result))


def _max_rss() -> int:
    """Peak resident memory of this process, in bytes."""
    # On Linux ru_maxrss survives exec(), so a child would report its parent's peak; VmHWM starts afresh.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # bytes on macOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--row-group", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each query in its process")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "counts_parquet.json")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="where the Parquet file is made")
    parser.add_argument("--generate-only", action="store_true", help="make the file, run no query")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.repeats)
        return

    path = data_path(args.data_dir, args.rows, args.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.rows, args.row_group, args.seed)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.generate_only:
        return
    meta = pq.ParquetFile(path).metadata
    sample_bytes, sample_rows = pandas_bytes(path)
    in_memory = round(sample_bytes * meta.num_rows / sample_rows)

    queries: dict[str, Any] = {}
    for name in QUERIES:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(path), name, "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout)
        if result["total"] != meta.num_rows:
            raise SystemExit(f"{name}: counts sum to {result['total']}, the file has {meta.num_rows} rows")
        result["peak_rss_share_of_in_memory"] = round(result["peak_rss_bytes"] / in_memory, 4)
        queries[name] = result
        print(f"{name}: {result['seconds']} s, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB", file=sys.stderr)

    report = {
        "benchmark": "Source.counts on a Parquet file (DuckDB, streaming)",
        "command": " ".join(["python benchmarks/counts_parquet.py", *sys.argv[1:]]),
        "rows": meta.num_rows,
        "row_groups": meta.num_row_groups,
        "columns": meta.num_columns,
        "seed": args.seed,
        "file_bytes": path.stat().st_size,
        "in_memory_bytes_estimate": in_memory,
        "in_memory_estimate": f"pandas memory_usage(deep=True) of the first {sample_rows} rows, scaled by rows",
        "duckdb_settings": duckdb_settings(),
        "queries": queries,
        "machine": {
            "cores": os.cpu_count(),
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "pandas": pd.__version__,
            "pyarrow": pa.__version__,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(with_run(report), indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
