"""`privsynth card show`, `privsynth mix` and `privsynth collapse`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from privsynth.cli._app import OverwriteOpt, app, console, err_console, parse_params, progress_bar
from privsynth.data.output import check_output
from privsynth.errors import ParameterError
from privsynth.provenance.card import card_path, file_sha256, read_card

card_app = typer.Typer(help="Data cards written next to every release.", no_args_is_help=True)
app.add_typer(card_app, name="card")


# ---- card --------------------------------------------------------------------------------------------------------


@card_app.command("show")
def card_show(
    release: Annotated[Path, typer.Argument(help="A release (OUT.csv / OUT.parquet) or its card (OUT.card.json).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Show the data card of a release: generator, source fingerprint, lineage, privacy, metrics, datasheet."""
    card = read_card(release)
    if as_json:
        import json

        console.print_json(json.dumps(card))
        return
    _print_card(card, release)


def _print_card(card: dict[str, Any], release: Path) -> None:
    generator, privacy = card["generator"], card["privacy"]
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("release id", card.get("release_id", "-"))
    facts.add_row("rows x columns", f"{card['rows']:,} x {len(card['columns'])}")
    facts.add_row("created", card["created"])
    facts.add_row("generator", f"{generator['method']} (privsynth {generator.get('privsynth_version', '?')})")
    parameters = ", ".join(f"{k}={v}" for k, v in generator.get("parameters", {}).items())
    facts.add_row("parameters", parameters or "-")
    facts.add_row("seed", str(generator.get("seed")))
    digest = card["source"].get("fingerprint_sha256")
    facts.add_row("source", card["source"]["name"] + (f" (sha256 {digest[:16]}...)" if digest else ""))
    facts.add_row("generation", str(card.get("generation", 1)))
    parents = card.get("parents") or []
    facts.add_row(
        "parents",
        "\n".join(f"{p.get('release_id') or 'unregistered'} (gen {p['generation']}, {p['found_by']})" for p in parents)
        or "none",
    )
    retention = card.get("retention") or {}
    facts.add_row("retention", f"{retention.get('policy', '-')}: {retention.get('note', '')}".rstrip(": "))
    if privacy.get("differentially_private"):
        facts.add_row(
            "privacy", f"differentially private, epsilon={privacy.get('epsilon')}, delta={privacy.get('delta')}"
        )
    else:
        facts.add_row("privacy", f"[yellow]not differentially private[/yellow]: {privacy.get('note', '')}")
    mix = card.get("mix")
    if mix:
        facts.add_row(
            "mix",
            f"{mix['real_rows']:,} real + {mix['synthetic_rows']:,} synthetic rows "
            f"(share {mix['synthetic_share']:.4f}, cap {mix['max_synthetic_share']})",
        )
    console.print(Panel(facts, title=f"data card: {card['release_file']}", title_align="left"))
    _print_integrity(card, release)
    for note in card.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if privacy.get("spends"):
        spends = Table("mechanism", "purpose", "rho", title="ledger entries", title_justify="left")
        for spend in privacy["spends"]:
            spends.add_row(str(spend["mechanism"]), str(spend["purpose"]), f"{spend['rho']:.4g}")
        console.print(spends)
    summary = (card.get("metrics") or {}).get("summary") or {}
    if summary:
        metrics = Table("metric", "value", title="evaluation", title_justify="left")
        for key, value in summary.items():
            metrics.add_row(key, "-" if value is None else f"{value:.4g}")
        console.print(metrics)
    columns = Table("column", "kind", "domain", "synthesized", title="schema (private domains redacted)")
    for col in card["schema"].get("columns", []):
        reason = "yes" if col["synthesize"] else f"no: {col.get('reason', '')}"
        columns.add_row(col["name"], col["kind"], _domain(col), reason)
    if card["schema"].get("columns"):
        console.print(columns)
    for section, entries in (card.get("datasheet") or {}).items():
        console.print(f"\n[bold]{section.replace('_', ' ').capitalize()}[/bold]")
        for entry in entries:
            who = " [magenta](user)[/magenta]" if entry["provided_by"] == "user" else ""
            console.print(f"  [bold]{entry['question']}[/bold]{who}", highlight=False)
            console.print(Padding(Text(entry["answer"]), (0, 0, 0, 4)))


