"""`privsynth text generate`: private synthetic text with its data card, and a custodian-side evaluation report.

The report compares the release with the private texts (it holds their exact number and metrics computed on them),
so it is written apart from the card and is not part of the DP release; ``--attach-report`` puts its summary on
the card on purpose, where it is marked as outside the guarantee.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from privsynth.cli._app import (
    DelimiterOpt,
    LineageLedgerOpt,
    OverwriteOpt,
    app,
    console,
    open_data,
    parse_params,
    progress_bar,
)
from privsynth.data.datasets import DATASETS, load_dataset
from privsynth.data.output import check_output
from privsynth.data.sources import load_source
from privsynth.errors import ParameterError
from privsynth.evaluate import write_report
from privsynth.pipeline import TEXT_METHODS, TextModel, sample_text, synthesize_text
from privsynth.synth.dp import DEFAULT_DELTA, MAX_DELTA, dataset_name

text_app = typer.Typer(help="Private synthetic text (Private Evolution, DP LoRA) with a local language model.")
app.add_typer(text_app, name="text")


@text_app.command("generate")
def generate(
    data: Annotated[str, typer.Argument(help="CSV or Parquet file, or a bundled text corpus (trump_tweets).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet file.")],
    epsilon: Annotated[float, typer.Option(help="Privacy budget epsilon.")],
    rows: Annotated[int, typer.Option(help="Synthetic texts to release.")],
    text_column: Annotated[str | None, typer.Option(help="Column of the texts (bundled: known).")] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Column of a label to generate texts for (bundled: its label).")
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            help="The public label set, comma-separated (required with --label-column; never read from the data; "
            "bundled: the set it declares)."
        ),
    ] = None,
    method: Annotated[str, typer.Option(help=f"One of {', '.join(TEXT_METHODS)}.")] = "pe",
    delta: Annotated[
        float | None, typer.Option(help=f"Privacy budget delta (default {DEFAULT_DELTA:g}, at most {MAX_DELTA:g}).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="The name this corpus's budget is kept under in the ledger (default: the bundled corpus's name or "
            "the file's stem). Give the same name whenever you fit on these texts, in any file format."
        ),
    ] = None,
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
    canaries: Annotated[
        int,
        typer.Option(
            help="dp-lora: add this many random secrets to the training texts and report how much the model "
            "memorised them (canary exposure, on the card and in the report)."
        ),
    ] = 0,
    save_model: Annotated[
        Path | None, typer.Option(help="Also save the fitted model here (`privsynth text sample` reads it).")
    ] = None,
    report: Annotated[
        bool,
        typer.Option(
            help="Evaluate against the private and holdout texts, in OUTPUT.report.html/.json: a custodian-side file "
            "(it holds the exact corpus size and metrics on the real texts), not part of the release."
        ),
    ] = True,
    attach_report: Annotated[
        bool,
        typer.Option(
            "--attach-report",
            help="Also summarise the report on the data card, where it is marked as outside the DP guarantee.",
        ),
    ] = False,
    delimiter: DelimiterOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit a private text generator on DATA; write OUTPUT and its data card, and (custodian-side, apart from the
    card) OUTPUT.report.html/.json."""
    check_output(output, overwrite, inputs=[data])
    if save_model is not None:
        check_output(save_model, overwrite, inputs=[data])
    report_path = output.with_name(output.stem + ".report.html")
    if attach_report and not report:
        raise ParameterError("--attach-report needs the report: drop --no-report")
    if report:
        check_output(report_path, overwrite, inputs=[data])
    bundled = DATASETS.get(data) if not Path(data).exists() else None
    if bundled is not None and bundled.text is None:
        raise ParameterError(f"'{data}' is a table; text generation needs a text corpus (trump_tweets)")
    text_column = text_column or (bundled.text if bundled else None)
    if text_column is None:
        raise ParameterError("say which column holds the texts: --text-column NAME")
    if bundled is not None and label_column is None:
        label_column = bundled.target
    public = [value.strip() for value in labels.split(",") if value.strip()] if labels else None
    if public is None and bundled is not None and label_column is not None:
        public = [str(value) for value in dict(bundled.public).get(label_column, ())] or None
    source = open_data(data, None, delimiter)
    evaluation = None
    if dataset is None:
        dataset = data if bundled is not None else dataset_name(None, source)
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
            dataset=dataset,
            seed=seed,
            names=tuple(name or ()),
            params=parse_params(param or []),
            canaries=canaries,
            save_model=save_model,
        )
        if report:
            from privsynth.evaluate.text import evaluate_text

            private = source.to_pandas([c for c in (text_column, label_column) if c])
            held = _holdout(data, holdout, bundled is not None, delimiter)
            labelled = label_column is not None and held is not None
            evaluation = evaluate_text(
                private[text_column].tolist(),
                release.data[text_column].tolist(),
                None if held is None else held[text_column].tolist(),
                # label utility trains on synthetic and tests on the holdout: without one it is left out
                real_labels=None if not labelled else private[label_column].astype(str).tolist(),
                synthetic_labels=None if not labelled else release.data[label_column].astype(str).tolist(),
                holdout_labels=None if not labelled or held is None else held[label_column].astype(str).tolist(),
                label_name=label_column or "label",
                privacy_budget={"epsilon": epsilon, "delta": float(release.delta or DEFAULT_DELTA)},
                canary_exposure=None if release.canaries is None else release.canaries["exposures"],
                seed=seed,
            )
            if attach_report:
                release.attach_report(evaluation)
    written = release.write(output, overwrite, inputs=(data,))
    console.print(
        f"wrote {len(release.data)} synthetic texts to {written} "
        f"({method}, ({epsilon:g}, {release.delta or DEFAULT_DELTA:g})-DP, budget kept under dataset '{dataset}')"
    )
    if evaluation is not None:
        html, json_path = write_report(evaluation, report_path, overwrite=overwrite)
        console.print(
            f"custodian report: {html} and {json_path}. It holds the exact number of private texts and metrics "
            "computed on them: it is not covered by the DP guarantee, keep it with the private data"
            + (" (its summary is on the card, marked outside the guarantee)" if attach_report else "")
        )
    if save_model is not None:
        console.print(f"saved the fitted model to {save_model}")


@text_app.command("sample")
def sample(
    model: Annotated[Path, typer.Argument(help="A model saved by `privsynth text generate --save-model`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet file.")],
    rows: Annotated[int, typer.Option(help="Synthetic texts to release.")],
    seed: Annotated[int, typer.Option(help="Seed of the model's sampling.")] = 0,
    name: Annotated[list[str] | None, typer.Option(help="A name to scrub ([NAME]); repeatable.")] = None,
    ledger: LineageLedgerOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Release more texts from a saved text model, with their card: post-processing, no budget is spent."""
    check_output(output, overwrite, inputs=[model])
    fitted = TextModel.load(model)
    with progress_bar():
        release = sample_text(fitted, rows, seed=seed, names=tuple(name or ()), ledger=ledger)
    written = release.write(output, overwrite, inputs=(model,))
    context = fitted.context
    console.print(
        f"wrote {len(release.data)} synthetic texts to {written} ({fitted.name}, fitted at "
        f"({context['epsilon']:g}, {context['delta']:g})-DP; sampling spent nothing)"
    )


def _holdout(data: str, holdout: str | None, bundled: bool, delimiter: str | None) -> pd.DataFrame | None:
    if holdout is not None:
        return load_source(holdout, delimiter=delimiter).to_pandas()
    return load_dataset(data, "holdout") if bundled else None
