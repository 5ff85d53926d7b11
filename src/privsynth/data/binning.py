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
        """A balanced tree of ``CASE`` comparisons over the cells, log2(cells) comparisons per row, in which a run
        of equal-width cells (the parts a fine histogram or a spike search splits a cell into) is one leaf that
        computes its cell by arithmetic (:func:`_run_cell`): the expression grows with the number of runs, not of
        cells (Spark compiles a ``CASE`` of thousands of branches slowly, and past 64 kB of code not at all)."""
        if isinstance(self.edges[0], datetime.date | np.datetime64) and isinstance(column.type, sa.String):
            column = sa.cast(column, sa.DateTime())  # dates held as text compare as times, not as strings
        null_cell = self.bins if self.null else OUTSIDE
        pieces = _pieces(self.edges)
        number: sa.ColumnElement[Any] = sa.cast(column, sa.Double())

        def tree(low: int, high: int) -> sa.ColumnElement[Any]:
            if high - low == 1:
                first, cells = pieces[low]
                if cells == 1:
                    return sa.literal(first)
                start = float(self.edges[first])
                step = (float(self.edges[first + cells + 1]) - start) / (cells + 1)
                cell = _run_cell(number, first, cells, start, step)
                # only the first piece sees values below its start (clipped into cell 0); NaN sorts last
                return sa.case((column < sa.literal(start), 0), else_=cell) if first == 0 else cell
            mid = (low + high) // 2
            split = sa.literal(_plain(self.edges[pieces[mid][0]]))
            return sa.case((column < split, tree(low, mid)), else_=tree(mid, high))

        return sa.case((column.is_(None), null_cell), else_=tree(0, len(pieces)))

    def encode(self, values: pd.Series) -> np.ndarray:
        nulls = values.isna().to_numpy()
        numbers = as_numbers(values)
        inner = as_numbers(pd.Series(self.edges[1:-1], dtype=object))
        out: np.ndarray = np.searchsorted(inner, np.nan_to_num(numbers), side="right").astype(np.int64)
        out[nulls] = self.bins if self.null else OUTSIDE
        return out


Binning = Categories | NumericBins

MIN_RUN_CELLS = 1024
"""Runs of more than this many equal-width cells are binned by arithmetic in SQL (:func:`_run_cell`), where a tree
of comparisons would be too large to send (the recorded-grid histogram's up to 16,384 cells a float column, the
spike search's 4,096 parts). Shorter runs stay a tree: in MST's and AIM's fine-histogram query on Spark at 100M
rows, arithmetic leaves for runs of 74-598 cells cost the JVM 402 s of CPU against 73 s for the tree (the query's
generated code is too large to compile, and the interpreted arithmetic is slower than interpreted comparisons),
although alone, compiled, they cost a quarter of the tree (``benchmarks/spark_binning.py``, runs of 64)."""


def _pieces(edges: tuple[Any, ...]) -> list[tuple[int, int]]:
    """The cells of ``edges`` as ``(first cell, cells)`` pieces: runs of at least :data:`MIN_RUN_CELLS` cells
    whose edges, both ends included, are exactly ``start + k * step`` in floating point (``step`` from the
    stretch's ends, as :func:`numpy.linspace` makes it), and single cells. The cell that closes a stretch is a
    piece of its own, so a run's end is one of its computed edges. Dates and times are single cells."""
    count = len(edges) - 1
    if count <= MIN_RUN_CELLS or not all(isinstance(e, float | int) for e in edges):
        return [(i, 1) for i in range(count)]
    values = np.asarray(edges, dtype=float)
    widths = np.diff(values)
    rounding = 8 * float(np.spacing(np.abs(values).max()))  # widths of far-from-zero cells differ by a few ulps
    pieces: list[tuple[int, int]] = []
    i = 0
    while i < count:
        end = i + 1  # the longest stretch of widths equal to cell i's up to rounding, then the exact check
        while end < count and abs(widths[end] - widths[i]) <= 1e-9 * widths[i] + rounding:
            end += 1
        while end - i > MIN_RUN_CELLS and not _exact_run(values, i, end):
            end = i + (end - i) // 2
        if end - i > MIN_RUN_CELLS:
            pieces.append((i, end - i - 1))
            i = end - 1
        pieces.append((i, 1))
        i += 1
    return pieces


def _exact_run(values: np.ndarray, first: int, end: int) -> bool:
    """Whether the inner edges of cells ``first .. end - 1`` are ``start + k * step`` exactly, ``step`` being
    ``(edges[end] - edges[first]) / cells``."""
    cells = end - first
    step = (values[end] - values[first]) / cells
    inner = np.arange(1, cells, dtype=float) * step + values[first]
    return bool(np.array_equal(inner, values[first + 1 : end]))


def _double(value: float) -> sa.ColumnElement[Any]:
    return sa.cast(sa.literal(value), sa.Double())


def _run_cell(
    number: sa.ColumnElement[Any], first: int, cells: int, start: float, step: float
) -> sa.ColumnElement[Any]:
    """The cell of ``number`` among ``cells`` cells ``[start + k * step, start + (k + 1) * step)`` from cell
    ``first``, for a value the tree placed in ``[start, start + cells * step)`` (every edge, the last included,
    checked by :func:`_exact_run` to be what the engine computes in doubles). ``(number - start) / step`` cast to
    an integer (truncated or rounded, as the engine casts) is the cell or the one above it, and one comparison
    each way with the computed edges makes it exact: the cell of the tree of comparisons and of
    :meth:`NumericBins.encode`."""
    guess = sa.cast((number - _double(start)) / _double(step), sa.Integer())
    down = sa.case((number < _double(start) + guess * _double(step), 1), else_=0)
    up = sa.case((number >= _double(start) + (guess + 1) * _double(step), 1), else_=0)
    return guess - down + up + first


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
