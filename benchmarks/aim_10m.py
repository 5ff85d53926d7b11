"""AIM (or MST) at epsilon 1 on a 10-million-row Parquet file: peak memory and time, reading only through
``Source.counts``.

The file is the one ``counts_parquet.py`` makes (nassCDS train rows resampled with seed 0, written one row group at
a time; it is made here if missing). The fit runs in a fresh Python process that forbids every way of reading rows
(``Source.to_pandas``, ``iter_chunks``, ``head``): the marginals come from DuckDB GROUP BYs over the file. The schema
is inferred from the bundled nassCDS table, whose columns the file repeats, and no domain is declared public, so
bounds, bins and categories are learned under DP from 10% of the budget. Recorded: fit and sample wall and CPU
seconds, peak resident memory (``VmHWM``) and the memory after imports, the size the file would take as a pandas
frame (from its first million rows, scaled), the noisy row count, rounds, the model's size, and the 2- and 3-way
TVD of 20,000 synthetic rows against 200,000 rows drawn from the file (on 16 quantile bins, as ``evaluate`` does).
AIM runs with ``max_minutes`` (default 45): at 10M rows a round's estimate never converges early and its cost grows
with the model (27 s a round by round 20 of 224), so the default run would take many hours on 2 cores.

    .venv/bin/python benchmarks/aim_10m.py                    # -> benchmarks/results/aim_10m.json
    .venv/bin/python benchmarks/aim_10m.py --method mst       # -> benchmarks/results/mst_10m.json
    .venv/bin/python benchmarks/aim_10m.py --rows 1000000 --output /tmp/aim_1m.json
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

HERE = Path(__file__).resolve().parent
DELTA = 1e-7  # below 1 / n for 10 million rows


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(path: Path, epsilon: float, method: str, max_minutes: float | None) -> dict[str, Any]:
    """The fit and sample, in this fresh process."""
    from privsynth.data.datasets import load_dataset
    from privsynth.data.schema import Schema
    from privsynth.data.sources import Source, load_source
    from privsynth.synth import marginal as _marginal  # noqa: F401  (JAX and mbi imported before the clock)
    from privsynth.synth.marginal import AIM, MST

    schema = Schema.infer(load_dataset("nassCDS")).synthesized()

    def no_rows(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the method must read the data only through Source.counts")

    for reader in ("to_pandas", "iter_chunks", "head"):
        setattr(Source, reader, no_rows)
    source = load_source(path)
    rss_before = _status("VmRSS")
    cpu, start = _cpu(), time.perf_counter()
    synthesizer = AIM(max_minutes=max_minutes) if method == "aim" else MST()
    model = synthesizer.fit(source, schema, epsilon=epsilon, delta=DELTA)
    fit_seconds, fit_cpu = time.perf_counter() - start, _cpu() - cpu
    cpu, start = _cpu(), time.perf_counter()
    synthetic = model.sample(20_000, seed=0)
    sample_seconds, sample_cpu = time.perf_counter() - start, _cpu() - cpu
    peak = _status("VmHWM")
    synthetic.to_parquet(Path(os.environ["AIM_10M_SYNTHETIC"]))
    return {
        "epsilon": epsilon,
        "delta": DELTA,
        "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu, 1),
        "sample_seconds": round(sample_seconds, 2),
        "sample_cpu_seconds": round(sample_cpu, 2),
        "peak_rss_bytes": peak,
        "rss_after_imports_bytes": rss_before,
        "rows_estimate": round(float(model.rows_estimate_), 1),
        "method": method,
        "max_minutes": max_minutes if method == "aim" else None,
        "rounds": getattr(model, "rounds_", None),
        "time_limited": getattr(model, "time_limited_", None),
        "size_capped": getattr(model, "size_capped_", None),
        "measurements": len(model.measurements_),
        "model_size_mb": round(model.model_.size_mb, 3),
        "model_cliques": [list(c) for c in model.model_.potentials],
        "rho": model.rho_,
        "rho_preprocessing": sum(s["rho"] for s in model.spends_ if s["purpose"].startswith("domain of")),
        "cells": {c: d.size for c, d in model.domains_.items()},
    }


def score(path: Path, synthetic_path: Path) -> dict[str, float | None]:
    """2- and 3-way TVD of the synthetic rows against 200,000 rows of the file (after the fit, outside it), on
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--method", choices=("aim", "mst"), default="aim")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="AIM's max_minutes")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/{aim,mst}_10m.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.epsilon, args.method, args.max_minutes)))
        return
    output = args.output or HERE / "results" / f"{args.method}_10m.json"
    path = HERE / "data" / f"nassCDS-{args.rows}-seed0.parquet"
    if not path.exists():
        # counts_parquet.py makes the file; its own measurements go beside it, not over the committed result
        counts = HERE / "data" / f"counts_parquet-{args.rows}.json"
        subprocess.run(
            [sys.executable, str(HERE / "counts_parquet.py"), "--rows", str(args.rows), "--output", str(counts)],
            check=True,
        )
    synthetic_path = path.with_suffix(f".{args.method}-synthetic.parquet")
    environment = {**os.environ, "AIM_10M_SYNTHETIC": str(synthetic_path)}
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(path),
            "--epsilon",
            str(args.epsilon),
            "--method",
            args.method,
            "--max-minutes",
            str(args.max_minutes),
        ],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the {args.method} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_seconds"] = round(wall, 1)
    result["fidelity_vs_200k_real_rows"] = score(path, synthetic_path)
    document = {
        "file": {"path": str(path.relative_to(HERE.parent)), "rows": args.rows, "bytes": path.stat().st_size},
        "pandas_frame_bytes_estimate": pandas_size(path),
        "measured": result,
        "machine": {
            "cores": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    from privsynth.bench.run_info import with_run

    output.write_text(json.dumps(with_run(document), indent=2) + "\n")
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
