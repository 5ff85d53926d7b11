"""The tabular pipeline: source -> schema -> fit -> sample -> release (-> evaluation), and more rows from a saved
model."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from privsynth.data.output import check_output
from privsynth.data.schema import Schema
from privsynth.data.sources import Source, frame_source, load_source
from privsynth.errors import ParameterError
from privsynth.pipeline.release import (
    RETENTION_POLICIES,
    Release,
    Retention,
    display_url,
    generation_warning,
    release_ledger,
)
from privsynth.privacy.ledger import Ledger
from privsynth.progress import report
from privsynth.provenance.datasheet import check_answers
from privsynth.provenance.lineage import ATTRS_KEY, PROVENANCE_COLUMN, Ancestry, Registry, open_registry, trace
from privsynth.synth import Synthesizer, available, create
from privsynth.synth.base import infer_schema
from privsynth.synth.dp import FitRecord

if TYPE_CHECKING:
    from privsynth.evaluate import Report

logger = logging.getLogger(__name__)

FIT_ROWS = 1_000_000
"""Rows a non-DP method fits on at most: a larger source is sampled uniformly by its engine (``fit_rows``)."""

_API_DEFAULT_REASON = "default of the Python API, the same on every machine; method='deep' for the deep synthesizer"


def check_schema(schema: Schema, source: Source, rows: int = 100_000) -> None:
    """Check the first ``rows`` rows of ``source`` against ``schema``; raise naming the column and value."""
    present = [c for c in schema.names if c in source.columns]
    schema.validate(source.head(rows, present) if present else pd.DataFrame(), check_domains=True)


def synthesize(
    data: Source | pd.DataFrame | str | Path | Release,
    method: str | None = None,
    rows: int | None = None,
    *,
    schema: Schema | str | Path | None = None,
    seed: int | None = None,
    conditions: dict[str, Any] | None = None,
    rebalance: str | None = None,
    mix: Mapping[Any, float] | str = "uniform",
    epsilon: float | None = None,
    delta: float | None = None,
    params: dict[str, Any] | None = None,
    ledger: Ledger | str | os.PathLike[str] | Literal[False] | None = None,
    registry: Registry | str | os.PathLike[str] | Literal[False] | None = None,
    retention: Retention = "keep",
    save_model: str | Path | None = None,
    datasheet: Mapping[str, str] | None = None,
    dataset: str | None = None,
    method_reason: str | None = None,
    fit_rows: int | None = None,
    **source_options: Any,
) -> Release:
    """Fit ``method`` on ``data`` and sample ``rows`` synthetic rows (default: as many as the source has).

    ``method`` defaults to the copula here, not to the best method installed as ``privsynth generate`` does
    (:func:`privsynth.synth.base.default_method`): a script does the same thing on every machine, whatever extras
    are installed, and a caller who wants the deep synthesizer names it. ``method_reason`` is why the caller chose
    ``method`` for its user (the CLI passes its default's reason); the card records whether the method was chosen
    by the user or by default, and why.

    ``data`` may be an earlier :class:`Release`, which makes this one its next generation.
    ``ledger`` (a :class:`~privsynth.privacy.Ledger`, a URL or a path) is where a DP method records its spends;
    a DP method without one uses the default ledger (``$PRIVSYNTH_LEDGER`` or ``~/.privsynth/ledger.sqlite``),
    and ``False`` records nothing (for experiments on public data).
    ``registry`` is the release registry (a :class:`~privsynth.provenance.lineage.Registry`, a URL or a path;
    default: the ledger's database; ``False``: none), used to recognise a source that is a known release and to
    register this one when it is written.
    ``dataset`` (DP methods) is the name the data's budget is kept under in the ledger (default: the source's
    name, e.g. a file's stem); a DP fit takes its structure from ``schema`` or the source's storage types only
    (see :func:`privsynth.synth.dp.dp_schema`), and the rows are not checked against it.
    ``retention`` is ``keep`` or ``delete-model`` (see :class:`Release`); ``save_model`` saves the fitted model
    there right after fitting. ``datasheet`` answers datasheet questions by id
    (:data:`privsynth.provenance.datasheet.QUESTIONS`); the others are answered from what is known.
    ``rebalance`` names a categorical column whose classes the rows follow in proportions ``mix`` (a mapping from
    category to share, or ``"uniform"``) instead of the learned ones, for methods that draw exact conditionals
    (``deep``, ``dp-deep``); the card records it.
    ``fit_rows`` (non-DP methods; default :data:`FIT_ROWS`): a source with more rows is fitted on a uniform sample
    of that many, drawn by its engine (:meth:`~privsynth.data.source_base.Source.sample`); the card says so.
    """
    if retention not in RETENTION_POLICIES:
        raise ParameterError(f"retention must be one of {', '.join(RETENTION_POLICIES)}, not {retention!r}")
    answers = check_answers(datasheet)
    if save_model is not None:
        save_model = check_output(save_model, overwrite=False)
    chosen: Literal["user", "default"] = "user" if method is not None and method_reason is None else "default"
    if method is None:
        method, method_reason = "copula", _API_DEFAULT_REASON
    model = create(method, **(params or {}))
    dp = model.differentially_private
    if rebalance is not None:
        _check_rebalance(model, rebalance, conditions)
    if not dp and dataset is not None:
        raise ParameterError(f"dataset names the budget a DP method spends; '{method}' is not differentially private")
    ledger_object = release_ledger(ledger, dp)
    lineage = None if registry is False else open_registry(registry, ledger_object)
    given = data.data if isinstance(data, Release) else data
    source = load_source(given, **source_options)
    if isinstance(schema, str | Path):
        schema = Schema.load(schema)
    if dp:  # declared structure only, and never checked against the rows: the fit decides what it may use
        declared = None if schema is None else _without_provenance_label(schema)
    else:  # a non-DP fit may read its structure from the rows (a frame keeps its dtypes)
        declared = _without_provenance_label(
            schema if schema is not None else infer_schema(given if isinstance(given, pd.DataFrame) else source)
        )
        check_schema(declared, source)
    ancestry = trace(data, source, lineage)
    if ancestry.generation >= 2:
        logger.warning("%s", generation_warning(ancestry.generation, ancestry, share=not dp))
    if rows is None:
        if dp:
            raise ParameterError("say how many rows to generate (--rows); the true row count is private")
        rows = source.num_rows()
    fitted_on, fit_sample = _fit_sample(source, dp, fit_rows, seed)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    # The fit decides the structure it works from (for a DP fit: synth.dp.dp_schema of what is declared here);
    # a budget or ledger given to a non-DP method is refused by its fit, saying why.
    fit_ledger = False if dp and ledger_object is None else ledger_object
    model.fit(fitted_on, declared, epsilon=epsilon, delta=delta, ledger=fit_ledger, dataset=dataset)
    timings["fit"] = round(time.perf_counter() - start, 3)
    model.ancestry_ = ancestry  # lineage travels with a saved model, so that sample_model's cards keep it
    if save_model is not None:
        model.save(save_model)
    start = time.perf_counter()
    report("sample", 0, 1)
    if rebalance is not None:
        synthetic = model.rebalance(rebalance, mix, rows, seed=seed)  # type: ignore[attr-defined]
    else:
        synthetic = model.sample(rows, conditions=conditions, seed=seed)
    report("sample", 1, 1)
    timings["sample"] = round(time.perf_counter() - start, 3)
    release = Release(
        data=synthetic,
        model=model,
        source_name=model.record_.dataset or source.name if dp else source.name,
        schema=model.published_schema(),
        seed=seed,
        conditions=conditions,
        rebalance=None if rebalance is None else {"column": rebalance, "mix": _plain_mix(mix)},
        timings=timings,
        ancestry=ancestry,
        retention=retention,
        model_path=Path(save_model) if save_model is not None else None,
        datasheet=answers,
        ledger_url=display_url(ledger_object),
        registry=lineage,
        source_fingerprint=None if dp else source.fingerprint(),
        method_chosen=chosen,
        method_reason=method_reason,
        fit_sample=fit_sample,
    )
    synthetic.attrs[ATTRS_KEY] = release.provenance
    return release


def _fit_sample(
    source: Source, dp: bool, fit_rows: int | None, seed: int | None
) -> tuple[Source, dict[str, Any] | None]:
    """The source a non-DP method fits on: the source itself, or a uniform sample of ``fit_rows`` rows drawn by
    its engine when it has more (with what the card says of it). A DP fit reads the whole source through its
    mechanisms (its row count is private, so no sample size can be chosen from it here)."""
    if dp:
        if fit_rows is not None:
            raise ParameterError("fit_rows applies to non-DP methods; a DP method reads every row through its noise")
        return source, None
    limit = FIT_ROWS if fit_rows is None else fit_rows
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ParameterError(f"fit_rows must be a positive integer, not {fit_rows!r}")
    total = source.num_rows()
    if total <= limit:
        return source, None
    logger.info("fitting on a uniform sample of %s of the %s rows of %s", f"{limit:,}", f"{total:,}", source.name)
    sample = source.sample(limit, seed=0 if seed is None else seed)
    described = {"rows": limit, "of_rows": total, "how": "uniform random sample drawn by the source's engine"}
    return frame_source(sample, f"{source.name} (uniform sample)"), described


def evaluate_release(
    release: Release,
    real: pd.DataFrame,
    *,
    holdout: pd.DataFrame | None = None,
    target: str | None = None,
    sensitive: str | None = None,
    schema: Schema | None = None,
    seed: int = 0,
    attach: bool | None = None,
) -> Report:
    """Score a release's rows against the ``real`` rows they were made from (:func:`privsynth.evaluate.evaluate`),
    the report stating the budget the fit ran under.

    The report reads the real rows: it is for the custodian. ``attach`` puts its summary on the card; by default
    a non-DP release's card gets it and a DP one's does not (``attach=True`` puts it there, marked outside the
    guarantee).
    """
    from privsynth.evaluate import evaluate

    fit = release.fit
    budget = None
    if fit.differentially_private and fit.epsilon is not None and fit.delta is not None:
        budget = {"epsilon": fit.epsilon, "delta": fit.delta}
    evaluation = evaluate(
        real,
        release.data,
        holdout=holdout,
        target=target,
        sensitive=sensitive,
        schema=schema,
        seed=seed,
        privacy_budget=budget,
    )
    if (not fit.differentially_private) if attach is None else attach:
        release.attach_report(evaluation)
    return evaluation


def sample_model(
    model: Synthesizer,
    rows: int,
    *,
    conditions: dict[str, Any] | None = None,
    seed: int | None = None,
    registry: Registry | str | os.PathLike[str] | Literal[False] | None = None,
) -> Release:
    """More rows from a fitted tabular model (one :func:`synthesize` saved, or :meth:`Synthesizer.load` read).

    Sampling is post-processing: it spends no budget and reads no data; the card records the fit's budget,
    spends and lineage as the first release's did. ``registry`` is where the release is registered (default: the
    default ledger's database; ``False``: nowhere).
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ParameterError(f"rows must be a whole number of at least 1, not {rows!r}")
    record = getattr(model, "record_", None)
    if not isinstance(record, FitRecord):
        raise ParameterError("this model holds no record of its fit (saved by an older privsynth?): fit it again")
    report("sample", 0, 1)
    synthetic = model.sample(rows, conditions=conditions, seed=seed)
    report("sample", 1, 1)
    lineage = None if registry is False else open_registry(registry, None)
    release = Release(
        data=synthetic,
        model=model,
        source_name=record.dataset or "unknown",
        schema=model.published_schema(),
        seed=seed,
        conditions=conditions,
        record=record,
        ancestry=getattr(model, "ancestry_", None) or Ancestry(),
        registry=lineage,
    )
    synthetic.attrs[ATTRS_KEY] = release.provenance
    return release


def _check_rebalance(model: Synthesizer, column: str, conditions: Mapping[str, Any] | None) -> None:
    if not hasattr(model, "rebalance"):
        rebalancing = ", ".join(name for name, cls in available().items() if hasattr(cls, "rebalance"))
        rebalancing = rebalancing or "deep and dp-deep, which need pip install 'privsynth[deep]'"
        raise ParameterError(
            f"method '{model.name}' cannot rebalance '{column}': use one that draws exact conditionals "
            f"({rebalancing}), or fix one value with conditions (--condition {column}=VALUE)"
        )
    if conditions:
        raise ParameterError("give either conditions or rebalance, not both")


def _plain_mix(mix: Mapping[Any, float] | str) -> dict[str, float] | str:
    return mix if isinstance(mix, str) else {str(value): float(share) for value, share in mix.items()}


def _without_provenance_label(schema: Schema) -> Schema:
    """The schema with a ``_provenance`` column (a label written by ``mix``, not data) left out of synthesis."""
    if PROVENANCE_COLUMN not in schema or not schema[PROVENANCE_COLUMN].synthesize:
        return schema
    label = dataclasses.replace(
        schema[PROVENANCE_COLUMN], synthesize=False, reason="provenance label (real / synthetic-gen<k>), not data"
    )
    return Schema([label if col.name == PROVENANCE_COLUMN else col for col in schema])
