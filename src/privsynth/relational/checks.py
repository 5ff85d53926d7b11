"""Check related tables against their metadata: key columns present, primary keys unique and complete, every
present foreign key finding its parent.

Each check is one SQL aggregate in DuckDB over the key columns. The messages name tables, columns and counts of
the custodian's own data, for the custodian: they are raised before any fit and never enter a DP release.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pandas as pd

from privsynth.data.sources import Source
from privsynth.errors import DataError, SchemaError
from privsynth.relational._engine import KeyEngine, as_sources, quote
from privsynth.relational.metadata import RelatedMetadata, Relationship, show_key

__all__ = ["check_tables", "orphans"]


def check_tables(metadata: RelatedMetadata, tables: Mapping[str, Source | pd.DataFrame]) -> None:
    """Raise :class:`SchemaError` or :class:`DataError` at the first way the tables contradict ``metadata``: a
    table or key column missing, a primary key with repeated or missing values, a foreign key with orphans."""
    missing = [name for name in metadata.tables if name not in tables]
    if missing:
        raise SchemaError(
            f"the metadata lists table '{missing[0]}' but no such table was given; tables given: "
            f"{', '.join(map(str, tables)) or 'none'}"
        )
    engine = KeyEngine(as_sources({name: tables[name] for name in metadata.tables}))
    try:
        for table in metadata:
            if table.primary_key:
                _check_primary_key(engine, table.name, table.primary_key)
        for rel in metadata.relationships:
            if rel.order_by is not None:
                engine.view(rel.child, [rel.order_by])
            rows, distinct = orphans(engine, rel)
            if rows:
                raise DataError(
                    f"{rows} row(s) of table '{rel.child}' name a parent that table '{rel.parent}' lacks "
                    f"({distinct} distinct value(s) of {show_key(rel.child_key)}, foreign key {rel.describe()}); "
                    "add the missing parents, drop those rows, or set their key to missing"
                )
    finally:
        engine.close()


def _check_primary_key(engine: KeyEngine, table: str, key: tuple[str, ...]) -> None:
    view = engine.view(table, key)
    cols = ", ".join(quote(c) for c in key)
    any_null = " OR ".join(f"{quote(c)} IS NULL" for c in key)
    nulls, repeated = engine.one(
        f"SELECT (SELECT count(*) FROM {view} WHERE {any_null}), "
        f"(SELECT count(*) FROM (SELECT {cols} FROM {view} GROUP BY {cols} HAVING count(*) > 1))"
    )
    if nulls:
        raise DataError(
            f"the primary key {show_key(key)} of table '{table}' is missing in {nulls} row(s); a key names every "
            "row: fill it in, drop those rows, or choose another key"
        )
    if repeated:
        raise DataError(
            f"the primary key {show_key(key)} of table '{table}' is not unique: {repeated} value(s) occur in more "
            "than one row; choose a key that names one row each (or a list of columns that does)"
        )


def orphans(engine: KeyEngine, rel: Relationship) -> tuple[int, int]:
    """Rows of the child whose (complete) key finds no parent, and how many distinct keys they hold."""
    child = engine.view(rel.child, rel.child_key)
    parent = engine.view(rel.parent, rel.parent_key)
    match = " AND ".join(f"c.{quote(ck)} = p.{quote(pk)}" for ck, pk in zip(rel.child_key, rel.parent_key, strict=True))
    present = " AND ".join(f"c.{quote(c)} IS NOT NULL" for c in rel.child_key)
    cols = ", ".join(f"c.{quote(c)}" for c in rel.child_key)
    try:
        rows, distinct = engine.one(
            f"SELECT count(*), count(DISTINCT ({cols})) FROM {child} c WHERE {present} "
            f"AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
        )
    except duckdb.Error:
        types = [engine.sources[t].storage_types() for t in (rel.child, rel.parent)]
        keys = (rel.child_key, rel.parent_key)
        shown = [", ".join(t.get(c, "?") for c in key) for t, key in zip(types, keys, strict=True)]
        raise DataError(
            f"the foreign key {rel.describe()} compares {shown[0]} values with {shown[1]} ones that cannot be "
            "matched; store the child's key with the type of the parent's key"
        ) from None
    return int(rows), int(distinct)
