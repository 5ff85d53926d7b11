"""`privsynth text generate`: private synthetic text with its data card and evaluation report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
import yaml

from privsynth.cli._app import DelimiterOpt, OverwriteOpt, app, console, open_data, progress_bar
from privsynth.data.datasets import DATASETS, load_dataset
from privsynth.data.output import check_output
from privsynth.data.sources import load_source
from privsynth.errors import ParameterError
from privsynth.evaluate import write_report
from privsynth.pipeline import TEXT_METHODS, synthesize_text

text_app = typer.Typer(help="Private synthetic text (Private Evolution, DP LoRA) with a local language model.")
app.add_typer(text_app, name="text")


@text_app.command("generate")
def generate(
    data: Annotated[str, typer.Argument(help="CSV or Parquet file, or a bundled text corpus (trump_tweets).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet file.")],
    epsilon: Annotated[float, typer.Option(help="Privacy budget epsilon.")],
    rows: Annotated[int, typer.Option(help="Synthetic texts to release.")],
    text_column: Annotated[str | None, typer.Option(help="Column of the texts (bundled: known).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column of a label to generate texts for.")] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="The public label set, comma-separated (required with --label-column; not read from data)."),
    ] = None,
    method: Annotated[str, typer.Option(help=f"One of {', '.join(TEXT_METHODS)}.")] = "pe",
    delta: Annotated[float, typer.Option(help="Privacy budget delta.")] = 1e-6,
    holdout: Annotated[
        str | None, typer.Option(help="Real texts the generator must not see, for the report (bundled: its split).")
    ] = None,
    ledger: Annotated[str | None, typer.Option(help="Privacy ledger (SQLAlchemy URL or SQLite file).")] = None,
    name: Annotated[list[str] | None, typer.Option(help="A name to scrub ([NAME]); repeatable.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the model's sampling.")] = 0,
    param: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE for the generator, e.g. iterations=3, population=100 (pe), epochs=2 (dp-lora)."),
    ] = None,
    report: Annotated[bool, typer.Option(help="Evaluate against the private and holdout texts.")] = True,
    delimiter: DelimiterOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit a private text generator on DATA; write OUTPUT, its data card and OUTPUT.report.html/.json."""
    check_output(output, overwrite, inputs=[data])
    report_path = output.with_name(output.stem + ".report.html")
    if report:
        check_output(report_path, overwrite, inputs=[data])
    bundled = DATASETS.get(data) if not Path(data).exists() else None
    if bundled is not None and bundled.text is None:
        raise ParameterError(f"'{data}' is a table; text generation needs a text corpus (trump_tweets)")
    text_column = text_column or (bundled.text if bundled else None)
    if text_column is None:
        raise ParameterError("say which column holds the texts: --text-column NAME")
    public = [value.strip() for value in labels.split(",") if value.strip()] if labels else None
    source = open_data(data, None, delimiter)
    with progress_bar():
        release = synthesize_text(
            source,
            text_column=text_column,
            label_column=label_column,
            labels=public,
            method=method,
            rows=rows,
            epsilon=epsilon,
            delta=delta,
            ledger=ledger,
            seed=seed,
            names=tuple(name or ()),
            params=_params(param or []),
        )
        if report:
            from privsynth.evaluate.text import evaluate_text

            private = source.to_pandas([c for c in (text_column, label_column) if c])
            held = _holdout(data, holdout, bundled is not None, delimiter)
            evaluation = evaluate_text(
                private[text_column].tolist(),
                release.data[text_column].tolist(),
                None if held is None else held[text_column].tolist(),
                real_labels=None if label_column is None else private[label_column].astype(str).tolist(),
                synthetic_labels=None if label_column is None else release.data[label_column].astype(str).tolist(),
                holdout_labels=None
                if label_column is None or held is None
                else held[label_column].astype(str).tolist(),
                label_name=label_column or "label",
                privacy_budget={"epsilon": epsilon, "delta": delta},
                seed=seed,
            )
            release.report = evaluation
    written = release.write(output, overwrite, inputs=(data,))
    console.print(f"wrote {len(release.data)} synthetic texts to {written} ({method}, ({epsilon:g}, {delta:g})-DP)")
    if report and release.report is not None:
        html, json_path = write_report(release.report, report_path, overwrite=overwrite)
        console.print(f"report: {html} and {json_path}")


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ParameterError(f"--param takes KEY=VALUE (e.g. iterations=3), not {pair!r}")
        params[key] = yaml.safe_load(value)
    return params


def _holdout(data: str, holdout: str | None, bundled: bool, delimiter: str | None) -> pd.DataFrame | None:
    if holdout is not None:
        return load_source(holdout, delimiter=delimiter).to_pandas()
    return load_dataset(data, "holdout") if bundled else None
