"""`privsynth bench run|scaling|leaderboard` and `privsynth bench peers setup|status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from privsynth.cli._app import OverwriteOpt, app, console, progress_bar
from privsynth.errors import ParameterError

bench_app = typer.Typer(
    help="Benchmark privsynth's methods and peer libraries over datasets x budgets x seeds.", no_args_is_help=True
)
peers_app = typer.Typer(
    help="Peer libraries (SDV, smartnoise-synth, OpenDP, dpmm, MOSTLY AI engine) in their own environments."
)
bench_app.add_typer(peers_app, name="peers", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

OutDirOpt = Annotated[Path, typer.Option("--output", "-o", help="Folder for results.jsonl, results.csv and HTML.")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Seconds after which a peer run is stopped and failed.")]


def _names(text: str, what: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ParameterError(f"--{what} takes a comma-separated list, not {text!r}")
    return names


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(part) for part in _names(text, what)]
    except ValueError:
        raise ParameterError(f"--{what} takes comma-separated numbers, not {text!r}") from None


DEFAULT_DATASETS = "nassCDS,covid_testing,nafld1"


@bench_app.command("run")
def bench_run(
    datasets: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated bundled datasets (default: {DEFAULT_DATASETS}, or none with --data)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Your own CSV or Parquet table to run the bench on (needs --target).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="With --data: the column the utility models predict.")] = None,
    task_columns: Annotated[
        str | None,
        typer.Option(
            "--task-columns",
            help="With --data: the target's predictors, comma-separated. Runs two arms, the whole table (FILE) and "
            "these columns only (FILE[task]), both scored on the task's columns.",
        ),
    ] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated privsynth methods and peers (sdv-ctgan, ...).")] = (
        "copula"
    ),
    epsilon: Annotated[str, typer.Option(help="Comma-separated epsilons for the DP methods.")] = "1",
    delta: Annotated[float, typer.Option(help="delta for the DP methods.")] = 1e-6,
    seeds: Annotated[int, typer.Option(help="Seeds per cell (0..K-1).")] = 1,
    rows: Annotated[int | None, typer.Option(help="Synthetic rows per run (default: the train split's size).")] = None,
    output: OutDirOpt = Path("bench"),
    overwrite: OverwriteOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Keep finished runs in OUTPUT, do the rest.")] = False,
    rerun: Annotated[
        str, typer.Option(help="With --resume: comma-separated methods whose finished runs are done again.")
    ] = "",
    timeout: TimeoutOpt = None,
    limit: Annotated[
        int | None, typer.Option(help="Use only the first N rows of each split (quick checks, not comparable).")
    ] = None,
    peer_option: Annotated[
        list[str] | None,
        typer.Option("--peer-option", help="METHOD.KEY=VALUE for a peer's constructor (sdv-ctgan.epochs=100)."),
    ] = None,
) -> None:
    """Run methods x datasets x budgets x seeds, evaluate each, write results and a leaderboard.

    The datasets are bundled ones, or your own table with --data FILE --target COL (the same fixed 80/20 split,
    keyed by the file's name).
    """
    from privsynth.bench.harness import BenchTable, load_table, run_bench
    from privsynth.bench.leaderboard import leaderboard_table
    from privsynth.bench.results import LEADERBOARD_HTML, RESULTS_CSV, RESULTS_JSONL

    if data is None and (target is not None or task_columns is not None):
        raise ParameterError("--target and --task-columns describe the table of --data FILE; give --data too")
    if data is not None and target is None:
        raise ParameterError(f"--data {data} needs --target COL: the column the utility models predict")
    chosen: list[str | BenchTable] = []
    if datasets is not None or data is None:
        chosen.extend(_names(datasets or DEFAULT_DATASETS, "datasets"))
    if data is not None and target is not None:
        task = _names(task_columns, "task-columns") if task_columns is not None else None
        chosen.extend(load_table(data, target, task))
    with progress_bar():
        results = run_bench(
            chosen,
            _names(methods, "methods"),
            _numbers(epsilon, "epsilon"),
            seeds,
            rows,
            output,
            delta=delta,
            overwrite=overwrite,
            resume=resume,
            timeout=timeout,
            limit=limit,
            peer_options=_peer_options(peer_option or []),
            rerun=_names(rerun, "rerun") if rerun else (),
        )
    _print_leaderboard(leaderboard_table(results))
    failed = [r for r in results if r["status"] != "ok"]
    for row in failed:
        console.print(f"[red]failed[/red] {row['dataset']} {row['method']}: {row['error']}", highlight=False)
    console.print(
        f"{len(results) - len(failed)} runs ok, {len(failed)} failed; wrote {output / RESULTS_JSONL}, "
        f"{output / RESULTS_CSV} and {output / LEADERBOARD_HTML}"
    )


@bench_app.command("leaderboard")
def bench_leaderboard(
    folder: Annotated[Path, typer.Argument(help="A bench output folder holding results.jsonl.")],
) -> None:
    """Rewrite results.csv and leaderboard.html from a folder's results.jsonl."""
    from privsynth.bench.leaderboard import leaderboard_table, write_leaderboard
    from privsynth.bench.results import LEADERBOARD_HTML, RESULTS_CSV, RESULTS_JSONL, read_results, write_csv

    source = folder / RESULTS_JSONL
    if not source.exists():
        raise ParameterError(f"{source} does not exist; run `privsynth bench run -o {folder}` first")
    results = read_results(source)
    write_csv(results, folder / RESULTS_CSV)
    write_leaderboard(results, folder / LEADERBOARD_HTML)
    _print_leaderboard(leaderboard_table(results))
    console.print(f"wrote {folder / RESULTS_CSV} and {folder / LEADERBOARD_HTML}")


@bench_app.command("scaling")
def bench_scaling(
    dataset: Annotated[str, typer.Option(help="Bundled dataset.")] = "nassCDS",
    method: Annotated[str, typer.Option(help="privsynth method (fitted once).")] = "copula",
    rows: Annotated[str, typer.Option(help="Comma-separated synthetic sizes.")] = "500,1000,2000,5000,10000,20000",
    epsilon: Annotated[float | None, typer.Option(help="epsilon, for a DP method.")] = None,
    delta: Annotated[float, typer.Option(help="delta, for a DP method.")] = 1e-6,
    seeds: Annotated[int, typer.Option(help="Samples drawn per size (seeds 0..K-1).")] = 2,
    output: OutDirOpt = Path("bench-scaling"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Utility of synthetic data against its number of rows, with a fitted power law and its plateau."""
    from privsynth.bench.scaling import run_scaling

    sizes = [int(n) for n in _numbers(rows, "rows")]
    with progress_bar():
        result = run_scaling(
            dataset,
            method,
            sizes,
            epsilon=epsilon,
            delta=delta,
            seeds=seeds,
            out_dir=output,
            overwrite=overwrite,
        )
    table = Table("rows", "TSTR (mean)", "loss 1-TSTR", "fitted loss")
    for point in result.points:
        table.add_row(f"{point.rows:,}", f"{point.tstr:.4f}", f"{point.loss:.4f}", f"{result.predict(point.rows):.4f}")
    console.print(table)
    console.print(result.describe(), highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in result.paths)}")


@peers_app.command("setup")
def peers_setup(
    group: Annotated[str, typer.Argument(help="Peer group: sdv, smartnoise, opendp, dpmm or mostlyai.")],
) -> None:
    """Create a peer group's virtual environment with its pinned requirements (from PyPI)."""
    from privsynth.bench.peers import PEER_GROUPS, PEER_METHODS, peer_group, setup_peer

    spec = peer_group(group)
    with progress_bar():
        python = setup_peer(group)
    methods = ", ".join(m.name for m in PEER_METHODS.values() if m.group == group)
    console.print(f"{group} is ready ({python}); methods: {methods}. {PEER_GROUPS[spec.name].licence}.")


@peers_app.command("status")
def peers_status() -> None:
    """Which peer methods are ready, and how to set up the others."""
    from privsynth.bench.peers import PEER_METHODS, peer_python, peer_status

    for method in PEER_METHODS.values():
        dp = "DP" if method.differentially_private else "no DP"
        status = peer_status(method.name) or f"ready ({peer_python(method.group)})"
        console.print(f"{method.name:<15} {dp:<6} {status}", soft_wrap=True, highlight=False)


def _peer_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``sdv-ctgan.epochs=100`` -> ``{"sdv-ctgan": {"epochs": 100}}``; values are read as JSON when they parse."""
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        method, dot, key = name.rpartition(".")
        if not sep or not dot or not method or not key:
            raise ParameterError(f"--peer-option takes METHOD.KEY=VALUE (sdv-ctgan.epochs=100), not {pair!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        options.setdefault(method, {})[key] = value
    return options


def _print_leaderboard(rows: list[dict[str, object]]) -> None:
    from privsynth.evaluate.catalogue import BENCH_CLI, format_metric, format_number, label, shown_in

    keys = shown_in(BENCH_CLI)
    table = Table("dataset", "rank", "method", "epsilon", "runs", *(label(k) for k in keys), "seconds")
    for row in rows:
        table.add_row(
            *(str(row[k]) for k in ("dataset", "rank", "method", "epsilon", "runs")),
            *(format_metric(k, row[k]) for k in keys),
            format_number(row["seconds"]),
        )
    console.print(table)
