"""How much of each numeric column of the bundled tables falls outside its DP-learned bounds (clipped values),
and what MST's 2-/3-way TVD and TSTR make of each setting.

Learns the domains the way MST and AIM do (their default preprocessing share, delta 1e-6; 10% when this was run in
session 8) at epsilon 0.3 and 1, ``--seeds`` times, under the current settings of ``privsynth.synth.domain`` and two
alternatives tried in session 8: a looser false-cell rate for the bounds histogram (1e-4), and a grid in powers of 2
with half of a column's share on its bounds and pooled blocks of up to 8 cells (half the values clipped, worse TVD,
better TSTR on nassCDS); neither was adopted (see the closing note of #5). Writes, per setting, the share of values
outside the bounds and the bounds' width relative to the real range per column, their means, and MST's scores.

    .venv/bin/python benchmarks/domain_bounds.py            # writes benchmarks/results/domain_bounds.txt
                                                            # and domain_bounds.txt.run.json (how it was run)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

import privsynth.synth.bounds as bounds
import privsynth.synth.domain as domain
from privsynth.bench.run_info import write_run_sidecar
from privsynth.data.datasets import bundled_schema, dataset_names, load_dataset
from privsynth.data.sources import frame_source
from privsynth.privacy.accountant import Accountant
from privsynth.synth.dp import resolve_budget
from privsynth.synth.marginal_method import default_preprocessing_share

RESULTS = Path(__file__).resolve().parent / "results" / "domain_bounds.txt"
SETTINGS = {
    "false-cell rate 1e-4 instead of 1e-5": {"BOUNDS_FALSE_CELL_RATE": 1e-4},
    "powers-of-2 grid, half of the share on bounds, pooled blocks up to 8": {
        "_GRID_STEPS": 1,
        "STAGE_SHARES": (0.5, 0.5),
        "_POOL_SIZES": (1, 2, 4, 8),
    },
    "current": {},
}


Tables = dict[str, tuple[pd.DataFrame, pd.DataFrame]]


def clipped(tables: Tables, seeds: int, epsilons: tuple[float, ...]) -> pd.DataFrame:
    rows = []
    for name, (train, _) in tables.items():
        schema = bundled_schema(name, train).synthesized()
        share = default_preprocessing_share(len(domain.needs_budget(schema)))  # MST's default
        for epsilon in epsilons:
            for seed in range(seeds):
                budget = resolve_budget("mst", epsilon, 1e-6, schema)
                domains = domain.learn_domains(
                    frame_source(train), schema, Accountant(budget), rho=budget.split([share, 1 - share])[0].rho
                )
                for column, learned in domains.items():
                    edges = getattr(learned.binning, "edges", None)
                    if edges is None:
                        continue
                    values = train[column].dropna()
                    low, high = float(edges[0]), float(edges[-1])
                    span = max(float(values.max() - values.min()), 1e-9)
                    outside = float(((values < low) | (values > high)).mean())
                    rows.append((name, column, epsilon, seed, outside, (high - low) / span))
    return pd.DataFrame(rows, columns=["dataset", "column", "epsilon", "seed", "outside", "width"])


def quality(tables: Tables, seeds: int, epsilons: tuple[float, ...]) -> pd.DataFrame:
    """2- and 3-way TVD and TSTR (macro AUC on the holdout) of MST fits on the bundled tables."""
    from threadpoolctl import threadpool_limits

    from privsynth.evaluate.fidelity import fidelity
    from privsynth.evaluate.prepared import prepare
    from privsynth.evaluate.utility import utility
    from privsynth.synth import create

    keys = ("fidelity.tvd_2way", "fidelity.tvd_3way", "utility.tstr")
    rows = []
    with threadpool_limits(limits=1, user_api="openmp"):  # as evaluate() does: spinning OpenMP threads
        for name, (train, holdout) in tables.items():
            schema = bundled_schema(name, train)
            for epsilon in epsilons:
                for seed in range(seeds):
                    synthesizer = create("mst")
                    synthesizer.fit(train, schema, epsilon=epsilon, delta=1e-6)
                    synthetic = synthesizer.sample(len(train), seed=seed)
                    data = prepare(train, synthetic, holdout, schema.target, None, schema)
                    values = {m.key: m.value for m in fidelity(data, 0).metrics}
                    values.update({m.key: m.value for m in utility(data, 0)[0].metrics})
                    rows.append({"dataset": name, "epsilon": epsilon, **{k.split(".")[1]: values[k] for k in keys}})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--quality-seeds", type=int, default=8, help="MST fits per table and epsilon, scored")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    current = {key: getattr(bounds, key) for settings in SETTINGS.values() for key in settings}
    tables = {name: (load_dataset(name, "train"), load_dataset(name, "holdout")) for name in dataset_names("table")}
    parts = []
    for label, settings in SETTINGS.items():
        for key, value in {**current, **settings}.items():
            setattr(bounds, key, value)  # the DP bounds' settings live in privsynth.synth.bounds
        table = clipped(tables, args.seeds, (0.3, 1.0))
        summary = table.groupby("epsilon")["outside"].agg(["mean", "max"]).round(3)
        per_column = table.groupby(["dataset", "column", "epsilon"])[["outside", "width"]].mean().round(3)
        scores = quality(tables, args.quality_seeds, (0.3, 1.0))
        means = scores.groupby(["epsilon", "dataset"]).agg(["mean", "sem"]).round(3)
        parts.append(
            f"== {label} {settings or current}: share of values outside the learned bounds "
            f"({args.seeds} fits per epsilon)\n{summary.to_string()}\n\n{per_column.unstack('epsilon').to_string()}\n\n"
            f"MST with these domains, {args.quality_seeds} fits per cell (mean and standard error; TVD lower, TSTR "
            f"higher is better)\n{means.to_string()}\n"
        )
        print(parts[-1], flush=True)
    args.output.write_text("\n".join(parts))
    write_run_sidecar(args.output)


if __name__ == "__main__":
    main()
