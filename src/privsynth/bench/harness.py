"""The benchmark: generators x datasets x privacy budgets x seeds, each run evaluated the same way.

Every run fits a method on a bundled dataset's train split, samples ``rows`` rows (default: as many as the train
split), and scores them with :func:`privsynth.evaluate.evaluate` against the train split with the fixed holdout,
the dataset's target and its sensitive column. privsynth methods fit and sample through
:func:`privsynth.pipeline.synthesize`, as the CLI and the service do; peers run in their own environments through
:func:`privsynth.bench.peers.run_peer`. Non-DP methods run once per seed whatever the budgets; DP methods once per
budget and seed, with ``delta``.

Results are appended to ``results.jsonl`` one line per run as it finishes (a crash keeps what was done, and
``resume`` skips it next time), then written as ``results.csv`` and ``leaderboard.html``. A failing run is
recorded with its error and does not stop the others. Each dataset also gets a reference row, ``real-holdout``:
the real holdout scored as if it were synthetic, the noise floor any fidelity number should be read against.

A user's own CSV or Parquet table takes the place of a bundled dataset through :func:`load_table`
(``privsynth bench run --data FILE --target COL``): the same fixed 80/20 split, keyed by the file's name. Given
the task's columns (the target's predictors), it becomes two arms, the whole table and the task's columns only
(the design of issue #21's medical study), both scored on the task's columns. Such a run reads the real rows to
score them, as the bench always does: its results are for the data's custodian, not a DP release, and it
charges no ledger.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privsynth import __version__
from privsynth.bench import peers
from privsynth.bench.leaderboard import write_leaderboard
from privsynth.bench.results import (
    LEADERBOARD_HTML,
    REFERENCE_METHOD,
    RESULTS_CSV,
    RESULTS_JSONL,
    RunKey,
    append_row,
    key_id,
    read_results,
    row_id,
    write_csv,
)
from privsynth.bench.run_info import record_run
from privsynth.data.datasets import bundled_schema, dataset_info, holdout_mask, load_dataset
from privsynth.data.schema import Schema
from privsynth.data.sources import load_source
from privsynth.errors import OutputExistsError, ParameterError
from privsynth.evaluate import Report, evaluate
from privsynth.pipeline import synthesize
from privsynth.progress import report as progress
from privsynth.synth import available
from privsynth.synth.dp import DEFAULT_DELTA

logger = logging.getLogger(__name__)


TASK_ARM_SUFFIX = "[task]"


@dataclass(frozen=True)
class BenchTable:
    """A user's table in place of a bundled dataset: its rows, target, fitted columns and scored columns.

    ``columns`` are what the generators are fitted on (every column, or the task's); ``scored`` what every run is
    evaluated on (the task's columns, or every column), so the two arms of a study are scored alike. ``split_key``
    keys the fixed 80/20 split (:func:`privsynth.data.datasets.holdout_mask`): both arms share their rows.
    """

    name: str
    data: pd.DataFrame
    target: str
    columns: tuple[str, ...]
    scored: tuple[str, ...]
    split_key: str


def load_table(
    path: str | Path, target: str, task_columns: Sequence[str] | None = None, *, name: str | None = None
) -> list[BenchTable]:
    """A CSV or Parquet file as bench tables: the whole table, and with ``task_columns`` also the task's arm.

    ``task_columns`` are the target's predictors (the target may be among them); both arms are then scored on
    the predictors and the target. ``name`` (default: the file's stem) names the runs and keys the split; the
    task's arm is ``NAME[task]``. Raises :class:`~privsynth.errors.DataError` for a missing or unreadable file
    and :class:`~privsynth.errors.ParameterError` for a target or task column the table does not have (the
    message names it and the closest column names: the custodian running the bench sees their own columns).
    """
    file = Path(path).expanduser()
    frame = load_source(file).to_pandas()
    stem = name or file.name.split(".")[0]
    _check_columns(frame, [target], "target", file)
    if task_columns is None:
        everything = tuple(str(c) for c in frame.columns)
        return [BenchTable(stem, frame, target, everything, everything, stem)]
    chosen = list(dict.fromkeys(task_columns))
    if not chosen:
        raise ParameterError("--task-columns names no column; give the target's predictors, comma-separated")
    _check_columns(frame, chosen, "task column", file)
    task = tuple(dict.fromkeys([*chosen, target]))
    if len(task) < 2:
        raise ParameterError(f"the task needs at least one predictor besides the target '{target}'")
    whole = tuple(str(c) for c in frame.columns)
    return [
        BenchTable(stem, frame, target, whole, task, stem),
        BenchTable(stem + TASK_ARM_SUFFIX, frame, target, task, task, stem),
    ]


def _check_columns(frame: pd.DataFrame, wanted: Sequence[str], what: str, file: Path) -> None:
    names = [str(c) for c in frame.columns]
    for column in wanted:
        if column not in names:
            close = difflib.get_close_matches(column, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ParameterError(f"{what} '{column}' is not a column of {file}{hint} (its columns: {', '.join(names)})")


def _dataset_name(dataset: str | BenchTable) -> str:
    return dataset.name if isinstance(dataset, BenchTable) else dataset


def is_dp(method: str) -> bool:
    """Whether ``method`` (privsynth or peer) is differentially private; raises for unknown names."""
    if peers.is_peer(method):
        return peers.peer_method(method).differentially_private
    methods = available()
    if method not in methods:
        known = ", ".join([*methods, *peers.PEER_METHODS])
        raise ParameterError(f"unknown method '{method}'; privsynth methods and peers: {known}")
    return bool(methods[method].differentially_private)


def plan_runs(
    datasets: Sequence[str | BenchTable], methods: Sequence[str], epsilons: Sequence[float], seeds: Sequence[int]
) -> list[RunKey]:
    """The grid in run order: per dataset, each method's budgets and seeds (non-DP methods once per seed)."""
    for dataset in datasets:
        if not isinstance(dataset, BenchTable):
            dataset_info(dataset)
    names = [_dataset_name(d) for d in datasets]
    if len(set(names)) < len(names):
        raise ParameterError(f"each dataset may appear once in a run, not {names}")
    if not methods:
        raise ParameterError("give at least one method")
    for epsilon in epsilons:
        if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
            raise ParameterError(f"every epsilon must be a positive number, not {epsilon!r}")
    dp = {method: is_dp(method) for method in methods}
    if any(dp.values()) and not epsilons:
        raise ParameterError(f"DP method(s) {[m for m in methods if dp[m]]} need at least one epsilon")
    keys: list[RunKey] = []
    for dataset in names:
        for method in methods:
            budgets: Sequence[float | None] = [float(e) for e in epsilons] if dp[method] else [None]
            keys.extend(RunKey(dataset, method, epsilon, seed) for epsilon in budgets for seed in seeds)
    return keys


def run_bench(
    datasets: Sequence[str | BenchTable],
    methods: Sequence[str],
    epsilons: Sequence[float] = (1.0,),
    seeds: int | Sequence[int] = 1,
    rows: int | None = None,
    out_dir: str | Path = "bench",
    *,
    delta: float = DEFAULT_DELTA,
    overwrite: bool = False,
    resume: bool = False,
    timeout: float | None = None,
    evaluate_seed: int = 0,
    limit: int | None = None,
    peer_options: Mapping[str, Mapping[str, Any]] | None = None,
    rerun: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run the grid, writing ``results.jsonl`` as it goes, then ``results.csv`` and ``leaderboard.html``.

    ``datasets`` are bundled names or tables of :func:`load_table`. ``seeds`` is a count (seeds 0..K-1) or the
    seeds themselves; ``rows`` the synthetic rows per run (default: the train split's size). ``timeout`` bounds
    each peer run in seconds. ``limit`` keeps only the first ``limit`` rows of each split (for quick checks;
    results on a slice are not comparable with full runs).
    ``out_dir`` must not hold results unless ``overwrite`` (start afresh) or ``resume`` (keep finished runs,
    redo failed and missing ones). ``rerun`` names methods whose finished runs are done again when resuming
    (after a change to the method); a new row supersedes the old one. ``peer_options`` maps a peer to
    constructor arguments over its defaults (``{"sdv-ctgan": {"epochs": 100}}``); they are recorded in each
    row's details. Returns the latest row of every run in the results file.
    """
    seed_list = _seed_list(seeds)
    for name, value in (("rows", rows), ("limit", limit)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ParameterError(f"{name} must be a positive whole number, not {value!r}")
    if not 0 < delta < 1:
        raise ParameterError(f"delta must be between 0 and 1, not {delta!r}")
    keys = plan_runs(datasets, methods, epsilons, seed_list)
    unknown = [m for m in (peer_options or {}) if m not in methods or not peers.is_peer(m)]
    if unknown:
        raise ParameterError(f"peer options given for {unknown}, which are not peers in this run ({list(methods)})")
    folder = Path(out_dir)
    results_path = folder / RESULTS_JSONL
    stray = [m for m in rerun if m not in methods]
    if stray:
        raise ParameterError(f"rerun names {stray}, which are not methods of this run ({list(methods)})")
    done = {
        run
        for run in _prepare_output(folder, overwrite=overwrite, resume=resume)
        if json.loads(run)[1] not in set(rerun)
    }
    record_run(folder)  # this invocation's commit, command, machine and versions, in run.json
    for method in dict.fromkeys(methods):
        if peers.is_peer(method) and (problem := peers.peer_status(method)) is not None:
            logger.warning("%s; its runs will be recorded as failed", problem)
    total = len(keys) + len(datasets)
    finished = 0
    for dataset in datasets:
        context = _context(dataset, limit, rows, dict(peer_options or {}))
        todo = [k for k in keys if k.dataset == context.dataset]
        reference = RunKey(context.dataset, REFERENCE_METHOD, None, 0)
        for key in [*todo, reference]:
            progress("bench", finished, total, key.label())
            options = context.peer_options.get(key.method, {})
            if key_id(key, options) in done:
                logger.info("%s: already in %s, skipped", key.label(), results_path)
            else:
                if key.method == REFERENCE_METHOD:
                    row = _reference_row(context, key, evaluate_seed)
                else:
                    row = _run_one(context, key, delta=delta, timeout=timeout, evaluate_seed=evaluate_seed)
                append_row(results_path, row)
                done.add(key_id(key, options))
            finished += 1
    progress("bench", total, total, "writing results")
    results = read_results(results_path)
    write_csv(results, folder / RESULTS_CSV)
    write_leaderboard(results, folder / LEADERBOARD_HTML)
    progress("bench", total, total, "done")
    return results


@dataclass(frozen=True)
class _Context:
    dataset: str
    train: pd.DataFrame
    holdout: pd.DataFrame
    schema: Schema
    target: str
    sensitive: str | None
    rows: int
    peer_options: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    scored: tuple[str, ...] | None = None  # the columns runs are evaluated on (None: the schema's)

    def evaluated(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s scored columns (those it has: a generator leaves out identifiers)."""
        if self.scored is None:
            return frame
        return frame[[c for c in self.scored if c in frame.columns]]

    def evaluated_schema(self) -> Schema:
        if self.scored is None:
            return self.schema
        return self.schema.select([c for c in self.scored if c in self.schema.names])


def _context(
    dataset: str | BenchTable, limit: int | None, rows: int | None, peer_options: dict[str, Mapping[str, Any]]
) -> _Context:
    """Train and holdout rows, schema and task of a bundled dataset or a user's table (first ``limit`` rows)."""
    if isinstance(dataset, BenchTable):
        holdout_rows = holdout_mask(dataset.split_key, len(dataset.data))
        fitted = dataset.data[list(dataset.columns)]
        train = fitted[~holdout_rows].iloc[:limit].reset_index(drop=True)
        holdout = fitted[holdout_rows].iloc[:limit].reset_index(drop=True)
        schema = Schema(Schema.infer(train).columns, target=dataset.target)
        return _Context(
            dataset.name, train, holdout, schema, dataset.target, None, rows or len(train), peer_options, dataset.scored
        )
    info = dataset_info(dataset)
    train = load_dataset(dataset, "train").iloc[:limit].reset_index(drop=True)
    holdout = load_dataset(dataset, "holdout").iloc[:limit].reset_index(drop=True)
    schema = bundled_schema(dataset, train)
    return _Context(dataset, train, holdout, schema, info.target, info.sensitive, rows or len(train), peer_options)


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise ParameterError(f"seeds must be a count or a list of whole numbers, not {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ParameterError(f"the number of seeds must be at least 1, not {seeds}")
        return list(range(seeds))
    chosen = list(seeds)
    if not chosen or not all(isinstance(s, int) and not isinstance(s, bool) for s in chosen):
        raise ParameterError(f"seeds must be a count or a non-empty list of whole numbers, not {seeds!r}")
    return chosen


def _prepare_output(folder: Path, *, overwrite: bool, resume: bool) -> set[str]:
    """Make ``folder``; return the ids of finished runs to skip when resuming."""
    if overwrite and resume:
        raise ParameterError("choose either overwrite (start afresh) or resume (keep finished runs), not both")
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / RESULTS_JSONL
    if results.exists() and not (overwrite or resume):
        raise OutputExistsError(
            f"{results} already exists; pass overwrite to start afresh or resume to keep its finished runs"
        )
    if overwrite:
        for name in (RESULTS_JSONL, RESULTS_CSV, LEADERBOARD_HTML):
            (folder / name).unlink(missing_ok=True)
        return set()
    if not results.exists():
        return set()
    return {row_id(row) for row in read_results(results) if row.get("status") == "ok"}


def _base_row(context: _Context, key: RunKey, delta: float | None) -> dict[str, Any]:
    return {
        "dataset": key.dataset,
        "method": key.method,
        "source": "reference"
        if key.method == REFERENCE_METHOD
        else "peer"
        if peers.is_peer(key.method)
        else "privsynth",
        "dp": key.epsilon is not None,
        "epsilon": key.epsilon,
        "delta": delta if key.epsilon is not None else None,
        "seed": key.seed,
        "options": dict(context.peer_options.get(key.method, {})),
        "train_rows": len(context.train),
        "rows": context.rows,
        "status": "ok",
        "error": None,
        "fit_seconds": None,
        "sample_seconds": None,
        "evaluate_seconds": None,
        "total_seconds": None,
        "cpu_seconds": None,
        "metrics": {},
        "details": {},
        "privsynth_version": __version__,
        "finished_at": None,
    }


def _run_one(
    context: _Context, key: RunKey, *, delta: float, timeout: float | None, evaluate_seed: int
) -> dict[str, Any]:
    """Fit, sample and evaluate one cell; any failure is recorded in the row, never raised."""
    row = _base_row(context, key, delta)
    started = time.perf_counter()
    try:
        cpu_before = _cpu_seconds()
        synthetic, fit_seconds, sample_seconds, details = _generate(context, key, delta=delta, timeout=timeout)
        row.update(
            fit_seconds=round(fit_seconds, 3),
            sample_seconds=round(sample_seconds, 3),
            cpu_seconds=round(_cpu_seconds() - cpu_before, 3),
            details=details,
        )
        budget = {"epsilon": key.epsilon, "delta": delta} if key.epsilon is not None else None
        evaluated = time.perf_counter()
        report = evaluate(
            context.evaluated(context.train),
            context.evaluated(synthetic),
            holdout=context.evaluated(context.holdout),
            target=context.target,
            sensitive=context.sensitive,
            schema=context.evaluated_schema(),
            seed=evaluate_seed,
            privacy_budget=budget,
        )
        row["evaluate_seconds"] = round(time.perf_counter() - evaluated, 3)
        row["metrics"] = _metric_values(report)
        row["rows"] = len(synthetic)
    except Exception as exc:  # a failing method must not stop the bench: record it and go on
        _failed(row, key, exc)
    return _finished(row, started)


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children: a peer runs as a child process.

    Read around fit and sample, it is the CPU a method used, which on a shared machine says more than wall time.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _generate(
    context: _Context, key: RunKey, *, delta: float, timeout: float | None
) -> tuple[pd.DataFrame, float, float, dict[str, Any]]:
    """Synthetic rows from ``key.method`` with its fit and sample seconds and what the method reports."""
    if peers.is_peer(key.method):
        result = peers.run_peer(
            key.method,
            context.train,
            context.schema,
            context.rows,
            seed=key.seed,
            epsilon=key.epsilon,
            delta=delta if key.epsilon is not None else None,
            timeout=timeout,
            options=context.peer_options.get(key.method),
        )
        return result.data, result.fit_seconds, result.sample_seconds, result.details
    # The bundled data are public: a DP run records no spends and registers no release.
    release = synthesize(
        context.train,
        key.method,
        context.rows,
        schema=context.schema,
        seed=key.seed,
        epsilon=key.epsilon,
        delta=delta if key.epsilon is not None else None,
        ledger=False,
        registry=False,
    )
    details = {"params": _plain(dict(release.fit.parameters))}
    return release.data, release.timings["fit"], release.timings["sample"], details


def _reference_row(context: _Context, key: RunKey, evaluate_seed: int) -> dict[str, Any]:
    """The real holdout scored as if it were synthetic: fidelity and diversity of an independent real sample.

    Utility and privacy need rows the "generator" never saw, which the holdout cannot be for itself: the row's
    ``utility.tstr`` is the TRTR of the runs (a model trained on the real train split), the ceiling to aim at.
    """
    row = _base_row(context, key, None)
    row["rows"] = len(context.holdout)
    started = time.perf_counter()
    try:
        report = evaluate(
            context.evaluated(context.train),
            context.evaluated(context.holdout),
            target=context.target,
            sensitive=context.sensitive,
            schema=context.evaluated_schema(),
            seed=evaluate_seed,
        )
        row["metrics"] = _metric_values(report)
        row["evaluate_seconds"] = round(time.perf_counter() - started, 3)
        row["details"] = {"note": "real holdout rows scored as synthetic; utility.tstr is filled with the TRTR"}
    except Exception as exc:  # the reference is informative; its failure must not stop the bench either
        _failed(row, key, exc)
    return _finished(row, started)


def _failed(row: dict[str, Any], key: RunKey, exc: Exception) -> None:
    row["status"] = "failed"
    row["error"] = f"{type(exc).__name__}: {exc}"
    logger.warning("%s failed: %s", key.label(), row["error"])


def _finished(row: dict[str, Any], started: float) -> dict[str, Any]:
    row["total_seconds"] = round(time.perf_counter() - started, 3)
    row["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return row


def _metric_values(report: Report) -> dict[str, float | None]:
    return {key: None if v is None or not math.isfinite(v) else float(v) for key, v in report.values().items()}


def _plain(value: Any) -> Any:
    """JSON-ready hyperparameters (tuples as lists, anything else unknown as its repr)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
