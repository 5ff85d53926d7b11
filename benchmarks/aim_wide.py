"""Issue #22 item 2 (wide tables): AIM against MST on the wide tables and the three usual ones, before and after.

Each cell fits one method (default parameters, epsilon 1 unless told, delta 1e-6, no ledger, nothing declared
public but the dataset's documented label sets) on a bundled dataset's train split in a fresh process, samples as
many rows with the cell's seed and scores 1/2/3-way TVD against the train split as ``benchmarks/aim_speed.py``
does (categories as they are, numbers in 16 quantile bins of the real data, at most 1,000 triples, seeded), so
the numbers compare with ``results/aim_speed.json``. CPU seconds are the fit's (``time.process_time``, all
threads); the machine is shared, so they, not wall seconds, are the comparable figure (the load average is
recorded beside them). The fit's noise is not seeded (OpenDP draws it), so the seed names a repetition.

``--src`` runs the cells against another checkout's ``src`` folder (e.g. a ``git worktree`` of the commit before
the change, or a copy of a variant being tried), in a subprocess with that folder first on ``PYTHONPATH``; without
it, against this checkout. ``--label`` names the code state (default: its commit, "+ changes" when the checkout
differs from it). Rows are merged into ``benchmarks/results/aim_wide.json`` by (label, dataset, method, options,
epsilon, seed), each with its commit, and each invocation's commit, command, date and package versions under
``runs``.

    git worktree add --detach /tmp/aim-base HEAD
    .venv/bin/python benchmarks/aim_wide.py --src /tmp/aim-base/src --methods aim    # the committed AIM
    .venv/bin/python benchmarks/aim_wide.py                                           # AIM and MST here
    .venv/bin/python benchmarks/aim_wide.py --datasets loans --methods aim --seeds 3
    .venv/bin/python benchmarks/aim_wide.py --table
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
OUTPUT = HERE / "results" / "aim_wide.json"
DELTA = 1e-6
DATASETS = ["loans", "ames", "nassCDS", "covid_testing", "nafld1"]


def score(real: Any, synthetic: Any, schema: Any) -> dict[str, float | None]:
    """1/2/3-way TVD of ``synthetic`` against ``real`` as ``benchmarks/aim_speed.py`` scores them (categories as
    they are, numbers in 16 quantile bins of ``real``, every column and pair, at most 1,000 triples, seeded)."""
    import numpy as np

    from privsynth.evaluate.fidelity import column_subsets, marginal_tvd
    from privsynth.evaluate.prepared import prepare

    data = prepare(real, synthetic, None, None, None, schema)
    rng = np.random.default_rng(0)
    tvd = {}
    for k in (1, 2, 3):
        combos = column_subsets(len(data.columns), k, 1000 if k == 3 else None, rng)
        value = marginal_tvd(data, combos, rng, 2)[0]
        tvd[f"tvd_{k}way"] = None if value is None else round(float(value), 4)
    return tvd


def split_halves(dataset: str, seed: int) -> tuple[Any, Any, Any, Any]:
    """The dataset's train split, its bundled schema, and two disjoint random halves of it (``seed``)."""
    import numpy as np

    from privsynth.data.datasets import bundled_schema, load_dataset

    train = load_dataset(dataset, "train")
    schema = bundled_schema(dataset, train)
    order = np.random.default_rng(seed).permutation(len(train))
    half = len(train) // 2
    first = train.iloc[order[:half]].reset_index(drop=True)
    second = train.iloc[order[half : 2 * half]].reset_index(drop=True)
    return train, schema, first, second


def real_halves(dataset: str, seed: int) -> dict[str, Any]:
    """The floor: train split at random (``seed``) into two disjoint halves, the second scored against the first
    as if it were synthetic. Both halves have half the rows a synthetic cell has, so this floor is the metrics'
    sampling noise at n/2 rows, a little above what two samples of n rows would show."""
    import privsynth

    train, schema, first, second = split_halves(dataset, seed)
    half = len(first)
    return {
        "privsynth": str(Path(privsynth.__file__).resolve().parents[1]),
        "columns": train.shape[1],
        "rows": half,
        "load_after": round(os.getloadavg()[0], 1),
        **score(first, second, schema),
    }


