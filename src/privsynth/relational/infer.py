"""Propose related-table metadata from the tables themselves, for a person to review.

- **Keys**: integer or text columns that are complete and unique in their table. A table's primary key is the
  unique column other tables refer to most, else one whose name says it is an identifier; a table with no unique
  column referred to by name (a weather table keyed by station and hour) gets a two-column key when a pair of the
  columns it shares with a child is unique.
- **Foreign keys**: a child column whose values are contained in a parent's key, with a matching name
  (``id`` -> ``id``, ``patient_id`` -> ``patient.id``: at least half of its rows must find a parent) or, for text
  columns without a matching name, almost all of them (``origin`` -> ``airports.faa``). Orphans are reported as
  warnings.
- **Order**: for a child with several rows per parent, a date or an integer named like an order (``day``,
  ``visit``, ``date``) whose values are distinct within each parent.

Every count is a SQL aggregate run by DuckDB over the key columns (:class:`privsynth.relational._engine.KeyEngine`).
The proposal is structure guessed from private rows: it is for the custodian to review and declare, never for a DP
release as such. Its warnings (orphan counts) are kept in :attr:`RelatedMetadata.warnings` for the custodian and
never logged.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from privsynth.data.profile import infer_source_schema
from privsynth.data.sources import Source
from privsynth.relational._engine import KeyEngine, as_sources, quote
from privsynth.relational.checks import orphans
from privsynth.relational.metadata import Key, RelatedMetadata, Relationship, TableMeta, find_cycle

__all__ = ["infer_metadata"]

NAME_MATCH_SHARE = 0.5  # share of a name-matched child column's rows that must find a parent
VALUE_MATCH_SHARE = 0.95  # the same for a text column whose name matches no parent key
_ID_TOKENS = {"id", "uuid", "guid", "key", "mrn", "identifier", "code", "num", "no", "rownames"}
_GENERIC_KEYS = {"id", "rownames", "index", "key", "row", "unnamed: 0"}
_ORDER_TOKENS = {"day", "days", "date", "time", "visit", "seq", "sequence", "order", "step", "index", "number", "week"}
_KEY_TYPES = {"integer", "string"}
_SPLIT = re.compile(r"[^0-9a-zA-Z]+|(?<=[a-z])(?=[A-Z])")


@dataclass(frozen=True)
class _Profile:
    rows: int
    types: dict[str, str]
    unique: list[str]  # complete, unique key-type columns, in table order


def infer_metadata(tables: Mapping[str, Source | pd.DataFrame], schemas: bool = False) -> RelatedMetadata:
    """Propose keys, foreign keys and order columns for ``tables`` (name -> source or frame); with ``schemas`` also
    each table's single-table schema (:func:`privsynth.data.profile.infer_source_schema`)."""
    sources = as_sources(tables)
    engine = KeyEngine(sources)
    warnings: list[str] = []
    try:
        profiles = {name: _profile(engine, name) for name in sources}
        found: list[tuple[Relationship, float]] = []
        for child, parent in itertools.permutations(sources, 2):
            found.extend(_single_keys(engine, profiles, child, parent))
        relationships: list[Relationship] = []
        for rel, _ in sorted(found, key=lambda pair: -pair[1]):
            if not find_cycle(sources, [*relationships, rel]):
                relationships.append(rel)
        keys = _primary_keys(profiles, relationships)
        single = set(keys)
        for child, parent in itertools.permutations(sources, 2):
            if parent in single or any(r.child == child and r.parent == parent for r in relationships):
                continue
            pair = _pair_key(engine, profiles, child, parent, keys.get(parent))
            if pair is not None and not find_cycle(sources, [*relationships, pair]):
                keys[parent] = pair.parent_key
                relationships.append(pair)
        relationships = [_with_order(engine, profiles, rel) for rel in relationships]
        for rel in relationships:
            rows, distinct = orphans(engine, rel)
            if rows:
                warnings.append(
                    f"{rows} row(s) of '{rel.child}' ({distinct} distinct key value(s)) find no parent through "
                    f"{rel.describe()}; fix or drop them before generating"
                )
    finally:
        engine.close()
    metas = {
        name: TableMeta(
            name,
            keys.get(name, ()),
            schema=infer_source_schema(source) if schemas else None,
        )
        for name, source in sources.items()
    }
    return RelatedMetadata(metas, relationships, warnings)


def _tokens(name: str) -> set[str]:
    return {t.lower() for t in _SPLIT.split(name) if t}


def _id_named(name: str) -> bool:
    return bool(_tokens(name) & _ID_TOKENS) or name.lower().endswith("id")


def _profile(engine: KeyEngine, table: str) -> _Profile:
    types = engine.sources[table].storage_types()
    candidates = [c for c in engine.columns(table) if types.get(c) in _KEY_TYPES]
    if not candidates:
        rows = engine.sources[table].num_rows()
        return _Profile(rows, types, [])
    view = engine.view(table, candidates)
    stats = ", ".join(f"count({quote(c)}), count(DISTINCT {quote(c)})" for c in candidates)
    row = engine.one(f"SELECT count(*), {stats} FROM {view}")
    rows = int(row[0])
    unique = [c for i, c in enumerate(candidates) if rows >= 2 and row[1 + 2 * i] == rows and row[2 + 2 * i] == rows]
    return _Profile(rows, types, unique)


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") and len(name) > 3 else name


