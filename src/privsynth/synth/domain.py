"""The cells a DP marginal model works on: one :class:`ColumnDomain` per column, and how cells decode to values.

A domain is either declared public in the schema (free) or learned under differential privacy (paid from the
budget and recorded in the ledger). Decoding a cell back to a value is post-processing: it uses only the domain
(and, for numeric columns, the noisy within-bin histogram measured while learning the bins), never the data.

Schema structure (column names, kinds, dtypes, ``nullable``) is treated as public: it is reviewed by a person
and carries no counts. Category lists and bounds are data, and are used only when ``public: true``.

:func:`learn_domains` learns the others, in equal exact shares of the preprocessing budget, releasing only
noisy statistics:

- numeric columns (integer, float, datetime): DP bounds and quantile bins from two noisy histograms
  (:mod:`privsynth.synth.bounds`, after Gillenwater, Joseph and Kulesza, ICML 2021, and PrivTree);
- categorical columns: DP key discovery with the Gaussian threshold mechanism (:mod:`privsynth.synth.discovery`,
  after Korolova et al., WWW 2009, and Wilson et al., PoPETs 2020);
- missing values are a cell of their own whenever the schema says the column is nullable.

The mechanisms need OpenDP (the ``dp`` extra) and are imported only when a domain is learned: public domains
work without it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.binning import Binning, Categories, NumericBins, as_numbers, category_key, uniform_bins
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source
from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import check_positive, fits_within, gaussian_sigma, split_exactly
from privsynth.progress import report
from privsynth.synth.bounds import LearnedBins, RecordedGrid, learn_many_bins, numeric_binning
from privsynth.synth.discovery import (
    MAX_CATEGORIES,
    MIN_CATEGORY_SHARE,
    DiscoveredKeys,
    discover,
    key_counts_many,
    keys_of,
    pooled_keys,
    release_keys,
)
from privsynth.synth.restore import restore_dtype

__all__ = [
    "DEFAULT_BINS",
    "NUMERIC_BINS",
    "ColumnDomain",
    "cells_to_frame",
    "discovery_delta",
    "domain_column",
    "learn_domains",
    "needs_budget",
    "public_domain",
]

logger = logging.getLogger(__name__)

DEFAULT_BINS = 16

NUMERIC_BINS = ("quantile", "uniform")
"""How numeric columns with public bounds are binned: DP quantiles inside the bounds (paid), or uniform (free)."""

DISCOVERY_DELTA_SHARE = 0.1
"""The share of delta :func:`discovery_delta` sets aside for DP key discovery."""

_UNMODELLED = (Kind.TEXT, Kind.IDENTIFIER)


@dataclass(frozen=True)
class ColumnDomain:
    """One column's cells: a binning for ``Source.counts`` plus what decoding a cell needs.

    ``within`` (numeric columns only) is a finer histogram ``(edges, weights)`` whose edges include every edge
    of the binning; a cell decodes to a sub-bin drawn by weight, then a uniform value inside it. Without it a
    cell decodes to a uniform value inside the cell: never a constant midpoint. ``other_values`` are the known
    categories merged into the ``other`` cell (rare ones); the other cell decodes to one of them, drawn by
    ``other_weights`` (their noisy counts) when given, else uniformly, or to a missing value when there are
    none (its members were never released). ``warnings`` are the data-quality messages raised while building
    the domain, for a release's data card. ``grid`` (float columns whose bins were learned) is the grid the values
    are recorded on, per cell: decoding draws a recorded value inside the sub-bin rather than any number in it.
    """

    column: Column
    binning: Binning
    within: tuple[np.ndarray, np.ndarray] | None = None
    other_values: tuple[Any, ...] = ()
    cost: str = "public"  # "public" or a sentence on how it was learned and what it cost
    other_weights: tuple[float, ...] = ()
    warnings: tuple[str, ...] = ()
    grid: RecordedGrid | None = None

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
            raise ParameterError(
                f"'{self.name}' = {value!r} is outside the model's domain for that column; condition on a value "
                "the model holds"
            )
        try:
            number = _to_number(value, self.column.kind)
        except (TypeError, ValueError):
            raise ParameterError(f"'{value}' is not a valid value for '{self.name}' ({self.column.kind})") from None
        low, high = (_to_number(e, self.column.kind) for e in (binning.edges[0], binning.edges[-1]))
        if not low <= number <= high:
            raise ParameterError(f"{value} is outside the model's range for '{self.name}'")
        inner = as_numbers(pd.Series(binning.edges[1:-1], dtype=object))
        return int(np.searchsorted(inner, number, side="right"))

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
                weights = np.clip(np.asarray(self.other_weights, dtype=float), 0.0, None)
                usable = len(weights) == len(self.other_values) and weights.sum() > 0
                p = weights / weights.sum() if usable else None
                picks = rng.choice(len(self.other_values), size=int(hit.sum()), p=p)
                out[hit] = np.asarray(self.other_values, dtype=object)[picks]
        return pd.Series(out, dtype=object)

    def _decode_numeric(self, cells: np.ndarray, binning: NumericBins, rng: np.random.Generator) -> pd.Series:
        edges = as_numbers(pd.Series(binning.edges, dtype=object))
        nulls = cells == binning.null_index if binning.null_index is not None else np.zeros(len(cells), dtype=bool)
        index = np.clip(cells, 0, binning.bins - 1)
        low, high = edges[index], edges[index + 1]
        if self.within is not None:
            low, high = _pick_sub_bins(index, edges, self.within, rng)
        if self.grid is not None and self.column.kind is Kind.FLOAT:
            values = self.grid.snap(index, low, high, rng, (edges[index], edges[index + 1]))
        else:
            values = low + rng.random(len(cells)) * (high - low)
        if self.column.kind is Kind.INTEGER:
            values = _integers_inside(low, high, values, rng, last=high == edges[-1])
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


def _to_number(value: Any, kind: Kind) -> float:
    """A bound, edge or condition as the number cells are compared on: nanoseconds (UTC) for datetimes."""
    if kind is Kind.DATETIME:
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return float(stamp.value)
    return float(value)


def _pick_sub_bins(
    index: np.ndarray, edges: np.ndarray, within: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each coarse cell, a fine sub-bin drawn by its (noisy, clipped at 0) weight; uniform when all are 0.

    A point sub-bin ``[p, p]`` (a spike's value) on a cell's upper edge belongs to the next cell, as ``p`` itself
    does (cells are ``[low, high)``, the last one closed): a spike always opens a bin of its own, so counting it in
    the bin below too decoded part of that bin's rows to the spike (covid_testing's ``age``: half the rows of
    ``[0.5, 1)`` became 1.0 and as many of ``[1, 2)`` became 2.0, 0.035 of the column moved)."""
    fine_edges, weights = (np.asarray(a, dtype=float) for a in within)
    low, high = edges[index].copy(), edges[index + 1].copy()
    last = len(edges) - 2
    points = fine_edges[1:] == fine_edges[:-1]
    for cell in np.unique(index):
        on_top = points & (fine_edges[:-1] >= edges[cell + 1]) & (cell < last)
        inside = np.flatnonzero((fine_edges[:-1] >= edges[cell]) & (fine_edges[1:] <= edges[cell + 1]) & ~on_top)
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
    """A uniform integer in ``[low, high)`` (``[low, high]`` at the domain's top); the nearest one if none fits."""
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
        domain = ColumnDomain(column, Categories(tuple(column.categories), null=column.nullable))
        if len(column.categories) == 1:
            return _warn(domain, f"column '{column.name}' has a single public category ({column.categories[0]!r})")
        return domain
    bounds = _public_bounds(column)
    if bounds is None:
        return None
    low, high = bounds
    if high == low:
        top = low + 0.5 if column.kind is Kind.INTEGER else float(np.nextafter(low, math.inf))
        domain = ColumnDomain(column, numeric_binning(np.array([low, top]), column))
        return _warn(domain, f"column '{column.name}' has public bounds of a single value ({_show(low, column.kind)})")
    if column.kind is Kind.INTEGER and high - low + 1 <= bins:
        # one cell per integer: exact for small integer ranges
        edges = (*np.arange(low, high + 1).tolist(), high + 1.0)
        return ColumnDomain(column, NumericBins(edges, null=column.nullable))
    binning = uniform_bins(low, high, bins, null=column.nullable)
    if column.kind is Kind.DATETIME:
        stamps = tuple(pd.Timestamp(int(e)) for e in binning.edges)
        binning = NumericBins(stamps, null=column.nullable)
    return ColumnDomain(column, binning)


