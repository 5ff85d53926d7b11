"""privsynth's MST and AIM on the bundled datasets at epsilon 0.3, 1 and 3 (delta 1e-6): fidelity, utility, cost.

Each run fits a method on a dataset's train split with the schema ``Schema.infer`` proposes (no domain is public,
so bins and categories are learned under DP from 10% of the budget; with ``--domains public`` the train split's
categories and bounds are declared public and numbers binned uniformly inside them, for free, which is what the
peers are given), samples as many rows as the train split, and
scores them with :func:`privsynth.evaluate.evaluate` against the train split with the fixed holdout, the dataset's
target and sensitive column (``fidelity.tvd_2way``, ``fidelity.tvd_3way``, ``utility.tstr``). Every run is a
fresh Python process, so its fit time includes JAX's compilations and its peak resident memory (``VmHWM``,
measured before evaluation starts) is the fit's own. DP noise is not seeded (OpenDP's secure samplers), so each
run is one draw. Peers (smartnoise-synth, OpenDP's ``dp.mbi``) are run by the bench harness
(:mod:`privsynth.bench`) in their own environments; this script records privsynth's own numbers.

    .venv/bin/python benchmarks/dp_marginal.py                       # -> benchmarks/results/dp_marginal.json
    .venv/bin/python benchmarks/dp_marginal.py --domains public     # -> benchmarks/results/dp_marginal_public.json
    .venv/bin/python benchmarks/dp_marginal.py --methods mst --epsilons 1 --output /tmp/mst.json
    .venv/bin/python benchmarks/dp_marginal.py --big                 # AIM at epsilon 1 on the 10M-row Parquet
                                                                     # -> benchmarks/results/dp_marginal_10m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASETS = ("nassCDS", "covid_testing", "nafld1")
METHODS = ("mst", "aim")
EPSILONS = (0.3, 1.0, 3.0)
DELTA = 1e-6
BIG = HERE / "data" / "nassCDS-10000000-seed0.parquet"
METRICS = ("fidelity.tvd_1way", "fidelity.tvd_2way", "fidelity.tvd_3way", "utility.tstr", "utility.trtr")


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(method: str, dataset: str, epsilon: float, evaluate_rows: bool, domains: str) -> dict[str, Any]:
    """One run in this (fresh) process."""
    import dataclasses

    from privsynth.data.datasets import dataset_info, load_dataset
    from privsynth.data.schema import Schema
    from privsynth.evaluate import evaluate
    from privsynth.synth import create
    from privsynth.synth import marginal as _marginal  # noqa: F401  (JAX and mbi imported before the clock starts)

    if dataset == "big":
        from privsynth.data.sources import load_source

        source = load_source(BIG)
        schema = Schema.infer(source.head(100_000)).synthesized()
        train: Any = BIG
        info = None
    else:
        train = load_dataset(dataset)
        schema = Schema.infer(train).synthesized()
        info = dataset_info(dataset)
    options: dict[str, Any] = {}
    if domains == "public":
        # What the peers are given: the train split's categories and bounds as public, uniform bins inside them.
        schema = Schema([dataclasses.replace(c, public=True) for c in schema])
        options["numeric_bins"] = "uniform"
    rss_before = _status("VmRSS")
    start = time.perf_counter()
    model = create(method, **options).fit(train, schema, epsilon=epsilon, delta=DELTA)
    fit_seconds = time.perf_counter() - start
    rows = 20_974 if dataset == "big" else len(train)
    start = time.perf_counter()
    synthetic = model.sample(rows, seed=0)
    sample_seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    result: dict[str, Any] = {
        "method": method,
        "dataset": dataset,
        "epsilon": epsilon,
        "delta": DELTA,
        "domains": domains,
        "fit_seconds": round(fit_seconds, 2),
        "sample_seconds": round(sample_seconds, 3),
        "peak_rss_bytes": peak,
        "rss_after_imports_bytes": rss_before,
        "rows_estimate": round(float(model.rows_estimate_), 1),
        "rho": model.rho_,
        "rho_spent": float(sum((Fraction(s["rho"]) for s in model.spends_), Fraction(0))),  # exact sum
        "rho_preprocessing": sum(s["rho"] for s in model.spends_ if s["purpose"].startswith("domain of")),
        "measurements": len(model.measurements_),
        "model_cliques": [list(c) for c in model.model_.potentials],
        "model_size_mb": round(model.model_.size_mb, 4),
        "cells": {c: d.size for c, d in model.domains_.items()},
    }
    if method == "aim":
        result["rounds"] = model.rounds_
        result["size_capped"] = model.size_capped_
    if evaluate_rows and info is not None:
        holdout = load_dataset(dataset, "holdout")
        report = json.loads(
            evaluate(train, synthetic, holdout=holdout, target=info.target, sensitive=info.sensitive).to_json()
        )
        result["metrics"] = {key: _metric(report, key) for key in METRICS}
    return result


def _metric(report: dict[str, Any], key: str) -> float | None:
    section, name = key.split(".")
    value = report.get(section, {}).get(name, {}).get("value")
    return None if value is None else float(value)


def run(method: str, dataset: str, epsilon: float, domains: str, evaluate_rows: bool = True) -> dict[str, Any]:
    """One run in a fresh process; a failure is recorded with its error."""
    command = [sys.executable, __file__, "--child", method, dataset, str(epsilon), "--domains", domains]
    if not evaluate_rows:
        command.append("--no-evaluate")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"method": method, "dataset": dataset, "epsilon": epsilon, "error": "\n".join(tail)}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    from privsynth import __version__

    return {
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "privsynth": __version__,
        "jax": version("jax"),
        "mbi": version("mbi"),
        "opendp": version("opendp"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "DATASET", "EPSILON"), help=argparse.SUPPRESS)
    parser.add_argument("--no-evaluate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    parser.add_argument("--big", action="store_true", help="AIM at epsilon 1 on the 10M-row Parquet file instead")
    parser.add_argument(
        "--domains",
        choices=("dp", "public"),
        default="dp",
        help="dp: learn bins and categories under DP (default); public: take them from the train split for free, "
        "as the peers are given them",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.child:
        method, dataset, epsilon = args.child
        print(json.dumps(child(method, dataset, float(epsilon), not args.no_evaluate, args.domains)))
        return
    if args.big:
        if not BIG.exists():
            sys.exit(f"{BIG} is missing: make it with `python benchmarks/counts_parquet.py` first")
        plan = [("aim", "big", 1.0)]
        output = args.output or HERE / "results" / "dp_marginal_10m.json"
    else:
        plan = [(m, d, e) for d in args.datasets for e in args.epsilons for m in args.methods]
        name = "dp_marginal.json" if args.domains == "dp" else "dp_marginal_public.json"
        output = args.output or HERE / "results" / name
    runs = []
    for number, (method, dataset, epsilon) in enumerate(plan, start=1):
        print(f"[{number}/{len(plan)}] {method} {dataset} epsilon={epsilon}", file=sys.stderr, flush=True)
        result = run(method, dataset, epsilon, args.domains, evaluate_rows=not args.big)
        print(json.dumps(result)[:400], file=sys.stderr, flush=True)
        runs.append(result)
        output.parent.mkdir(parents=True, exist_ok=True)
        from privsynth.bench.run_info import with_run

        output.write_text(json.dumps(with_run(_document(runs, args.big, args.domains)), indent=2) + "\n")
    print(f"wrote {output}", file=sys.stderr)


def _document(runs: list[dict[str, Any]], big: bool, domains: str) -> dict[str, Any]:
    schema = {
        "dp": "Schema.infer(train): no public domains; 10% of rho learns bins and categories under DP",
        "public": "Schema.infer(train) with every domain declared public (as peers get them); uniform bins, free",
    }[domains]
    return {
        "benchmark": "privsynth MST and AIM (mbi 2 / Private-PGM)",
        "command": "python benchmarks/dp_marginal.py" + (" --big" if big else "") + f" --domains {domains}",
        "schema": schema,
        "delta": DELTA,
        "data": str(BIG.relative_to(HERE.parent)) if big else list(DATASETS),
        "runs": runs,
        "machine": machine(),
    }


if __name__ == "__main__":
    main()
