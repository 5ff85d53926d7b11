"""Issue #22: where the 3-way error of a DP marginal fit goes, a ladder of variants each removing one source.

For a bundled dataset's train split, a method (MST or AIM, default parameters), epsilon 1 (delta 1e-6, no ledger)
and a seed, the rungs are:

- ``a_shipped``: as shipped: nothing declared public but the datasets' documented label sets, every other
  domain learned under DP (the preprocessing share of the budget).
- ``b_public_domains``: every category list and numeric range declared public (the train split's own: what the
  peers get for free). Numeric columns still spend the preprocessing share on their DP quantile bins inside the
  public bounds (integer ranges of at most 16 values are exact cells, free).
  ``b_public_categories`` (optional): only the category lists public (the issue's "categorical domains
  declared public"); numeric columns learn their bounds and bins as shipped.
- ``c_true_bins``: public domains and, instead of the DP bins, the scorer's own 16 quantile bins of the real
  values (``learn_domains`` replaced in this process only; not private): nothing is spent on preprocessing, so
  the whole budget measures marginals. ``c_true_bins_same_rho`` (optional) is the same at the rho ``b`` had left
  for its measurements, which separates the bins' quality from the budget they cost.
- ``d_no_noise``: ``c_true_bins``'s fitted structure (its measured cliques, its compressed cells and its
  estimation weights) with every measurement replaced by the exact count, the model estimated again: what the
  graphical model over those cliques cannot represent. ``d_eps1e4`` (optional) fits again at epsilon 1e4 on the
  true bins (selection nearly exact too: the structure the budget would choose if it were free).
- ``e_floor``: the train split at random (the seed) into two disjoint halves, one scored against the other (the
  floor the issue and ``aim_wide.py`` use); ``e_resample``: as many rows drawn from the train split with
  replacement, scored against it (a model that is exactly the train rows' distribution; the halves' two samples
  of n/2 rows have four times its sampling variance, so ``d`` may fall below ``e_floor``).

Scoring is ``benchmarks/aim_wide.py``'s ``score`` (1/2/3-way TVD, categories as they are, numbers in 16 quantile
bins of the real rows, at most 1,000 triples, seeded); each row also keeps the mean 3-way TVD of the triples that
hold each column, and for covid_testing every triple's TVD, so the worst triples can be named. Differences
between rungs attribute the 3-way error: a - b domains, b - c binning, c - d measurement noise, d - e structure
and model approximation (shares of the gap a - e_floor). CPU seconds are the process's; the load average is
recorded beside them. Rows carry the ``src`` and commit the cell ran (``PYTHONPATH`` may point at a worktree).

``--label NAME --rungs a_shipped`` runs a code state (e.g. a fix, from a worktree) as shipped; ``changes`` in the
results compares each label's rows with the ladder's ``a_shipped`` ones (before -> after).

Each (dataset, method, seed) runs in a fresh process; rows are merged into ``benchmarks/results/error_budget.json``
by (dataset, method, epsilon, seed, rung), with the run's commit, command and package versions under ``runs``.

    .venv/bin/python benchmarks/error_budget.py --datasets covid_testing --methods mst aim --seeds 0 1 2
    .venv/bin/python benchmarks/error_budget.py --datasets covid_testing --rungs c_true_bins_same_rho d_eps1e4
    PYTHONPATH=/tmp/fix/src .venv/bin/python benchmarks/error_budget.py --label grid --rungs a_shipped
    .venv/bin/python benchmarks/error_budget.py --table        # --summarize also rewrites the summary
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUTPUT = HERE / "results" / "error_budget.json"
DELTA = 1e-6
LADDER = ("a_shipped", "b_public_domains", "c_true_bins", "d_no_noise")
OPTIONAL = ("b_public_categories", "c_true_bins_same_rho", "d_eps1e4")
TRIPLES_KEPT = ("covid_testing",)


def public_schema(schema: Any, train: Any, numeric: bool = True) -> Any:
    """Every synthesized column's domain declared public: the train split's category list or range (categories
    only when not ``numeric``)."""
    import dataclasses

    from privsynth.data.schema import Kind

    columns = []
    for c in schema:
        if c.synthesize and not c.public and c.kind is Kind.CATEGORICAL:
            c = dataclasses.replace(
                c, categories=sorted(train[c.name].dropna().unique().tolist(), key=str), public=True
            )
        elif numeric and c.synthesize and not c.public and c.kind.numeric:
            values = train[c.name].dropna()
            low, high = values.min(), values.max()
            if c.kind is Kind.INTEGER:
                low, high = int(low), int(high)
            elif c.kind is Kind.DATETIME:
                low, high = str(low), str(high)
            else:
                low, high = float(low), float(high)
            c = dataclasses.replace(c, bounds=(low, high), public=True)
        columns.append(c)
    return type(schema)(columns, target=schema.target)


def true_domains(schema: Any, train: Any, bins: int) -> dict[str, Any]:
    """Each column's domain with the scorer's quantile bins of the real values (numbers) or its public list.

    Not private: a yardstick for how much the DP bins cost. A numeric column's cells are the scorer's cells
    (``privsynth.evaluate.prepared``: inner cuts at the 1/16 ... 15/16 quantiles, a value on a cut in the upper
    cell), closed by the real minimum and maximum; integer ranges of at most ``bins`` values are one cell each.
    """
    import numpy as np

    from privsynth.data.binning import NumericBins
    from privsynth.data.schema import Kind
    from privsynth.evaluate.prepared import _quantile_cuts
    from privsynth.synth.domain import ColumnDomain, public_domain

    out = {}
    for c in schema:
        if c.kind is Kind.CATEGORICAL or (c.kind is Kind.INTEGER and c.bounds[1] - c.bounds[0] + 1 <= bins):
            out[c.name] = public_domain(c, bins)
            continue
        values = train[c.name].dropna().to_numpy(dtype=float)
        low, high = float(values.min()), float(values.max())
        cuts = [x for x in _quantile_cuts(values) if low < x]
        top = high if not cuts or high > cuts[-1] else (high + 1.0 if c.kind is Kind.INTEGER else high + 1e-9)
        edges = np.array([low, *cuts, top])
        out[c.name] = ColumnDomain(c, NumericBins(tuple(float(e) for e in edges), null=c.nullable), cost="true bins")
    return out


def per_triple(real: Any, synthetic: Any, schema: Any) -> tuple[list[str], dict[tuple[int, ...], float]]:
    """The TVD of every 3-way marginal on the scorer's cells (the scorer's 3-way TVD is their mean when there
    are at most 1,000 triples)."""
    import numpy as np

    from privsynth.evaluate.prepared import prepare

    data = prepare(real, synthetic, None, None, None, schema)
    names = [c.name for c in data.columns]
    sizes = [c.bins for c in data.columns]
    out = {}
    for combo in itertools.combinations(range(len(names)), 3):
        r = np.zeros(data.real.rows, dtype=np.int64)
        s = np.zeros(data.synthetic.rows, dtype=np.int64)
        size = 1
        for j in combo:
            r = r * sizes[j] + data.real.cells[:, j]
            s = s * sizes[j] + data.synthetic.cells[:, j]
            size *= sizes[j]
        p = np.bincount(r, minlength=size) / data.real.rows
        q = np.bincount(s, minlength=size) / data.synthetic.rows
        out[combo] = round(0.5 * float(np.abs(p - q).sum()), 4)
    return names, out


def scored(dataset: str, real: Any, synthetic: Any, schema: Any) -> dict[str, Any]:
    """The scorer's 1/2/3-way TVD, each column's mean over the triples holding it, and (some datasets) every
    triple's TVD."""
    import numpy as np
    from aim_wide import score

    names, triples = per_triple(real, synthetic, schema)
    by_column = {
        name: round(float(np.mean([v for k, v in triples.items() if j in k])), 4) for j, name in enumerate(names)
    }
    out: dict[str, Any] = {**score(real, synthetic, schema), "tvd_3way_by_column": by_column}
    if dataset in TRIPLES_KEPT:
        out["tvd_3way_by_triple"] = {" x ".join(names[j] for j in k): v for k, v in triples.items()}
    return out