def needs_budget(schema: Schema, bins: int = DEFAULT_BINS, *, numeric_bins: str = "quantile") -> list[str]:
    """Columns :func:`learn_domains` spends budget on: those without a public domain, and (with the default
    ``numeric_bins="quantile"``) numeric columns with public bounds, whose quantile bins are learned inside them.

    When it is empty the caller needs no preprocessing share. Text and identifier columns, which marginal
    methods do not model, are not listed.
    """
    _check_numeric_bins(numeric_bins)
    return [c.name for c in schema if c.kind not in _UNMODELLED and _plan(c, bins, numeric_bins) != "public"]


def discovery_delta(schema: Schema, delta: float, *, share: float = DISCOVERY_DELTA_SHARE) -> float:
    """How much of ``delta`` to set aside for DP key discovery: ``share * delta`` when some categorical column
    has no public categories, else 0.

    Use it to build the run's budget, ``Budget.from_epsilon_delta(epsilon, delta, approx_delta=...)``; the rho
    the rest of delta buys is then slightly smaller (epsilon 1, delta 1e-6: 0.02413 instead of 0.02436).
    """
    delta = check_positive("delta", delta)
    share = check_positive("share", share)
    if delta >= 1 or share >= 1:
        raise ParameterError(f"delta and share must lie strictly between 0 and 1, got {delta!r} and {share!r}.")
    discovers = any(c.kind not in _UNMODELLED and _plan(c, DEFAULT_BINS, "uniform") == "categories" for c in schema)
    return share * delta if discovers else 0.0


