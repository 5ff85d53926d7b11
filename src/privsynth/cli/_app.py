"""The Typer app, the consoles and the helpers every command module shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from privsynth import progress
from privsynth.data.datasets import DATASETS, bundled_schema, load_dataset
from privsynth.data.profile import infer_source_schema
from privsynth.data.schema import Schema
from privsynth.data.sources import Source, frame_source, load_source
from privsynth.errors import ParameterError

app = typer.Typer(
    help="privsynth: synthetic data with a proven privacy cost, a measured quality and a data card.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err_console = Console(stderr=True)
state = {"debug": False}

DataArg = Annotated[str, typer.Argument(help="CSV/Parquet/DuckDB file, SQL URL, or a bundled dataset name.")]
TableOpt = Annotated[str | None, typer.Option(help="Table to read (DuckDB file or SQL URL).")]
DelimiterOpt = Annotated[str | None, typer.Option(help="CSV delimiter (detected when not given).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        help="Engine that reads and counts DATA: duckdb (files, the default) or spark (a Parquet/CSV/Delta path, "
        "or spark:TABLE for a catalog table; needs privsynth[spark] and Java 17+).",
        show_default=False,
    ),
]
SparkMasterOpt = Annotated[
    str | None,
    typer.Option(help="Spark master URL with --engine spark (default: local[2], this machine).", show_default=False),
]
LineageLedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="Ledger whose registry records the release's lineage (default: the default)."),
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each step does.")] = False,
) -> None:
    state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=debug)],
    )


def is_bundled(data: str) -> bool:
    """Whether DATA names a bundled dataset (and no file of that name exists)."""
    return "://" not in data and not Path(data).exists() and data in DATASETS


def open_data(
    data: str,
    table: str | None = None,
    delimiter: str | None = None,
    engine: str | None = None,
    spark_master: str | None = None,
) -> Source:
    """A path or URL as given; a bundled dataset name (when no such file exists) as its train split; with
    ``engine="spark"`` (or ``spark:TABLE``) rows Spark reads and counts."""
    if is_bundled(data) and engine != "spark":
        return frame_source(load_dataset(data, "train"), f"{data} (bundled, train split)")
    return load_source(data, table=table, delimiter=delimiter, engine=engine, spark_master=spark_master)


def infer_schema(data: str, source: Source) -> Schema:
    """The schema proposed for DATA (:func:`privsynth.data.profile.infer_source_schema`: a table over 100,000
    rows by a uniform sample and aggregates), with the category sets a bundled dataset's documentation publishes
    declared public."""
    if is_bundled(data):
        return bundled_schema(data, source.head(100_000))
    return infer_source_schema(source)


@contextmanager
def progress_bar() -> Iterator[None]:
    """Render privsynth progress events as rich progress bars."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
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


def parse_conditions(pairs: list[str]) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    for pair in pairs:
        column, sep, value = pair.partition("=")
        if not sep or not column:
            raise ParameterError(f"--condition takes COLUMN=VALUE, not {pair!r}")
        conditions[column] = value
    return conditions


ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="KEY=VALUE hyperparameter of the method (the value read as YAML: 3, 0.5, true, [a, b]); repeatable, "
        "e.g. --param max_minutes=30 --param rounds=64 (aim)."
    ),
]


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``--param KEY=VALUE`` pairs as keyword arguments, each value read as YAML (``3`` and ``1e-3`` are numbers)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ParameterError(f"--param takes KEY=VALUE (e.g. iterations=3), not {pair!r}")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as a string
            with suppress(ValueError):
                parsed = float(parsed)
        params[key] = parsed
    return params
