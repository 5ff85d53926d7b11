"""`privsynth generate`, `privsynth methods` and `privsynth demo`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from privsynth.cli._app import (
    DataArg,
    DelimiterOpt,
    EngineOpt,
    LineageLedgerOpt,
    OverwriteOpt,
    ParamOpt,
    SparkMasterOpt,
    TableOpt,
    app,
    console,
    err_console,
    infer_schema,
    is_bundled,
    open_data,
    parse_conditions,
    parse_params,
    progress_bar,
)
from privsynth.cli.related import generate_related, is_related_input
from privsynth.data.datasets import bundled_schema, dataset_info, load_dataset
from privsynth.data.output import check_output
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.evaluate import Report, evaluate, write_report
from privsynth.evaluate.catalogue import CATALOGUE, DEMO, format_metric, shown_in
from privsynth.pipeline import Release, sample_model, synthesize
from privsynth.privacy.ledger import Ledger
from privsynth.synth import Synthesizer, available
from privsynth.synth.base import default_method, unavailable

logger = logging.getLogger(__name__)

# ---- generate ----------------------------------------------------------------------------------------------------


@app.command()
def generate(
    data: DataArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet file.")],
    method: Annotated[
        str | None,
        typer.Option(
            help="Synthesizer (see `privsynth methods`). Default: the best installed (deep with the deep extra, "
            "else copula); never a DP method, which spends budget.",
            show_default=False,
        ),
    ] = None,
    rows: Annotated[int | None, typer.Option(help="Rows to generate (default: as many as the data has).")] = None,
    schema: Annotated[Path | None, typer.Option(help="Reviewed schema YAML (inferred when not given).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: the same seed gives the same rows.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Privacy budget of a DP method (aim, mst, dp-deep).")] = None,
    delta: Annotated[float | None, typer.Option(help="Delta of a DP method (default: the method's, 1e-6).")] = None,
    param: ParamOpt = None,
    ledger: Annotated[
        str | None,
        typer.Option(
            help="Privacy ledger (SQLAlchemy URL or SQLite file) that records a DP method's spends and the release "
            "registry. Default: $PRIVSYNTH_LEDGER or ~/.privsynth/ledger.sqlite."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Name the data's privacy budget is kept under in the ledger (DP methods; default: the bundled "
            "dataset's name or the file's stem). Give the same name to every copy of the same data."
        ),
    ] = None,
    condition: Annotated[list[str] | None, typer.Option(help="COLUMN=VALUE to fix in every row; repeatable.")] = None,
    rebalance: Annotated[
        str | None,
        typer.Option(
            help="Categorical COLUMN whose classes the rows follow in the --mix proportions (default: uniform) "
            "instead of the learned ones (deep, dp-deep).",
        ),
    ] = None,
    mix: Annotated[
        list[str] | None,
        typer.Option(help="VALUE=SHARE of the --rebalance column, e.g. dead=0.5; repeatable (default: uniform)."),
    ] = None,
    save_model: Annotated[Path | None, typer.Option(help="Also save the fitted model here.")] = None,
    retention: Annotated[
        str,
        typer.Option(
            help="keep: leave the fitted model; delete-model: delete it (and --save-model's file) once the release "
            "is written. Recorded in the data card."
        ),
    ] = "keep",
    datasheet: Annotated[
        list[str] | None,
        typer.Option(help="QUESTION=ANSWER for the card's datasheet, e.g. motivation.creators='Data team'; repeats."),
    ] = None,
    table: TableOpt = None,
    delimiter: DelimiterOpt = None,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
    fit_rows: Annotated[
        int | None,
        typer.Option(
            help="Non-DP methods: fit on a uniform sample of this many rows, drawn by the engine, when DATA has more "
            "(default 1,000,000; the card says so).",
            show_default=False,
        ),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(help="Related tables (DATA a folder or DuckDB file): reviewed metadata YAML (else inferred)."),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option(help="Related tables: a public lookup TABLE to copy whole instead of synthesizing; repeatable."),
    ] = None,
    max_children: Annotated[
        int | None,
        typer.Option(
            help="Related tables under DP (--method mst|aim|privbayes): the most child rows one person may own (k; "
            "the first k by the order column are kept). Default: chosen under DP from a share of the budget.",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit a synthesizer on DATA and write synthetic rows plus a data card (OUTPUT.card.json and .card.html).

    DATA a folder of tables, a DuckDB file of several tables, or a bundled related set (pbc, nycflights13): OUTPUT
    is a folder that gets one synthetic table and card per table, related.yaml and the cross-table evaluation."""
    if is_related_input(data, table):
        generate_related(
            data,
            output,
            method=method,
            rows=rows,
            metadata=metadata,
            seed=seed,
            params=parse_params(param or []),
            keep=keep or [],
            overwrite=overwrite,
            dp_options={
                "epsilon": epsilon,
                "delta": delta,
                "ledger": ledger,
                "dataset": dataset,
                "max_children": max_children,
            },
        )
        return
    if metadata is not None or keep or max_children is not None:
        raise ParameterError(
            "--metadata, --keep and --max-children apply to related tables: give a folder, a DuckDB file or a "
            "bundled related set (pbc, nycflights13) as DATA"
        )
    check_output(output, overwrite, inputs=[data])
    if save_model is not None:
        check_output(save_model, overwrite, inputs=[data])
    if rows is not None and rows < 1:
        raise ParameterError(f"--rows must be at least 1, not {rows}")
    source = open_data(data, table, delimiter, engine, spark_master)
    reason = None
    if method is None:
        method, reason = default_method()
        console.print(f"method: {method} ({reason})", markup=False, highlight=False)
    dp = _is_dp(method)
    loaded: Schema | None
    if schema is not None:
        loaded = Schema.load(schema)
    elif dp and not is_bundled(data):
        loaded = None  # a DP fit reads no structure from the rows: storage types, said on the card
    else:
        loaded = infer_schema(data, source)
    if loaded is not None:
        _report_exclusions(loaded)
    if dp and dataset is None and is_bundled(data):
        dataset = data
    with progress_bar():
        release = synthesize(
            source,
            method,
            rows,
            schema=loaded,
            seed=seed,
            conditions=parse_conditions(condition or []),
            rebalance=rebalance,
            mix=_mix(mix, rebalance),
            epsilon=epsilon,
            delta=delta,
            params=parse_params(param or []),
            ledger=ledger,
            dataset=dataset,
            retention=retention,  # type: ignore[arg-type]  # checked by synthesize
            datasheet=_answers(datasheet or []),
            method_reason=reason,
            fit_rows=fit_rows,
        )
    if save_model is not None:
        release.save_model(save_model, overwrite)
    written = release.write(output, overwrite, inputs=(data,))
    if save_model is not None and release.deleted is None:
        console.print(f"saved the fitted model to {save_model}")
    _print_release(release, written)


