"""`privsynth metadata`: propose and check the metadata of related tables (keys, foreign keys, order columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privsynth.cli._app import OverwriteOpt, app, console, err_console
from privsynth.data.output import check_output
from privsynth.relational import RelatedMetadata, check_tables, open_related
from privsynth.relational.metadata import show_key
from privsynth.relational.sources import infer_related

metadata_app = typer.Typer(help="Related tables: propose and check keys and relationships.", no_args_is_help=True)
app.add_typer(metadata_app, name="metadata")

LocationArg = Annotated[str, typer.Argument(help="A folder of CSV/Parquet files (one table each) or a DuckDB file.")]


@metadata_app.command("infer")
def metadata_infer(
    location: LocationArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the metadata YAML.")],
    schemas: Annotated[
        bool, typer.Option("--schemas/--no-schemas", help="Also propose each table's schema, inline.")
    ] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Propose primary keys, foreign keys and order columns for the tables at LOCATION, as YAML to review."""
    path = check_output(output, overwrite, inputs=[location])
    metadata = infer_related(location, schemas=schemas)
    metadata.save(path)
    _print_metadata(metadata)
    for warning in metadata.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"wrote the metadata to {path}; review it (keys and relationships are guesses from the data)")


@metadata_app.command("check")
def metadata_check(
    location: LocationArg,
    metadata: Annotated[Path, typer.Option("--metadata", "-m", help="Metadata YAML to check the tables against.")],
) -> None:
    """Check the tables at LOCATION against a metadata file: keys present and unique, no orphans."""
    loaded = RelatedMetadata.load(metadata)
    check_tables(loaded, open_related(location))
    console.print(
        f"{location} fits {metadata} ({len(loaded.tables)} tables, {len(loaded.relationships)} relationships)"
    )


def _print_metadata(metadata: RelatedMetadata) -> None:
    tables = Table("table", "primary key")
    for table in metadata:
        tables.add_row(table.name, show_key(table.primary_key) if table.primary_key else "")
    console.print(tables)
    relationships = Table("child", "key", "parent", "parent key", "order by")
    for rel in metadata.relationships:
        relationships.add_row(
            rel.child, show_key(rel.child_key), rel.parent, show_key(rel.parent_key), rel.order_by or ""
        )
    console.print(relationships)
