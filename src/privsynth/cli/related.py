"""`privsynth metadata`: propose and check the metadata of related tables (keys, foreign keys, order columns); and
`privsynth generate FOLDER`, which `generate` hands related tables to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from privsynth.cli._app import OverwriteOpt, app, console, err_console, progress_bar
from privsynth.data.output import check_output
from privsynth.data.sources import DUCKDB_SUFFIXES
from privsynth.errors import ParameterError
from privsynth.pipeline.related import EVALUATION_FILE, METADATA_FILE, check_folder, synthesize_related
from privsynth.relational import RelatedData, RelatedMetadata, check_tables, load_related, open_related, related_names
from privsynth.relational.metadata import show_key
from privsynth.relational.sources import infer_related
from privsynth.synth.base import default_method

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


# ---- generate FOLDER --------------------------------------------------------------------------------------------


def is_related_input(data: str, table: str | None) -> bool:
    """Whether ``privsynth generate DATA`` means related tables: a folder, a bundled related set (pbc,
    nycflights13), or a DuckDB file given without ``--table`` that holds several tables."""
    path = Path(data).expanduser()
    if path.is_dir():
        return True
    if not path.exists():
        return data in related_names()
    if table is None and path.suffix.lower() in DUCKDB_SUFFIXES:
        return len(open_related(path)) > 1
    return False


def generate_related(
    data: str,
    output: Path,
    *,
    method: str | None,
    rows: int | None,
    metadata: Path | None,
    seed: int | None,
    params: dict[str, Any],
    keep: list[str],
    overwrite: bool,
    dp_options: dict[str, Any],
) -> None:
    """`privsynth generate FOLDER -o OUT_FOLDER`: related synthetic tables, one card each, the metadata and the
    cross-table evaluation in OUT_FOLDER. The tables are CSV files; ``-o OUT.parquet`` writes Parquet files into
    the folder OUT."""
    given = [k for k, v in dp_options.items() if v]
    if given:
        raise ParameterError(
            f"--{given[0].replace('_', '-')} applies to DP methods; DP with the person as the unit is not available "
            "yet for related tables (use --method deep or copula)"
        )
    reason = None
    if method is None:
        method, reason = default_method()
        console.print(f"method: {method} ({reason})", markup=False, highlight=False)
    suffix = output.suffix.lower() if output.suffix.lower() in (".csv", ".parquet") else ".csv"
    folder = output.with_suffix("") if output.suffix.lower() in (".csv", ".parquet") else output
    source: RelatedData | str = load_related(data) if data in related_names() and not Path(data).exists() else data
    inputs: tuple[str, ...] = () if isinstance(source, RelatedData) else (data,)
    check_folder(folder, inputs)
    with progress_bar():
        release = synthesize_related(
            source,
            method,
            rows,
            metadata=metadata,
            seed=seed,
            params=params,
            keep=tuple(keep),
            method_reason=reason,
        )
        written = release.write(folder, suffix=suffix, overwrite=overwrite, inputs=inputs)
    if metadata is None and not isinstance(source, RelatedData):
        err_console.print(
            f"[yellow]review[/yellow]: the metadata was inferred from the data; see {folder / METADATA_FILE}"
        )
    table = Table("table", "role", "rows", "file")
    for name, frame in release.tables.items():
        table.add_row(name, release.model.plans_[name].role, f"{len(frame):,}", f"{name}{suffix} (+ card)")
    console.print(table)
    for rel, metrics in release.evaluation["relationships"].items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        console.print(f"{rel}: {shown}", markup=False, highlight=False)
    console.print(
        f"wrote {len(release.tables)} related synthetic tables ({method}) to {folder}: {len(written)} files, "
        f"metadata {METADATA_FILE}, evaluation {EVALUATION_FILE}",
        markup=False,
        highlight=False,
    )
