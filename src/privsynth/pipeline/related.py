"""The related-tables pipeline: a folder or DuckDB file of tables -> metadata -> fit -> sample -> a folder of
synthetic tables, each with its data card, and the metadata for review.

Non-DP (:class:`~privsynth.relational.synth.RelatedSynthesizer`): the folder also gets the cross-table evaluation,
metrics computed from the real tables, for the custodian. DP with the person as the unit (``mst``, ``aim``,
``privbayes``: :class:`~privsynth.relational.dp.PersonSynthesizer`): the release is the tables, one DP card per
table built from the fit's :class:`~privsynth.synth.dp.FitRecord` (the whole release's budget, every spend, the
unit ``person`` and k) and the metadata; nothing computed from the real rows without noise is written (no
evaluation, no timings, no schema guessed from values), as single-table ``generate`` does for DP methods. The
metadata must be declared (reviewed, or a bundled set's): inferring keys and relationships reads the rows.

The cards are the single-table cards (:class:`~privsynth.pipeline.release.Release`), with ``generator.related``
saying which table it is, its role (root, child, sequential child, kept; entity, lookup under DP) and the
relationships it was generated through.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from privsynth._version import __version__
from privsynth.data.output import check_output
from privsynth.data.schema import Schema
from privsynth.errors import OutputExistsError, ParameterError
from privsynth.pipeline.release import Release
from privsynth.progress import report
from privsynth.provenance.card import DataCard, file_sha256, plain
from privsynth.provenance.lineage import write_release_table
from privsynth.relational.datasets import RelatedData
from privsynth.relational.dp import DP_METHODS, PersonSynthesizer
from privsynth.relational.evaluate import evaluate_related
from privsynth.relational.metadata import RelatedMetadata
from privsynth.relational.sources import infer_related, open_related, related_name
from privsynth.relational.synth import RelatedSynthesizer

__all__ = ["EVALUATION_FILE", "METADATA_FILE", "RelatedRelease", "check_folder", "synthesize_related"]

logger = logging.getLogger(__name__)

METADATA_FILE = "related.yaml"
EVALUATION_FILE = "related_evaluation.json"


@dataclass
class RelatedRelease:
    """Synthetic related tables, the model that made them, the real tables (for the evaluation) and the metadata."""

    tables: dict[str, pd.DataFrame]
    model: RelatedSynthesizer | PersonSynthesizer
    real: dict[str, pd.DataFrame]  # empty for a DP release: its pipeline keeps no real rows
    metadata: RelatedMetadata
    source_name: str
    seed: int | None
    method_reason: str | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def differentially_private(self) -> bool:
        return isinstance(self.model, PersonSynthesizer)

    def evaluate(self) -> dict[str, Any]:
        """The cross-table metrics of the synthetic tables against the real ones (computed from the real rows);
        refused for a DP release, whose pipeline keeps no real rows (evaluate off the DP path, on the custodian's
        side, with :func:`privsynth.relational.evaluate.evaluate_related`)."""
        if self.differentially_private:
            raise ParameterError(
                "a DP release is not evaluated against the real tables in its pipeline (the metrics would be exact "
                "functions of the private rows); compute them on the custodian's side with "
                "privsynth.relational.evaluate.evaluate_related"
            )
        self.evaluation = {
            "relationships": evaluate_related(self.real, self.tables, self.metadata),
            "rows": {name: {"real": len(self.real[name]), "synthetic": len(t)} for name, t in self.tables.items()},
            "note": "computed from the real tables: for the data's custodian, not for release",
        }
        return self.evaluation

    def write(
        self, folder: str | Path, *, suffix: str = ".csv", overwrite: bool = False, inputs: tuple[str | Path, ...] = ()
    ) -> list[Path]:
        """Write every table (``<table><suffix>``) with its card, ``related.yaml`` and (non-DP only) the evaluation
        JSON into ``folder`` (created if needed); refuses a folder that is, holds or lies inside an input."""
        folder = check_folder(folder, inputs)
        if suffix not in (".csv", ".parquet"):
            raise ParameterError(f"tables are written as .csv or .parquet, not {suffix!r}")
        written: list[Path] = []
        metadata = dataclasses.replace(
            self.metadata,
            tables={
                name: dataclasses.replace(table, source=f"{name}{suffix}")  # under DP: public domains only
                for name, table in self.metadata.tables.items()
            },
            warnings=[],
        )
        yaml_path = check_output(folder / METADATA_FILE, overwrite)
        metadata.save(yaml_path)
        written.append(yaml_path)
        for name, data in self.tables.items():
            path = folder / f"{name}{suffix}"
            written.append(self._write_table(name, data, path, overwrite, inputs))
        if self.differentially_private:
            return written
        if not self.evaluation:
            self.evaluate()
        evaluation = check_output(folder / EVALUATION_FILE, overwrite)
        payload = {**self.evaluation, "timings_cpu_seconds": self._timings(), "privsynth_version": __version__}
        evaluation.write_text(json.dumps(plain(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        written.append(evaluation)
        return written

    def _timings(self) -> dict[str, dict[str, float]]:
        if isinstance(self.model, PersonSynthesizer):  # a DP fit's timings are a function of the private rows
            return {name: {} for name in self.tables}
        fit, sample = self.model.timings_, getattr(self.model, "sample_timings_", {})
        return {name: {"fit": fit.get(name, 0.0), "sample": sample.get(name, 0.0)} for name in self.tables}

    def _related(self, name: str) -> dict[str, Any]:
        return {
            **self.model.plans_[name].describe(),
            "tables": list(self.metadata.tables),
            "relationships": [rel.describe() for rel in self.metadata.relationships],
            "metadata_file": METADATA_FILE,
        }

    def _write_table(
        self, name: str, data: pd.DataFrame, path: Path, overwrite: bool, inputs: tuple[str | Path, ...]
    ) -> Path:
        plan = self.model.plans_[name]
        schema = _card_schema(self.model, name, self.real.get(name))
        if plan.kept:
            written = write_release_table(data, path, {"kept": True, "table": name}, overwrite, inputs)
            card = _kept_card(name, data, written, schema, self.source_name, self._related(name))
            card.write_beside(written)
            return written
        model = self.model.models_[name]
        timings = self._timings()[name]
        release = Release(
            data=data,
            model=model,
            source_name=f"{self.source_name}/{name}",
            schema=schema,
            seed=self.seed,
            conditions=None,
            timings=timings,
            method_chosen="user" if self.method_reason is None else "default",
            method_reason=self.method_reason,
            record=self.model.record_ if isinstance(self.model, PersonSynthesizer) else None,
            ledger_url=self.model.ledger_url_ if isinstance(self.model, PersonSynthesizer) else None,
        )
        written = write_release_table(data, path, release.provenance, overwrite, inputs)
        card = release.card(written)
        card.generator["related"] = self._related(name)
        if isinstance(self.model, PersonSynthesizer):
            card.notes.append(_person_note(self.model, name))
            if name in self.model.bounds_:
                card.generator["related"]["contribution_bound"] = self.model.bounds_[name]
        card.notes.append(
            f"one of {len(self.tables)} related synthetic tables ({', '.join(self.tables)}); keys are new, and every "
            "foreign key names a row of the synthetic parent table"
        )
        card.write_beside(written)
        return written


def _person_note(model: PersonSynthesizer, name: str) -> str:
    """What the unit-level guarantee covers, for a DP card: the unit, the entity's rows and children, the bound k
    on this table's rows per unit, and the lookups left unprotected."""
    rel = model.plans_[name].relationship
    entity = next(plan.name for plan in model.plans_.values() if plan.role == "entity")
    unit = model.unit
    used = (
        ""
        if rel is None
        else f"; of a {unit}'s rows here, at most k={model.bounds_[name]} (the first by "
        f"{rel.order_by or 'a seeded draw'}) were used"
    )
    whose = (
        f"a row of '{entity}' and all of their rows in its child tables"
        if model.bounds_
        else f"a row of '{entity}' (it has no child tables)"
    )
    public = (
        f"; {', '.join(model.lookups)} are public reference tables (lookups), copied whole and not protected"
        if model.lookups
        else ""
    )
    return (
        f"{unit}-level DP: the privacy unit is one {unit}, {whose}{used}{public}; the privacy section's budget and "
        "spends cover every table of this release together"
    )