def exact_again(model: Any, train: Any, iters: int) -> Any:
    """A copy of the fitted ``model`` whose every measurement is the exact count (same cliques, compressed cells
    and weights), estimated again: the structure without the measurement noise. Not private."""
    import copy

    from privsynth.data.sources import load_source
    from privsynth.synth import _pgm
    from privsynth.synth._pgm import NoisyMarginal
    from privsynth.synth.marginal_method import Counts, compressed_counts

    counts = Counts(load_source(train), model.domains_)
    domain, compressed = compressed_counts(counts, model.compression_)
    exact = []
    for m in model.measurements_:
        values = compressed(m.clique).ravel().astype(float)
        if m.weights is not None:
            values = values * m.weights
        exact.append(NoisyMarginal(m.clique, values, m.sigma, m.weights))
    again = copy.copy(model)
    again.model_ = _pgm.estimate(domain, exact, float(len(train)), iters=iters)
    again.measurements_ = exact
    return again


def epsilon_for_rho(rho: float) -> float:
    """The epsilon whose budget (delta 1e-6) has this rho, by bisection."""
    from privsynth.privacy.budget import Budget

    low, high = 1e-3, 1e3
    for _ in range(100):
        mid = (low * high) ** 0.5
        low, high = (mid, high) if Budget.from_epsilon_delta(mid, DELTA).rho < rho else (low, mid)
    return high


