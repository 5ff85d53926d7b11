"""Metadata for related tables: which tables, their primary keys, the foreign keys between them, and the order of a
sequential child's rows.

A record set is rarely one table: a patient has many visits, a flight points at a plane, an airline, two airports
and the weather of its hour. :class:`RelatedMetadata` says so in one YAML file (``privsynth_related: 1``) that a
person reviews, like the single-table schema: each table with its source, primary key and optionally its
:class:`~privsynth.data.schema.Schema`; each :class:`Relationship` from a child's key columns to a parent's key,
with ``order_by`` for a child whose rows form a sequence within each parent (a visit day, a date).

Keys are lists of columns (a single column is written as a string). A missing child key is allowed (SQL's
semantics: a flight with no known plane has no parent); a present child key must find its parent.
:func:`check_tables` checks the data against the metadata; its messages name tables, columns and counts, so they
are for the custodian, never for a DP release.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from privsynth.data.schema import Schema
from privsynth.errors import SchemaError

__all__ = ["RELATED_VERSION", "Key", "RelatedMetadata", "Relationship", "TableMeta", "as_key", "find_cycle", "show_key"]

RELATED_VERSION = 1

Key = tuple[str, ...]


def as_key(value: Any, what: str) -> Key:
    """A key as a tuple of column names, from a string (one column) or a list; ``what`` names it in errors."""
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value):
        if len(set(value)) < len(value):
            raise SchemaError(f"{what} lists a column twice: {list(value)}")
        return tuple(value)
    raise SchemaError(f"{what} must be a column name or a list of column names, not {value!r}")


def _key_yaml(key: Key) -> str | list[str]:
    return key[0] if len(key) == 1 else list(key)


def show_key(key: Key) -> str:
    """A key for messages: ``id`` or ``(origin, time_hour)``."""
    return key[0] if len(key) == 1 else f"({', '.join(key)})"


@dataclass(frozen=True)
class Relationship:
    """A foreign key: every present ``child_key`` of table ``child`` names a row of ``parent`` by ``parent_key``.

    ``order_by``: the child column that orders a parent's children (a visit day, a date), when they form a
    sequence; None when the children are a set (a plane's flights are not a sequence a generator must learn).
    """

    parent: str
    child: str
    child_key: Key
    parent_key: Key
    order_by: str | None = None

    def __post_init__(self) -> None:
        if len(self.child_key) != len(self.parent_key):
            raise SchemaError(
                f"relationship {self.describe()} pairs {len(self.child_key)} child column(s) with "
                f"{len(self.parent_key)} parent column(s); list one child column per parent key column"
            )

    def describe(self) -> str:
        """``pbcseq.id -> pbc.id``, for messages."""
        return f"{self.child}.{show_key(self.child_key)} -> {self.parent}.{show_key(self.parent_key)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "parent": self.parent,
            "child": self.child,
            "child_key": _key_yaml(self.child_key),
            "parent_key": _key_yaml(self.parent_key),
        }
        if self.order_by is not None:
            out["order_by"] = self.order_by
        return out

    @classmethod
    def from_dict(cls, raw: Any, position: int) -> Relationship:
        where = f"relationship #{position + 1}"
        if not isinstance(raw, dict):
            raise SchemaError(f"{where} must be a mapping with parent, child, child_key and parent_key")
        unknown = set(raw) - {"parent", "child", "child_key", "parent_key", "order_by"}
        if unknown:
            raise SchemaError(f"{where} has unknown field(s) {sorted(unknown)}")
        for name in ("parent", "child", "child_key"):
            if name not in raw:
                raise SchemaError(f"{where} lacks '{name}'")
        child_key = as_key(raw["child_key"], f"{where}: child_key")
        parent_key = as_key(raw.get("parent_key", raw["child_key"]), f"{where}: parent_key")
        order_by = raw.get("order_by")
        if order_by is not None and not isinstance(order_by, str):
            raise SchemaError(f"{where}: order_by must be a column name, not {order_by!r}")
        return cls(str(raw["parent"]), str(raw["child"]), child_key, parent_key, order_by)


@dataclass
class TableMeta:
    """One table: where its rows are (``source``: a file name relative to the metadata file, or a table of a
    database), its primary key (empty when it has none, like a visits table), and its schema when reviewed."""

    name: str
    primary_key: Key = ()
    source: str | None = None
    schema: Schema | None = None

    def to_dict(self, schema_file: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.source is not None:
            out["source"] = self.source
        if self.primary_key:
            out["primary_key"] = _key_yaml(self.primary_key)
        if schema_file is not None:
            out["schema"] = schema_file
        elif self.schema is not None:
            out["schema"] = self.schema.to_dict()
        return out

    @classmethod
    def from_dict(cls, name: str, raw: Any, base: Path | None) -> TableMeta:
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise SchemaError(f"table '{name}' must be a mapping with source, primary_key and schema (all optional)")
        unknown = set(raw) - {"source", "primary_key", "schema"}
        if unknown:
            raise SchemaError(f"table '{name}' has unknown field(s) {sorted(unknown)}")
        key = as_key(raw["primary_key"], f"table '{name}': primary_key") if "primary_key" in raw else ()
        schema = raw.get("schema")
        if isinstance(schema, str):
            path = Path(schema) if base is None or Path(schema).is_absolute() else base / schema
            schema = Schema.load(path)
        elif isinstance(schema, dict):
            schema = Schema.from_dict(schema)
        elif schema is not None:
            raise SchemaError(f"table '{name}': schema must be a file name or an inline schema mapping")
        source = raw.get("source")
        return cls(name, key, None if source is None else str(source), schema)


@dataclass
class RelatedMetadata:
    """Tables and the relationships between them; checked for structure when built (every name known, key columns
    in the schemas, no cycle). ``warnings`` holds what inference wants a person to look at."""

    tables: dict[str, TableMeta]
    relationships: list[Relationship] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tables:
            raise SchemaError("the metadata lists no tables")
        for table in self.tables.values():
            _check_columns(table, table.primary_key, "primary key")
        seen: set[tuple[str, str, Key]] = set()
        for rel in self.relationships:
            for role, name in (("parent", rel.parent), ("child", rel.child)):
                if name not in self.tables:
                    raise SchemaError(
                        f"relationship {rel.describe()} names {role} table '{name}', which the metadata does not "
                        f"list; tables: {', '.join(self.tables)}"
                    )
            identity = (rel.parent, rel.child, rel.child_key)
            if identity in seen:
                raise SchemaError(f"relationship {rel.describe()} is listed twice")
            seen.add(identity)
            _check_columns(self.tables[rel.child], rel.child_key, f"foreign key of {rel.describe()}")
            _check_columns(self.tables[rel.parent], rel.parent_key, f"parent key of {rel.describe()}")
            if rel.order_by is not None:
                _check_columns(self.tables[rel.child], (rel.order_by,), f"order column of {rel.describe()}")
        cycle = self.cycle()
        if cycle:
            raise SchemaError(
                f"the relationships form a cycle: {' -> '.join(cycle)}; a table cannot be its own ancestor (parents "
                "are generated before children), remove one relationship of the cycle"
            )

    # ---- structure -------------------------------------------------------------------------------------------

    def parents(self, table: str) -> list[Relationship]:
        """The relationships in which ``table`` is the child."""
        return [rel for rel in self.relationships if rel.child == table]

    def children(self, table: str) -> list[Relationship]:
        """The relationships in which ``table`` is the parent."""
        return [rel for rel in self.relationships if rel.parent == table]

    def cycle(self) -> list[str]:
        """A cycle of tables (child -> parent -> ... -> child) if the relationships hold one, else an empty list."""
        return find_cycle(self.tables, self.relationships)

    def order(self) -> list[str]:
        """Table names with every parent before its children (the order a generator makes them in)."""
        done: list[str] = []

        def visit(table: str) -> None:
            if table in done:
                return
            for rel in self.parents(table):
                visit(rel.parent)
            done.append(table)

        for name in self.tables:
            visit(name)
        return done

    def __iter__(self) -> Iterator[TableMeta]:
        return iter(self.tables.values())

    # ---- YAML ------------------------------------------------------------------------------------------------

    def to_dict(self, schema_files: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The metadata as plain data; ``schema_files`` maps a table to the schema file that holds its schema
        (written by reference instead of inline)."""
        files = dict(schema_files or {})
        return {
            "privsynth_related": RELATED_VERSION,
            "tables": {name: table.to_dict(files.get(name)) for name, table in self.tables.items()},
            "relationships": [rel.to_dict() for rel in self.relationships],
        }

    def to_yaml(self, schema_files: Mapping[str, str] | None = None) -> str:
        header = (
            "# privsynth related tables: review before use. Keys and relationships proposed from the data are\n"
            "# guesses; keep the ones that hold by design, and declare order_by only for children that form a\n"
            "# sequence within their parent.\n"
        )
        notes = "".join(f"# note: {w}\n" for w in self.warnings)
        body = yaml.safe_dump(self.to_dict(schema_files), sort_keys=False, allow_unicode=True, width=110)
        return header + notes + body

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: Any, base: Path | None = None) -> RelatedMetadata:
        """Metadata from plain data; ``base`` is the folder schema file names are relative to."""
        if not isinstance(raw, dict) or not isinstance(raw.get("tables"), dict):
            raise SchemaError(
                "related-table metadata must be a mapping with a 'tables' mapping (see `privsynth metadata infer`)"
            )
        version = raw.get("privsynth_related", RELATED_VERSION)
        if version != RELATED_VERSION:
            raise SchemaError(f"related metadata version {version} is not supported; this privsynth reads 1")
        relationships = raw.get("relationships") or []
        if not isinstance(relationships, list):
            raise SchemaError("'relationships' must be a list of {parent, child, child_key, parent_key, order_by}")
        unknown = set(raw) - {"privsynth_related", "tables", "relationships"}
        if unknown:
            raise SchemaError(f"related metadata has unknown field(s) {sorted(unknown)}")
        tables = {str(name): TableMeta.from_dict(str(name), t, base) for name, t in raw["tables"].items()}
        return cls(tables, [Relationship.from_dict(r, i) for i, r in enumerate(relationships)])

    @classmethod
    def load(cls, path: str | Path) -> RelatedMetadata:
        path = Path(path)
        if not path.is_file():
            raise SchemaError(f"metadata file '{path}' does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SchemaError(f"metadata file '{path}' is not valid YAML: {exc}") from None
        return cls.from_dict(raw, path.parent)


def find_cycle(tables: Iterable[str], relationships: Sequence[Relationship]) -> list[str]:
    """A cycle of tables (child -> parent -> ... -> child) among ``relationships``, else an empty list."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(table: str) -> list[str]:
        state[table] = 1
        path.append(table)
        for rel in relationships:
            if rel.child != table:
                continue
            if state.get(rel.parent) == 1:
                return [*path[path.index(rel.parent) :], rel.parent]
            if rel.parent not in state:
                found = visit(rel.parent)
                if found:
                    return found
        path.pop()
        state[table] = 2
        return []

    for name in tables:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return []


def _check_columns(table: TableMeta, columns: Sequence[str], what: str) -> None:
    if table.schema is None:
        return
    missing = [c for c in columns if c not in table.schema]
    if missing:
        raise SchemaError(
            f"the {what} names column '{missing[0]}', which table '{table.name}' does not have; its columns: "
            f"{', '.join(table.schema.names)}"
        )
