"""The cells a DP marginal model works on: one :class:`ColumnDomain` per column, and how cells decode to values.

A domain is either declared public in the schema (free) or learned under differential privacy (paid from the
budget and recorded in the ledger). Decoding a cell back to a value is post-processing: it uses only the domain
(and, for numeric columns, the noisy within-bin histogram measured while learning the bins), never the data.

Schema structure (column names, kinds, dtypes, ``nullable``) is treated as public: it is reviewed by a person
and carries no counts. Category lists and bounds are data, and are used only when ``public: true``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.binning import Binning, Categories, NumericBins, _numeric, category_key, uniform_bins
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source
from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.synth.restore import restore_dtype

__all__ = ["ColumnDomain", "cells_to_frame", "learn_domains", "needs_budget", "public_domain"]

DEFAULT_BINS = 16


@dataclass(frozen=True)
class ColumnDomain:
    """One column's cells: a binning for ``Source.counts`` plus what decoding a cell needs.

    ``within`` (numeric columns only) is a finer histogram ``(edges, weights)`` whose edges include every edge
    of the binning; a cell decodes to a sub-bin drawn by weight, then a uniform value inside it. Without it a
    cell decodes to a uniform value inside the cell: never a constant midpoint. ``other_values`` are the known
    categories merged into the ``other`` cell (rare ones); the other cell decodes to one of them uniformly, or
    to a missing value when there are none (its members were never released).
    """

    column: Column
    binning: Binning
    within: tuple[np.ndarray, np.ndarray] | None = None
    other_values: tuple[Any, ...] = ()
    cost: str = "public"  # "public" or a sentence on how it was learned and what it cost

    @property
    def name(self) -> str:
        return self.column.name

    @property
    def size(self) -> int:
        return self.binning.size

    def encode(self, values: pd.Series) -> np.ndarray:
        """Cell index of each value (for tests and conditions; fitting reads cells through ``Source.counts``)."""
        return self.binning.encode(values)

    def cell_of(self, value: Any) -> int:
        """The cell holding ``value`` (a condition), or a ParameterError naming the column and the domain."""
        binning = self.binning
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if binning.null_index is None:
                raise ParameterError(f"'{self.name}' has no missing values in its domain")
            return binning.null_index
        if isinstance(binning, Categories):
            keys = {category_key(v): i for i, v in enumerate(binning.values)}
            for v in (value, _as_number(value)):
                if v is not None and category_key(v) in keys:
                    return keys[category_key(v)]
            if binning.other_index is not None and category_key(value) in set(map(category_key, self.other_values)):
                return binning.other_index
            shown = ", ".join(map(str, binning.values[:20]))
            raise ParameterError(f"'{value}' is not in the domain of '{self.name}' ({shown})")
        number = float(_numeric(pd.Series([value]))[0])
        low, high = (float(_numeric(pd.Series([e]))[0]) for e in (binning.edges[0], binning.edges[-1]))
        if not low <= number <= high:
            raise ParameterError(f"{value} is outside the domain of '{self.name}' [{low:g}, {high:g}]")
        return int(binning.encode(pd.Series([number]))[0])

    def decode(self, cells: np.ndarray, rng: np.random.Generator) -> pd.Series:
        """Values for cell indices ``cells``, in the column's dtype (post-processing: no data is read)."""
        cells = np.asarray(cells, dtype=np.int64)
        if isinstance(self.binning, Categories):
            values = self._decode_categories(cells, self.binning, rng)
        else:
            values = self._decode_numeric(cells, self.binning, rng)
        # Schema bounds are data unless public: clip to the domain's own edges (done above), not to them.
        column = self.column if self.column.public else dataclasses.replace(self.column, bounds=None)
        return restore_dtype(values, column).rename(self.name)

    def _decode_categories(self, cells: np.ndarray, binning: Categories, rng: np.random.Generator) -> pd.Series:
        out = np.empty(len(cells), dtype=object)
        out[:] = None
        for i, value in enumerate(binning.values):
            out[cells == i] = value
        if binning.other_index is not None:
            hit = cells == binning.other_index
            if self.other_values and hit.any():
                picks = rng.integers(0, len(self.other_values), int(hit.sum()))
                out[hit] = np.asarray(self.other_values, dtype=object)[picks]
        return pd.Series(out, dtype=object)

    def _decode_numeric(self, cells: np.ndarray, binning: NumericBins, rng: np.random.Generator) -> pd.Series:
        edges = _numeric(pd.Series(binning.edges, dtype=object))
        nulls = cells == binning.null_index if binning.null_index is not None else np.zeros(len(cells), dtype=bool)
        index = np.clip(cells, 0, binning.bins - 1)
        low, high = edges[index], edges[index + 1]
        if self.within is not None:
            low, high = _pick_sub_bins(index, edges, self.within, rng)
        values = low + rng.random(len(cells)) * (high - low)
        if self.column.kind is Kind.INTEGER:
            values = _integers_inside(low, high, values, rng, last=index == binning.bins - 1)
        values = np.clip(values, edges[0], edges[-1])
        if self.column.kind is Kind.DATETIME:
            result = pd.Series(pd.to_datetime(np.round(values).astype(np.int64), unit="ns"), dtype=object)
            result[nulls] = None
            return result
        values[nulls] = np.nan
        return pd.Series(values)


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pick_sub_bins(
    index: np.ndarray, edges: np.ndarray, within: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each coarse cell, a fine sub-bin drawn by its (noisy, clipped at 0) weight; uniform when all are 0."""
    fine_edges, weights = (np.asarray(a, dtype=float) for a in within)
    low, high = edges[index].copy(), edges[index + 1].copy()
    for cell in np.unique(index):
        inside = np.flatnonzero((fine_edges[:-1] >= edges[cell]) & (fine_edges[1:] <= edges[cell + 1]))
        if len(inside) == 0:
            continue
        w = np.clip(weights[inside], 0.0, None)
        p = w / w.sum() if w.sum() > 0 else np.full(len(inside), 1.0 / len(inside))
        rows = np.flatnonzero(index == cell)
        picks = inside[rng.choice(len(inside), size=len(rows), p=p)]
        low[rows], high[rows] = fine_edges[picks], fine_edges[picks + 1]
    return low, high


def _integers_inside(
    low: np.ndarray, high: np.ndarray, values: np.ndarray, rng: np.random.Generator, last: np.ndarray
) -> np.ndarray:
    """A uniform integer in ``[low, high)`` (``[low, high]`` for the last cell); the nearest one if none fits."""
    first = np.ceil(low)
    stop = np.where(last, np.floor(high) + 1, np.ceil(high))
    count = stop - first
    picked = first + np.floor(rng.random(len(values)) * np.maximum(count, 1))
    return np.where(count >= 1, picked, np.round(values))


def public_domain(column: Column, bins: int = DEFAULT_BINS) -> ColumnDomain | None:
    """The domain a schema declares public (free), or None when the column's domain must be learned."""
    if not column.public:
        return None
    if column.kind is Kind.CATEGORICAL and column.categories is not None:
        return ColumnDomain(column, Categories(tuple(column.categories), null=column.nullable))
    if column.kind in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME) and column.bounds is not None:
        low, high = (float(_numeric(pd.Series([b], dtype=object))[0]) for b in column.bounds)
        if column.kind is Kind.INTEGER and high - low + 1 <= bins:
            # one cell per integer: exact for small integer ranges
            edges = (*np.arange(low, high + 1).tolist(), high + 1.0)
            return ColumnDomain(column, NumericBins(edges, null=column.nullable))
        binning = uniform_bins(low, high, bins, null=column.nullable)
        if column.kind is Kind.DATETIME:
            stamps = tuple(pd.Timestamp(int(e)) for e in binning.edges)
            binning = NumericBins(stamps, null=column.nullable)
        return ColumnDomain(column, binning)
    return None


