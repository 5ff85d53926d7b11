"""Issue #22 item 1: DP preprocessing of tables with many categorical columns and long tails, before and after.

Each cell fits one DP marginal method (MST or AIM, default parameters) on a bundled dataset's train split at one
epsilon (delta 1e-6, no ledger), samples as many rows as the train split with the cell's seed, and scores them with
the bench harness's scorer (``privsynth.evaluate.evaluate`` as ``privsynth.bench.run_bench`` calls it: 1/2/3-way
TVD on 16 quantile bins, TSTR, 80/20 split, evaluation seed 0), plus the 1-way TVD of each column on the same
binning. ``--public`` declares every categorical column's categories public (taken from the train split: what
the peers get for free); otherwise only the label sets the datasets' documentation publishes are public.

"before" runs the same cell against another checkout of privsynth (``--before-src``: its ``src`` folder, e.g. a
``git worktree`` of the commit before the change), in a subprocess with that folder first on ``PYTHONPATH``;
"after" runs against this checkout. Rows are merged into ``benchmarks/results/rare_categories.json`` by (variant,
dataset, method, epsilon, seed, public), with the commit, command, date and package versions under ``run``.

    git worktree add --detach /tmp/before e23113c
    .venv/bin/python benchmarks/rare_categories.py --variants before after --before-src /tmp/before/src
    .venv/bin/python benchmarks/rare_categories.py --datasets covid_testing --public --variants after
    .venv/bin/python benchmarks/rare_categories.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "results" / "rare_categories.json"
DELTA = 1e-6
METRICS = ("fidelity.tvd_1way", "fidelity.tvd_2way", "fidelity.tvd_3way", "utility.tstr")


def cell(dataset: str, method: str, epsilon: float, seed: int, public: bool) -> dict[str, Any]:
    """Fit, sample and score one cell in this process (whichever privsynth is first on the path)."""
    import dataclasses

    import numpy as np

    import privsynth
    from privsynth.data.datasets import bundled_schema, dataset_info, load_dataset
    from privsynth.data.schema import Kind
    from privsynth.evaluate import evaluate
    from privsynth.evaluate.fidelity import marginal_tvd
    from privsynth.evaluate.prepared import prepare
    from privsynth.synth import create

    train, holdout = load_dataset(dataset, "train"), load_dataset(dataset, "holdout")
    info = dataset_info(dataset)
    schema = bundled_schema(dataset, train)
    fit_schema = schema
    if public:
        fit_schema = type(schema)(
            [
                dataclasses.replace(
                    c, categories=sorted(train[c.name].dropna().unique().tolist(), key=str), public=True
                )
                if c.kind is Kind.CATEGORICAL and c.synthesize and not c.public
                else c
                for c in schema
            ],
            target=schema.target,
        )
    model = create(method)
    started = time.perf_counter()
    model.fit(train, fit_schema, epsilon=epsilon, delta=DELTA, ledger=False)
    fit_seconds = time.perf_counter() - started
    synthetic = model.sample(len(train), seed=seed)
    report = evaluate(
        train,
        synthetic,
        holdout=holdout,
        target=info.target,
        sensitive=info.sensitive,
        schema=schema,
        seed=0,
        privacy_budget={"epsilon": epsilon, "delta": DELTA},
    )
    values = report.values()
    data = prepare(train, synthetic, None, None, None, schema)
    rng = np.random.default_rng(0)
    per_column = {
        c.name: round(float(marginal_tvd(data, [(j,)], rng, 1)[0] or 0.0), 4) for j, c in enumerate(data.columns)
    }
    return {
        "privsynth": str(Path(privsynth.__file__).resolve().parents[1]),
        "fit_seconds": round(fit_seconds, 1),
        "metrics": {k: (None if values.get(k) is None else round(float(values[k]), 4)) for k in METRICS},
        "tvd_1way_by_column": dict(sorted(per_column.items(), key=lambda kv: -kv[1])),
        "params": {k: v for k, v in model.get_params().items() if isinstance(v, int | float | str | bool)},
    }


def run_cell(variant: str, before_src: Path | None, args: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    if variant == "before":
        if before_src is None:
            raise SystemExit("--before-src is needed for the 'before' variant")
        env["PYTHONPATH"] = str(before_src)
    out = subprocess.run(
        [sys.executable, __file__, "--cell", *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return {"status": "failed", "error": out.stderr.strip().splitlines()[-1] if out.stderr else "exit"}
    return {"status": "ok", **json.loads(out.stdout.strip().splitlines()[-1])}


def table(rows: list[dict[str, Any]]) -> str:
    import numpy as np

    lines = [
        "| dataset | method | epsilon | public | variant | runs | 1-way | 2-way | 3-way | TSTR |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["dataset"], r["method"], r["epsilon"], r["public"], r["variant"]) for r in rows})
    for dataset, method, epsilon, public, variant in keys:
        ok = [
            r
            for r in rows
            if (r["dataset"], r["method"], r["epsilon"], r["public"], r["variant"])
            == (dataset, method, epsilon, public, variant)
            and r["status"] == "ok"
        ]

        def stat(metric: str, ok: list[dict[str, Any]] = ok) -> str:
            values = [r["metrics"][metric] for r in ok if r["metrics"].get(metric) is not None]
            return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"

        lines.append(
            f"| {dataset} | {method} | {epsilon:g} | {public} | {variant} | {len(ok)} | {stat('fidelity.tvd_1way')} | "
            f"{stat('fidelity.tvd_2way')} | {stat('fidelity.tvd_3way')} | {stat('utility.tstr')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["covid_testing", "nassCDS", "nafld1"])
    parser.add_argument("--methods", nargs="+", default=["mst"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["after"], choices=["before", "after"])
    parser.add_argument("--before-src", type=Path, default=None)
    parser.add_argument("--public", action="store_true", help="declare every categorical domain public")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--redo", action="store_true", help="run cells again that already have a result")
    parser.add_argument("--cell", nargs=5, metavar=("DATASET", "METHOD", "EPSILON", "SEED", "PUBLIC"))
    args = parser.parse_args()
    if args.cell:
        dataset, method, epsilon, seed, public = args.cell
        print(json.dumps(cell(dataset, method, float(epsilon), int(seed), public == "1")))
        return
    result = json.loads(args.output.read_text()) if args.output.exists() else {"runs": [], "rows": []}
    if args.table:
        print(table(result["rows"]))
        return
    from privsynth.bench.run_info import run_metadata

    run = run_metadata(sys.argv)
    if args.before_src is not None:
        before = subprocess.run(
            ["git", "-C", str(args.before_src), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
        run["before_commit"] = before.stdout.strip() or None
    result["runs"].append(run)
    result["run"] = run
    for epsilon in args.epsilons:
        for dataset in args.datasets:
            for method in args.methods:
                for seed in range(args.seeds):
                    for variant in args.variants:
                        key = {
                            "variant": variant,
                            "dataset": dataset,
                            "method": method,
                            "epsilon": epsilon,
                            "seed": seed,
                            "public": args.public,
                        }
                        if (
                            not args.redo
                            and args.output.exists()
                            and any(
                                {k: r.get(k) for k in key} == key and r["status"] == "ok"
                                for r in json.loads(args.output.read_text())["rows"]
                            )
                        ):
                            continue  # finished before: --redo to run it again
                        started = time.perf_counter()
                        row = run_cell(
                            variant,
                            args.before_src,
                            [dataset, method, str(epsilon), str(seed), "1" if args.public else "0"],
                        )
                        row = {**key, **row, "seconds": round(time.perf_counter() - started, 1)}
                        row["commit"] = run.get("before_commit") if variant == "before" else run.get("commit")
                        # read again before writing: another invocation may have added rows meanwhile
                        if args.output.exists():
                            stored = json.loads(args.output.read_text())
                            result["rows"] = stored["rows"]
                            result["runs"] = stored["runs"] + [r for r in result["runs"] if r not in stored["runs"]]
                        result["rows"] = [r for r in result["rows"] if {k: r.get(k) for k in key} != key] + [row]
                        args.output.parent.mkdir(parents=True, exist_ok=True)
                        args.output.write_text(json.dumps(result, indent=1, default=str) + "\n")
                        print(json.dumps({**key, **row.get("metrics", {}), "status": row["status"]}), flush=True)


if __name__ == "__main__":
    main()