def learn_domains(
    source: Source,
    schema: Schema,
    accountant: Accountant | None,
    *,
    rho: float,
    bins: int = DEFAULT_BINS,
    numeric_bins: str = "quantile",
    delta: float | None = None,
    min_category_share: float = MIN_CATEGORY_SHARE,
    max_categories: int = MAX_CATEGORIES,
) -> dict[str, ColumnDomain]:
    """One domain per column of ``schema``: public ones for free, the others learned with ``rho`` (zCDP).

    ``rho`` is the preprocessing share of the budget, spent through ``accountant`` on the columns
    :func:`needs_budget` lists, in equal shares (exact, rounded down: the shares never add up to more than
    ``rho``). A numeric column spends a quarter of its share on its bounds (or, inside public bounds, on where
    its mass lies) and three quarters on its ``bins`` quantile bins (a learned integer range of at most ``bins``
    values gets one cell per value instead); an integer column with public bounds of at most
    :data:`~privsynth.synth.bounds.MAX_INTEGER_CELLS` values spends all of it on one histogram; a float column
    first sets :data:`~privsynth.synth.bounds.GRID_SHARE` of its share aside for the grid its values are recorded
    on (integers, one decimal, or finer: per bin, one noisy histogram). A column without
    data above the noise gets a placeholder bin and leaves its second part unspent. A categorical column spends
    its share, and ``delta`` (default: what the accountant's budget sets aside, ``approx_delta``, still
    unspent) divided equally among such columns, on DP key discovery.

    ``numeric_bins="uniform"`` bins columns with public bounds uniformly, for free. Without an accountant or with
    ``rho=0`` public bounds are binned uniformly, and a column without a public domain is a ParameterError.
    Data-quality problems (a single value, an all-missing column, a category cap that binds, public bounds that
    exclude much of the data) are logged as warnings and kept in ``ColumnDomain.warnings``.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ParameterError(f"bins must be a positive integer, got {bins!r}.")
    _check_numeric_bins(numeric_bins)
    rho = check_positive("rho", rho, allow_zero=True)
    min_category_share = check_positive("min_category_share", min_category_share, allow_zero=True)
    if min_category_share >= 1:
        raise ParameterError(f"min_category_share must be below 1, got {min_category_share!r}.")
    if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 1:
        raise ParameterError(f"max_categories must be a positive integer, got {max_categories!r}.")
    plans = {column.name: _plan(column, bins, numeric_bins) for column in schema}
    paid = [name for name, plan in plans.items() if plan != "public"]
    private = [name for name in paid if public_domain(schema[name], bins) is None]
    if accountant is None or rho == 0:
        if private:
            missing = "no accountant" if accountant is None else "rho=0"
            raise ParameterError(
                f"column(s) {', '.join(repr(n) for n in private)} have no public domain, so learning one costs "
                f"privacy budget, but learn_domains got {missing}. Pass an accountant and a preprocessing share "
                "rho > 0 (needs_budget(schema) lists the columns that need one), or declare their categories or "
                "bounds public in the schema."
            )
        if paid:
            logger.info("no preprocessing budget: columns %s get uniform bins inside their public bounds", paid)
        paid = []
    shares, deltas = _shares(plans, paid, accountant, rho, delta)
    probed: dict[str, _Probe] = {}
    if accountant is not None and sum(plans[name] == "categories" for name in shares) >= 2:
        probed, shares = _probe(source, schema, accountant, plans, shares, deltas)
    # Every numeric column's bounds and bins, stage by stage: one scan per stage for all of them.
    numeric = [
        (c, shares[c.name], _public_bounds(c)) for c in schema if c.name in shares and plans[c.name] == "numeric"
    ]
    learned = learn_many_bins(source, numeric, accountant, bins) if accountant is not None and numeric else {}
    domains: dict[str, ColumnDomain] = {}
    for done, column in enumerate(schema):
        report("learning column domains", done, len(schema), column.name)
        free = public_domain(column, bins)
        if accountant is not None and column.name in shares:
            share = shares[column.name]
            if column.name in probed:
                keys = probed[column.name].finish(accountant, share, min_category_share, max_categories)
                domain = _of_keys(column, keys)
            elif plans[column.name] == "categories":
                keys = discover(
                    source, column, accountant, share, deltas[column.name], min_category_share, max_categories
                )
                domain = _of_keys(column, keys)
            else:
                domain = _of_bins(column, learned[column.name])
        elif free is not None:
            domain = free
        else:  # refused above, before anything was spent
            raise ParameterError(f"column '{column.name}' has no public domain")
        for message in domain.warnings:
            logger.warning(message)
        domains[column.name] = domain
    report("learning column domains", len(schema), len(schema))
    return domains


def _of_keys(column: Column, keys: DiscoveredKeys) -> ColumnDomain:
    """The domain of a categorical column from what DP key discovery released."""
    return ColumnDomain(
        column,
        keys.binning,
        other_values=keys.other_values,
        other_weights=keys.other_weights,
        cost=keys.cost,
        warnings=keys.warnings,
    )


def _of_bins(column: Column, learned: LearnedBins) -> ColumnDomain:
    """The domain of a numeric column from its DP bounds and quantile bins."""
    return ColumnDomain(
        column,
        learned.binning,
        within=learned.within,
        cost=learned.cost,
        warnings=learned.warnings,
        grid=learned.grid,
    )


def domain_column(domain: ColumnDomain) -> Column:
    """The column with the domain a fit released (a DP output, or public), for the fitted model's schema."""
    column, binning = domain.column, domain.binning
    if isinstance(binning, Categories):
        return dataclasses.replace(column, categories=[*binning.values, *domain.other_values], bounds=None)
    low, high = binning.edges[0], binning.edges[-1]
    if column.kind is Kind.DATETIME:
        return dataclasses.replace(column, bounds=(pd.Timestamp(low).isoformat(), pd.Timestamp(high).isoformat()))
    return dataclasses.replace(column, categories=None, bounds=(float(low), float(high)))


