"""Issue #21 item 1: privsynth's PrivBayes beside its MST (run now, same seeds) and the committed MST/AIM rows.

Runs ``privsynth.bench.run_bench`` (the harness behind ``privsynth bench run``: train split, as many synthetic rows,
1/2/3-way TVD, TSTR against the holdout, evaluation seed 0) for ``--methods`` (default privbayes and mst) on
nassCDS, covid_testing and nafld1 at ``--epsilons`` (default 1) with delta 1e-6 and ``--seeds`` seeds (default 1),
into a scratch folder (``--work``, resumable), then writes ``benchmarks/results/privbayes.json``: each run's
metrics, wall and CPU seconds (CPU is the number to compare on a loaded machine), and the committed means of
privsynth MST and AIM at the same epsilon from ``benchmarks/results/bench_issue5`` (3 seeds, an older commit),
with the commit, command, machine and versions under ``run``.

    .venv/bin/python benchmarks/privbayes.py                        # epsilon 1, one seed
    .venv/bin/python benchmarks/privbayes.py --epsilons 0.3 1 3 --seeds 3
    .venv/bin/python benchmarks/privbayes.py --theta-sweep 1 4      # also PrivBayes at each theta (same scorer)
    .venv/bin/python benchmarks/privbayes.py --methods privbayes mst aim dpmm-privbayes --epsilons 0.3 1 3 \
        --peer-datasets nassCDS                                     # peers (dpmm-privbayes) on nassCDS only
    .venv/bin/python benchmarks/privbayes.py --table                # the committed results as Markdown

Without ``--theta-sweep`` the ``theta_sweep`` rows already in ``--output`` are kept, with the run they came from
under ``theta_sweep_run``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "results" / "privbayes.json"
COMMITTED = HERE / "results" / "bench_issue5" / "results.jsonl"
DATASETS = ("nassCDS", "covid_testing", "nafld1")
METRICS = ("fidelity.tvd_2way", "fidelity.tvd_3way", "utility.tstr")
DELTA = 1e-6


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("dataset", "method", "epsilon", "seed", "status", "error", "fit_seconds", "cpu_seconds", "total_seconds")
    details = row.get("details") or {}
    peer = {"library": details["library"], "version": details.get("version")} if "library" in details else {}
    return {**{k: row.get(k) for k in keep}, **peer, **{k: (row.get("metrics") or {}).get(k) for k in METRICS}}


def _committed(epsilons: list[float]) -> list[dict[str, Any]]:
    """Means over seeds of the committed privsynth MST and AIM rows (and the real holdout's floor)."""
    from privsynth.bench.results import REFERENCE_METHOD, read_results

    rows = [r for r in read_results(COMMITTED) if r.get("status") == "ok"]
    out = []
    for dataset in DATASETS:
        for method in ("mst", "aim", REFERENCE_METHOD):
            for epsilon in epsilons if method != REFERENCE_METHOD else [None]:
                runs = [
                    r
                    for r in rows
                    if r["dataset"] == dataset
                    and r["method"] == method
                    and (epsilon is None or r["epsilon"] == epsilon)
                ]
                if runs:
                    out.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "epsilon": epsilon,
                            "runs": len(runs),
                            **{k: statistics.fmean(r["metrics"][k] for r in runs) for k in METRICS},
                            "cpu_seconds": statistics.fmean(r["cpu_seconds"] or 0.0 for r in runs),
                        }
                    )
    return out


def sweep(dataset: str, theta: float, epsilon: float, seed: int) -> dict[str, Any]:
    """PrivBayes at one ``theta`` (the usefulness rule), fitted, sampled and scored as ``run_bench`` does."""
    import time

    from privsynth.data.datasets import bundled_schema, dataset_info, load_dataset
    from privsynth.evaluate import evaluate
    from privsynth.synth import create

    train, holdout = load_dataset(dataset, "train"), load_dataset(dataset, "holdout")
    info, schema = dataset_info(dataset), bundled_schema(dataset, train)
    started = time.process_time()
    model = create("privbayes", theta=theta).fit(train, schema, epsilon=epsilon, delta=DELTA, ledger=False)
    synthetic = model.sample(len(train), seed=seed)
    cpu = time.process_time() - started
    values = evaluate(
        train,
        synthetic,
        holdout=holdout,
        target=info.target,
        sensitive=info.sensitive,
        schema=schema,
        seed=0,
        privacy_budget={"epsilon": epsilon, "delta": DELTA},
    ).values()
    return {
        "dataset": dataset,
        "theta": theta,
        "epsilon": epsilon,
        "seed": seed,
        "cpu_seconds": round(cpu, 1),
        **{k: values.get(k) for k in METRICS},
        "network": [[x, list(p)] for x, p in model.network_],  # type: ignore[attr-defined]
    }


