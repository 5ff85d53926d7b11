"""The collapse lab on nassCDS: each method fitted generation after generation, in replace and accumulate mode.

For every run, ``privsynth.bench.collapse.run_collapse`` writes ``collapse-nassCDS-<method>-<mode>.json``
(numbers per generation, with the resampling baseline) into ``benchmarks/results/collapse/``; this script draws
one figure per method with both modes on the same axes (``collapse-nassCDS-<method>.png``) and writes
``summary.json`` (first and last generation of every run, and the machine's load). A run with ``--rows`` smaller
than the real data (``--small-rows``, default 1,000) shows how the sample size drives the drift.

    .venv/bin/python benchmarks/collapse_nasscds.py                                   # copula, 10 generations
    .venv/bin/python benchmarks/collapse_nasscds.py --method deep --generations 4 --param epochs=10 \\
        --real-rows 5000 --small-rows 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "collapse"
SUMMARY_KEYS = (
    "tvd_1way",
    "tvd_2way",
    "tvd_1way_worst",
    "tail_lower",
    "tail_upper",
    "quantile_span",
    "range_span",
    "rare_1way_survival",
    "rare_1way_mass",
    "rare_2way_survival",
    "rare_2way_mass",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="copula")
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE hyperparameter; repeatable")
    parser.add_argument("--small-rows", type=int, default=1000, help="rows per generation of the small run; 0: none")
    parser.add_argument("--real-rows", type=int, default=0, help="use a random sample of this many real rows")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder (default: benchmarks/results/collapse)")
    args = parser.parse_args()
    folder: Path = args.output

    from privsynth.bench.collapse import plot_collapse, run_collapse
    from privsynth.bench.run_info import run_metadata, with_run
    from privsynth.data.datasets import load_dataset
    from privsynth.provenance.card import plain

    real: Any = "nassCDS"
    name = "nassCDS"
    if args.real_rows:
        real = load_dataset("nassCDS").sample(args.real_rows, random_state=args.seed).reset_index(drop=True)
        name = f"nassCDS-{args.real_rows}"

    params = {key: _number(value) for key, _, value in (p.partition("=") for p in args.param)}
    folder.mkdir(parents=True, exist_ok=True)
    summary_path = folder / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {"runs": {}}
    runs: list[tuple[str, int | None]] = [("full", None)]
    if args.small_rows:
        runs.append((f"{args.small_rows}-rows", args.small_rows))
    for label, rows in runs:
        results = []
        for mode in ("replace", "accumulate"):
            started = time.perf_counter()
            out_dir = folder if rows is None else folder / label
            result = run_collapse(
                real,
                args.method,
                args.generations,
                mode,  # type: ignore[arg-type]
                args.seed,
                out_dir,
                rows=rows,
                params=params,
                name=name,
                overwrite=True,
            )
            results.append(result)
            first, last = result.generations[0], result.generations[-1]
            summary["runs"][f"{name} {args.method} {mode} {label}"] = {
                "rows_per_generation": result.rows,
                "generations": len(result.generations),
                "params": params,
                "seconds": round(time.perf_counter() - started, 1),
                "baseline": {k: getattr(result.baseline, k) for k in SUMMARY_KEYS},
                "first": {k: getattr(first, k) for k in SUMMARY_KEYS},
                "last": {k: getattr(last, k) for k in SUMMARY_KEYS},
                "file": str(result.files[0].relative_to(folder)),
                "run": run_metadata(),
            }
            for path in result.files:  # each run's own file says how it was made too
                if path.suffix == ".json":
                    path.write_text(json.dumps(with_run(json.loads(path.read_text())), indent=2) + "\n")
            print(f"{args.method} {mode} {label}: {result.seconds:.0f} s", flush=True)
        suffix = "" if rows is None else f"-{label}"
        plot_collapse(results, folder / f"collapse-{name}-{args.method}{suffix}.png")
        for result in results:  # the figure above shows both modes; keep only the numbers of each run
            for path in result.files:
                if path.suffix == ".png":
                    path.unlink()
    summary["machine"] = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version()}
    summary_path.write_text(json.dumps(plain(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _number(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


if __name__ == "__main__":
    main()
