"""Lineage: which releases exist, which data descends from which, and how many generations deep.

Synthetic data that loses its label becomes training data for the next model, and models trained on their own
output lose the tails of the distribution (Shumailov et al., "AI models collapse when trained on recursively
generated data", Nature 2024). privsynth keeps the label attached in four ways, checked in this order when a
synthesizer is fitted:

1. the release **registry** (tables in the same database as the privacy ledger), which maps every content
   fingerprint of a written release (its file's SHA-256, the hash of its rows as a frame) to the release;
2. the **data card** beside a file (``synth.card.json`` next to ``synth.csv``);
3. **Parquet key-value metadata** (``privsynth.provenance``, and pandas' ``PANDAS_ATTRS``), which travels with
   copies of the file, and the frame attribute ``privsynth_provenance`` that pandas restores from it;
4. a ``_provenance`` column (``real`` / ``synthetic-gen<k>``), as written by :func:`privsynth.provenance.mix.mix`.

Rows sampled from a model fitted on real data are generation 1; a model fitted on generation k data makes
generation k + 1.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from privsynth.data.output import check_output, write_table
from privsynth.data.sources import PARQUET_SUFFIXES, DuckDBSource, Source, frame_source
from privsynth.errors import DataError
from privsynth.privacy.database import display_url, open_engine, resolve_url, utc
from privsynth.provenance.card import card_path, file_sha256

__all__ = [
    "ATTRS_KEY",
    "PARQUET_KEY",
    "PROVENANCE_COLUMN",
    "REAL_LABEL",
    "Ancestry",
    "Parent",
    "Registry",
    "ReleaseRecord",
    "file_fingerprints",
    "frame_fingerprint",
    "label_generation",
    "open_registry",
    "read_parquet_provenance",
    "synthetic_label",
    "trace",
    "write_release_table",
]

logger = logging.getLogger(__name__)

PROVENANCE_COLUMN: Final = "_provenance"
REAL_LABEL: Final = "real"
PARQUET_KEY: Final = b"privsynth.provenance"
ATTRS_KEY: Final = "privsynth_provenance"
_PANDAS_ATTRS_KEY: Final = b"PANDAS_ATTRS"
_LABEL = re.compile(r"synthetic-gen(\d+)")

_metadata = MetaData()

_releases = Table(
    "privsynth_releases",
    _metadata,
    Column("release_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("parents", Text, nullable=False),  # JSON list of release ids
    Column("method", String(64), nullable=False),
    Column("path", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

_fingerprints = Table(
    "privsynth_release_fingerprints",
    _metadata,
    Column("fingerprint", String(256), primary_key=True),
    Column("release_id", String(64), ForeignKey("privsynth_releases.release_id"), nullable=False, index=True),
    Column("what", String(32), nullable=False),
)


def synthetic_label(generation: int) -> str:
    """The ``_provenance`` value of synthetic rows of ``generation`` (``synthetic-gen2``)."""
    return f"synthetic-gen{generation}"


def label_generation(label: str) -> int | None:
    """0 for ``real``, k for ``synthetic-gen<k>``, None for anything else."""
    if label == REAL_LABEL:
        return 0
    match = _LABEL.fullmatch(label)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Parent:
    """A known release that data descends from, and how privsynth recognised it."""

    release_id: str | None
    generation: int
    found_by: str
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "generation": self.generation,
            "found_by": self.found_by,
            "file": self.file,
        }


@dataclass(frozen=True)
class Ancestry:
    """What is known about where a source's rows came from: the releases it descends from, if any."""

    parents: tuple[Parent, ...] = ()
    synthetic_share: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def source_generation(self) -> int:
        """The source's own generation: 0 for data not known to be synthetic."""
        return max((p.generation for p in self.parents), default=0)

    @property
    def generation(self) -> int:
        """The generation of rows sampled from a model fitted on the source."""
        return self.source_generation + 1


@dataclass(frozen=True)
class ReleaseRecord:
    """One registered release: its id, generation, parents' ids, method, where it was written and when."""

    release_id: str
    kind: str
    generation: int
    parents: tuple[str, ...]
    method: str
    path: str | None
    created_at: datetime


