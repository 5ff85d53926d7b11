"""One in-process DuckDB over the key columns of several tables, so checks and inference that span tables (value
containment, orphans, children per parent) run as SQL joins and aggregates, never as Python loops over rows.

Each source is read once per set of columns asked for (:meth:`privsynth.data.source_base.Source.to_pandas` of those
columns only: keys, not whole tables) and registered as a view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd

from privsynth.data.sources import Source, load_source
from privsynth.errors import SchemaError

__all__ = ["KeyEngine", "as_sources", "quote"]


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def as_sources(tables: Mapping[str, Source | pd.DataFrame]) -> dict[str, Source]:
    """Each table as a privsynth :class:`Source` (a frame is opened in DuckDB; a source is kept)."""
    return {
        str(name): load_source(table, name=str(name)) if isinstance(table, pd.DataFrame) else table
        for name, table in tables.items()
    }


class KeyEngine:
    """Views over some columns of named sources in one DuckDB connection."""

    def __init__(self, sources: Mapping[str, Source]) -> None:
        self.sources = dict(sources)
        self._con = duckdb.connect()
        self._views: dict[tuple[str, tuple[str, ...]], str] = {}

    def columns(self, table: str) -> list[str]:
        return self.sources[table].columns

    def view(self, table: str, columns: Sequence[str]) -> str:
        """The name of a view holding ``columns`` of ``table`` (all its rows)."""
        wanted = tuple(dict.fromkeys(columns))
        missing = [c for c in wanted if c not in self.sources[table].columns]
        if missing:
            raise SchemaError(
                f"table '{table}' has no column '{missing[0]}'; its columns: {', '.join(self.sources[table].columns)}"
            )
        key = (table, wanted)
        if key not in self._views:
            name = f"v{len(self._views)}"
            self._con.register(name, self.sources[table].to_pandas(list(wanted)))
            self._views[key] = name
        return self._views[key]

    def one(self, sql: str) -> tuple[Any, ...]:
        rows = self._con.execute(sql).fetchall()  # an aggregate without GROUP BY: one row
        return tuple(rows[0])

    def close(self) -> None:
        self._con.close()
