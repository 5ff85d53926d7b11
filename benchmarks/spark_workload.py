"""MST's workload (every pair of nassCDS's 14 columns, 91 marginals) counted by Spark local[2] on the resampled Parquet
file, with the grouping sets over every row (Spark's ``Expand`` copies each row once per set) and with the batch's
joint counts first (``Source.workload_joint_first``: one GROUP BY of the binned columns, then the grouping sets over
its cells). Same session, same batches (``--batch``, default 16); the tables must be equal. Recorded per variant:
wall seconds, the JVM's CPU seconds (the machine is shared: CPU is the comparable figure) and the load average. The
variant timed first runs on a cold JVM: ``--joint-first-first`` swaps the order.

The file has at most 26,217 distinct rows (nassCDS resampled), so its joint has few cells whatever the row count;
a real table of as many rows has more distinct binned rows, and the gain there is smaller.

    .venv/bin/python benchmarks/spark_workload.py --rows 1000000 --data-dir /tmp/privsynth-scale
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from privsynth.bench.run_info import with_run
from privsynth.data.binning import Binning, Categories, uniform_bins
from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Kind, Schema
from privsynth.data.spark import spark_source
from privsynth.data.workload import counts_many

HERE = Path(__file__).resolve().parent


def binnings() -> dict[str, Binning]:
    """Public binnings from the bundled table's inferred schema: its categories, 16 bins within its bounds."""
    out: dict[str, Binning] = {}
    for column in Schema.infer(load_dataset("nassCDS")).synthesized():
        if column.kind in (Kind.INTEGER, Kind.FLOAT) and column.bounds is not None:
            low, high = (float(b) for b in column.bounds)
            out[column.name] = uniform_bins(low, high, 16, null=True)
        else:
            out[column.name] = Categories(tuple(column.categories or ()), other=True, null=True)
    return out


def jvm_cpu() -> float:
    import psutil

    total = 0.0
    for process in psutil.Process(os.getpid()).children(recursive=True):
        times = process.cpu_times()
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--batch", type=int, default=16, help="marginals per query (Spark's workload_batch: 16)")
    parser.add_argument("--first-only", action="store_true", help="time only the variant that comes first")
    parser.add_argument("--joint-first-first", action="store_true", help="time the joint-first variant first")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "spark_workload.json")
    args = parser.parse_args()
    path = args.data_dir / f"nassCDS-{args.rows}-seed0.parquet"
    bins = binnings()
    pairs = list(itertools.combinations(bins, 2))
    source = spark_source(path)
    source.num_rows()  # the JVM started and the file's footer read before either clock
    results: dict[str, Any] = {}
    tables: dict[bool, list[np.ndarray]] = {}
    variants = (True, False) if args.joint_first_first else (False, True)
    for joint_first in variants[:1] if args.first_only else variants:
        source.workload_joint_first = joint_first
        load, cpu, start = os.getloadavg()[0], jvm_cpu(), time.perf_counter()
        queries = source.queries
        tables[joint_first] = counts_many(source, pairs, bins, outside="drop", batch=args.batch)
        results["joint first" if joint_first else "grouping sets over rows"] = {
            "wall_seconds": round(time.perf_counter() - start, 1),
            "jvm_cpu_seconds": round(jvm_cpu() - cpu, 1),
            "queries": source.queries - queries,
            "load_average_1min": [round(load, 1), round(os.getloadavg()[0], 1)],
        }
        print(json.dumps(results), flush=True)
    if len(tables) == 2:
        for a, b in zip(tables[False], tables[True], strict=True):
            np.testing.assert_array_equal(a, b)
    report = {
        "benchmark": "MST's 91 pair marginals counted by Spark local[2], batches of 16",
        "rows": args.rows,
        "file": str(path),
        "marginals": len(pairs),
        "batch": args.batch,
        "tables_equal": True if len(tables) == 2 else None,
        "variants": results,
        "order": list(results),  # the first runs on a cold JVM (its code not yet compiled)
        "note": "the file holds at most 26,217 distinct rows (nassCDS resampled)",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(with_run(report), indent=2) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