def learn_domains(
    source: Source,
    schema: Schema,
    accountant: Accountant | None,
    *,
    rho: float,
    bins: int = DEFAULT_BINS,
) -> dict[str, ColumnDomain]:
    """One domain per column of ``schema``: public ones for free, the others learned with ``rho`` (zCDP).

    ``rho`` is the preprocessing share of the budget, spent through ``accountant`` only on columns whose
    domain is not public; with every domain public nothing is spent.
    """
    domains: dict[str, ColumnDomain] = {}
    for column in schema:
        domain = public_domain(column, bins)
        if domain is None:
            raise ParameterError(
                f"column '{column.name}' has no public domain; declare its categories or bounds public in the schema"
            )
        domains[column.name] = domain
    return domains


def needs_budget(schema: Schema, bins: int = DEFAULT_BINS) -> list[str]:
    """Columns whose domain must be learned (and paid for): those without a public domain."""
    return [c.name for c in schema if public_domain(c, bins) is None]


def cells_to_frame(
    domains: Mapping[str, ColumnDomain], cells: np.ndarray, rng: np.random.Generator, columns: list[str]
) -> pd.DataFrame:
    """Decode a (rows, columns) array of cell indices into a frame with the schema's dtypes."""
    return pd.DataFrame({c: domains[c].decode(cells[:, j], rng).reset_index(drop=True) for j, c in enumerate(columns)})