def cells_to_frame(
    domains: Mapping[str, ColumnDomain], cells: np.ndarray, rng: np.random.Generator, columns: list[str]
) -> pd.DataFrame:
    """Decode a (rows, columns) array of cell indices into a frame with the schema's dtypes."""
    return pd.DataFrame({c: domains[c].decode(cells[:, j], rng).reset_index(drop=True) for j, c in enumerate(columns)})


# ---- planning and budget ---------------------------------------------------------------------------------------


def _check_numeric_bins(numeric_bins: str) -> None:
    if numeric_bins not in NUMERIC_BINS:
        raise ParameterError(f"numeric_bins must be one of {', '.join(NUMERIC_BINS)}, got {numeric_bins!r}.")


def _plan(column: Column, bins: int, numeric_bins: str) -> str:
    """``public`` (free), ``categories`` (key discovery) or ``numeric`` (DP bounds and/or quantile bins)."""
    if column.kind in _UNMODELLED:
        raise ParameterError(
            f"column '{column.name}' is {column.kind.value}, which marginal methods do not model; set "
            "synthesize: false for it in the schema (Schema.synthesized() leaves it out)."
        )
    if column.kind is Kind.CATEGORICAL:
        return "public" if public_domain(column, bins) is not None else "categories"
    bounds = _public_bounds(column)
    if bounds is None:
        return "numeric"
    low, high = bounds
    exact = column.kind is Kind.INTEGER and high - low + 1 <= bins
    return "public" if exact or high == low or numeric_bins == "uniform" else "numeric"