def _mix(pairs: list[str] | None, rebalance: str | None) -> dict[str, float] | str:
    if not pairs:
        return "uniform"
    if rebalance is None:
        raise ParameterError("--mix needs --rebalance COLUMN (the column whose classes it mixes)")
    mix: dict[str, float] = {}
    for pair in pairs:
        value, sep, share = pair.rpartition("=")
        try:
            mix[value] = float(share)
        except ValueError:
            sep = ""
        if not sep:
            raise ParameterError(f"--mix takes VALUE=SHARE with a number as the share (e.g. dead=0.5), not {pair!r}")
    return mix


def _answers(pairs: list[str]) -> dict[str, str]:
    answers: dict[str, str] = {}
    for pair in pairs:
        question, sep, answer = pair.partition("=")
        if not sep or not question:
            raise ParameterError(f"--datasheet takes QUESTION=ANSWER (e.g. motivation.creators=...), not {pair!r}")
        answers[question] = answer
    return answers


def _report_exclusions(schema: Schema) -> None:
    for col in schema.excluded():
        err_console.print(f"[yellow]left out[/yellow] '{col.name}': {col.reason or 'synthesize: false in the schema'}")


def _is_dp(method: str) -> bool:
    cls = available().get(method)
    return bool(cls is not None and cls.differentially_private)