def check_folder(folder: str | Path, inputs: tuple[str | Path, ...]) -> Path:
    """The output folder, created if needed, after refusing one that is an input, lies inside one or holds one."""
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"'{path}' is a file; give a folder for the related tables")
    target = path.resolve()
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if target == source or target.is_relative_to(source) or source.is_relative_to(target):
            raise OutputExistsError(
                f"'{path}' is, holds or lies inside the input '{given}'; write the synthetic tables to another folder"
            )
    if not path.parent.exists():
        raise ParameterError(f"folder '{path.parent}' does not exist; create it first")
    path.mkdir(exist_ok=True)
    return path


def synthesize_related(
    data: RelatedData | str | Path,
    method: str | None = None,
    rows: int | None = None,
    *,
    metadata: RelatedMetadata | str | Path | None = None,
    seed: int | None = None,
    params: dict[str, Any] | None = None,
    keep: tuple[str, ...] = (),
    method_reason: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    ledger: Any = None,
    dataset: str | None = None,
) -> RelatedRelease:
    """Fit a :class:`RelatedSynthesizer` (non-DP) or, for ``mst``, ``aim`` and ``privbayes``, a
    :class:`~privsynth.relational.dp.PersonSynthesizer` (DP with the person as the unit, at ``epsilon`` and
    ``delta``, recorded in ``ledger`` under ``dataset``) on ``data`` (a folder or DuckDB file of tables, or a bundled
    :class:`RelatedData`) and sample a set of related tables. ``metadata`` is inferred when not given (non-DP
    only). For a DP method, ``params`` holds the person-level options (``max_children``, ``bound_share``,
    ``bound_quantile``, ``entity_share``, ``context``, ``previous``, ``entity``, ``unit``) and the marginal models'
    hyperparameters (the rest); ``keep`` names the public lookup tables."""
    if isinstance(metadata, str | Path):
        metadata = RelatedMetadata.load(metadata)
    if method in DP_METHODS:
        return _synthesize_dp(
            data, method, rows, metadata, seed, dict(params or {}), keep, epsilon, delta, ledger, dataset
        )
    given = [k for k, v in {"epsilon": epsilon, "delta": delta, "ledger": ledger, "dataset": dataset}.items() if v]
    if given:
        raise ParameterError(
            f"{given[0]} applies to DP methods ({', '.join(DP_METHODS)}: person-level DP); '{method or 'the default'}' "
            "is not one"
        )
    if isinstance(data, RelatedData):
        real, name = dict(data.tables), "related"
        metadata = metadata or data.metadata
    else:
        real = {t: source.to_pandas() for t, source in open_related(data).items()}
        name = related_name(data)
        if metadata is None:
            report("infer metadata", 0, 1)
            metadata = infer_related(data)
            report("infer metadata", 1, 1)
    options = dict(params or {})
    epochs = options.pop("epochs", None)
    model = RelatedSynthesizer(method, epochs=epochs, params=options, keep=keep, seed=0 if seed is None else seed)
    model.fit(real, metadata)
    tables = model.sample(rows, seed=seed)
    return RelatedRelease(tables, model, real, metadata, name, seed, method_reason)


