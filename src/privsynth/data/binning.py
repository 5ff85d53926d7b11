"""How a column's values map to the cells of a contingency table (``Source.counts``).

A binning is data-independent: category lists and bin edges come from a schema (public or paid-for domains),
never from the rows being counted. Each binning can render itself as a SQL ``CASE`` expression, so the same
definition is evaluated by DuckDB, PostgreSQL or any SQLAlchemy dialect, and in pandas for frames in memory.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from privsynth.errors import ParameterError

OUTSIDE = -1  # cell index a CASE expression gives a value that fits no cell


@dataclass(frozen=True)
class Categories:
    """One cell per listed category, then an ``other`` cell (if enabled) and a ``null`` cell (if enabled).

    With ``other=False`` a value outside the list fits no cell and ``counts`` reports it as an error.
    """

    values: tuple[Any, ...]
    other: bool = False
    null: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if any(is_missing(v) for v in self.values):
            raise ParameterError("a category list cannot hold a missing value; use null=True for a null cell")
        if len(set(map(category_key, self.values))) != len(self.values):
            raise ParameterError(f"category list {list(self.values)[:10]} repeats a value")

    @property
    def size(self) -> int:
        return len(self.values) + int(self.other) + int(self.null)

    @property
    def other_index(self) -> int | None:
        return len(self.values) if self.other else None

    @property
    def null_index(self) -> int | None:
        return len(self.values) + int(self.other) if self.null else None

    def sql(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        null_cell = self.null_index if self.null_index is not None else OUTSIDE
        whens: list[tuple[Any, int]] = [(column.is_(None), null_cell)]
        whens += [(column == sa.literal(_plain(v)), i) for i, v in enumerate(self.values)]
        return sa.case(*whens, else_=self.other_index if self.other_index is not None else OUTSIDE)

    def encode(self, values: pd.Series) -> np.ndarray:
        lookup = {category_key(v): i for i, v in enumerate(self.values)}
        fallback = self.other_index if self.other_index is not None else OUTSIDE
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        # code -1 (a missing value) picks the last entry: the null cell
        cells = [lookup.get(category_key(u), fallback) for u in uniques]
        cells.append(self.null_index if self.null_index is not None else OUTSIDE)
        return np.asarray(cells, dtype=np.int64)[codes]


@dataclass(frozen=True)
class NumericBins:
    """Cells ``[edges[i], edges[i+1])`` for ``i < len(edges) - 1``; the last cell also holds ``edges[-1]``.

    Values below ``edges[0]`` or above ``edges[-1]`` are clipped into the first or last cell (a public bound is
    a clipping bound); missing values go to a trailing ``null`` cell when enabled. Edges may be numbers, dates
    or timestamps.
    """

    edges: tuple[Any, ...]
    null: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple(self.edges))
        if len(self.edges) < 2:
            raise ParameterError("numeric bins need at least two edges")
        if any(is_missing(e) for e in self.edges):
            raise ParameterError(f"bin edges cannot be missing; got {list(self.edges)[:10]}")
        try:
            increasing = all(a < b for a, b in zip(self.edges, self.edges[1:], strict=False))
        except TypeError:
            raise ParameterError(f"bin edges must be all numbers or all times; got {list(self.edges)[:10]}") from None
        if not increasing:
            raise ParameterError(f"bin edges must increase strictly; got {list(self.edges)[:10]}")

    @property
    def bins(self) -> int:
        return len(self.edges) - 1

    @property
    def size(self) -> int:
        return self.bins + int(self.null)

    @property
    def null_index(self) -> int | None:
        return self.bins if self.null else None

    def sql(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """A balanced tree of ``CASE`` comparisons: log2(bins) comparisons per row instead of up to ``bins``."""
        if isinstance(self.edges[0], datetime.date | np.datetime64) and isinstance(column.type, sa.String):
            column = sa.cast(column, sa.DateTime())  # dates held as text compare as times, not as strings
        null_cell = self.bins if self.null else OUTSIDE

        def tree(low: int, high: int) -> sa.ColumnElement[Any]:
            if high - low == 1:
                return sa.literal(low)
            mid = (low + high) // 2
            return sa.case((column < sa.literal(_plain(self.edges[mid])), tree(low, mid)), else_=tree(mid, high))

        return sa.case((column.is_(None), null_cell), else_=tree(0, self.bins))

    def encode(self, values: pd.Series) -> np.ndarray:
        nulls = values.isna().to_numpy()
        numbers = as_numbers(values)
        inner = as_numbers(pd.Series(self.edges[1:-1], dtype=object))
        out: np.ndarray = np.searchsorted(inner, np.nan_to_num(numbers), side="right").astype(np.int64)
        out[nulls] = self.bins if self.null else OUTSIDE
        return out


Binning = Categories | NumericBins


def uniform_bins(low: float, high: float, bins: int, null: bool = False) -> NumericBins:
    """``bins`` equal-width cells over public bounds ``[low, high]``."""
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ParameterError(f"bins must be a positive integer, not {bins!r}")
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ParameterError(f"bounds [{low}, {high}] are empty; the upper bound must exceed the lower")
    return NumericBins(tuple(np.linspace(low, high, int(bins) + 1).tolist()), null=null)


def as_numbers(values: pd.Series) -> np.ndarray:
    """Numbers as floats; dates and timestamps as nanoseconds since the epoch."""
    if values.dtype == object:
        present = values.dropna()
        if len(present) and isinstance(present.iloc[0], datetime.date | np.datetime64):
            values = pd.to_datetime(values)
    if pd.api.types.is_datetime64_any_dtype(values):
        return np.asarray(values.to_numpy(dtype="datetime64[ns]").astype(np.int64), dtype=float)
    return np.asarray(pd.to_numeric(values), dtype=float)


def is_missing(value: Any) -> bool:
    """Whether one value is missing (None, NaN, NaT, NA); a list or an array is not a missing value."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def category_key(value: Any) -> Any:
    """Values equal as categories compare equal here (numpy scalars, 1 and 1.0)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _plain(value: Any) -> Any:
    """A value SQLAlchemy can bind or render: Python scalars instead of numpy and pandas ones."""
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value