def _public_bounds(column: Column) -> tuple[float, float] | None:
    if not column.public or not column.kind.numeric or column.bounds is None:
        return None
    low, high = (_to_number(b, column.kind) for b in column.bounds)
    if column.kind is Kind.INTEGER:  # the integers inside the bounds
        low, high = float(math.ceil(low)), float(math.floor(high))
    return low, high


def _shares(
    plans: Mapping[str, str], paid: Sequence[str], accountant: Accountant | None, rho: float, delta: float | None
) -> tuple[dict[str, float], dict[str, float]]:
    """Each paid column's rho and each discovery's delta, equal exact shares of ``rho`` and ``delta`` (rounded
    down, so they never add up to more); checked before any spend, so a run that cannot pay spends nothing."""
    if not paid or accountant is None:
        return {}, {}
    if not fits_within([accountant.spent], rho, accountant.budget.rho):
        raise BudgetExceeded(
            f"learning the domains of {', '.join(repr(n) for n in paid)} was given rho={rho:.4g}, but only "
            f"rho={accountant.remaining:.4g} of the budget {accountant.budget} is left. Nothing was spent."
        )
    discover = [name for name in paid if plans[name] == "categories"]
    deltas: dict[str, float] = {}
    if discover:
        available = accountant.remaining_delta if delta is None else check_positive("delta", delta)
        if available <= 0:
            raise ParameterError(
                f"column(s) {', '.join(repr(n) for n in discover)} need DP key discovery, which spends a small "
                f"delta, but the budget {accountant.budget} sets none aside. Build it with Budget.from_epsilon_"
                "delta(epsilon, delta, approx_delta=discovery_delta(schema, delta)), or declare their categories "
                "public in the schema."
            )
        if not fits_within([accountant.spent_delta], available, accountant.budget.approx_delta):
            raise BudgetExceeded(
                f"key discovery was given delta={available:.3g}, but only delta={accountant.remaining_delta:.3g} "
                f"of the budget {accountant.budget} is set aside for it. Nothing was spent."
            )
        deltas = dict(
            zip(discover, split_exactly(available, [Fraction(1, len(discover))] * len(discover)), strict=True)
        )
    return dict(zip(paid, split_exactly(rho, [Fraction(1, len(paid))] * len(paid)), strict=True)), deltas


PROBE_SHARE = 0.25
"""The part of its equal share a categorical column spends on a first pass of key discovery; what the first
passes leave unexplained decides where the rest of the categorical columns' shares goes (:func:`_probe`)."""

NUMERIC_NEED = 0.1
"""In that split, a numeric column weighs as much as a categorical column whose first pass left this share of
the rows in values it did not release."""

MIN_UNEXPLAINED = 0.01
"""A categorical column whose first pass left less than this share of the rows unexplained gets no second pass."""


@dataclass
class _Probe:
    """A categorical column after the first pass of key discovery: its exact key counts (private, kept for the
    second pass only), the keys released with their noisy counts, and the delta left for a second pass."""

    column: Column
    table: dict[str, int]
    values: dict[str, Any]
    released: dict[str, int]
    rho: float
    delta: float
    delta_again: float = 0.0

    def finish(self, accountant: Accountant, rho: float, min_share: float, max_categories: int) -> DiscoveredKeys:
        """The column's domain: the first pass's keys, joined with a second pass's when ``rho`` is given one."""
        released, spent = self.released, f"rho={self.rho:.4g}, delta={self.delta:.3g}"
        if rho > 0:
            again = release_keys(self.table, self.column, accountant, rho, self.delta_again, again=True)
            released = pooled_keys(released, self.rho, again, rho)
            spent = f"two passes: rho={self.rho:.4g} + {rho:.4g}, delta={self.delta:.3g} + {self.delta_again:.3g}"
        return keys_of(self.column, released, self.values, spent, min_share, max_categories)


