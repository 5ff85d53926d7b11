"""Numeric cells in Spark: a tree of ``CASE`` comparisons against arithmetic runs (``NumericBins.sql``, #19).

DP preprocessing measures fine histograms whose cells are equal parts of a few wider cells (``bounds._allocate``,
the spike search): 512 cells a column. Before, each cell was a leaf of a ``CASE`` tree (the SQL grew with cells;
Spark's generated code passed 64 kB and fell back to interpreting it); now a run of equal cells is one leaf that
computes its cell with a cast and two comparisons. This counts four nassCDS columns binned that way (8 wide cells
of 64 equal parts each) on the resampled Parquet file, alternating the two renderings (``MIN_RUN_CELLS`` set out of
reach for the tree), and records the JVM's CPU seconds (the machine is shared: the comparable figure), the wall
seconds and the load average. The first variant runs on a cold JVM. The tables must be equal.

    .venv/bin/python benchmarks/spark_binning.py --rows 10000000 --data-dir /tmp/privsynth-scale
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import privsynth.data.binning as binning
from privsynth.bench.run_info import with_run
from privsynth.data.binning import Binning, NumericBins
from privsynth.data.spark import spark_source
from privsynth.data.workload import counts_many

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spark_workload import jvm_cpu  # noqa: E402 (the benchmarks folder is not a package)


def piecewise(low: float, high: float, parts: int) -> NumericBins:
    """8 equal wide cells over ``[low, high]``, each split into ``parts`` equal cells by ``numpy.linspace``."""
    wide = np.linspace(low, high, 9)
    pieces = [np.linspace(a, b, parts + 1)[:-1] for a, b in itertools.pairwise(wide)]
    return NumericBins(tuple(np.unique(np.concatenate([*pieces, [high]])).tolist()), null=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "spark_binning.json")
    args = parser.parse_args()
    path = args.data_dir / f"nassCDS-{args.rows}-seed0.parquet"
    bins: dict[str, Binning] = {
        "weight": piecewise(0, 60000, 64),
        "ageOFocc": piecewise(0, 100, 64),
        "yearacc": piecewise(1990, 2010, 64),
        "yearVeh": piecewise(1950, 2010, 64),
    }
    source = spark_source(path)
    source.num_rows()  # the JVM started and the file's footer read before either clock
    runs, tables = [], {}
    for _ in range(args.repeats):
        for variant, min_run in (("CASE tree", 10**9), ("arithmetic runs", 8)):
            binning.MIN_RUN_CELLS = min_run
            load, cpu, start = os.getloadavg()[0], jvm_cpu(), time.perf_counter()
            tables[variant] = counts_many(source, [(c,) for c in bins], bins, outside="drop")
            runs.append(
                {
                    "variant": variant,
                    "jvm_cpu_seconds": round(jvm_cpu() - cpu, 1),
                    "wall_seconds": round(time.perf_counter() - start, 1),
                    "load_average_1min": [round(load, 1), round(os.getloadavg()[0], 1)],
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    for a, b in zip(*tables.values(), strict=True):
        np.testing.assert_array_equal(a, b)
    report = {
        "benchmark": "4 numeric columns x 512 cells (8 wide cells of 64 equal parts) counted by Spark local[2]",
        "rows": args.rows,
        "file": str(path),
        "tables_equal": True,
        "runs": runs,
        "order": "alternating; the first run is on a cold JVM",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(with_run(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