def _domain(column: dict[str, Any]) -> str:
    if "categories" in column:
        return ", ".join(map(str, column["categories"]))
    if "categories_count" in column:
        return f"{column['categories_count']} categories (redacted)"
    if "bounds" in column:
        return f"{column['bounds'][0]} to {column['bounds'][1]}"
    return "redacted"


def _print_integrity(card: dict[str, Any], release: Path) -> None:
    data_file = release
    if release.name.endswith(".card.json"):
        data_file = release.with_name(card["release_file"])
    if not data_file.is_file():
        err_console.print(f"[yellow]the release file '{data_file}' is not beside the card; not checked[/yellow]")
    elif file_sha256(data_file) == card["release_sha256"]:
        console.print(f"[green]{data_file.name} matches the card (sha256)[/green]")
    else:
        err_console.print(f"[red]{data_file.name} differs from the file the card describes: edited since?[/red]")


# ---- mix ---------------------------------------------------------------------------------------------------------


@app.command("mix")
def mix_command(
    real: Annotated[Path, typer.Option("--real", help="Real data (CSV or Parquet).")],
    synthetic: Annotated[list[Path], typer.Option("--synthetic", help="Synthetic release; repeatable.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet training set.")],
    max_synthetic_share: Annotated[
        float, typer.Option(help="Largest share of synthetic rows in the output (0 to 1).")
    ] = 0.3,
    seed: Annotated[int | None, typer.Option(help="Seed for drawing the synthetic rows and shuffling.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build a training set: every real row plus synthetic rows up to --max-synthetic-share, labelled in a
    `_provenance` column (real / synthetic-gen<k>), with its own data card."""
    from privsynth.provenance.mix import mix

    inputs = [real, *synthetic]
    check_output(output, overwrite, inputs=inputs)
    check_output(card_path(output), overwrite, inputs=inputs)
    result = mix(real, synthetic, max_synthetic_share, seed)
    written = result.write(output, overwrite, inputs=inputs)
    console.print(
        f"wrote {len(result.data):,} rows to {written}: {result.real_rows:,} real, {result.synthetic_rows:,} synthetic "
        f"(share {result.synthetic_share:.4f}, cap {max_synthetic_share}); card: {card_path(written)}"
    )
    for item in result.inputs:
        console.print(f"  {item.name}: {item.rows_used:,} of {len(item.data):,} rows as {item.label}")
    for note in result.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}")


# ---- collapse ----------------------------------------------------------------------------------------------------


@app.command("collapse")
def collapse_command(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the JSON and PNG outputs.")],
    dataset: Annotated[str, typer.Option(help="Bundled dataset (its train split is the real data).")] = "nassCDS",
    method: Annotated[str, typer.Option(help="Synthesizer (see `privsynth methods`).")] = "copula",
    generations: Annotated[int, typer.Option(help="Generations to fit one after another.")] = 10,
    mode: Annotated[str, typer.Option(help="replace (fit on the last output) or accumulate (real + all).")] = "replace",
    rows: Annotated[int | None, typer.Option(help="Rows per generation (default: as many as the real data).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and of the baseline.")] = 0,
    param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE hyperparameter of the method; repeatable.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Privacy budget per generation (DP methods).")] = None,
    delta: Annotated[float | None, typer.Option(help="Delta per generation (DP methods).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """The collapse lab: fit generation after generation on synthetic output and measure marginal TVD, tail
    coverage and the survival of rare values against the real data."""
    from privsynth.bench.collapse import run_collapse

    if mode not in ("replace", "accumulate"):
        raise ParameterError(f"--mode must be replace or accumulate, not {mode!r}")
    with progress_bar():
        result = run_collapse(
            dataset,
            method,
            generations,
            mode,  # type: ignore[arg-type]
            seed,
            output_dir,
            rows=rows,
            params=parse_params(param or []),
            epsilon=epsilon,
            delta=delta,
            overwrite=overwrite,
        )
    table = Table("generation", "TVD 1-way", "TVD 2-way", "tail q01", "tail q99", "rare 1-way", "rare 2-way")
    for g in [result.baseline, *result.generations]:
        table.add_row(
            "resample" if g.generation == 0 else str(g.generation),
            _fmt(g.tvd_1way),
            _fmt(g.tvd_2way),
            _fmt(g.tail_lower),
            _fmt(g.tail_upper),
            _fmt(g.rare_1way_survival),
            _fmt(g.rare_2way_survival),
        )
    console.print(table)
    console.print(f"wrote {', '.join(map(str, result.files))} ({result.seconds:.0f} s)")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
