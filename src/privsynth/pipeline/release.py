"""A release: synthetic rows plus everything its data card records, and the card built from the fit's record."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import pandas as pd

from privsynth._version import __version__
from privsynth.data.output import check_output
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.evaluate.catalogue import CARD, TEXT_CARD, shown_in
from privsynth.privacy.database import display_url as database_url
from privsynth.privacy.ledger import Ledger
from privsynth.provenance.card import DataCard, card_html_path, card_path, file_sha256, plain
from privsynth.provenance.datasheet import answer_datasheet
from privsynth.provenance.lineage import Ancestry, Registry, ReleaseRecord, file_fingerprints, write_release_table
from privsynth.synth import Synthesizer, create
from privsynth.synth.dp import FitRecord, ledger_for

if TYPE_CHECKING:
    from privsynth.evaluate import Report


class FittedModel(Protocol):
    """What a release needs of a model that is not a tabular :class:`Synthesizer` (the text pipeline's
    ``TextModel``): its method name, its parameters, the record of what its fit may publish, and a way to save it."""

    name: str
    differentially_private: bool

    def get_params(self) -> dict[str, Any]: ...

    @property
    def record_(self) -> FitRecord: ...

    def save(self, path: str | Path) -> None: ...


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
    model: Synthesizer | FittedModel
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
    method_chosen: Literal["user", "default"] | None = None  # who chose the method (None: not known, e.g. sample)
    method_reason: str | None = None  # why a default method was chosen (the card and terminal say it)
    fit_sample: dict[str, Any] | None = None  # non-DP: the uniform sample a large source was fitted on

    def __post_init__(self) -> None:
        if self.record is None:
            self.record = self.model.record_

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
        if self.method_chosen is not None:
            generator["chosen"] = self.method_chosen
        if self.method_reason is not None:
            generator["method_reason"] = self.method_reason
        source: dict[str, Any] = {"name": self.source_name, "generation": self.ancestry.source_generation}
        if not dp:  # a hash, timings and the share of synthetic rows are functions of the private rows
            generator["timings_seconds"] = self.timings
            source["synthetic_share"] = self.ancestry.synthetic_share
            if self.source_fingerprint is not None:
                source["fingerprint_sha256"] = self.source_fingerprint
            if self.fit_sample is not None:
                source["fit_sample"] = self.fit_sample
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
            "contribution_bound": fit.contribution_bound,
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
            notes.append(generation_warning(self.generation, self.ancestry, share=not self.differentially_private))
        return notes


def generation_warning(generation: int, ancestry: Ancestry, *, share: bool = True) -> str:
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


def release_ledger(ledger: Ledger | str | os.PathLike[str] | Literal[False] | None, dp: bool) -> Ledger | None:
    """The ledger a fit records its spends in (and its release is registered beside): as given, the default one
    for a DP method (:func:`privsynth.synth.dp.ledger_for`), none for a non-DP method given none."""
    return None if ledger is None and not dp else ledger_for(ledger)


def display_url(ledger: Any) -> str | None:
    """The ledger's URL as a card may show it (any password hidden), or None."""
    url = getattr(ledger, "url", None)
    return database_url(url) if isinstance(url, str) else None