class Registry:
    """The release registry: releases and their content fingerprints, in the privacy ledger's database.

    ``url`` is a SQLAlchemy URL or a SQLite file path, resolved like the ledger's (``$PRIVSYNTH_LEDGER``, then
    ``~/.privsynth/ledger.sqlite``). The tables are created on first use.
    """

    def __init__(self, url: str | os.PathLike[str] | None = None) -> None:
        self.url = resolve_url(url)
        self._engine = open_engine(self.url)
        _metadata.create_all(self._engine)

    def __repr__(self) -> str:
        return f"Registry({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The database URL with any password hidden."""
        return display_url(self.url)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def register(self, record: ReleaseRecord, fingerprints: Mapping[str, str]) -> None:
        """Record ``record`` (once) and map each fingerprint (-> what it hashes) to it.

        A fingerprint already mapped to another release keeps its first owner: two releases with identical
        content (same source, method and seed) are indistinguishable, and either one's generation is right.
        """
        with self._engine.begin() as connection:
            known = connection.execute(
                select(_releases.c.release_id).where(_releases.c.release_id == record.release_id)
            ).first()
            if known is None:
                connection.execute(
                    insert(_releases).values(
                        release_id=record.release_id,
                        kind=record.kind,
                        generation=record.generation,
                        parents=json.dumps(list(record.parents)),
                        method=record.method,
                        path=record.path,
                        created_at=record.created_at,
                    )
                )
        for fingerprint, what in fingerprints.items():
            try:
                with self._engine.begin() as connection:
                    owner = connection.execute(
                        select(_fingerprints.c.release_id).where(_fingerprints.c.fingerprint == fingerprint)
                    ).first()
                    if owner is None:
                        connection.execute(
                            insert(_fingerprints).values(
                                fingerprint=fingerprint, release_id=record.release_id, what=what
                            )
                        )
            except IntegrityError:  # registered by a concurrent writer between the check and the insert
                logger.debug("fingerprint %s was registered concurrently", fingerprint)
        logger.info("registered release %s (generation %d) in %s", record.release_id, record.generation, self)

    def find(self, fingerprint: str) -> ReleaseRecord | None:
        """The release whose content has ``fingerprint``, or None."""
        query = (
            select(_releases)
            .join(_fingerprints, _fingerprints.c.release_id == _releases.c.release_id)
            .where(_fingerprints.c.fingerprint == fingerprint)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _record(row)

    def get(self, release_id: str) -> ReleaseRecord | None:
        """The release ``release_id``, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(select(_releases).where(_releases.c.release_id == release_id)).first()
        return None if row is None else _record(row)

    def releases(self) -> list[ReleaseRecord]:
        """Every registered release, oldest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(_releases).order_by(_releases.c.created_at)).all()
        return [_record(row) for row in rows]


def _record(row: Row[Any]) -> ReleaseRecord:
    created = utc(row.created_at)
    return ReleaseRecord(
        release_id=row.release_id,
        kind=row.kind,
        generation=int(row.generation),
        parents=tuple(json.loads(row.parents)),
        method=row.method,
        path=row.path,
        created_at=created,
    )


def open_registry(registry: Registry | str | os.PathLike[str] | None, ledger: Any = None) -> Registry:
    """A :class:`Registry` from an object, a URL or path, else the ledger's URL, else the default location."""
    if isinstance(registry, Registry):
        return registry
    if registry is not None:
        return Registry(registry)
    url = getattr(ledger, "url", ledger)
    return Registry(url if isinstance(url, str | os.PathLike) else None)


def frame_fingerprint(df: pd.DataFrame) -> str:
    """The fingerprint a source over this frame has (:meth:`Source.fingerprint`), so a frame can be looked up."""
    return frame_source(df).fingerprint()


# ---- tracing a source back to releases ----------------------------------------------------------------------------


def trace(data: Any, source: Source, registry: Registry | None) -> Ancestry:
    """Find the releases ``source`` descends from; ``data`` is what the user passed (frame, path, release).

    A release object (anything with ``release_id`` and ``generation``), the registry, a card beside the file,
    Parquet metadata, frame attributes and a ``_provenance`` column are checked in that order; each release is
    listed once, under the first way it was found.
    """
    parents: list[Parent] = []
    notes: list[str] = []
    share: float | None = None
    if isinstance(getattr(data, "release_id", None), str) and isinstance(getattr(data, "generation", None), int):
        parents.append(Parent(data.release_id, data.generation, "release object"))
    if registry is not None:
        record = registry.find(source.fingerprint())
        if record is not None:
            parents.append(Parent(record.release_id, record.generation, "registry", record.path))
    path = _source_file(data, source)
    if path is not None:
        parents += _from_card(path, source, notes)
        if path.suffix.lower() in PARQUET_SUFFIXES:
            meta = read_parquet_provenance(path)
            if meta is not None:
                parents.append(_parent_from_meta(meta, "parquet metadata", str(path)))
    if isinstance(data, pd.DataFrame) and isinstance(data.attrs.get(ATTRS_KEY), dict):
        parents.append(_parent_from_meta(data.attrs[ATTRS_KEY], "frame attributes", None))
    if PROVENANCE_COLUMN in source.columns:
        generation, share = _from_column(source)
        if generation > 0:
            parents.append(Parent(None, generation, "provenance column"))
    unique: dict[str | None, Parent] = {}
    for parent in parents:
        key = parent.release_id if parent.release_id is not None else f"anonymous:{parent.found_by}"
        unique.setdefault(key, parent)
    return Ancestry(tuple(unique.values()), share, tuple(notes))