def table(document: dict[str, Any]) -> str:
    lines = ["| dataset | epsilon | method | 2-way TVD | 3-way TVD | TSTR | CPU s |", "|---|---|---|---|---|---|---|"]

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for dataset in DATASETS:
        for r in [r for r in document["runs"] if r["dataset"] == dataset]:
            lines.append(
                f"| {dataset} | {r['epsilon']:g} | {r['method']} (now, seed {r['seed']}) | "
                + " | ".join(f(r[k]) for k in METRICS)
                + f" | {r['cpu_seconds'] or 0:.1f} |"
            )
        for r in [r for r in document["committed"] if r["dataset"] == dataset]:
            epsilon = "-" if r["epsilon"] is None else f"{r['epsilon']:g}"
            lines.append(
                f"| {dataset} | {epsilon} | {r['method']} (committed, {r['runs']} runs) | "
                + " | ".join(f(r[k]) for k in METRICS)
                + f" | {r['cpu_seconds']:.1f} |"
            )
    for r in document.get("theta_sweep", []):
        lines.append(
            f"| {r['dataset']} | {r['epsilon']:g} | privbayes theta={r['theta']:g} (seed {r['seed']}) | "
            + " | ".join(f(r[k]) for k in METRICS)
            + f" | {r['cpu_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["privbayes", "mst"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--peer-datasets", nargs="+", help="datasets the peer methods run on (default: all)")
    parser.add_argument("--rerun", nargs="*", default=[], help="methods whose finished runs are done again")
    parser.add_argument("--theta-sweep", nargs="*", type=float, default=[], help="PrivBayes thetas to compare")
    parser.add_argument("--work", type=Path, default=Path("/tmp/privbayes_bench"))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--table", action="store_true", help="print the results file as a Markdown table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.output.read_text())))
        return
    from privsynth.bench import peers
    from privsynth.bench.harness import run_bench
    from privsynth.bench.run_info import with_run

    rows: list[dict[str, Any]] = []
    for dataset in args.datasets:  # dataset by dataset, so a stopped run keeps what finished
        wanted = args.peer_datasets is None or dataset in args.peer_datasets
        methods = [m for m in args.methods if wanted or not peers.is_peer(m)]
        rows = run_bench(
            [dataset],
            methods,
            epsilons=args.epsilons,
            seeds=args.seeds,
            out_dir=args.work,
            delta=DELTA,
            resume=True,
            rerun=args.rerun,
        )
    document: dict[str, Any] = {
        "description": "PrivBayes (#21) beside privsynth MST/AIM and peers run now, and the committed MST/AIM means "
        "(bench_issue5)",
        "delta": DELTA,
        "runs": [_summary(r) for r in rows if r["method"] in args.methods],
        "committed": _committed(args.epsilons),
        "theta_sweep": [
            sweep(dataset, theta, epsilon, 0)
            for dataset in args.datasets
            for epsilon in args.epsilons
            for theta in args.theta_sweep
        ],
    }
    if not args.theta_sweep and args.output.exists():  # keep an earlier sweep, saying which run made it
        earlier = json.loads(args.output.read_text())
        if earlier.get("theta_sweep"):
            document["theta_sweep"] = earlier["theta_sweep"]
            document["theta_sweep_run"] = earlier.get("theta_sweep_run") or {
                k: earlier.get("run", {}).get(k) for k in ("commit", "dirty", "command", "date")
            }
    args.output.write_text(json.dumps(with_run(document, sys.argv), indent=2) + "\n", encoding="utf-8")
    print(table(document))


if __name__ == "__main__":
    main()