def _names_match(child_column: str, parent: str, key: str) -> bool:
    c, p, k = child_column.lower(), parent.lower(), key.lower()
    forms = {k, f"{p}_{k}", f"{p}{k}", f"{_singular(p)}_{k}", f"{_singular(p)}{k}"}
    return c in forms


def _contained(engine: KeyEngine, child: str, column: str, parent: str, key: str) -> tuple[int, int]:
    """Rows of ``child`` with ``column`` present, and how many of them find ``key`` in ``parent``."""
    c, p = engine.view(child, [column]), engine.view(parent, [key])
    present, matched = engine.one(
        f"SELECT count(*), count(*) FILTER (WHERE {quote(column)} IN (SELECT {quote(key)} FROM {p})) "
        f"FROM {c} WHERE {quote(column)} IS NOT NULL"
    )
    return int(present), int(matched)


def _single_keys(
    engine: KeyEngine, profiles: Mapping[str, _Profile], child: str, parent: str
) -> list[tuple[Relationship, float]]:
    found = []
    child_types = profiles[child].types
    for key in profiles[parent].unique:
        key_type = profiles[parent].types[key]
        for column in engine.columns(child):
            if child_types.get(column) != key_type:
                continue
            named = _names_match(column, parent, key)
            if not named and (key_type != "string" or column in profiles[child].unique):
                continue
            if column in profiles[child].unique and column.lower() in _GENERIC_KEYS:
                continue  # two tables numbered 1..n each (R's rownames, an 'id' per table) are not one-to-one
            present, matched = _contained(engine, child, column, parent, key)
            share = matched / present if present else 0.0
            if present and share >= (NAME_MATCH_SHARE if named else VALUE_MATCH_SHARE):
                found.append((Relationship(parent, child, (column,), (key,)), share + (1.0 if named else 0.0)))
    return found


def _primary_keys(profiles: Mapping[str, _Profile], relationships: list[Relationship]) -> dict[str, Key]:
    keys: dict[str, Key] = {}
    for table, profile in profiles.items():
        referred = [rel.parent_key[0] for rel in relationships if rel.parent == table]
        if referred:
            keys[table] = (max(dict.fromkeys(referred), key=referred.count),)
            continue
        named = [c for c in profile.unique if _id_named(c)]
        if named:
            keys[table] = (named[0],)
    return keys


def _pair_key(
    engine: KeyEngine, profiles: Mapping[str, _Profile], child: str, parent: str, known: Key | None
) -> Relationship | None:
    """A foreign key on two columns the child shares by name with a parent that has no single-column key (the
    parent's ``known`` pair key, once another child found it)."""
    shared = [
        c
        for c in engine.columns(parent)
        if c in engine.columns(child)
        and profiles[parent].types.get(c) == profiles[child].types.get(c)
        and profiles[parent].types.get(c) in _KEY_TYPES
    ][:8]
    if known is not None and not set(known) <= set(shared):
        return None
    if len(shared) < 2:
        return None
    view = engine.view(parent, shared)
    pairs = [known] if known is not None else list(itertools.combinations(shared, 2))
    stats = ", ".join(
        f"count(DISTINCT ({quote(a)}, {quote(b)})), count(*) FILTER (WHERE {quote(a)} IS NOT NULL "
        f"AND {quote(b)} IS NOT NULL)"
        for a, b in pairs
    )
    row = engine.one(f"SELECT count(*), {stats} FROM {view}")
    rows = int(row[0])
    for i, (a, b) in enumerate(pairs):
        distinct, complete = row[1 + 2 * i], row[2 + 2 * i]
        if rows < 2 or distinct != rows or complete != rows:
            continue
        rel = Relationship(parent, child, (a, b), (a, b))
        present = engine.one(
            f"SELECT count(*) FROM {engine.view(child, [a, b])} WHERE {quote(a)} IS NOT NULL AND {quote(b)} IS NOT NULL"
        )[0]
        missing, _ = orphans(engine, rel)
        if present and (present - missing) / present >= NAME_MATCH_SHARE:
            return rel
    return None


def _with_order(engine: KeyEngine, profiles: Mapping[str, _Profile], rel: Relationship) -> Relationship:
    """``rel`` with an order column when the child has several rows per parent and one column orders them."""
    child = profiles[rel.child]
    keys = ", ".join(quote(c) for c in rel.child_key)
    view = engine.view(rel.child, rel.child_key)
    most = engine.one(f"SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM {view} GROUP BY {keys})")[0]
    if most < 2:
        return rel
    candidates = [
        c
        for c in engine.columns(rel.child)
        if c not in rel.child_key
        and c not in child.unique
        and (child.types.get(c) == "datetime" or (child.types.get(c) == "integer" and _tokens(c) & _ORDER_TOKENS))
    ]
    candidates.sort(key=lambda c: child.types.get(c) != "datetime")
    for column in candidates:
        v = engine.view(rel.child, [*rel.child_key, column])
        rows, distinct, present = engine.one(
            f"SELECT count(*), count(DISTINCT ({keys}, {quote(column)})), count({quote(column)}) FROM {v}"
        )
        if rows == distinct == present:
            return Relationship(rel.parent, rel.child, rel.child_key, rel.parent_key, column)
    return rel
