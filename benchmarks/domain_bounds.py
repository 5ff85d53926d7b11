"""How much of each numeric column of the bundled tables falls outside its DP-learned bounds (clipped values).

Learns the domains the way MST and AIM do (10% of the budget, delta 1e-6) at epsilon 0.3 and 1, ``--seeds`` times,
under the current settings of ``privsynth.synth.domain`` and under the settings before session 8 (bounds grid in
steps of sqrt 2, a quarter of a column's share on its bounds, false-cell rate 1e-5, pooled blocks of up to
16 cells), and writes the share of
values outside the bounds and the bounds' width relative to the real range per column, and the means.

    .venv/bin/python benchmarks/domain_bounds.py            # writes benchmarks/results/domain_bounds.txt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

import privsynth.synth.domain as domain
from privsynth.data.datasets import bundled_schema, dataset_names, load_dataset
from privsynth.data.sources import frame_source
from privsynth.privacy.accountant import Accountant
from privsynth.synth.marginal import _budget

RESULTS = Path(__file__).resolve().parent / "results" / "domain_bounds.txt"
SETTINGS = {
    "before (sqrt 2 grid, 1/4 on bounds, rate 1e-5)": {
        "_GRID_STEPS": 2,
        "STAGE_SHARES": (0.25, 0.75),
        "BOUNDS_FALSE_CELL_RATE": 1e-5,
        "_POOL_SIZES": (1, 2, 4, 8, 16),
    },
    "current": {},
}


def clipped(seeds: int, epsilons: tuple[float, ...]) -> pd.DataFrame:
    rows = []
    for name in dataset_names("table"):
        train = load_dataset(name, "train")
        schema = bundled_schema(name, train).synthesized()
        for epsilon in epsilons:
            for seed in range(seeds):
                budget = _budget("mst", schema, epsilon, 1e-6)
                domains = domain.learn_domains(
                    frame_source(train), schema, Accountant(budget), rho=budget.split([0.1, 0.9])[0].rho
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    current = {key: getattr(domain, key) for key in SETTINGS[next(iter(SETTINGS))]}
    parts = []
    for label, settings in SETTINGS.items():
        for key, value in {**current, **settings}.items():
            setattr(domain, key, value)
        table = clipped(args.seeds, (0.3, 1.0))
        summary = table.groupby("epsilon")["outside"].agg(["mean", "max"]).round(3)
        per_column = table.groupby(["dataset", "column", "epsilon"])[["outside", "width"]].mean().round(3)
        parts.append(
            f"== {label} {settings or current}: share of values outside the learned bounds "
            f"({args.seeds} fits per epsilon)\n{summary.to_string()}\n\n{per_column.unstack('epsilon').to_string()}\n"
        )
    args.output.write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