def source_of_privsynth() -> dict[str, Any]:
    """Which privsynth the cell ran (``PYTHONPATH`` may put another checkout's ``src`` first), and its commit."""
    import privsynth

    src = Path(privsynth.__file__).resolve().parents[1]
    out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(src), "diff", "--quiet", "HEAD", "--", "."], check=False).returncode
    return {"privsynth_src": str(src), "src_commit": out.stdout.strip() or None, "src_dirty": dirty != 0}


def cell(dataset: str, method: str, epsilon: float, seed: int, rungs: list[str]) -> list[dict[str, Any]]:
    """Fit, sample and score each rung for one (dataset, method, seed) in this process."""
    from unittest import mock

    import privsynth.synth.marginal_method as marginal_method
    from privsynth.data.datasets import bundled_schema, load_dataset
    from privsynth.synth import create

    train = load_dataset(dataset, "train")
    schema = bundled_schema(dataset, train)
    public = public_schema(schema, train)
    rows: list[dict[str, Any]] = []
    src = source_of_privsynth()
    fitted: dict[str, Any] = {}

    def fit(rung: str, fit_schema: Any, eps: float, patched: bool) -> Any:
        model = create(method)
        cpu = time.process_time()
        if patched:
            domains = true_domains(fit_schema.synthesized(), train, model.bins)
            with (
                mock.patch.object(marginal_method, "learn_domains", return_value=domains),
                mock.patch.object(marginal_method, "needs_budget", return_value=[]),
            ):
                model.fit(train, fit_schema, epsilon=eps, delta=DELTA, ledger=False)
        else:
            model.fit(train, fit_schema, epsilon=eps, delta=DELTA, ledger=False)
        fitted[rung] = model
        return model, round(time.process_time() - cpu, 1)

    for rung in rungs:
        started = time.process_time()
        extra: dict[str, Any] = {}
        if rung == "a_shipped":
            model, fit_cpu = fit(rung, schema, epsilon, False)
        elif rung == "b_public_domains":
            model, fit_cpu = fit(rung, public, epsilon, False)
        elif rung == "b_public_categories":
            model, fit_cpu = fit(rung, public_schema(schema, train, numeric=False), epsilon, False)
        elif rung == "c_true_bins":
            model, fit_cpu = fit(rung, public, epsilon, True)
        elif rung == "c_true_bins_same_rho":
            if "b_public_domains" not in fitted:
                fit("b_public_domains", public, epsilon, False)
            b = fitted["b_public_domains"]
            measured = sum(s["rho"] for s in b.spends_ if not s["purpose"].startswith("domain of"))
            extra["rho_measurements"] = measured
            model, fit_cpu = fit(rung, public, epsilon_for_rho(measured), True)
        elif rung == "d_no_noise":
            if "c_true_bins" not in fitted:
                fit("c_true_bins", public, epsilon, True)
            model = exact_again(fitted["c_true_bins"], train, fitted["c_true_bins"].iters * 5 // 2)
            fit_cpu = round(time.process_time() - started, 1)
        elif rung == "d_eps1e4":
            model, fit_cpu = fit(rung, public, 1e4, True)
        else:
            raise SystemExit(f"unknown rung {rung!r}; choose from {', '.join(LADDER + OPTIONAL)}")
        synthetic = model.sample(len(train), seed=seed)
        spends = getattr(model, "spends_", [])
        rows.append(
            {
                "rung": rung,
                "fit_cpu_s": fit_cpu,
                "load_after": round(os.getloadavg()[0], 1),
                "measurements": len(model.measurements_),
                "rounds": getattr(model, "rounds_", None),
                "rho_preprocessing": sum(s["rho"] for s in spends if s["purpose"].startswith("domain of")),
                "rho": getattr(model, "rho_", None),
                **src,
                **extra,
                **scored(dataset, train, synthetic, schema),
            }
        )
    return rows


def floor(dataset: str, seed: int) -> list[dict[str, Any]]:
    """Two floors: ``e_floor``, the train split at random into two disjoint halves, the second scored against
    the first (as ``aim_wide.py`` and the issue define it); ``e_resample``, as many rows as the train split drawn
    from it with replacement, scored against it: what a model that is exactly the train rows' distribution would
    score, the lowest this scorer allows at n rows (one sample of n rows, against the halves' two of n/2: a quarter of
    their sampling variance)."""
    import numpy as np
    from aim_wide import split_halves

    train, schema, first, second = split_halves(dataset, seed)
    half = len(first)
    resampled = train.iloc[np.random.default_rng(seed).integers(0, len(train), len(train))].reset_index(drop=True)
    return [
        {"rung": "e_floor", "rows": half, **scored(dataset, first, second, schema)},
        {"rung": "e_resample", "rows": len(train), **scored(dataset, train, resampled, schema)},
    ]


def run_cell(args: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, __file__, "--cell", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        error = out.stderr.strip().splitlines()[-1] if out.stderr else "exit"
        return [{"status": "failed", "error": error}]
    return [{"status": "ok", **row} for row in json.loads(out.stdout.strip().splitlines()[-1])]


def mean(rows: list[dict[str, Any]], metric: str) -> float | None:
    values = [r[metric] for r in rows if r.get(metric) is not None]
    return sum(values) / len(values) if values else None


def worst_triples(rows: list[dict[str, Any]], floors: list[dict[str, Any]], top: int = 12) -> list[dict[str, Any]]:
    """Triples by their mean TVD over the seeds, with the floor's TVD of the same triple and the excess."""
    import numpy as np

    kept = [r["tvd_3way_by_triple"] for r in rows if "tvd_3way_by_triple" in r]
    if not kept:
        return []
    base = [r["tvd_3way_by_triple"] for r in floors if "tvd_3way_by_triple" in r]
    out = []
    for triple in kept[0]:
        tvd = float(np.mean([k[triple] for k in kept]))
        at_floor = float(np.mean([b[triple] for b in base])) if base else 0.0
        out.append(
            {"triple": triple, "tvd": round(tvd, 4), "floor": round(at_floor, 4), "excess": round(tvd - at_floor, 4)}
        )
    return sorted(out, key=lambda t: -t["excess"])[:top]


def without_column(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean 3-way TVD over the triples that leave each column out (averaged over the seeds): how far the
    table's 3-way TVD would fall if that column's triples were as good as the rest."""
    kept = [r["tvd_3way_by_triple"] for r in rows if "tvd_3way_by_triple" in r]
    names = list(rows[0]["tvd_3way_by_column"])
    out = {}
    for name in names:
        values = [v for k in kept for t, v in k.items() if name not in t.split(" x ")]
        out[name] = round(sum(values) / len(values), 4)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def column_excess(rows: list[dict[str, Any]], floors: list[dict[str, Any]]) -> dict[str, float]:
    """Each column's mean 3-way TVD over the triples holding it, less the floor's, averaged over the seeds."""
    names = rows[0]["tvd_3way_by_column"]
    out = {}
    for name in names:
        tvd = sum(r["tvd_3way_by_column"][name] for r in rows) / len(rows)
        at_floor = sum(f["tvd_3way_by_column"][name] for f in floors) / len(floors) if floors else 0.0
        out[name] = round(tvd - at_floor, 4)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per (dataset, method): each rung's mean TVDs, the share of the gap (a - floor) each step explains, the
    columns whose triples are furthest above the floor, and (when kept) the worst triples."""
    rows = [r for r in result["rows"] if r.get("status") == "ok" and r.get("label", "ladder") == "ladder"]
    out: dict[str, Any] = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        floors = [r for r in rows if r["dataset"] == dataset and r["rung"] == "e_floor"]
        for method in sorted({r["method"] for r in rows if r["dataset"] == dataset and r["method"] != "-"}):
            mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            rungs = {}
            for rung in (*LADDER, *OPTIONAL):
                got = [r for r in mine if r["rung"] == rung]
                if got:
                    rungs[rung] = {
                        "runs": len(got),
                        **{m: round(mean(got, m) or 0.0, 4) for m in ("tvd_1way", "tvd_2way", "tvd_3way")},
                    }
            resampled = [r for r in rows if r["dataset"] == dataset and r["rung"] == "e_resample"]
            for rung, got in (("e_floor", floors), ("e_resample", resampled)):
                rungs[rung] = {
                    "runs": len(got),
                    **{m: round(mean(got, m) or 0.0, 4) for m in ("tvd_1way", "tvd_2way", "tvd_3way")},
                }
            steps = [
                ("domains", "a_shipped", "b_public_domains"),
                ("binning", "b_public_domains", "c_true_bins"),
                ("noise", "c_true_bins", "d_no_noise"),
                ("structure", "d_no_noise", "e_floor"),
            ]
            gap = None
            if "a_shipped" in rungs:
                gap = rungs["a_shipped"]["tvd_3way"] - rungs["e_floor"]["tvd_3way"]
            shares = {}
            for name, high, low in steps:
                if high in rungs and low in rungs and gap is not None:
                    step = rungs[high]["tvd_3way"] - rungs[low]["tvd_3way"]
                    # a share only when the gap is clearly above the floor's seed-to-seed spread
                    share = round(step / gap, 3) if gap > 0.01 else None
                    shares[name] = {"tvd_3way": round(step, 4), "share_of_gap": share}
            entry: dict[str, Any] = {
                "rungs": rungs,
                "gap_3way": None if gap is None else round(gap, 4),
                "steps": shares,
            }
            for rung in ("a_shipped", "c_true_bins", "d_no_noise"):
                got = [r for r in mine if r["rung"] == rung]
                if got:
                    entry.setdefault("column_excess_3way", {})[rung] = column_excess(got, floors)
                    worst = worst_triples(got, floors)
                    if worst:
                        entry.setdefault("worst_triples", {})[rung] = worst
                        entry.setdefault("tvd_3way_without_column", {})[rung] = without_column(got)
            out[f"{dataset}/{method}"] = entry
    return out


def changes(result: dict[str, Any]) -> dict[str, Any]:
    """Each code state's ``a_shipped`` rows (``--label``) against the ladder's, per (dataset, method): mean
    1/2/3-way TVD over the seeds, and each seed's 3-way TVD."""
    rows = [r for r in result["rows"] if r.get("status") == "ok" and r["rung"] == "a_shipped"]
    out: dict[str, Any] = {}
    for label in sorted({r["label"] for r in rows} - {"ladder"}):
        for dataset, method in sorted({(r["dataset"], r["method"]) for r in rows if r["label"] == label}):
            entry = {}
            for name in ("ladder", label):
                got = sorted(
                    (r for r in rows if (r["label"], r["dataset"], r["method"]) == (name, dataset, method)),
                    key=lambda r: r["seed"],
                )
                entry["before" if name == "ladder" else "after"] = {
                    "runs": len(got),
                    "src_commit": sorted({str(r.get("src_commit")) for r in got}),
                    **{m: round(mean(got, m) or 0.0, 4) for m in ("tvd_1way", "tvd_2way", "tvd_3way")},
                    "tvd_3way_by_seed": [r["tvd_3way"] for r in got],
                }
            out[f"{label}: {dataset}/{method}"] = entry
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "| dataset | method | a shipped | b domains public | c true bins | d no noise | e floor | resample | gap a-e | "
        "domains | binning | noise | structure |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in summary(result).items():
        dataset, method = key.split("/")
        r = entry["rungs"]

        def tvd(rung: str, r: dict[str, Any] = r) -> str:
            return f"{r[rung]['tvd_3way']:.3f} ({r[rung]['runs']})" if rung in r else "-"

        def share(step: str, entry: dict[str, Any] = entry) -> str:
            s = entry["steps"].get(step)
            if not s:
                return "-"
            return f"{s['tvd_3way']:+.3f}" + (f" ({s['share_of_gap']:.0%})" if s["share_of_gap"] is not None else "")

        gap = "-" if entry["gap_3way"] is None else f"{entry['gap_3way']:.3f}"
        lines.append(
            f"| {dataset} | {method} | {tvd('a_shipped')} | {tvd('b_public_domains')} | {tvd('c_true_bins')} | "
            f"{tvd('d_no_noise')} | {tvd('e_floor')} | {tvd('e_resample')} | {gap} | {share('domains')} | "
            f"{share('binning')} | {share('noise')} | {share('structure')} |"
        )
        for optional in OPTIONAL:
            if optional in r:
                lines.append(f"|  | {method} | {optional}: {tvd(optional)} |  |  |  |  |  |  |  |  |  |  |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["covid_testing", "nassCDS", "nafld1"])
    parser.add_argument("--methods", nargs="+", default=["mst", "aim"])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rungs", nargs="+", default=list(LADDER), choices=[*LADDER, *OPTIONAL])
    parser.add_argument("--label", default="ladder", help="a name for this code state (kept on each row)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--summarize", action="store_true", help="recompute the summary kept in the results file")
    parser.add_argument("--redo", action="store_true", help="run cells again that already have a result")
    parser.add_argument("--cell", nargs=5, metavar=("DATASET", "METHOD", "EPSILON", "SEED", "RUNGS"))
    parser.add_argument("--floor-cell", nargs=2, metavar=("DATASET", "SEED"))
    args = parser.parse_args()
    if args.cell:
        dataset, method, epsilon, seed, rungs = args.cell
        print(json.dumps(cell(dataset, method, float(epsilon), int(seed), rungs.split(","))))
        return
    if args.floor_cell:
        print(json.dumps(floor(args.floor_cell[0], int(args.floor_cell[1]))))
        return
    result = json.loads(args.output.read_text()) if args.output.exists() else {"runs": [], "rows": []}
    if args.summarize:
        result["summary"], result["changes"] = summary(result), changes(result)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    if args.table or args.summarize:
        print(table(result))
        for key, entry in changes(result).items():
            b, a = entry["before"], entry["after"]

            def tvds(side: dict[str, Any]) -> str:
                if not side["runs"]:
                    return "- (0)"
                return f"{side['tvd_1way']:.3f}/{side['tvd_2way']:.3f}/{side['tvd_3way']:.3f} ({side['runs']})"

            print(f"{key}: 1/2/3-way {tvds(b)} -> {tvds(a)}")
        return
    from privsynth.bench.run_info import run_metadata

    run = run_metadata(sys.argv)

    def save(new: list[dict[str, Any]]) -> None:
        stored = json.loads(args.output.read_text()) if args.output.exists() else {"runs": [], "rows": []}
        keys = {(r["label"], r["dataset"], r["method"], r["epsilon"], r["seed"], r["rung"]) for r in new}
        stored["rows"] = [
            r
            for r in stored["rows"]
            if (r["label"], r["dataset"], r["method"], r["epsilon"], r["seed"], r["rung"]) not in keys
        ] + new
        if run not in stored["runs"]:
            stored["runs"].append(run)
        stored["run"] = run  # the latest invocation; every one is under runs, each row names its commit
        stored["summary"] = summary(stored)
        stored["changes"] = changes(stored)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(stored, indent=1) + "\n")

    def done(dataset: str, method: str, seed: int, rung: str) -> bool:
        rows = json.loads(args.output.read_text())["rows"] if args.output.exists() else []
        key = (args.label, dataset, method, args.epsilon, seed, rung)
        return any((r["label"], r["dataset"], r["method"], r["epsilon"], r["seed"], r["rung"]) == key for r in rows)

    for dataset in args.datasets:
        for seed in args.seeds:
            if args.redo or not done(dataset, "-", seed, "e_floor"):
                save(
                    [
                        {
                            "label": args.label,
                            "dataset": dataset,
                            "method": "-",
                            "epsilon": args.epsilon,
                            "seed": seed,
                            "commit": run.get("commit"),
                            **got,
                        }
                        for got in run_cell_floor(dataset, seed)
                    ]
                )
            for method in args.methods:
                todo = [r for r in args.rungs if args.redo or not done(dataset, method, seed, r)]
                if not todo:
                    continue
                load = round(os.getloadavg()[0], 1)
                got_rows = run_cell([dataset, method, str(args.epsilon), str(seed), ",".join(todo)])
                new = [
                    {
                        "label": args.label,
                        "dataset": dataset,
                        "method": method,
                        "epsilon": args.epsilon,
                        "seed": seed,
                        "rung": row.get("rung", ",".join(todo)),
                        "load_before": load,
                        "commit": run.get("commit"),
                        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **row,
                    }
                    for row in got_rows
                ]
                save(new)
                for row in new:
                    print(
                        json.dumps(
                            {
                                k: row.get(k)
                                for k in (
                                    "dataset",
                                    "method",
                                    "seed",
                                    "rung",
                                    "status",
                                    "fit_cpu_s",
                                    "tvd_1way",
                                    "tvd_2way",
                                    "tvd_3way",
                                    "error",
                                )
                            }
                        ),
                        flush=True,
                    )


def run_cell_floor(dataset: str, seed: int) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, __file__, "--floor-cell", dataset, str(seed)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        error = out.stderr.strip().splitlines()[-1] if out.stderr else "exit"
        return [{"rung": "e_floor", "status": "failed", "error": error}]
    return [{"status": "ok", **row} for row in json.loads(out.stdout.strip().splitlines()[-1])]


if __name__ == "__main__":
    main()