def _print_release(release: Release, written: Path) -> None:
    fit = release.fit
    # A DP fit's timings are a function of the private rows: the terminal does not show them either.
    timings = (
        "" if fit.differentially_private else "; " + ", ".join(f"{k} {v:.1f}s" for k, v in release.timings.items())
    )
    console.print(
        f"wrote {len(release.data)} synthetic rows x {release.data.shape[1]} columns to {written} "
        f"({fit.method}{timings}); card: {written.with_name(written.stem + '.card.json')} and .card.html"
    )
    for spend in fit.spends:
        logger.info("spent rho %.4g on %s (%s)", spend["rho"], spend["purpose"], spend["mechanism"])
    if fit.differentially_private:
        where = f"recorded in the ledger under dataset '{fit.dataset}'" if release.ledger_url else "not recorded"
        console.print(f"privacy: ({fit.epsilon:g}, {fit.delta:g})-DP, every spend {where}")
        for note in fit.assumptions:
            err_console.print(f"[yellow]assumed[/yellow]: {escape(note)}")
    if release.deleted is not None:
        console.print("retention delete-model: the fitted model was deleted after the release was written")


@app.command()
def sample(
    model: Annotated[Path, typer.Argument(help="A model saved by `privsynth generate --save-model`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .csv or .parquet file.")],
    rows: Annotated[int, typer.Option(help="Synthetic rows to release.")],
    seed: Annotated[int | None, typer.Option(help="Seed: the same seed gives the same rows.")] = None,
    condition: Annotated[list[str] | None, typer.Option(help="COLUMN=VALUE to fix in every row; repeatable.")] = None,
    ledger: LineageLedgerOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Release more rows from a saved tabular model, with their card: post-processing, no budget is spent."""
    check_output(output, overwrite, inputs=[model])
    fitted = Synthesizer.load(model)
    with progress_bar():
        release = sample_model(
            fitted, rows, conditions=parse_conditions(condition or []), seed=seed, registry=ledger or None
        )
    written = release.write(output, overwrite, inputs=(model,))
    fit = release.fit
    budget = f"fitted at ({fit.epsilon:g}, {fit.delta:g})-DP; " if fit.differentially_private else ""
    console.print(
        f"wrote {len(release.data)} synthetic rows to {written} ({fit.method}; {budget}sampling spent nothing); "
        f"card: {written.with_name(written.stem + '.card.json')} and .card.html"
    )


@app.command()
def methods() -> None:
    """List the synthesis methods, and those whose optional extra is not installed with the command that adds it."""
    table = Table("method", "differentially private", "description")
    for name, cls in available().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        table.add_row(name, "yes" if cls.differentially_private else "no", doc)
    for name, reason in unavailable().items():
        table.add_row(name, "-", escape(f"not installed: {reason}"))
    console.print(table)


# ---- demo --------------------------------------------------------------------------------------------------------


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the demo's files.")] = Path(
        "privsynth-demo"
    ),
    rows: Annotated[int | None, typer.Option(help="Synthetic rows (default: as many as the train split).")] = None,
    epsilon: Annotated[float, typer.Option(help="Budget of the DP release.")] = 1.0,
) -> None:
    """Run the product's main job on the bundled nassCDS data and write it into OUTPUT_DIR: a differentially
    private release (MST, its budget spent from a ledger with a cap, its data card) and a deep one, each evaluated
    against the holdout, compared side by side in summary.md.

    The demo owns its folder: it replaces the files it wrote on an earlier run (its ledger too), and nothing else.
    """
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    info = dataset_info("nassCDS")
    train, holdout = load_dataset("nassCDS", "train"), load_dataset("nassCDS", "holdout")
    rows = rows or len(train)
    console.print(f"[bold]1. data[/bold]: nassCDS train split, {len(train)} rows x {train.shape[1]} columns")
    schema = bundled_schema("nassCDS", train)
    schema.save(output_dir / "schema.yaml")
    console.print("[bold]2. schema[/bold]: inferred and reviewed (label set public), written to schema.yaml")
    ledger_path = output_dir / "ledger.sqlite"
    ledger_path.unlink(missing_ok=True)
    cap = 3 * epsilon
    ledger = Ledger(ledger_path)
    ledger.register("nassCDS")
    ledger.set_cap("nassCDS", epsilon=cap, delta=1e-6)
    ledger.close()
    releases: dict[str, Release] = {}
    for name, method, options in (
        ("dp", "mst", {"epsilon": epsilon, "ledger": ledger_path, "dataset": "nassCDS"}),
        ("deep", default_method()[0], {}),
    ):
        with progress_bar():
            release = synthesize(train, method, rows, schema=schema, seed=0, **options)  # type: ignore[arg-type]
        written = release.write(output_dir / f"{name}.csv", overwrite=True)
        releases[name] = release
        what = f"MST at epsilon {epsilon:g} (cap {cap:g} in {ledger_path.name})" if name == "dp" else method
        console.print(f"[bold]3. generate[/bold] {what}: {len(release.data)} rows -> {written} + card")
    reports: dict[str, Report] = {}
    for name, release in releases.items():
        with progress_bar():
            reports[name] = evaluate(
                train,
                release.data,
                holdout=holdout,
                target=info.target,
                sensitive=info.sensitive,
                schema=schema,
                seed=0,
            )
        html, _ = write_report(reports[name], output_dir / f"{name}.report.html", overwrite=True)
        console.print(f"[bold]4. evaluate[/bold] {name}: fidelity, utility, equity, privacy attacks -> {html}")
    seconds = time.perf_counter() - started
    summary = _demo_summary(train, releases, info.target, seconds) + _report_lines(reports)
    (output_dir / "summary.md").write_text(summary, encoding="utf-8")
    console.print(summary)
    console.print(f"[bold green]done[/bold green]: see {output_dir}/")


def _report_lines(reports: dict[str, Report]) -> str:
    names = list(reports)
    lines = ["", "| report metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in shown_in(DEMO):
        info = CATALOGUE[key]
        values = " | ".join(format_metric(key, reports[name][key]) for name in names)
        lines.append(f"| {info.label} ({info.reading}) | {values} |")
    lines += [
        "",
        "The full reports (plots, definitions, intervals) are NAME.report.html and .json: they hold statistics of the "
        "real rows, so they stay with the custodian; the DP release's card does not carry them.",
        "",
    ]
    return "\n".join(lines)


def _demo_summary(train: Any, releases: dict[str, Release], target: str, seconds: float) -> str:
    dp = releases["dp"]
    lines = [
        "# privsynth demo: nassCDS",
        "",
        f"- real (train split): {len(train)} rows; wall time {seconds:.1f} s",
    ]
    for name, release in releases.items():
        fit = release.fit
        privacy = (
            f"({fit.epsilon:g}, {fit.delta:g})-DP, {len(fit.spends)} ledger entries"
            if fit.differentially_private
            else "no formal privacy guarantee"
        )
        lines.append(f"- `{name}.csv`: {len(release.data)} rows, method `{fit.method}`, {privacy}")
    lines.append(f"- left out of synthesis: {', '.join(e['column'] for e in dp.excluded) or 'nothing'}")
    lines += [
        "",
        f"| target `{target}` | real share | " + " | ".join(releases) + " |",
        "|---|---|" + "---|" * len(releases),
    ]
    real_share = train[target].value_counts(normalize=True)
    for value in real_share.index:
        shares = " | ".join(
            f"{r.data[target].value_counts(normalize=True).get(value, 0.0):.3f}" for r in releases.values()
        )
        lines.append(f"| {value} | {real_share[value]:.3f} | {shares} |")
    lines += ["", "| numeric column | real mean | " + " | ".join(f"{n} mean" for n in releases) + " |"]
    lines.append("|---|---|" + "---|" * len(releases))
    for column in train.select_dtypes("number").columns:
        means = " | ".join(f"{r.data[column].astype(float).mean():.2f}" for r in releases.values() if column in r.data)
        lines.append(f"| {column} | {train[column].mean():.2f} | {means} |")
    return "\n".join(lines) + "\n"