def _probe(
    source: Source,
    schema: Schema,
    accountant: Accountant,
    plans: Mapping[str, str],
    shares: Mapping[str, float],
    deltas: Mapping[str, float],
) -> tuple[dict[str, _Probe], dict[str, float]]:
    """Budget by need: a first pass of key discovery on every categorical column, then the rest of their shares
    split by what it left unexplained; returns the probes and each column's rho from here on.

    Each categorical column spends :data:`PROBE_SHARE` of its share and half of its delta on a first pass. The
    number of rows is estimated by the largest noisy total a first pass released (a column with few, frequent
    values releases them all); a column's unexplained share is the part of that estimate its own released keys do
    not hold. The rest of the categorical shares is split among the numeric columns (weight
    :data:`NUMERIC_NEED` each) and the categorical columns with :data:`MIN_UNEXPLAINED` or more unexplained, more
    than three standard deviations of the two totals' noise (weight: that share), which run a second pass with it
    and an equal part of the halves of delta the first passes left (left unspent when no column needs one); a
    column of a few frequent values is done after its first pass, and what it does not need goes where values
    are missing or bounds are to be found. Equal shares when nothing weighs anything. All of it is
    post-processing of noisy outputs, and the rho spent is the same: the shares are exact fractions of the rest
    (rounded down).
    """
    categorical = [name for name in shares if plans[name] == "categories"]
    probes: dict[str, _Probe] = {}
    rest, delta_rest = Fraction(0), Fraction(0)
    exact = key_counts_many(source, [schema[name] for name in categorical])  # one scan for every column
    for name in categorical:
        first, second = split_exactly(shares[name], [Fraction(PROBE_SHARE), 1 - Fraction(PROBE_SHARE)])
        delta, delta_second = split_exactly(deltas[name], [Fraction(1, 2), Fraction(1, 2)])
        delta_rest += Fraction(delta_second)
        table, values = exact[name]
        released = release_keys(table, schema[name], accountant, first, delta)
        probes[name] = _Probe(schema[name], table, values, released, first, delta)
        rest += Fraction(second)
    rows = max(sum(p.released.values()) for p in probes.values())
    weights: dict[str, Fraction] = {name: Fraction(NUMERIC_NEED) for name in shares if name not in probes}
    top = max(probes.values(), key=lambda p: sum(p.released.values()))
    for name, probe in probes.items():
        unexplained = max(rows - sum(probe.released.values()), 0)
        # the two totals' noise: what a column of frequent values alone would leave "unexplained" (3 sd)
        sigma = gaussian_sigma(probe.rho, accountant.sensitivity(1.0))
        noise = 3 * sigma * math.sqrt(len(probe.released) + len(top.released))
        share = unexplained / rows if rows > 0 else 0.0
        weights[name] = Fraction(share) if share >= MIN_UNEXPLAINED and unexplained > noise else Fraction(0)
    total = sum(weights.values(), Fraction(0))
    if total == 0:
        weights, total = {name: Fraction(1) for name in probes}, Fraction(len(probes))
    named = [name for name, weight in weights.items() if weight > 0]
    extra = dict(zip(named, split_exactly(_floor(rest), [weights[n] / total for n in named]), strict=True))
    out = {
        name: extra.get(name, 0.0)
        if name in probes
        else _floor(Fraction(shares[name]) + Fraction(extra.get(name, 0.0)))
        for name in shares
    }
    again = [name for name in probes if out[name] > 0]
    if again:
        split = split_exactly(_floor(delta_rest), [Fraction(1, len(again))] * len(again))
        for name, delta in zip(again, split, strict=True):
            probes[name] = dataclasses.replace(probes[name], delta_again=delta)
    return probes, out


def _floor(value: Fraction) -> float:
    """The largest float not above ``value``: a sum of shares never rounds up past what it adds."""
    nearest = float(value)
    return math.nextafter(nearest, 0.0) if Fraction(nearest) > value else nearest


def _warn(domain: ColumnDomain, *messages: str) -> ColumnDomain:
    return dataclasses.replace(domain, warnings=(*domain.warnings, *messages))


def _show(value: float, kind: Kind) -> str:
    return str(pd.Timestamp(int(value))) if kind is Kind.DATETIME else f"{value:g}"
