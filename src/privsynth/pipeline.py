"""The one place that wires the stages together: source -> schema -> fit -> sample -> release (+ card).

Each stage is usable alone; this module only chains them and records what happened, so that the CLI, the
Python API and (later) the service produce the same release and the same card. It also keeps the release's
label attached: every written release is registered (in the privacy ledger's database), and a model fitted on
a known release makes a release one generation further from real data.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import pandas as pd

from privsynth._version import __version__
from privsynth.data.output import check_output
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source, load_source
from privsynth.errors import ParameterError
from privsynth.evaluate.catalogue import CARD, TEXT_CARD, shown_in
from privsynth.privacy.accountant import open_ledger
from privsynth.privacy.ledger import Ledger
from privsynth.progress import report
from privsynth.provenance.card import DataCard, card_html_path, card_path, file_sha256, plain
from privsynth.provenance.datasheet import answer_datasheet, check_answers
from privsynth.provenance.lineage import (
    ATTRS_KEY,
    PROVENANCE_COLUMN,
    Ancestry,
    Registry,
    ReleaseRecord,
    file_fingerprints,
    open_registry,
    trace,
    write_release_table,
)
from privsynth.synth import Synthesizer, available, create
from privsynth.synth.base import infer_schema, read_model_file, write_model_file
from privsynth.synth.dp import FitRecord, dataset_name, dp_schema

if TYPE_CHECKING:
    from privsynth.evaluate import Report

logger = logging.getLogger(__name__)

RETENTION_POLICIES: Final = ("keep", "delete-model")
Retention = Literal["keep", "delete-model"]

# The evaluation metrics a card summarises (all of the report's values would include none of its real-data tables,
# but a short list is what a reader of the card needs): the metric catalogue's card entries.
CARD_METRICS: Final = shown_in(CARD)
TEXT_CARD_METRICS: Final = shown_in(TEXT_CARD)


@dataclass
class Release:
    """Synthetic rows plus everything the data card records about how they were made.

    ``ancestry`` says which known releases the source descends from (``generation`` is one more than theirs);
    ``retention`` is what happens to the fitted model once the release is written: ``keep`` it, or
    ``delete-model`` (the model file saved by :meth:`save_model` or ``synthesize(save_model=...)``, the files
    the synthesizer lists in ``intermediates_``, and the fitted state in memory).
    """

    data: pd.DataFrame
    model: Synthesizer | TextModel
    source_name: str
    schema: Schema
    seed: int | None
    conditions: dict[str, Any] | None
    record: FitRecord | None = None
    rebalance: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    release_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ancestry: Ancestry = field(default_factory=Ancestry)
    retention: Retention = "keep"
    model_path: Path | None = None
    datasheet: dict[str, str] = field(default_factory=dict)
    ledger_url: str | None = None
    registry: Registry | None = None
    report: Report | None = None
    deleted: dict[str, Any] | None = None
    written: list[Path] = field(default_factory=list)
    filters: dict[str, Any] | None = None
    canaries: dict[str, Any] | None = None
    card_metrics: tuple[str, ...] = ()
    source_fingerprint: str | None = None  # non-DP releases only: a hash of the data has no place on a DP card

    def __post_init__(self) -> None:
        if self.record is None:
            self.record = self.model.record if isinstance(self.model, TextModel) else self.model.record_

    @property
    def fit(self) -> FitRecord:
        """What the fit may publish; the card's generator and privacy sections come from this only."""
        assert self.record is not None  # set in __post_init__
        return self.record

    @property
    def differentially_private(self) -> bool:
        return self.fit.differentially_private

    @property
    def epsilon(self) -> float | None:
        return self.fit.epsilon

    @property
    def delta(self) -> float | None:
        return self.fit.delta

    @property
    def generation(self) -> int:
        """1 for a model fitted on real data, k + 1 for one fitted on a generation-k release."""
        return self.ancestry.generation

    @property
    def excluded(self) -> list[dict[str, str]]:
        if self.differentially_private:  # a reason written by `schema infer` may quote the data (distinct shares)
            return [
                {"column": c.name, "reason": "left out by the schema (synthesize: false)"}
                for c in self.schema.excluded()
            ]
        return [{"column": c.name, "reason": c.reason or "synthesize: false"} for c in self.schema.excluded()]

    @property
    def provenance(self) -> dict[str, Any]:
        """The label written into Parquet metadata and frame attributes (no data, no paths, no hash of the data)."""
        return {
            "release_id": self.release_id,
            "generation": self.generation,
            "parents": [p.release_id for p in self.ancestry.parents if p.release_id],
            "method": self.fit.method,
            "created": self.created,
            "privsynth_version": __version__,
        }

    def attach_report(self, report: Report) -> None:
        """Summarise an evaluation report (:func:`privsynth.evaluate.evaluate`) on the card.

        Only the metric values are copied, not the report's tables, which hold statistics of the real data.
        Cards already written are written again with the summary. The metrics are computed from the real rows:
        on a DP release they are outside the guarantee, and the card says so (attach them on purpose only).
        """
        from privsynth.evaluate import Report

        if not isinstance(report, Report):
            raise ParameterError(f"attach_report takes a privsynth.evaluate.Report, not {type(report).__name__}")
        self.report = report
        for path in self.written:
            self.card(path).write_beside(path)

    def save_model(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the fitted model to ``path`` (retention ``delete-model`` deletes it once the release is written)."""
        if self.deleted is not None:
            raise ParameterError("the fitted model was deleted under retention 'delete-model'; fit again to save one")
        path = check_output(path, overwrite)
        self.model.save(path)
        self.model_path = path
        return path

    def card(self, release_file: Path) -> DataCard:
        fit = self.fit
        dp = fit.differentially_private
        generator: dict[str, Any] = {
            "method": fit.method,
            "parameters": plain(dict(fit.parameters)),
            "seed": self.seed,
            "conditions": self.conditions,
            "rebalance": self.rebalance,
            "differentially_private": dp,
            "privsynth_version": __version__,
        }
        source: dict[str, Any] = {"name": self.source_name, "generation": self.ancestry.source_generation}
        if not dp:  # a hash, timings and the share of synthetic rows are functions of the private rows
            generator["timings_seconds"] = self.timings
            source["synthetic_share"] = self.ancestry.synthetic_share
            if self.source_fingerprint is not None:
                source["fingerprint_sha256"] = self.source_fingerprint
        card = DataCard(
            kind="synthetic",
            release_id=self.release_id,
            release_file=release_file.name,
            release_sha256=file_sha256(release_file),
            rows=len(self.data),
            columns=list(self.data.columns),
            generator=generator,
            source=source,
            schema=self.schema.to_dict(private_domains=False),
            excluded_columns=self.excluded,
            privacy=self._privacy(),
            created=self.created,
            generation=self.generation,
            parents=[p.to_dict() for p in self.ancestry.parents],
            metrics=self._metrics(),
            retention=self._retention(),
            notes=self._notes(),
            filters=self.filters,
            canaries=self.canaries,
        )
        card.datasheet = answer_datasheet(card.to_dict(), self.datasheet)
        return card

    def write(self, path: str | Path, overwrite: bool = False, inputs: tuple[str | Path, ...] = ()) -> Path:
        """Write the rows (CSV or Parquet by suffix) and ``<name>.card.json`` / ``.card.html`` beside them.

        The release is registered (when it has a registry) under its content fingerprints; with retention
        ``delete-model`` the fitted model and its files are deleted before the card, which records it, is
        written. Returns the data path.
        """
        check_output(card_path(path), overwrite)
        check_output(card_html_path(path), overwrite)
        data = self.data.copy(deep=False)
        data.attrs = {}
        written = write_release_table(data, path, self.provenance, overwrite, inputs)
        if self.registry is not None:
            record = ReleaseRecord(
                release_id=self.release_id,
                kind="synthetic",
                generation=self.generation,
                parents=tuple(p.release_id for p in self.ancestry.parents if p.release_id),
                method=self.model.name,
                path=str(written.resolve()),
                created_at=datetime.fromisoformat(self.created),
            )
            self.registry.register(record, file_fingerprints(written, data))
        if self.retention == "delete-model" and self.deleted is None:
            self._delete_model()
        self.card(written).write_beside(written)
        if written not in self.written:
            self.written.append(written)
        return written

    def _delete_model(self) -> None:
        """Delete the saved model file, the synthesizer's intermediate files, and the fitted state in memory."""
        files = [self.model_path] if self.model_path is not None else []
        files += [Path(p) for p in getattr(self.model, "intermediates_", [])]
        deleted: list[str] = []
        for path in files:
            if path.is_dir():
                shutil.rmtree(path)
                deleted.append(path.name)
            elif path.exists():
                path.unlink()
                deleted.append(path.name)
        self.model = create(self.model.name, **self.model.get_params())
        self.deleted = {"files": deleted, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        logger.info("retention delete-model: deleted the fitted model (%s)", ", ".join(deleted) or "in memory only")

    def _privacy(self) -> dict[str, Any]:
        fit = self.fit
        spends = plain([dict(spend) for spend in fit.spends])
        if not fit.differentially_private:
            return {"differentially_private": False, "note": "no formal privacy guarantee", "spends": spends}
        return {
            "differentially_private": True,
            "epsilon": fit.epsilon,
            "delta": fit.delta,
            "rho": fit.rho,
            "rho_spent": fit.rho_spent if spends else None,
            "unit": fit.unit,
            "dataset": fit.dataset,
            "spends": spends,
            "released": plain(dict(fit.released)),
            "assumptions": list(fit.assumptions),
            "ledger": self.ledger_url,
            "note": "each spend was recorded in the ledger before anything was released"
            if self.ledger_url
            else "no ledger: the spends were checked against this budget only, not recorded",
        }

    def _metrics(self) -> dict[str, Any]:
        if self.report is None:
            return {}
        values = self.report.values()
        out: dict[str, Any] = {
            "summary": plain({key: values[key] for key in self.card_metrics or CARD_METRICS if key in values}),
            "evaluated_rows": plain(
                {k: self.report.meta.get(k) for k in ("real_rows", "synthetic_rows", "holdout_rows")}
            ),
            "seed": self.report.meta.get("seed"),
            "note": self.report.disclaimer(),
        }
        if self.differentially_private:
            out["outside_the_guarantee"] = True
            out["note"] = (
                "OUTSIDE THE PRIVACY GUARANTEE: these metrics and row counts were computed from the real rows "
                "without noise and attached on purpose; share this card only with people who may see them. "
                + out["note"]
            )
        return out

    def _retention(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.retention,
            "model_file": self.model_path.name if self.model_path is not None else None,
        }
        if self.deleted is not None:
            out["deleted_files"] = self.deleted["files"]
            out["deleted_at"] = self.deleted["at"]
            out["note"] = "the fitted model and its intermediate files were deleted after the release was written"
        elif self.model_path is None:
            out["note"] = "the fitted model was not saved to disk"
        else:
            out["note"] = "the fitted model is kept; delete it when the release is final"
        return out

    def _notes(self) -> list[str]:
        notes = list(self.ancestry.notes) + list(self.fit.assumptions)
        if self.generation >= 2:
            notes.append(_generation_warning(self.generation, self.ancestry, share=not self.differentially_private))
        return notes


def _generation_warning(generation: int, ancestry: Ancestry, *, share: bool = True) -> str:
    """The card's and the log's warning for a model fitted on synthetic rows; ``share=False`` on a DP path (the
    exact share of synthetic source rows is a function of the private rows)."""
    found = ", ".join(sorted({p.found_by for p in ancestry.parents}))
    shown = (
        f" ({ancestry.synthetic_share:.0%} of the source rows are synthetic)"
        if share and ancestry.synthetic_share is not None
        else ""
    )
    return (
        f"generation {generation}: the model was fitted on synthetic data{shown}, recognised by {found}. "
        "Models trained on synthetic output lose tails and rare categories generation after generation; "
        "fit on real data, or mix real and synthetic rows under a cap (privsynth mix)."
    )


def check_schema(schema: Schema, source: Source, rows: int = 100_000) -> None:
    """Check the first ``rows`` rows of ``source`` against ``schema``; raise naming the column and value."""
    present = [c for c in schema.names if c in source.columns]
    schema.validate(source.head(rows, present) if present else pd.DataFrame(), check_domains=True)


def synthesize(
    data: Source | pd.DataFrame | str | Path | Release,
    method: str = "copula",
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
    **source_options: Any,
) -> Release:
    """Fit ``method`` on ``data`` and sample ``rows`` synthetic rows (default: as many as the source has).

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
    """
    if retention not in RETENTION_POLICIES:
        raise ParameterError(f"retention must be one of {', '.join(RETENTION_POLICIES)}, not {retention!r}")
    answers = check_answers(datasheet)
    if save_model is not None:
        save_model = check_output(save_model, overwrite=False)
    model = create(method, **(params or {}))
    dp = model.differentially_private
    if rebalance is not None:
        _check_rebalance(model, rebalance, conditions)
    if not dp and dataset is not None:
        raise ParameterError(f"dataset names the budget a DP method spends; '{method}' is not differentially private")
    ledger_object = _open_ledger(ledger, dp)
    lineage = None if registry is False else open_registry(registry, ledger_object)
    given = data.data if isinstance(data, Release) else data
    source = load_source(given, **source_options)
    if isinstance(schema, str | Path):
        schema = Schema.load(schema)
    if dp:
        # Structure is declared, never read from the rows, and the data are not checked against it: a DP fit
        # puts what fits no cell nowhere, and says nothing about it.
        declared, _ = dp_schema(source, schema if schema is None else _without_provenance_label(schema))
    else:
        if schema is None:
            schema = infer_schema(given if isinstance(given, pd.DataFrame) else source)
        declared = _without_provenance_label(schema)
        check_schema(declared, source)
    ancestry = trace(data, source, lineage)
    if ancestry.generation >= 2:
        logger.warning("%s", _generation_warning(ancestry.generation, ancestry, share=not dp))
    if rows is None:
        if dp:
            raise ParameterError("say how many rows to generate (--rows); the true row count is private")
        rows = source.num_rows()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    fit_options: dict[str, Any] = {}
    if dp:
        fit_options = {"epsilon": epsilon, "delta": delta, "ledger": ledger_object or False, "dataset": dataset}
    elif epsilon is not None or delta is not None or ledger not in (None, False):
        fit_options = {"epsilon": epsilon, "delta": delta, "ledger": ledger_object}  # refused by fit, with why
    model.fit(source, declared if not dp else (None if schema is None else declared), **fit_options)
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
    card_schema = declared
    if dp:  # the released domains (DP outputs) for modelled columns, the declared structure for the others
        card_schema = Schema([_released(model.schema_, c) for c in declared], target=declared.target)
    release = Release(
        data=synthetic,
        model=model,
        source_name=model.record_.dataset or source.name if dp else source.name,
        schema=card_schema,
        seed=seed,
        conditions=conditions,
        rebalance=None if rebalance is None else {"column": rebalance, "mix": _plain_mix(mix)},
        timings=timings,
        ancestry=ancestry,
        retention=retention,
        model_path=Path(save_model) if save_model is not None else None,
        datasheet=answers,
        ledger_url=_display_url(ledger_object),
        registry=lineage,
        source_fingerprint=None if dp else source.fingerprint(),
    )
    synthetic.attrs[ATTRS_KEY] = release.provenance
    return release


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
        schema=model.schema_,
        seed=seed,
        conditions=conditions,
        record=record,
        ancestry=getattr(model, "ancestry_", None) or Ancestry(),
        registry=lineage,
    )
    synthetic.attrs[ATTRS_KEY] = release.provenance
    return release


def _released(fitted: Schema, column: Column) -> Column:
    """The fitted model's column (with the domain the DP fit released), or the declared one it left out."""
    return fitted[column.name] if column.name in fitted else column  # noqa: SIM401 (Schema has no get)


def _check_rebalance(model: Synthesizer, column: str, conditions: Mapping[str, Any] | None) -> None:
    if not hasattr(model, "rebalance"):
        rebalancing = ", ".join(name for name, cls in available().items() if hasattr(cls, "rebalance"))
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


def _open_ledger(ledger: Ledger | str | os.PathLike[str] | Literal[False] | None, dp: bool) -> Ledger | None:
    """The ledger a fit records its spends in: as given, the default one for a DP method, or none."""
    if ledger is False:
        return None
    if ledger is None:
        return Ledger() if dp else None
    return open_ledger(ledger)


def _display_url(ledger: Any) -> str | None:
    url = getattr(ledger, "url", None)
    if not isinstance(url, str):
        return None
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ---- text ---------------------------------------------------------------------------------------------------------

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
    ledger_object = _open_ledger(ledger, True)
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
            "ledger_url": _display_url(ledger_object),
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
    ledger_object = None if ledger is False else _open_ledger(ledger, True)
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
