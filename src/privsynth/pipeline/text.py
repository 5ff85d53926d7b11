"""The text pipeline: a private text generator (Private Evolution or DP LoRA) fitted on a corpus, filtered
samples released with a card, and more texts from a saved model."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import pandas as pd

from privsynth.data.output import check_output
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source, load_source
from privsynth.errors import ParameterError
from privsynth.pipeline.release import TEXT_CARD_METRICS, Release, display_url, release_ledger
from privsynth.privacy.ledger import Ledger
from privsynth.progress import report
from privsynth.provenance.lineage import open_registry
from privsynth.synth.base import read_model_file, write_model_file
from privsynth.synth.dp import FitRecord, dataset_name

logger = logging.getLogger(__name__)


TEXT_METHODS: Final = ("pe", "dp-lora")
TEXT_OVERSAMPLE: Final = 1.25  # texts generated per text asked for, so that the filters still leave enough


@dataclass
class TextModel:
    """A fitted text generator (Private Evolution or DP LoRA) as a :class:`Release` records it."""

    name: str
    generator: Any
    context: dict[str, Any] = field(default_factory=dict)  # what a later release's card needs (see sample_text)

    differentially_private: bool = True

    def get_params(self) -> dict[str, Any]:
        """The parameters the user chose, as the fit recorded them."""
        return dict(self.record.parameters)

    @property
    def record_(self) -> FitRecord:
        """The fit's record under the name every fitted model gives it (:attr:`Synthesizer.record_`)."""
        return self.record

    @property
    def record(self) -> FitRecord:
        """What the fit may publish (:class:`~privsynth.synth.dp.FitRecord`): a card is built from this only."""
        record: FitRecord | None = getattr(self.generator, "record_", None)
        if record is None:
            raise ParameterError(
                f"this {self.name} model has no record of what its fit may publish (a model saved before privsynth "
                "kept one, or one not fitted): fit it again with `privsynth text generate`"
            )
        return record

    @property
    def spends_(self) -> list[dict[str, Any]]:
        return [dict(spend) for spend in self.record.spends]

    def save(self, path: str | Path) -> None:
        """Write the fitted generator to ``path`` as :meth:`Synthesizer.save` does (a pickle: load only models
        you trust). Private Evolution keeps its last population and votes; DP LoRA its adapter weights. Neither
        keeps the private texts, and sampling from a loaded model spends nothing."""
        write_model_file(path, self.name, self)

    @classmethod
    def load(cls, path: str | Path) -> TextModel:
        """Read a text model written by :meth:`save` (``privsynth text generate --save-model``)."""
        model: TextModel = read_model_file(path, cls)
        return model


