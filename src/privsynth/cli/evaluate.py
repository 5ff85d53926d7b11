"""`privsynth evaluate`: one report (HTML + JSON) on what a synthetic table kept and what it leaked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from privsynth.cli._app import DelimiterOpt, OverwriteOpt, app, console, err_console, open_data, progress_bar
from privsynth.data.datasets import DATASETS, dataset_info, load_dataset
from privsynth.data.output import check_output
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.evaluate import evaluate as run_evaluate
from privsynth.evaluate import write_report
from privsynth.provenance.card import card_path


@app.command()
def evaluate(
    real: Annotated[str, typer.Option(help="The real rows the generator learned from (file, URL or bundled name).")],
    synthetic: Annotated[str, typer.Option(help="The synthetic rows to score (file or URL).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="report.html; report.json is written beside it.")],
    holdout: Annotated[
        str | None,
        typer.Option(help="Real rows the generator never saw (default: the holdout split of a bundled --real)."),
    ] = None,
    target: Annotated[str | None, typer.Option(help="Column to predict for utility (TSTR vs TRTR).")] = None,
    sensitive: Annotated[str | None, typer.Option(help="Column whose subgroups the equity section compares.")] = None,
    schema: Annotated[Path | None, typer.Option(help="Schema YAML (default: inferred from the real rows).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for every subsample, split and attack.")] = 0,
    epsilon: Annotated[
        float | None, typer.Option(help="DP epsilon to show (default: read from the synthetic file's data card).")
    ] = None,
    delta: Annotated[float | None, typer.Option(help="DP delta to show with --epsilon.")] = None,
    table: Annotated[str | None, typer.Option(help="Table to read from DuckDB files or SQL URLs.")] = None,
    delimiter: DelimiterOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Score SYNTHETIC against REAL: fidelity, diversity, utility, equity and privacy attacks, in one report."""
    if output.suffix.lower() not in (".html", ".htm"):
        raise ParameterError(f"--output must end in .html (report.json is written beside it), not '{output}'")
    inputs = [i for i in (real, synthetic, holdout) if i]
    check_output(output, overwrite, inputs=inputs)
    check_output(output.with_suffix(".json"), overwrite, inputs=inputs)
    holdout_frame: pd.DataFrame | None = None
    bundled = real if "://" not in real and not Path(real).exists() and real in DATASETS else None
    if bundled is not None:
        info = dataset_info(bundled)
        target = target or info.target
        sensitive = sensitive or info.sensitive
        holdout_frame = load_dataset(bundled, "holdout") if holdout is None else _frame(holdout, table, delimiter)
    elif holdout:
        holdout_frame = _frame(holdout, table, delimiter)
    real_frame = _frame(real, table, delimiter)
    synthetic_frame = _frame(synthetic, table, delimiter)
    budget = _budget(epsilon, delta, synthetic)
    with progress_bar():
        report = run_evaluate(
            real_frame,
            synthetic_frame,
            holdout=holdout_frame,
            target=target,
            sensitive=sensitive,
            schema=Schema.load(schema) if schema is not None else None,
            seed=seed,
            privacy_budget=budget,
        )
    html, data = write_report(report, output, overwrite=overwrite)
    console.print(report.summary())
    console.print(f"wrote {html} and {data}")
    if holdout_frame is None:
        err_console.print("[yellow]note:[/yellow] without --holdout there is no utility test and no privacy attack")


def _frame(data: str, table: str | None, delimiter: str | None) -> pd.DataFrame:
    return open_data(data, table, delimiter).to_pandas()


def _budget(epsilon: float | None, delta: float | None, synthetic: str) -> dict[str, float] | None:
    """The budget given on the command line, else the one the synthetic file's data card records."""
    if epsilon is not None:
        return {"epsilon": epsilon, **({"delta": delta} if delta is not None else {})}
    if delta is not None:
        raise ParameterError("--delta needs --epsilon")
    card = card_path(synthetic) if "://" not in synthetic else None
    if card is None or not card.is_file():
        return None
    try:
        privacy: Any = json.loads(card.read_text(encoding="utf-8")).get("privacy", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(privacy, dict) or not isinstance(privacy.get("epsilon"), int | float):
        return None
    return {k: float(privacy[k]) for k in ("epsilon", "delta") if isinstance(privacy.get(k), int | float)}
