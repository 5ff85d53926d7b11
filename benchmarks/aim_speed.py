"""Issue #22 items 2 and 3: AIM's time on nassCDS and on two wide tables (loans, 55 columns; ames, 74), beside MST.

Each run fits one method on a bundled dataset's train split (epsilon 1, delta 1e-6, no ledger, nothing declared
public but the dataset's documented label set), samples as many rows and scores 1/2/3-way TVD against the train
split the way ``privsynth evaluate`` does (categories as they are, numbers in 16 quantile bins of the real data;
at most 1,000 triples, seeded). Wall and CPU seconds are of the fit alone; the machine is shared, so CPU time
(this process, all threads) is what to compare. Results are written after every run to
``benchmarks/results/aim_speed.json`` (a ``run`` key with the commit, command, date and package versions;
``runs`` one entry per fit); running again appends, skipping (dataset, method, seed) already there.

    .venv/bin/python benchmarks/aim_speed.py                                   # nassCDS, loans, ames; MST, AIM
    .venv/bin/python benchmarks/aim_speed.py --datasets nassCDS --methods aim --seeds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from privsynth import load_dataset
from privsynth.bench.run_info import run_metadata
from privsynth.data.datasets import bundled_schema
from privsynth.evaluate.fidelity import column_subsets, marginal_tvd
from privsynth.evaluate.prepared import prepare
from privsynth.synth import create

OUTPUT = Path(__file__).resolve().parent / "results" / "aim_speed.json"
BEFORE = {
    "note": "before this change (commit e23113c), from issue #22 and docs/STATUS.md",
    "nassCDS aim": {"wall_s": 189, "cpu_s": 173, "tvd_3way": 0.049, "xla_compile_share": 0.9},
    "loans aim": {"wall_s": 1800, "tvd_3way": 0.47, "note": "about 30 minutes, other jobs on the machine"},
    "loans mst": {"wall_s": 120, "tvd_3way": 0.46},
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tvds(real: Any, synthetic: Any, schema: Any) -> dict[str, float | None]:
    data = prepare(real, synthetic, None, None, None, schema)
    rng = np.random.default_rng(0)
    out = {}
    for k in (1, 2, 3):
        combos = column_subsets(len(data.columns), k, 1000 if k == 3 else None, rng)
        out[f"tvd_{k}way"] = marginal_tvd(data, combos, rng, 2)[0]
    return out


def run_one(dataset: str, method: str, seed: int, epsilon: float) -> dict[str, Any]:
    train = load_dataset(dataset, "train")
    schema = bundled_schema(dataset, train)
    synthesizer = create(method)
    cpu, wall = cpu_seconds(), time.perf_counter()
    synthesizer.fit(train, schema, epsilon=epsilon, delta=1e-6, ledger=False)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    synthetic = synthesizer.sample(len(train), seed=seed)
    spent = sum(s["rho"] for s in synthesizer.spends_)  # type: ignore[attr-defined]
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "epsilon": epsilon,
        "columns": train.shape[1],
        "rows": len(train),
        "fit_wall_s": round(wall, 1),
        "fit_cpu_s": round(cpu, 1),
        "rounds": getattr(synthesizer, "rounds_", None),
        "measurements": len(synthesizer.measurements_),  # type: ignore[attr-defined]
        "model_mb": round(synthesizer.model_.size_mb, 3),  # type: ignore[attr-defined]
        "rho": synthesizer.rho_,  # type: ignore[attr-defined]
        "rho_spent": spent,
        **{k: None if v is None else round(v, 4) for k, v in tvds(train, synthetic, schema).items()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def engine_costs() -> dict[str, Any]:
    """CPU seconds of the numpy descent and of mbi's compiled steps on two made-up models (random noisy
    marginals; only the structure matters for time): a small one like AIM's on nassCDS and one of 1.5 MB. The
    compiled engine's first call includes compiling its program."""
    from privsynth.synth import _pgm

    rng = np.random.default_rng(0)
    models = {}
    small = [f"s{i}" for i in range(14)]
    models["small (14 columns, 1,4xx cells)"] = (
        {c: int(n) for c, n in zip(small, rng.integers(2, 12, 14), strict=True)},
        [(c,) for c in small] + [(small[i], small[i + 1], small[i + 2]) for i in range(0, 12, 2)],
    )
    big = [f"b{i}" for i in range(8)]
    models["1.5 MB (8 columns of 40 cells, 3-way cliques)"] = (
        dict.fromkeys(big, 40),
        [(c,) for c in big] + [(big[i], big[i + 1], big[i + 2]) for i in range(0, 6, 2)] + [(big[6], big[7])],
    )
    out: dict[str, Any] = {}
    cap = _pgm.NUMPY_MAX_MB
    try:
        for label, (domain, cliques) in models.items():
            measurements = [
                _pgm.NoisyMarginal(c, rng.random(int(np.prod([domain[a] for a in c]))) * 10, 5.0) for c in cliques
            ]
            row: dict[str, Any] = {"model_mb": round(_pgm.model_size_mb(domain, cliques), 4)}
            for engine, limit in (("numpy", float("inf")), ("jax", -1.0)):
                _pgm.NUMPY_MAX_MB = limit
                for steps in (100, 1000):
                    start = cpu_seconds()
                    _pgm.estimate(domain, measurements, 1e5, iters=steps)
                    row[f"{engine}_{steps}_steps_cpu_s"] = round(cpu_seconds() - start, 2)
            out[label] = row
    finally:
        _pgm.NUMPY_MAX_MB = cap
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["nassCDS", "loans", "ames"])
    parser.add_argument("--methods", nargs="+", default=["mst", "aim"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--engine", action="store_true", help="also time the numpy and compiled descents")
    args = parser.parse_args()
    result: dict[str, Any] = json.loads(args.output.read_text()) if args.output.exists() else {"runs": []}
    result["run"] = run_metadata()
    result["before"] = BEFORE
    if args.engine:
        result["engine"] = engine_costs()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    done = {(r["dataset"], r["method"], r["seed"], r["epsilon"]) for r in result["runs"]}
    for seed in range(args.seeds):
        for dataset in args.datasets:
            for method in args.methods:
                if (dataset, method, seed, args.epsilon) in done:
                    continue
                row = run_one(dataset, method, seed, args.epsilon)
                row["commit"] = result["run"].get("commit")
                result["runs"].append(row)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(json.dumps(result, indent=2) + "\n")
                print(json.dumps(row))


if __name__ == "__main__":
    main()