def synthesize_text(
    data: Source | pd.DataFrame | str | Path,
    *,
    text_column: str,
    label_column: str | None = None,
    labels: list[str] | None = None,
    method: str = "pe",
    rows: int,
    epsilon: float,
    delta: float | None = None,
    ledger: Ledger | str | os.PathLike[str] | Literal[False] | None = None,
    dataset: str | None = None,
    seed: int = 0,
    names: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
    canaries: int = 0,
    save_model: str | Path | None = None,
    **source_options: Any,
) -> Release:
    """Fit a private text generator on the ``text_column`` of ``data`` and release ``rows`` filtered texts.

    ``method`` is ``pe`` (Private Evolution with the local model) or ``dp-lora`` (DP-SGD LoRA fine-tuning of it).
    With ``label_column``, ``labels`` is the label set declared public (the generators write texts per label;
    a text whose label is not in it still counts in the budget but is not learned from). The texts are
    filtered (PII scrubbed, too short, low-quality, duplicate texts removed: post-processing, free under DP,
    counted on the card); :data:`TEXT_OVERSAMPLE` times ``rows`` are generated so that ``rows`` usually remain.
    The budget (``delta`` by default :data:`~privsynth.synth.dp.DEFAULT_DELTA`) is spent in ``ledger`` as for
    tabular methods (default ledger; ``False``: none) under ``dataset``, the name the corpus's budget is kept under
    (default: the source's name, a file's stem; name a data frame's corpus yourself). Nothing computed from the
    texts (their number, a hash, timings, unusable texts or labels) reaches the release or its card; an evaluation
    report is attached only on purpose (:meth:`Release.attach_report`).
    ``canaries`` (``dp-lora`` only): that many random secrets are added to the training texts and the fitted
    model's exposure of each (:func:`~privsynth.text.dp_finetune.canary_exposure`) goes on the card
    (``canaries``) and, through ``release.canaries``, into the report. They are records of the fit like the
    others: the budget covers the corpus with them, and the release is sampled from that model.
    ``save_model``: also write the fitted model there (:meth:`TextModel.save`; never over an existing file);
    :func:`sample_text` releases more texts from it later without spending budget.
    """
    if method not in TEXT_METHODS:
        raise ParameterError(f"unknown text method {method!r}; choose one of {', '.join(TEXT_METHODS)}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ParameterError(f"rows must be a whole number of at least 1, not {rows!r}")
    if isinstance(canaries, bool) or not isinstance(canaries, int) or canaries < 0:
        raise ParameterError(f"canaries must be a whole number >= 0, not {canaries!r}")
    if canaries and method != "dp-lora":
        raise ParameterError(
            f"canaries measure what a fine-tuned model memorised: use them with method 'dp-lora', not {method!r}"
        )
    if save_model is not None:
        check_output(save_model, overwrite=False)
    if label_column is not None and not labels:
        raise ParameterError(
            f"declare the public label set of '{label_column}' (labels=[...], --labels A,B): reading it from the "
            "private texts would leak it"
        )
    source = load_source(data, **source_options)
    wanted = [text_column] + ([label_column] if label_column else [])
    missing = [c for c in wanted if c not in source.columns]
    if missing:
        raise ParameterError(f"the data has no column {missing[0]!r}; its columns are {', '.join(source.columns)}")
    name = dataset_name(dataset, source)
    frame = source.to_pandas(wanted)
    texts = frame[text_column]
    private_labels = None if label_column is None else frame[label_column].astype("string").tolist()
    ledger_object = release_ledger(ledger, True)
    model = _text_generator(method, seed, params or {})
    audit = None
    common: dict[str, Any] = {
        "public_labels": labels,
        "epsilon": epsilon,
        "delta": delta,
        "ledger": ledger_object if ledger_object is not None else False,
        "dataset": name,
        # for the ledger's keyed look-alike hint only (it stores an HMAC, never this), as tabular fits do
        "content": None if ledger_object is None else source.fingerprint(),
    }
    if canaries:
        from privsynth.text.dp_finetune import canary_exposure

        result = canary_exposure(model, texts.tolist(), private_labels, canaries=canaries, seed=seed, **common)
        audit = result.to_card()
    else:
        model.fit(texts.tolist(), private_labels, **common)
    del frame, texts, private_labels
    record: FitRecord = model.record_
    fitted = TextModel(
        method,
        model,
        context={
            "source_name": name,
            "text_column": text_column,
            "label_column": label_column,
            "labels": list(labels or []),
            "epsilon": record.epsilon,
            "delta": record.delta,
            "ledger_url": display_url(ledger_object),
        },
    )
    if save_model is not None:
        fitted.save(check_output(save_model, overwrite=False))
    release = sample_text(fitted, rows, seed=seed, names=names, ledger=ledger_object if ledger is not False else False)
    release.canaries = audit
    release.model_path = Path(save_model) if save_model is not None else None
    return release


def sample_text(
    model: TextModel,
    rows: int,
    *,
    seed: int = 0,
    names: tuple[str, ...] = (),
    ledger: Ledger | str | os.PathLike[str] | Literal[False] | None = None,
) -> Release:
    """Release ``rows`` filtered texts from a fitted text model (one :func:`synthesize_text` fitted, or one
    :meth:`TextModel.load` read): post-processing, so it spends nothing; the card records the fit's budget and
    spends. ``ledger`` is only where the release is registered for lineage (default: the default ledger)."""
    from privsynth.text.filters import apply_filters

    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ParameterError(f"rows must be a whole number of at least 1, not {rows!r}")
    context = model.context
    if not context:
        raise ParameterError("this text model has no record of its fit; fit it with synthesize_text")
    text_column, label_column = context["text_column"], context["label_column"]
    start = time.perf_counter()
    report("sample", 0, 1)
    generated = model.generator.sample(math.ceil(rows * TEXT_OVERSAMPLE), seed=seed)
    report("sample", 1, 1)
    timings = {"sample": round(time.perf_counter() - start, 3)}
    kept, counts = apply_filters(generated["text"].tolist(), names=names)
    synthetic = generated.iloc[counts.kept_index].copy()
    synthetic["text"] = kept
    synthetic = synthetic.head(rows).reset_index(drop=True)
    synthetic = synthetic.rename(columns={"text": text_column, "label": label_column or "label"})
    if len(synthetic) < rows:
        logger.warning(
            "the filters left %d of the %d texts asked for (see the card's filter counts)", len(synthetic), rows
        )
    columns = [Column(text_column, Kind.TEXT, dtype="str")]
    if label_column is not None:
        columns.append(Column(label_column, Kind.CATEGORICAL, dtype="str", categories=context["labels"], public=True))
    ledger_object = None if ledger is False else release_ledger(ledger, True)
    return Release(
        data=synthetic,
        model=model,
        source_name=context["source_name"],
        schema=Schema(columns),
        seed=seed,
        conditions=None,
        record=model.record,
        timings=timings,
        ledger_url=context.get("ledger_url"),
        registry=None if ledger_object is None else open_registry(None, ledger_object),
        filters=counts.to_dict(),
        card_metrics=TEXT_CARD_METRICS,
    )


def _text_generator(method: str, seed: int, params: dict[str, Any]) -> Any:
    if method == "pe":
        from privsynth.text.private_evolution import PrivateEvolution

        return PrivateEvolution(seed=seed, **params)
    from privsynth.text.dp_finetune import DPLoRA

    return DPLoRA(seed=seed, **params)