def cell(dataset: str, method: str, epsilon: float, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """Fit, sample and score one cell in this process (whichever privsynth is first on the path)."""
    import privsynth
    from privsynth.data.datasets import bundled_schema, load_dataset
    from privsynth.synth import create

    train = load_dataset(dataset, "train")
    schema = bundled_schema(dataset, train)
    model = create(method, **options)
    cpu, wall = time.process_time(), time.perf_counter()
    model.fit(train, schema, epsilon=epsilon, delta=DELTA, ledger=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    synthetic = model.sample(len(train), seed=seed)
    tvd = score(train, synthetic, schema)
    purposes = [s["purpose"] for s in model.spends_]  # type: ignore[attr-defined]
    return {
        "privsynth": str(Path(privsynth.__file__).resolve().parents[1]),
        "columns": train.shape[1],
        "rows": len(train),
        "fit_cpu_s": round(cpu, 1),
        "fit_wall_s": round(wall, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "rounds": getattr(model, "rounds_", None),
        "tree_edges": sum(p.startswith("select edge") for p in purposes),
        "measurements": len(model.measurements_),  # type: ignore[attr-defined]
        "model_mb": round(model.model_.size_mb, 3),  # type: ignore[attr-defined]
        "rho": model.rho_,  # type: ignore[attr-defined]
        "rho_spent": sum(s["rho"] for s in model.spends_),  # type: ignore[attr-defined]
        **tvd,
    }


def run_cell(src: Path | None, args: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, __file__, "--cell", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {
            "status": "failed",
            "error": out.stderr.strip().splitlines()[-1] if out.stderr else "exit",
        }
    return {
        "status": "ok",
        "load_before": round(load, 1),
        **json.loads(out.stdout.strip().splitlines()[-1]),
    }


def commit_of(src: Path) -> tuple[str | None, bool]:
    """The commit of the checkout holding ``src``, and whether its ``src`` differs from it."""
    out = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return None, True  # not a checkout: a copy of a variant
    diff = subprocess.run(["git", "-C", str(src), "diff", "--quiet", "HEAD", "--", "."], check=False)
    return out.stdout.strip() or None, diff.returncode != 0


def table(rows: list[dict[str, Any]]) -> str:
    import numpy as np

    lines = [
        "| dataset | method | label | options | runs | 1-way | 2-way | 3-way | CPU s | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def key(r: dict[str, Any]) -> tuple[str, str, str, str]:
        return (r["dataset"], r["method"], r["label"], json.dumps(r.get("options", {})))

    for dataset, method, label, options in sorted({key(r) for r in rows}):
        ok = [r for r in rows if key(r) == (dataset, method, label, options) and r["status"] == "ok"]

        def stat(metric: str, ok: list[dict[str, Any]] = ok, digits: int = 3) -> str:
            values = [r[metric] for r in ok if r.get(metric) is not None]
            if not values:
                return "-"
            return f"{np.mean(values):.{digits}f}" + (f" ± {np.std(values):.{digits}f}" if len(values) > 1 else "")

        rounds = stat("rounds", digits=0) if method == "aim" else "-"
        lines.append(
            f"| {dataset} | {method} | {label} | {options} | {len(ok)} | {stat('tvd_1way')} | {stat('tvd_2way')} "
            f"| {stat('tvd_3way')} | {stat('fit_cpu_s', digits=0)} | {rounds} |"
        )
    return "\n".join(lines)


GRID = HERE / "results" / "dp_floor_grid.md"
FLOOR = "real-halves"


def _stat(values: list[float], digits: int = 3) -> str:
    import numpy as np

    if not values:
        return "-"
    text = f"{np.mean(values):.{digits}f}"
    return text + (f" ± {np.std(values):.{digits}f}" if len(values) > 1 else "")


def grid_markdown(result: dict[str, Any], label: str, source: Path = OUTPUT, seeds: int = 3) -> str:
    """The issue #22 grid of the rows labelled ``label``: one table per epsilon, a row per dataset, AIM's and MST's
    1/2/3-way TVD (mean ± population sd over the seeds) and fit CPU seconds beside the real-halves floor (the rows
    of ``--floor`` under the same label), with the commit, commands, dates, versions and load averages."""
    import shlex

    shown_source = source.relative_to(HERE.parent) if source.is_relative_to(HERE.parent) else source
    rows = [r for r in result["rows"] if r.get("label") == label]
    if not rows:
        raise SystemExit(f"no rows labelled {label!r} in the result file; run the grid with --label {label} first")
    ok = [r for r in rows if r["status"] == "ok"]
    runs = [run for run in result["runs"] if label in shlex.split(run.get("command", ""))]
    commits = sorted({str(r.get("commit")) for r in rows})
    dirty = any(r.get("dirty") for r in rows)
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    datasets += sorted({r["dataset"] for r in rows} - set(datasets))
    epsilons = sorted({r["epsilon"] for r in rows if r["method"] != FLOOR})
    loads = [r[k] for r in ok for k in ("load_before", "load_after") if r.get(k) is not None]
    finished = sorted(r["finished_at"] for r in rows)
    packages = runs[0]["packages"] if runs else {}
    if any(run["packages"] != packages for run in runs):
        packages = {**packages, "note": "package versions differ between runs; see aim_wide.json"}

    def pick(dataset: str, method: str, epsilon: float | None) -> list[dict[str, Any]]:
        return [r for r in ok if r["dataset"] == dataset and r["method"] == method and r["epsilon"] == epsilon]

    def cells(chosen: list[dict[str, Any]], cpu: bool) -> list[str]:
        out = [_stat([r[f"tvd_{k}way"] for r in chosen if r.get(f"tvd_{k}way") is not None]) for k in (1, 2, 3)]
        if cpu:
            out.append(_stat([r["fit_cpu_s"] for r in chosen], digits=0))
        if chosen and len(chosen) < seeds:
            out = [f"{c} (n={len(chosen)})" for c in out]
        return out

    lines = [
        "# Issue #22 benchmark grid: AIM and MST against the real-data floor",
        "",
        f"Generated by `benchmarks/aim_wide.py --grid-md {label}` from `{shown_source}` "
        f"(rows labelled `{label}`); do not edit by hand.",
        "",
        f"- Commit measured: {', '.join(commits)}{' (with uncommitted changes)' if dirty else ''}",
        f"- Cells finished: {finished[0]} to {finished[-1]} (UTC)",
        f"- Load average (1 min, before and after each cell): {min(loads):.1f} to {max(loads):.1f} on "
        f"{runs[0]['machine']['cpus'] if runs else '?'} cores"
        if loads
        else "- Load average: not recorded",
        "- Commands:",
        *[f"  - `{run['command']}` ({run['date']})" for run in runs],
        "- Versions: python "
        + (runs[0]["python"] if runs else "?")
        + ", "
        + ", ".join(f"{k} {v}" for k, v in packages.items()),
        "",
        "Each cell: the method's defaults, delta 1e-6, no ledger, nothing declared public but the dataset's "
        "documented label sets, fit on the train split in a fresh process, as many rows sampled, scored against "
        "train (categories as they are, numbers in 16 quantile bins, every column and pair, at most 1,000 "
        "triples). Mean ± sd (population) over the seeds; the fit's noise is not seeded, so a seed names a "
        "repetition. CPU s is the fit's process time (all threads). The floor is train split at random into two "
        "disjoint halves, one scored against the other with the same scorer (3 splits): the metrics' sampling "
        "noise at half the rows, so a method can score below it (its n rows are scored against the n rows it was "
        "fitted to). `(n=k)` marks a cell with fewer than "
        f"{seeds} finished seeds.",
    ]
    header = (
        "| dataset | columns × rows | AIM 1-way | AIM 2-way | AIM 3-way | AIM CPU s "
        "| MST 1-way | MST 2-way | MST 3-way | MST CPU s | floor 1-way | floor 2-way | floor 3-way |"
    )
    for epsilon in epsilons:
        lines += ["", f"## epsilon {epsilon:g}", "", header, "|" + "---|" * 13]
        for dataset in datasets:
            shape = next(
                (f"{r['columns']} × {r['rows']}" for r in ok if r["dataset"] == dataset and r["method"] != FLOOR), "-"
            )
            row = [dataset, shape]
            row += cells(pick(dataset, "aim", epsilon), cpu=True)
            row += cells(pick(dataset, "mst", epsilon), cpu=True)
            row += cells(pick(dataset, FLOOR, None), cpu=False)
            lines.append("| " + " | ".join(row) + " |")
        failed = [r for r in rows if r["status"] != "ok" and r["epsilon"] == epsilon]
        for r in failed:
            lines.append(f"\nFailed: {r['dataset']} {r['method']} seed {r['seed']}: {r.get('error')}")
    return "\n".join(lines) + "\n"


def record(args: argparse.Namespace, run: dict[str, Any], key: dict[str, Any], cell_args: list[str]) -> None:
    """Run one cell unless it finished before, and merge its row into the result file."""
    done = json.loads(args.output.read_text())["rows"] if args.output.exists() else []
    if not args.redo and any({k: r.get(k) for k in key} == key and r["status"] == "ok" for r in done):
        return  # finished before: --redo to run it again
    row = {
        **key,
        **run_cell(args.src, cell_args),
        "commit": run["cells_commit"],
        "dirty": run["cells_dirty"],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result = json.loads(args.output.read_text()) if args.output.exists() else {"runs": [], "rows": []}
    result.setdefault("rows", []).append(row)
    result["run"] = run
    if run not in result.setdefault("runs", []):
        result["runs"].append(run)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    shown = ("label", "dataset", "method", "status", "fit_cpu_s", "rounds", "tree_edges")
    print(json.dumps({k: row.get(k) for k in (*shown, "tvd_1way", "tvd_2way", "tvd_3way", "error")}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--methods", nargs="+", default=["aim", "mst"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--src",
        type=Path,
        default=None,
        help="another checkout's src folder to run against",
    )
    parser.add_argument(
        "--options",
        default="{}",
        help="JSON keyword arguments for the method, e.g. '{\"tree\": false}'",
    )
    parser.add_argument("--label", default=None, help="a name for this code state (default: its commit)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--table", action="store_true")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="instead of fitting: score two disjoint random halves of train against each other, one row per "
        f"dataset and seed (method {FLOOR!r}, no epsilon)",
    )
    parser.add_argument(
        "--grid-md",
        metavar="LABEL",
        default=None,
        help=f"write the issue #22 grid of the rows labelled LABEL to {GRID.relative_to(HERE.parent)}",
    )
    parser.add_argument(
        "--grid-file",
        type=Path,
        default=GRID,
        help=f"where --grid-md writes (default {GRID.relative_to(HERE.parent)}; an earlier grid keeps its own file)",
    )
    parser.add_argument("--redo", action="store_true", help="run cells again that already have a result")
    parser.add_argument("--cell", nargs=5, metavar=("DATASET", "METHOD", "EPSILON", "SEED", "OPTIONS"))
    args = parser.parse_args()
    if args.cell:
        dataset, method, epsilon, seed, options = args.cell
        if method == FLOOR:
            print(json.dumps(real_halves(dataset, int(seed))))
        else:
            print(json.dumps(cell(dataset, method, float(epsilon), int(seed), json.loads(options))))
        return
    result = json.loads(args.output.read_text()) if args.output.exists() else {"runs": [], "rows": []}
    if args.table:
        print(table(result["rows"]))
        return
    if args.grid_md:
        args.grid_file.write_text(grid_markdown(result, args.grid_md, args.output.resolve()))
        print(f"wrote {args.grid_file}")
        return
    from privsynth.bench.run_info import run_metadata

    run = run_metadata(sys.argv)
    commit, dirty = commit_of(args.src or HERE.parent / "src")
    run["cells_commit"], run["cells_dirty"] = commit, dirty
    options = json.loads(args.options)
    label = args.label or f"{str(commit)[:8]}{' + changes' if dirty else ''}"
    if args.floor:
        for seed in args.seeds:
            for dataset in args.datasets:
                key = {
                    "label": label,
                    "dataset": dataset,
                    "method": FLOOR,
                    "options": {},
                    "epsilon": None,
                    "seed": seed,
                }
                record(args, run, key, [dataset, FLOOR, "0", str(seed), "{}"])
        return
    for epsilon in args.epsilons:
        for seed in args.seeds:
            for dataset in args.datasets:
                for method in args.methods:
                    key = {
                        "label": label,
                        "dataset": dataset,
                        "method": method,
                        "options": options,
                        "epsilon": epsilon,
                        "seed": seed,
                    }
                    record(args, run, key, [dataset, method, str(epsilon), str(seed), json.dumps(options)])


if __name__ == "__main__":
    main()