_PERSON_OPTIONS = (
    "max_children",
    "bound_share",
    "bound_quantile",
    "max_bound",
    "entity_share",
    "context",
    "previous",
    "entity",
    "unit",
)


def _synthesize_dp(
    data: RelatedData | str | Path,
    method: str,
    rows: int | None,
    metadata: RelatedMetadata | None,
    seed: int | None,
    params: dict[str, Any],
    keep: tuple[str, ...],
    epsilon: float | None,
    delta: float | None,
    ledger: Any,
    dataset: str | None,
) -> RelatedRelease:
    """The DP path: declared metadata only, the person as the unit, no real rows kept for an evaluation."""
    if isinstance(data, RelatedData):
        metadata, name = metadata or data.metadata, "related"
    else:
        name = related_name(data)
        if metadata is None:
            raise ParameterError(
                "a DP release takes no structure from the data, and inferring keys and relationships reads the rows: "
                f"give the reviewed metadata (`privsynth metadata infer {data} -o related.yaml`, review it, then "
                "--metadata related.yaml)"
            )
    options = {key: params.pop(key) for key in _PERSON_OPTIONS if key in params}
    for key in ("context", "previous"):
        if isinstance(options.get(key), str):
            options[key] = [c.strip() for c in str(options[key]).split(",") if c.strip()]
    model = PersonSynthesizer(method, lookups=keep, params=params, **options)
    model.fit(data, metadata, epsilon=epsilon, delta=delta, ledger=ledger, dataset=dataset or name)
    tables = model.sample(rows, seed=seed)
    return RelatedRelease(tables, model, {}, model.metadata_, name, seed, None)


def _card_schema(model: RelatedSynthesizer | PersonSynthesizer, name: str, real: pd.DataFrame | None) -> Schema:
    """The table's schema as a card shows it: keys generated (not excluded), the columns the plan left out (for a
    DP release the declared structure the fit used, never one inferred from the rows)."""
    plan = model.plans_[name]
    if isinstance(model, PersonSynthesizer):
        declared = model.schemas_[name]
    else:
        assert real is not None
        declared = model.metadata_.tables[name].schema or Schema.infer(real)
    excluded = {c.name for c in plan.excluded}
    columns = []
    for column in declared:
        if column.name in excluded:
            columns.append(column)
        elif column.name in plan.new_key:
            columns.append(dataclasses.replace(column, synthesize=True, reason="new key, 1..n"))
        else:
            columns.append(dataclasses.replace(column, synthesize=True, reason=None))
    return Schema(columns)


def _kept_card(
    name: str, data: pd.DataFrame, written: Path, schema: Schema, source: str, related: dict[str, Any]
) -> DataCard:
    return DataCard(
        release_file=written.name,
        release_sha256=file_sha256(written),
        rows=len(data),
        columns=[str(c) for c in data.columns],
        generator={
            "method": "copy",
            "parameters": {},
            "seed": None,
            "differentially_private": False,
            "privsynth_version": __version__,
            "related": related,
        },
        source={"name": f"{source}/{name}"},
        schema=schema.to_dict(private_domains=False),
        excluded_columns=[],
        privacy={"differentially_private": False, "note": "a copy of the real table, declared public (keep)"},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        generation=0,
        retention={"policy": "not applicable", "note": "a copy of a public table fits no model"},
        notes=[f"'{name}' is copied whole: it was declared a public lookup table (keep), not synthesized"],
    )