def _source_file(data: Any, source: Source) -> Path | None:
    """The file behind ``source``, if it is one: the path given, or a file source's name (its path)."""
    if isinstance(data, str | os.PathLike) and "://" not in str(data):
        path = Path(data).expanduser()
        return path if path.is_file() else None
    if isinstance(source, DuckDBSource) and not isinstance(data, pd.DataFrame):
        path = Path(source.name)
        return path if path.is_file() else None
    return None


def _from_card(path: Path, source: Source, notes: list[str]) -> list[Parent]:
    beside = card_path(path)
    if not beside.is_file():
        return []
    try:
        card = json.loads(beside.read_text(encoding="utf-8"))
        generation = int(card["generation"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        notes.append(f"'{beside.name}' beside the source is not a readable privsynth card ({exc}); ignored")
        return []
    if card.get("release_sha256") and card["release_sha256"] != source.fingerprint():
        notes.append(
            f"the source differs from the release its card '{beside.name}' describes (edited or replaced "
            "since); its lineage is taken from the card"
        )
    return [Parent(card.get("release_id") or None, generation, "card", str(path))]


def _parent_from_meta(meta: Mapping[str, Any], found_by: str, file: str | None) -> Parent:
    try:
        generation = int(meta["generation"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"the privsynth provenance in the {found_by} has no valid 'generation': {meta!r}") from None
    release_id = meta.get("release_id")
    return Parent(release_id if isinstance(release_id, str) else None, generation, found_by, file)


def _from_column(source: Source) -> tuple[int, float]:
    """The highest generation named in the ``_provenance`` column and the share of synthetic rows."""
    counts: dict[str, int] = {}
    for chunk in source.iter_chunks([PROVENANCE_COLUMN]):
        for label, n in chunk[PROVENANCE_COLUMN].astype(str).value_counts().items():
            counts[str(label)] = counts.get(str(label), 0) + int(n)
    total = sum(counts.values())
    generations = {label: label_generation(label) for label in counts}
    unknown = [label for label, g in generations.items() if g is None]
    if unknown:
        raise DataError(
            f"column '{PROVENANCE_COLUMN}' holds {unknown[:5]}; privsynth writes only '{REAL_LABEL}' and "
            "'synthetic-gen<k>' there. Rename the column if it is data."
        )
    synthetic = sum(n for label, n in counts.items() if (generations[label] or 0) > 0)
    highest = max((g for g in generations.values() if g is not None), default=0)
    return highest, (synthetic / total if total else 0.0)


# ---- Parquet metadata ---------------------------------------------------------------------------------------------


def read_parquet_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance privsynth wrote into a Parquet file's key-value metadata, or None."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    if PARQUET_KEY in metadata:
        found = json.loads(metadata[PARQUET_KEY])
        return found if isinstance(found, dict) else None
    if _PANDAS_ATTRS_KEY in metadata:
        attrs = json.loads(metadata[_PANDAS_ATTRS_KEY])
        found = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
        return found if isinstance(found, dict) else None
    return None


def write_release_table(
    df: pd.DataFrame,
    path: str | Path,
    provenance: Mapping[str, Any],
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Write ``df`` as CSV or Parquet by suffix; a Parquet file carries ``provenance`` in its metadata.

    The metadata is written twice: under ``privsynth.provenance`` for any Parquet reader, and as the pandas
    frame attribute ``privsynth_provenance`` (key ``PANDAS_ATTRS``), which ``pandas.read_parquet`` restores, so
    a frame read from the file still carries its label into :func:`privsynth.synthesize`.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in PARQUET_SUFFIXES:
        return write_table(df, path, overwrite, inputs)
    path = check_output(path, overwrite, inputs)
    text = json.dumps(dict(provenance), sort_keys=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    attrs = {**df.attrs, ATTRS_KEY: dict(provenance)}
    metadata = {
        **(table.schema.metadata or {}),
        PARQUET_KEY: text.encode(),
        _PANDAS_ATTRS_KEY: json.dumps(attrs, default=str).encode(),
    }
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def file_fingerprints(path: Path, df: pd.DataFrame) -> dict[str, str]:
    """The fingerprints under which a written release is found again: its file's SHA-256, the hash of the rows
    it was made from, and the hash of the frame pandas reads back from the file with default options."""
    reread = pd.read_parquet(path) if path.suffix.lower() in PARQUET_SUFFIXES else pd.read_csv(path)
    return {
        file_sha256(path): "file sha256",
        frame_fingerprint(df): "frame",
        frame_fingerprint(reread): "frame read back",
    }
