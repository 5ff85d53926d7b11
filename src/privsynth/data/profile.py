"""A schema for a table of any size: kinds from a uniform sample, domains from aggregates over every row.

:meth:`Schema.infer` reads a frame. A warehouse table does not fit in one, and its first rows are not a sample
of it (a file sorted by date has only the oldest in its head). :func:`infer_source_schema` reads the whole table
when it is small (``rows`` or fewer); otherwise it proposes each column's kind from a uniform sample drawn by the
engine (:meth:`Source.sample`), then settles what the sample cannot know with aggregates run by the engine over
every row: whether a column has missing values (``count(*) - count(column)``), the bounds of numeric and time
columns (``min``, ``max``), and the category levels of categorical columns (one ``GROUP BY`` per column). Only the
aggregates' results leave the engine.

This is the custodian's tool for a schema to review (not a DP path): its domains are marked not public.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pandas as pd
import sqlalchemy as sa

from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.source_base import Source

logger = logging.getLogger(__name__)

ROWS = 100_000
"""Tables with more rows are profiled by sample and aggregates rather than read whole."""

MAX_LEVELS = 1_000
"""A categorical column with more distinct values over the whole table keeps the levels its sample found (and a
warning says so): its full list would be as long as the table."""


def infer_source_schema(source: Source, rows: int = ROWS, seed: int = 0) -> Schema:
    """Propose a schema for ``source``: exact when it has ``rows`` rows or fewer, else kinds from a uniform sample
    of ``rows`` rows and nullability, bounds and levels from aggregates over the whole table."""
    total = source.num_rows()
    if total <= rows:
        return Schema.infer(source.to_pandas())
    proposed = Schema.infer(source.sample(rows, seed=seed))
    profile = _aggregates(source, proposed)
    columns = []
    for column in proposed.columns:
        nulls, low, high = profile.get(column.name, (None, None, None))
        updated = replace(column, nullable=bool(nulls)) if nulls is not None else column
        if column.kind in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME) and column.bounds is not None and low is not None:
            updated = replace(updated, bounds=(_bound(column, low), _bound(column, high)))
        elif column.kind == Kind.CATEGORICAL and column.synthesize and column.categories is not None:
            updated = _levels(source, updated)
        columns.append(updated)
    logger.info(
        "schema of %s proposed from a uniform sample of %s of its %s rows; nullability, bounds and categories "
        "from aggregates over all rows",
        source.name,
        f"{rows:,}",
        f"{total:,}",
    )
    return Schema(columns, list(proposed.warnings), target=proposed.target)


def _aggregates(source: Source, schema: Schema) -> dict[str, tuple[int, Any, Any]]:
    """Missing values, minimum and maximum of every column, in one query (min and max only where ordered)."""
    table = source._relation()
    parts: list[sa.ColumnElement[Any]] = []
    ranged = {c.name for c in schema.columns if c.kind in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME)}
    for column in schema.columns:
        cell = table.c[column.name]
        parts.append(sa.func.count() - sa.func.count(cell))
        if column.name in ranged:
            parts += [sa.func.min(cell), sa.func.max(cell)]
    row = source._run_counts(sa.select(*parts).select_from(table))[0]
    out: dict[str, tuple[int, Any, Any]] = {}
    position = 0
    for column in schema.columns:
        nulls = int(row[position])
        position += 1
        low = high = None
        if column.name in ranged:
            low, high = row[position], row[position + 1]
            position += 2
        out[column.name] = (nulls, low, high)
    return out


def _bound(column: Column, value: Any) -> Any:
    if column.kind == Kind.DATETIME:
        return pd.Timestamp(value).isoformat()
    number = float(value)
    return int(number) if column.kind == Kind.INTEGER else number


def _levels(source: Source, column: Column) -> Column:
    levels = [value for value, _ in source.value_counts(column.name) if value is not None]
    if len(levels) > MAX_LEVELS:
        logger.warning(
            "column '%s' has %s distinct values over the whole table; the schema lists the %s its sample found",
            column.name,
            f"{len(levels):,}",
            len(column.categories or []),
        )
        return column
    sample_types = {type(v) for v in column.categories or []}
    if sample_types and all(isinstance(v, int | float) for v in levels) and int in sample_types:
        levels = [int(v) for v in levels]
    return replace(column, categories=sorted(levels, key=str))
