"""Related tables: patients and their visits, flights and their planes.

:class:`RelatedMetadata` (tables, primary keys, foreign keys, order columns; one reviewed YAML),
:func:`infer_metadata` to propose it, :func:`check_tables` to hold the data to it, :func:`open_related` to open a
folder or DuckDB file of tables, :func:`load_related` for the bundled sets, the cross-table metrics in
:mod:`privsynth.relational.evaluate`, and :class:`RelatedSynthesizer` (non-DP related synthetic tables).
"""

from __future__ import annotations

from privsynth.relational.checks import check_tables
from privsynth.relational.datasets import RELATED_DATASETS, RelatedData, load_related, related_names
from privsynth.relational.infer import infer_metadata
from privsynth.relational.metadata import RelatedMetadata, Relationship, TableMeta
from privsynth.relational.sources import open_related
from privsynth.relational.synth import RelatedSynthesizer

__all__ = [
    "RELATED_DATASETS",
    "RelatedData",
    "RelatedMetadata",
    "RelatedSynthesizer",
    "Relationship",
    "TableMeta",
    "check_tables",
    "infer_metadata",
    "load_related",
    "open_related",
    "related_names",
]
