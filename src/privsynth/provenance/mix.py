"""Training sets that mix real and synthetic rows without letting the synthetic share pass a cap.

Models trained on their own output collapse when synthetic data replaces real data, and stay stable when it is
added to the real data instead (Gerstgrasser et al., "Is Model Collapse Inevitable? Breaking the Curse of
Recursion by Accumulating Real and Synthetic Data", 2024). :func:`mix` keeps every real row and draws at most as
many synthetic rows as the cap allows, labels each row in a ``_provenance`` column (``real`` or
``synthetic-gen<k>``, k taken from the releases' lineage), and writes its own data card.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from privsynth._version import __version__
from privsynth.data.output import check_output
from privsynth.data.sources import load_source
from privsynth.errors import DataError, ParameterError
from privsynth.provenance.card import DataCard, card_html_path, card_path, file_sha256
from privsynth.provenance.datasheet import answer_datasheet, check_answers
from privsynth.provenance.lineage import (
    PROVENANCE_COLUMN,
    REAL_LABEL,
    Ancestry,
    Registry,
    ReleaseRecord,
    file_fingerprints,
    open_registry,
    synthetic_label,
    trace,
    write_release_table,
)

__all__ = ["Mix", "max_synthetic_rows", "mix"]

logger = logging.getLogger(__name__)

MixInput = pd.DataFrame | str | Path | Any  # a frame, a file, or a Release


@dataclass
class SyntheticInput:
    """One synthetic input of a mix: its rows, what it is called, its generation and how that was found."""

    data: pd.DataFrame
    name: str
    generation: int
    release_id: str | None
    found_by: str | None
    rows_used: int = 0

    @property
    def label(self) -> str:
        return synthetic_label(self.generation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": len(self.data),
            "rows_used": self.rows_used,
            "generation": self.generation,
            "label": self.label,
            "release_id": self.release_id,
            "found_by": self.found_by,
        }


@dataclass
class Mix:
    """A training set: all real rows, capped synthetic rows, and a ``_provenance`` label on each row."""

    data: pd.DataFrame
    real_name: str
    real_fingerprint: str
    real_rows: int
    inputs: list[SyntheticInput]
    max_synthetic_share: float
    seed: int | None
    dropped_columns: list[str]
    registry: Registry | None = None
    datasheet: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    release_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def synthetic_rows(self) -> int:
        return sum(i.rows_used for i in self.inputs)

    @property
    def synthetic_share(self) -> float:
        return self.synthetic_rows / len(self.data) if len(self.data) else 0.0

    @property
    def generation(self) -> int:
        """The highest generation among the synthetic rows kept (0 when none was kept)."""
        return max((i.generation for i in self.inputs if i.rows_used), default=0)

    def card(self, release_file: Path) -> DataCard:
        card = DataCard(
            kind="mix",
            release_id=self.release_id,
            release_file=release_file.name,
            release_sha256=file_sha256(release_file),
            rows=len(self.data),
            columns=list(self.data.columns),
            generator={
                "method": "mix",
                "parameters": {"max_synthetic_share": self.max_synthetic_share},
                "seed": self.seed,
                "differentially_private": False,
                "privsynth_version": __version__,
            },
            source={"name": self.real_name, "fingerprint_sha256": self.real_fingerprint, "generation": 0},
            schema={"privsynth_schema": 1, "columns": []},
            excluded_columns=[],
            privacy={"differentially_private": False, "note": "the real rows are included unchanged"},
            created=self.created,
            generation=self.generation,
            parents=[
                {"release_id": i.release_id, "generation": i.generation, "found_by": "mix input", "file": i.name}
                for i in self.inputs
                if i.rows_used
            ],
            retention={"policy": "not applicable", "note": "a mix fits no model"},
            mix={
                "real_rows": self.real_rows,
                "synthetic_rows": self.synthetic_rows,
                "synthetic_share": self.synthetic_share,
                "max_synthetic_share": self.max_synthetic_share,
                "dropped_columns": self.dropped_columns,
                "synthetic_inputs": [i.to_dict() for i in self.inputs],
            },
            notes=list(self.notes),
        )
        card.datasheet = answer_datasheet(card.to_dict(), self.datasheet)
        return card

    def write(self, path: str | Path, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
        """Write the rows (CSV or Parquet) and ``<name>.card.json`` / ``.card.html`` beside them; register it."""
        check_output(card_path(path), overwrite)
        check_output(card_html_path(path), overwrite)
        provenance = {"release_id": self.release_id, "generation": self.generation, "kind": "mix"}
        written = write_release_table(self.data, path, provenance, overwrite, inputs)
        if self.registry is not None:
            record = ReleaseRecord(
                release_id=self.release_id,
                kind="mix",
                generation=self.generation,
                parents=tuple(i.release_id for i in self.inputs if i.release_id and i.rows_used),
                method="mix",
                path=str(written.resolve()),
                created_at=datetime.fromisoformat(self.created),
            )
            self.registry.register(record, file_fingerprints(written, self.data))
        self.card(written).write_beside(written)
        return written


def max_synthetic_rows(real_rows: int, max_synthetic_share: float) -> int:
    """The most synthetic rows that ``real_rows`` real rows can take with share s/(r+s) <= the cap."""
    if max_synthetic_share >= 1:
        return sys.maxsize
    allowed = math.floor(max_synthetic_share * real_rows / (1 - max_synthetic_share))
    # the float estimate can land one off either way (0.6 * 42 / 0.4 = 62.99...): settle it on the share itself
    while (allowed + 1) / (real_rows + allowed + 1) <= max_synthetic_share:
        allowed += 1
    while allowed > 0 and allowed / (real_rows + allowed) > max_synthetic_share:
        allowed -= 1
    return allowed


def mix(
    real: MixInput,
    synthetic: Sequence[MixInput],
    max_synthetic_share: float = 0.3,
    seed: int | None = None,
    *,
    registry: Registry | str | os.PathLike[str] | Literal[False] | None = None,
    datasheet: dict[str, str] | None = None,
) -> Mix:
    """Every row of ``real`` plus synthetic rows drawn from ``synthetic`` up to ``max_synthetic_share``.

    ``real`` and each synthetic input are data frames, CSV/Parquet files or :class:`~privsynth.pipeline.Release`
    objects. Synthetic rows are drawn uniformly at random without replacement from all inputs together
    (``seed`` makes it reproducible), so the share of synthetic rows never exceeds the cap; real rows are never
    dropped. Only the columns of ``real`` that every synthetic input has are kept. The rows are shuffled.
    ``registry`` (default: the ledger's database) tells the synthetic inputs' generations and registers the
    mix when written.
    """
    share = _check_share(max_synthetic_share)
    if isinstance(synthetic, str | Path | pd.DataFrame):
        raise ParameterError("synthetic must be a list of inputs (frames, files or releases), not a single one")
    lineage = None if registry is False else open_registry(registry)
    real_frame, real_name, real_source = _load(real, "real")
    real_ancestry = trace(real, real_source, lineage)
    if real_ancestry.parents:
        found = ", ".join(sorted({p.found_by for p in real_ancestry.parents}))
        raise ParameterError(
            f"the real input '{real_name}' is a synthetic release (generation {real_ancestry.source_generation}, "
            f"recognised by {found}); pass it with --synthetic, and real data with --real"
        )
    if PROVENANCE_COLUMN in real_frame.columns:
        raise ParameterError(f"the real input '{real_name}' has a '{PROVENANCE_COLUMN}' column: it is already a mix")
    inputs = [_synthetic_input(item, i, lineage) for i, item in enumerate(synthetic)]
    columns = [c for c in real_frame.columns if all(c in s.data.columns for s in inputs)]
    if not columns:
        raise DataError(f"the real and synthetic inputs share no column; real has {list(real_frame.columns)}")
    for item in inputs:
        extra = [c for c in item.data.columns if c not in real_frame.columns and c != PROVENANCE_COLUMN]
        if extra:
            raise DataError(
                f"synthetic input '{item.name}' has column(s) {extra} that the real data '{real_name}' lacks"
            )
    dropped = [c for c in real_frame.columns if c not in columns]
    if dropped:
        logger.info("mix: real column(s) %s are left out: a synthetic input lacks them", dropped)
    rng = np.random.default_rng(seed)
    available = sum(len(i.data) for i in inputs)
    take = min(max_synthetic_rows(len(real_frame), share), available)
    chosen = np.sort(rng.choice(available, size=take, replace=False)) if take else np.array([], dtype=np.int64)
    parts = [real_frame[columns].assign(**{PROVENANCE_COLUMN: REAL_LABEL})]
    offset = 0
    for item in inputs:
        mine = chosen[(chosen >= offset) & (chosen < offset + len(item.data))] - offset
        item.rows_used = len(mine)
        if len(mine):
            parts.append(item.data.iloc[mine][columns].assign(**{PROVENANCE_COLUMN: item.label}))
        offset += len(item.data)
    combined = pd.concat(parts, ignore_index=True)
    combined = combined.iloc[rng.permutation(len(combined))].reset_index(drop=True)
    combined.attrs = {}
    notes = [
        f"synthetic input '{i.name}' is not a known release; its rows are labelled generation 1 (at least)"
        for i in inputs
        if i.found_by is None
    ]
    result = Mix(
        data=combined,
        real_name=real_name,
        real_fingerprint=real_source.fingerprint(),
        real_rows=len(real_frame),
        inputs=inputs,
        max_synthetic_share=share,
        seed=seed,
        dropped_columns=dropped,
        registry=lineage,
        datasheet=check_answers(datasheet),
        notes=notes,
    )
    logger.info(
        "mix: %d real + %d synthetic rows (share %.4f, cap %g)",
        result.real_rows,
        result.synthetic_rows,
        result.synthetic_share,
        share,
    )
    return result


def _check_share(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1 or math.isnan(value):
        raise ParameterError(f"max_synthetic_share must be a number from 0 to 1, not {value!r}")
    return float(value)


def _load(item: MixInput, role: str) -> tuple[pd.DataFrame, str, Any]:
    """The rows, a display name and the source of one input."""
    frame = getattr(item, "data", None) if not isinstance(item, pd.DataFrame | str | Path) else None
    if isinstance(frame, pd.DataFrame):
        return frame, f"release {getattr(item, 'release_id', '?')}", load_source(frame)
    if isinstance(item, pd.DataFrame):
        return item, f"{role} data frame", load_source(item)
    if isinstance(item, str | Path):
        source = load_source(item)
        return source.to_pandas(), str(item), source
    raise ParameterError(
        f"a {role} input must be a data frame, a CSV/Parquet file or a release, not {type(item).__name__}"
    )


def _synthetic_input(item: MixInput, position: int, registry: Registry | None) -> SyntheticInput:
    frame, name, source = _load(item, f"synthetic #{position + 1}")
    if isinstance(item, pd.DataFrame):
        name = f"synthetic data frame #{position + 1}"
    ancestry: Ancestry = trace(item, source, registry)
    if not ancestry.parents:
        return SyntheticInput(frame, name, 1, None, None)
    best = max(ancestry.parents, key=lambda p: p.generation)
    return SyntheticInput(frame, name, max(best.generation, 1), best.release_id, best.found_by)
