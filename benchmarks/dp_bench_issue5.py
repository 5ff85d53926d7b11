"""Issue #5's benchmark: privsynth's MST and AIM beside smartnoise-synth's and OpenDP's, in one results folder.

Runs ``privsynth.bench.run_bench`` (the harness behind ``privsynth bench run``) over the bundled datasets at
epsilon 0.3, 1 and 3 with delta 1e-6, one cell at a time in the order given by ``--plan``: by default every method
at epsilon 1 first (dataset by dataset), then epsilon 0.3 and 3, so a stopped run has the most useful cells.
Each finished cell is appended to ``benchmarks/results/bench_issue5/results.jsonl`` at once; running the script
again resumes (finished cells are skipped; ``--rerun aim`` redoes one method's cells after a change to it).
Wall time and CPU time (this process and its peer subprocesses) are recorded per cell.

privsynth's methods run ``--seeds`` times per cell (default 3), the peers ``--peer-seeds`` times (default 1, they
take 10-40 minutes a run); peer runs stop after ``--timeout`` seconds (2,400 in the committed rows). The defaults
reproduce the committed ``results.jsonl`` (``benchmarks/bench_issue5.sh`` runs them in order).

The DP bounds of privsynth's preprocessing are learned with the hierarchical pooling of
``privsynth.synth.bounds`` (``benchmarks/patches/domain_pooled_weights.diff``, applied in 6c6e695): with the earlier
rule, a column whose values all sit in one grid cell (nassCDS ``yearacc``) got bounds of 256 to 65,536 in about
40% of runs. The cells run before that commit applied the same change in-process. The peers are given their
bounds and bins for free.

    .venv/bin/python benchmarks/dp_bench_issue5.py                      # everything, resumable
    .venv/bin/python benchmarks/dp_bench_issue5.py --epsilons 1         # only epsilon 1
    .venv/bin/python benchmarks/dp_bench_issue5.py --rerun aim          # redo privsynth AIM's cells
    .venv/bin/python benchmarks/dp_bench_issue5.py --table              # the results as a Markdown table
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "results" / "bench_issue5"
DATASETS = ("nassCDS", "covid_testing", "nafld1")
METHODS = ("mst", "aim", "smartnoise-mst", "opendp-mst", "opendp-aim", "smartnoise-aim")
EPSILONS = (1.0, 0.3, 3.0)
DELTA = 1e-6


def table(folder: Path) -> str:
    """The results as a Markdown table: dataset by epsilon, one line per method (the mean over its seeds, with
    the spread when there are several), the real holdout last."""
    import numpy as np

    from privsynth.bench.results import REFERENCE_METHOD, read_results

    rows = read_results(folder / "results.jsonl")
    lines = [
        "| dataset | epsilon | method | runs | 2-way TVD | 3-way TVD | TSTR | fit s | CPU s (fit + sample) | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def stat(runs: list[dict], key: str, digits: str = ".3f") -> str:
        values = [r["metrics"].get(key) if key.count(".") else r.get(key) for r in runs]
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        mean = format(float(np.mean(values)), digits)
        return mean if len(values) == 1 or digits != ".3f" else f"{mean} ± {np.std(values):.3f}"

    order = {m: i for i, m in enumerate(METHODS)}
    for dataset in DATASETS:
        for epsilon in sorted({r["epsilon"] for r in rows if r["epsilon"] is not None}):
            cell = [r for r in rows if r["dataset"] == dataset and r["epsilon"] == epsilon]
            for method in sorted({r["method"] for r in cell}, key=lambda m: order.get(m, len(order))):
                runs = [r for r in cell if r["method"] == method]
                ok = [r for r in runs if r["status"] == "ok"]
                failed = [r for r in runs if r["status"] != "ok"]
                status = "ok" if not failed else f"{len(failed)} failed: " + str(failed[0]["error"])[:60]
                lines.append(
                    f"| {dataset} | {epsilon:g} | {method} | {len(ok)} | {stat(ok, 'fidelity.tvd_2way')} | "
                    f"{stat(ok, 'fidelity.tvd_3way')} | {stat(ok, 'utility.tstr')} | "
                    f"{stat(ok, 'fit_seconds', '.0f')} | {stat(ok, 'cpu_seconds', '.0f')} | {status} |"
                )
        for row in rows:
            if row["dataset"] == dataset and row["method"] == REFERENCE_METHOD:
                lines.append(
                    f"| {dataset} | - | real holdout (floor) | 1 | {stat([row], 'fidelity.tvd_2way')} | "
                    f"{stat([row], 'fidelity.tvd_3way')} | {stat([row], 'utility.tstr')} (TRTR) | - | - | |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    parser.add_argument("--rerun", nargs="*", default=[], help="methods whose finished cells are done again")
    parser.add_argument("--seeds", type=int, default=3, help="runs of privsynth's methods per cell (seeds 0..N-1)")
    parser.add_argument("--peer-seeds", type=int, default=1, help="runs of each peer per cell (seeds 0..N-1)")
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds before a peer run is stopped")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--table", action="store_true", help="print the results as a Markdown table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(args.output))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from privsynth.bench.harness import run_bench
    from privsynth.bench.peers import is_peer

    groups = [
        (methods, seeds)
        for methods, seeds in (
            ([m for m in args.methods if not is_peer(m)], args.seeds),
            ([m for m in args.methods if is_peer(m)], args.peer_seeds),
        )
        if methods
    ]
    # Epsilon by epsilon, dataset by dataset: every method of a cell (privsynth's first) before the next cell.
    for epsilon in args.epsilons:
        for dataset in args.datasets:
            for methods, seeds in groups:
                run_bench(
                    [dataset],
                    methods,
                    epsilons=[epsilon],
                    seeds=seeds,
                    out_dir=args.output,
                    delta=DELTA,
                    resume=True,
                    timeout=args.timeout,
                    rerun=[m for m in args.rerun if m in methods],
                )


if __name__ == "__main__":
    main()
