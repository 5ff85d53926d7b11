"""The one place that wires the stages together: source -> schema -> fit -> sample -> release (+ card).

Each stage is usable alone; this module only chains them and records what happened, so that the CLI, the
Python API and (later) the service produce the same release and the same card.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from privsynth._version import __version__
from privsynth.data.output import check_output, write_table
from privsynth.data.schema import Schema
from privsynth.data.sources import Source, load_source
from privsynth.errors import ParameterError
from privsynth.progress import report
from privsynth.provenance.card import DataCard, card_path, file_sha256
from privsynth.synth import Synthesizer, create
from privsynth.synth.base import infer_schema

logger = logging.getLogger(__name__)


@dataclass
class Release:
    """Synthetic rows plus everything the data card records about how they were made."""

    data: pd.DataFrame
    model: Synthesizer
    source_name: str
    source_fingerprint: str
    schema: Schema
    seed: int | None
    conditions: dict[str, Any] | None
    epsilon: float | None = None
    delta: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def excluded(self) -> list[dict[str, str]]:
        return [{"column": c.name, "reason": c.reason or "synthesize: false"} for c in self.schema.excluded()]

    def card(self, release_file: Path) -> DataCard:
        return DataCard(
            release_file=release_file.name,
            release_sha256=file_sha256(release_file),
            rows=len(self.data),
            columns=list(self.data.columns),
            generator={
                "method": self.model.name,
                "parameters": self.model.get_params(),
                "seed": self.seed,
                "conditions": self.conditions,
                "differentially_private": self.model.differentially_private,
                "privsynth_version": __version__,
                "timings_seconds": self.timings,
            },
            source={"name": self.source_name, "fingerprint_sha256": self.source_fingerprint},
            schema=self.schema.to_dict(private_domains=False),
            excluded_columns=self.excluded,
            privacy={"epsilon": self.epsilon, "delta": self.delta}
            if self.model.differentially_private
            else {"differentially_private": False, "note": "no formal privacy guarantee"},
            created=self.created,
        )

    def write(self, path: str | Path, overwrite: bool = False, inputs: tuple[str | Path, ...] = ()) -> Path:
        """Write the rows (CSV or Parquet by suffix) and ``<name>.card.json`` beside them; returns the data path."""
        check_output(card_path(path), overwrite)
        written = write_table(self.data, path, overwrite, inputs)
        self.card(written).write(card_path(written))
        return written


def check_schema(schema: Schema, source: Source, rows: int = 100_000) -> None:
    """Check the first ``rows`` rows of ``source`` against ``schema``; raise naming the column and value."""
    present = [c for c in schema.names if c in source.columns]
    schema.validate(source.head(rows, present) if present else pd.DataFrame(), check_domains=True)


def synthesize(
    data: Source | pd.DataFrame | str | Path,
    method: str = "copula",
    rows: int | None = None,
    *,
    schema: Schema | str | Path | None = None,
    seed: int | None = None,
    conditions: dict[str, Any] | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    params: dict[str, Any] | None = None,
    **source_options: Any,
) -> Release:
    """Fit ``method`` on ``data`` and sample ``rows`` synthetic rows (default: as many as the source has)."""
    source = load_source(data, **source_options)
    if isinstance(schema, str | Path):
        schema = Schema.load(schema)
    if schema is None:
        schema = infer_schema(data if isinstance(data, pd.DataFrame) else source)
    check_schema(schema, source)
    model = create(method, **(params or {}))
    if rows is None:
        if model.differentially_private:
            raise ParameterError("say how many rows to generate (--rows); the true row count is private")
        rows = source.num_rows()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model.fit(source, schema, epsilon=epsilon, delta=delta)
    timings["fit"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    report("sample", 0, 1)
    synthetic = model.sample(rows, conditions=conditions, seed=seed)
    report("sample", 1, 1)
    timings["sample"] = round(time.perf_counter() - start, 3)
    return Release(
        data=synthetic,
        model=model,
        source_name=source.name,
        source_fingerprint=source.fingerprint(),
        schema=schema,
        seed=seed,
        conditions=conditions,
        epsilon=epsilon,
        delta=delta,
        timings=timings,
    )
