"""The cells a DP marginal model works on: one :class:`ColumnDomain` per column, and how cells decode to values.

A domain is either declared public in the schema (free) or learned under differential privacy (paid from the
budget and recorded in the ledger). Decoding a cell back to a value is post-processing: it uses only the domain
(and, for numeric columns, the noisy within-bin histogram measured while learning the bins), never the data.

Schema structure (column names, kinds, dtypes, ``nullable``) is treated as public: it is reviewed by a person
and carries no counts. Category lists and bounds are data, and are used only when ``public: true``.

:func:`learn_domains` learns the others, reading the data only through ``Source.counts`` under data-independent
binnings and ``Source.value_counts``, and releasing only noisy statistics:

- Numeric columns (integer, float, datetime). A noisy histogram over a fixed geometric grid (sign times powers
  of sqrt 2 from 2^-16 to 2^48; calendar years 1800-2200 for datetimes) shows where the mass is; the bounds are
  the grid cells holding its noisy 0.5% and 99.5% quantiles, never the minimum and maximum. A second noisy
  histogram, on up to :data:`MAX_FINE_CELLS` cells placed where the first one found mass (one per value for
  integer ranges of up to :data:`MAX_INTEGER_CELLS` values), gives equal-mass bin edges from its cumulative sums
  and is kept as the within-bin structure that decoding samples from. This is the noisy-histogram route to DP
  quantiles (Gillenwater, Joseph and Kulesza, "Differentially Private Quantiles", ICML 2021, compare it with
  the alternatives) on two levels of a data-dependent partition, as in PrivTree (Zhang, Xiao and Xie, SIGMOD
  2016). Public bounds replace the first step's bounds, not its placement of the fine cells, and their noisy
  outside counts warn when the bounds exclude much of the data.
- Categorical columns. DP key discovery with the Gaussian threshold mechanism (Korolova, Kenthapadi, Mishra and
  Ntoulas, WWW 2009; Wilson et al., "Differentially Private SQL with Bounded User Contribution", PoPETs 2020;
  Rogers, arXiv:2309.09170, for its approximate-zCDP analysis): a value is released only when its noisy count
  clears a threshold that a value held by one record clears with probability at most delta. Released values
  rarer than :data:`MIN_CATEGORY_SHARE` of the released total, or beyond :data:`MAX_CATEGORIES`, merge into the
  ``other`` cell, which also holds every value never released.
- Missing values are a cell of their own whenever the schema says the column is nullable.

Noisy histograms use the discrete Gaussian (Canonne, Kamath and Steinke, NeurIPS 2020) with L2 sensitivity 1:
one record added or removed changes one cell by one. Every spend goes through the accountant, and so into the
ledger, with a purpose naming the column. The mechanisms need OpenDP (the ``dp`` extra) and are imported only
when a domain is learned: public domains work without it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.binning import Binning, Categories, NumericBins, _isna, _numeric, category_key, uniform_bins
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source
from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import check_positive, fits_within, gaussian_sigma, split_exactly
from privsynth.progress import report
from privsynth.synth.restore import restore_dtype

__all__ = [
    "DEFAULT_BINS",
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

BOUNDS_QUANTILE = 0.005
"""Learned bounds are the grid cells holding this noisy quantile and its mirror: 0.5% and 99.5%."""

STAGE_SHARES = (0.25, 0.75)
"""A numeric column's share of rho, split between the coarse histogram (bounds) and the fine one (bins)."""

MIN_CATEGORY_SHARE = 0.005
"""Released categories whose noisy count is below this share of the released total merge into ``other``."""

MAX_CATEGORIES = 100
"""At most this many categories keep a cell of their own; the rest merge into ``other``, with a warning."""

MAX_FINE_CELLS = 512
"""Most cells of the fine histogram of a numeric column (a SQL CASE of that many branches), except for integer
ranges of up to :data:`MAX_INTEGER_CELLS` values, which get one fine cell per value."""

MAX_INTEGER_CELLS = 1024
"""Integer ranges of up to this many values get one fine cell per value."""

MIN_BIN_SHARE = 0.25
"""A quantile bin with less than this share of an equal-mass bin's mass (a cell of noise, or a sliver between
heavy values) merges into its lighter neighbour."""

FINE_CELL_SIGMAS = 10.0
"""Fine cells are placed so that each holds about this many noise standard deviations of rows."""

FALSE_CELL_RATE = 0.05
"""The fine histogram keeps cells above the count that noise alone reaches in any of its empty cells with this
probability; the others count as empty."""

BOUNDS_FALSE_CELL_RATE = 1e-5
"""The same for the coarse histogram that sets bounds, stricter: a cell of pure noise far from the data would
stretch the bounds to it."""

THIN_MASS_WARNING = 0.5
"""Warn when the cells above the noise hold less than this share of a column's noisy row count: its budget is
too small for the bounds to be reliable."""

CONSTANT_SHARE = 0.99
"""Warn that a numeric column is (nearly) constant when one fine cell holds this share of its noisy mass."""

OUTSIDE_WARNING_SHARE = 0.05
"""Warn when the noisy counts put more than this share of a column's rows outside its public bounds."""

DISCOVERY_DELTA_SHARE = 0.1
"""The share of delta :func:`discovery_delta` sets aside for DP key discovery."""

_GRID_OCTAVES = (-16, 48)
_GRID_STEPS = 2
_POOL_SIZES = (1, 2, 4, 8, 16)
_GRID_YEARS = (*range(1800, 1900, 10), *range(1900, 2100), *range(2100, 2201, 10))
_SECOND = 1e9  # nanoseconds: datetime edges are whole seconds
_PLACEHOLDER = (0.0, float(pd.Timestamp("2000-01-01").value))  # where the one bin of a column with no data sits
_MISSING_KEY = "missing"  # the key of missing values in key discovery; the key of a value is "=" + its repr
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
    the domain, for a release's data card.
    """

    column: Column
    binning: Binning
    within: tuple[np.ndarray, np.ndarray] | None = None
    other_values: tuple[Any, ...] = ()
    cost: str = "public"  # "public" or a sentence on how it was learned and what it cost
    other_weights: tuple[float, ...] = ()
    warnings: tuple[str, ...] = ()

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
        inner = _numeric(pd.Series(binning.edges[1:-1], dtype=object))
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
        edges = _numeric(pd.Series(binning.edges, dtype=object))
        nulls = cells == binning.null_index if binning.null_index is not None else np.zeros(len(cells), dtype=bool)
        index = np.clip(cells, 0, binning.bins - 1)
        low, high = edges[index], edges[index + 1]
        if self.within is not None:
            low, high = _pick_sub_bins(index, edges, self.within, rng)
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
        domain = ColumnDomain(column, _numeric_binning(np.array([low, top]), column))
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
    :data:`MAX_INTEGER_CELLS` values spends all of it on one histogram. A column without data above the noise
    gets a placeholder bin and leaves its second part unspent. A categorical column
    spends its share, and ``delta`` (default: what the accountant's budget sets aside, ``approx_delta``, still
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
    domains: dict[str, ColumnDomain] = {}
    for done, column in enumerate(schema):
        report("learning column domains", done, len(schema), column.name)
        free = public_domain(column, bins)
        if accountant is not None and column.name in shares:
            share = shares[column.name]
            if plans[column.name] == "categories":
                domain = _discover(
                    source, column, accountant, share, deltas[column.name], min_category_share, max_categories
                )
            else:
                domain = _learn_numeric(source, column, accountant, share, bins)
        elif free is not None:
            domain = free
        else:  # refused above, before anything was spent
            raise ParameterError(f"column '{column.name}' has no public domain")
        for message in domain.warnings:
            logger.warning(message)
        domains[column.name] = domain
    report("learning column domains", len(schema), len(schema))
    return domains


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


def _warn(domain: ColumnDomain, *messages: str) -> ColumnDomain:
    return dataclasses.replace(domain, warnings=(*domain.warnings, *messages))


# ---- categorical columns: DP key discovery -------------------------------------------------------------------


def _discover(
    source: Source,
    column: Column,
    accountant: Accountant,
    rho: float,
    delta: float,
    min_share: float,
    max_categories: int,
) -> ColumnDomain:
    """Categories released by the Gaussian threshold mechanism; rare ones and the cap's overflow go to ``other``."""
    from privsynth.privacy.mechanisms import gaussian_threshold_mechanism

    name = column.name
    table: dict[str, int] = {}
    values: dict[str, Any] = {}
    missing = 0
    for value, count in source.value_counts(name):
        if _isna(value):
            missing += count
            continue
        key = "=" + repr(category_key(value))
        table[key] = table.get(key, 0) + count
        values.setdefault(key, value)
    # A DP fit never fails on the data: without a missing cell, missing values are simply not counted.
    if column.nullable:
        table[_MISSING_KEY] = missing  # always present: whether the key exists depends on the schema only
    released = gaussian_threshold_mechanism(
        table, rho=rho, delta=delta, accountant=accountant, purpose=f"domain of '{name}': categories (DP key discovery)"
    )
    noisy_missing = released.pop(_MISSING_KEY, None)
    ranked = sorted(released.items(), key=lambda item: (-item[1], item[0]))
    total = sum(count for _, count in ranked)
    frequent = [(key, count) for key, count in ranked if count >= min_share * total]
    kept = frequent[:max_categories]
    merged = ranked[len(kept) :]
    warnings: list[str] = []
    if not ranked:
        if noisy_missing is not None and noisy_missing > 0:
            warnings.append(
                f"column '{name}' looks all missing: no value was frequent enough to be released under DP, and "
                f"the noisy count of missing values is about {noisy_missing}; it is kept with a missing cell and "
                "an empty 'other' cell"
            )
        else:
            warnings.append(
                f"column '{name}': no value was frequent enough to be released under DP (threshold in the ledger "
                "row); every row falls in the 'other' cell, which decodes to missing values. Declare its "
                "categories public, or give preprocessing more budget"
            )
    elif len(ranked) == 1:
        warnings.append(f"column '{name}' has a single value after DP key discovery; it is kept as a constant column")
    if len(frequent) > max_categories:
        warnings.append(
            f"column '{name}' has {len(frequent)} released categories above {min_share:.1%} of the rows; only "
            f"the {max_categories} most frequent keep a cell of their own and the other {len(merged)} merge into "
            "'other' (raise max_categories, or group the column)"
        )
    elif merged and (not kept or len(ranked) > max_categories):
        warnings.append(
            f"column '{name}' has {len(ranked)} released categories, {len(merged)} of them rarer than "
            f"{min_share:.1%} of the rows; those share the 'other' cell (decoded by their noisy frequencies), "
            f"{len(kept)} keep a cell of their own. Group the column if its categories matter one by one"
        )
    domain = ColumnDomain(
        column,
        Categories(tuple(_sorted([values[key] for key, _ in kept])), other=True, null=column.nullable),
        other_values=tuple(values[key] for key, _ in merged),
        other_weights=tuple(float(count) for _, count in merged),
        cost=(
            f"categories by DP key discovery (rho={rho:.4g}, delta={delta:.3g}): {len(ranked)} released, "
            f"{len(kept)} kept, {len(merged)} merged into 'other'"
        ),
    )
    return _warn(domain, *warnings)


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


# ---- numeric columns: DP bounds and quantile bins ------------------------------------------------------------


@dataclass(frozen=True)
class _Histogram:
    """A released noisy histogram over numeric cells: counts per cell, the missing cell apart."""

    noisy: np.ndarray
    missing: int | None
    sigma: float

    def weights(self, false_cell_rate: float = FALSE_CELL_RATE) -> np.ndarray:
        """Noisy counts of the cells that rise above what noise alone reaches in any empty cell with probability
        ``false_cell_rate``; 0 for the others."""
        cut = self.sigma * NormalDist().inv_cdf(1 - false_cell_rate / max(len(self.noisy), 1))
        return np.where(self.noisy >= cut, self.noisy, 0).astype(float)

    def pooled_weights(self, false_cell_rate: float) -> np.ndarray:
        """Noisy mass located level by level on blocks of 1, 2, 4, 8 and 16 adjacent cells, finest first; or a
        single block size's :meth:`weights`, spread evenly over each block, when it locates more by over three
        standard deviations of its noise.

        At each level a block's mass not yet located (the noisy counts of its open cells) is located when it rises
        above the noise of those cells, and spread over them: mass found in one cell stays there, so a wide block's
        noise cannot spread a column whose values all sit in one cell over 16 cells (nassCDS ``yearacc``, all in
        [1448, 2048), got bounds 256 to 65,536 in about 40% of fits when the largest noisy total decided). A thin
        tail spread over many cells (nassCDS ``weight``) rises above the noise only pooled, hence the second rule.
        """
        n = len(self.noisy)
        noisy = self.noisy.astype(float)
        located = np.zeros(n)
        for size in _POOL_SIZES:
            starts = np.arange(0, n, size)
            free = located == 0
            open_cells = np.add.reduceat(free.astype(float), starts)
            residual = np.add.reduceat(np.where(free, noisy, 0.0), starts)
            z = NormalDist().inv_cdf(1 - false_cell_rate / len(starts))
            found = (open_cells > 0) & (residual >= self.sigma * np.sqrt(np.maximum(open_cells, 1.0)) * z)
            share = np.where(found, residual / np.maximum(open_cells, 1.0), 0.0)
            located = located + np.repeat(share, np.diff(np.append(starts, n))) * free
        for size in _POOL_SIZES[1:]:
            starts = np.arange(0, n, size)
            sizes = np.diff(np.append(starts, n))
            pooled = np.add.reduceat(noisy, starts)
            kept = pooled >= self.sigma * np.sqrt(sizes) * NormalDist().inv_cdf(1 - false_cell_rate / len(starts))
            if pooled[kept].sum() > located.sum() + 3 * self.sigma * math.sqrt(float(sizes[kept].sum())):
                return np.repeat(np.where(kept, pooled, 0.0) / sizes, sizes)
        return located


def _measure(
    source: Source, column: Column, edges: np.ndarray, rho: float, accountant: Accountant, purpose: str
) -> _Histogram:
    """A noisy histogram of ``column`` over cells ``edges`` (values outside clip into the end cells).

    Sensitivity: one record is in exactly one cell (the missing cell included), L2 sensitivity 1. Cost: rho.
    """
    from privsynth.privacy.mechanisms import gaussian_mechanism

    binning = _numeric_binning(edges, column)
    noisy = gaussian_mechanism(
        source.counts([column.name], [binning], outside="drop"),
        sensitivity=1.0,
        rho=rho,
        accountant=accountant,
        purpose=purpose,
    )
    missing = None if binning.null_index is None else int(noisy[binning.null_index])
    return _Histogram(noisy=np.asarray(noisy[: binning.bins]), missing=missing, sigma=gaussian_sigma(rho, 1.0))


def _learn_numeric(source: Source, column: Column, accountant: Accountant, rho: float, bins: int) -> ColumnDomain:
    """Bounds (or public ones) from a coarse noisy histogram, then quantile bins from a fine one."""
    name, kind = column.name, column.kind
    bounds = _public_bounds(column)
    rho_coarse, rho_fine = split_exactly(rho, STAGE_SHARES)
    warnings: list[str] = []
    if bounds is not None and kind is Kind.INTEGER and bounds[1] - bounds[0] + 1 <= MAX_INTEGER_CELLS:
        low, top = bounds[0], bounds[1] + 1  # one fine cell per integer: no coarse stage needed
        fine, rho_fine, learned = np.arange(low, top + 1), rho, "public bounds"
    else:
        grid = _grid(kind)
        if bounds is not None:
            low, top = bounds[0], _exclusive_top(bounds[1], kind)
            edges = np.concatenate([[low], grid[(grid > low) & (grid < bounds[1])], [top]])
            purpose = f"domain of '{name}': where its mass lies inside its public bounds (noisy geometric histogram)"
        else:
            edges = grid
            purpose = f"domain of '{name}': bounds (noisy histogram on a fixed geometric grid)"
        coarse = _measure(source, column, edges, rho_coarse, accountant, purpose)
        weights = coarse.pooled_weights(BOUNDS_FALSE_CELL_RATE)
        spent = f"rho={rho_coarse:.4g} on a noisy {len(edges) - 1}-cell geometric histogram"
        learned = f"public bounds, mass located with {spent}" if bounds is not None else f"bounds from {spent}"
        if bounds is None:
            if weights.sum() <= 0:
                cell = int(np.searchsorted(edges, _PLACEHOLDER[kind is Kind.DATETIME], side="right")) - 1
                low, top = float(edges[cell]), float(edges[cell + 1])
                binning = _numeric_binning(np.array([low, _closed_top(top, kind, None)]), column)
                cost = f"{learned}; a placeholder bin (rho={rho_fine:.4g} left unspent)"
                return _warn(ColumnDomain(column, binning, cost=cost), _empty_warning(name, coarse))
            first, last = _quantile_cells(weights, BOUNDS_QUANTILE)
            located, rows = float(weights.sum()), float(coarse.noisy.sum())
            edges, weights = edges[first : last + 2], weights[first : last + 1]
            low, top = float(edges[0]), float(edges[-1])
            if rows > 3 * coarse.sigma * math.sqrt(len(coarse.noisy)) and located < THIN_MASS_WARNING * rows:
                warnings.append(
                    f"column '{name}': its share of the budget is too small to locate its bounds well: the cells "
                    f"above the noise hold about {located:.0f} of about {rows:.0f} rows (noisy counts), and values "
                    "outside the learned bounds are clipped. Give preprocessing more budget, or declare the column's "
                    "bounds public"
                )
        sigma = gaussian_sigma(rho_fine, 1.0)
        cells = int(np.clip(round(weights.sum() / (FINE_CELL_SIGMAS * sigma)), 2 * bins, MAX_FINE_CELLS))
        fine = _allocate(edges, weights, cells, kind)
    measured = _padded(fine, kind) if bounds is not None else fine
    purpose = f"domain of '{name}': quantile bins (noisy {len(fine) - 1}-cell histogram)"
    histogram = _measure(source, column, measured, rho_fine, accountant, purpose)
    weights = histogram.pooled_weights(FALSE_CELL_RATE)
    if bounds is not None:
        warnings += _outside_warning(column, histogram, histogram.weights())
        weights = np.concatenate([[weights[0] + weights[1]], weights[2:-2], [weights[-2] + weights[-1]]])
        if weights.sum() <= 0:
            warnings.append(_empty_warning(name, histogram))
    if bounds is None and kind is Kind.INTEGER and len(fine) - 1 <= bins:
        # A few integer values: one cell per value, the learned range trimmed to the values seen above the noise.
        seen = np.flatnonzero(weights)
        if len(seen):
            fine, weights = fine[seen[0] : seen[-1] + 2], weights[seen[0] : seen[-1] + 1]
        fine, weights = _close(fine, weights, fine[-1] - 0.5)
        edges, within, shape = fine, None, "one cell per value"
    else:
        fine, weights = _close(fine, weights, _closed_top(top, kind, bounds))
        edges = fine[_quantile_edges(weights, bins)]
        within, shape = (fine, weights) if len(fine) > len(edges) else None, f"{len(edges) - 1} quantile bins"
    if weights.sum() > 0 and weights.max() >= CONSTANT_SHARE * weights.sum():
        # The rest is noise (or too few rows to model): one bin, the heavy fine cell, decoded inside that cell.
        heavy = int(np.argmax(weights))
        edges, within, shape = fine[heavy : heavy + 2], None, "one cell (a constant column)"
        warnings.append(
            f"column '{name}' has (nearly) a single value: {CONSTANT_SHARE:.0%} of its noisy mass or more lies in "
            "one cell; it is kept as a constant column"
        )
    cost = f"{learned}; {shape} from rho={rho_fine:.4g} on a noisy {len(measured) - 1}-cell histogram"
    return _warn(ColumnDomain(column, _numeric_binning(edges, column), within=within, cost=cost), *warnings)


def _grid(kind: Kind) -> np.ndarray:
    """The data-independent coarse grid: calendar years for datetimes, else 0 and sign times powers of sqrt 2
    (integers from 1, rounded up to integers)."""
    if kind is Kind.DATETIME:
        return np.array([pd.Timestamp(year=year, month=1, day=1).value for year in _GRID_YEARS], dtype=float)
    low, high = _GRID_OCTAVES
    powers = 2.0 ** (np.arange(low * _GRID_STEPS, high * _GRID_STEPS + 1) / _GRID_STEPS)
    if kind is Kind.INTEGER:
        powers = np.unique(np.ceil(powers[powers >= 1]))
    return np.concatenate([-powers[::-1], [0.0], powers])


def _quantile_cells(weights: np.ndarray, q: float) -> tuple[int, int]:
    """The first and last cells holding the noisy ``q`` and ``1 - q`` quantiles of ``weights``."""
    cumulative = np.cumsum(weights)
    total = cumulative[-1]
    first = int(np.searchsorted(cumulative, q * total, side="right"))
    last = int(np.searchsorted(cumulative, (1 - q) * total, side="left"))
    return first, max(first, min(last, len(weights) - 1))


def _allocate(edges: np.ndarray, weights: np.ndarray, cells: int, kind: Kind) -> np.ndarray:
    """About ``cells`` fine edges inside ``edges``: each coarse cell split uniformly into parts proportional to
    its noisy weight (at least one); integer ranges that fit get one cell per value."""
    low, top = float(edges[0]), float(edges[-1])
    if kind is Kind.INTEGER and top - low <= MAX_INTEGER_CELLS:
        return np.arange(low, top + 1)
    total = weights.sum()
    parts = np.maximum(1, np.round(cells * weights / total)) if total > 0 else np.full(len(weights), 1.0)
    if total <= 0:
        parts[:] = max(1, cells // len(weights))
    pieces = [np.linspace(a, b, int(m) + 1)[:-1] for a, b, m in zip(edges[:-1], edges[1:], parts, strict=True)]
    fine = np.concatenate([*pieces, edges[-1:]])
    if kind is Kind.INTEGER:
        fine = np.round(fine)
    elif kind is Kind.DATETIME:
        fine = np.round(fine / _SECOND) * _SECOND
    return np.unique(fine)


def _padded(fine: np.ndarray, kind: Kind) -> np.ndarray:
    """``fine`` with a cell below and one above, which catch (by clipping) every value outside the bounds."""
    step = _SECOND if kind is Kind.DATETIME else 1.0
    below = fine[0] - max(step, abs(fine[0]) * 1e-3)
    above = fine[-1] + max(step, abs(fine[-1]) * 1e-3)
    return np.concatenate([[below], fine, [above]])


def _exclusive_top(high: float, kind: Kind) -> float:
    """An edge just above a public upper bound, so that a cell ``[edge, top)`` still holds ``high``."""
    if kind is Kind.INTEGER:
        return high + 1
    if kind is Kind.DATETIME:
        return high + _SECOND
    return float(np.nextafter(high, math.inf))


def _closed_top(top: float, kind: Kind, bounds: tuple[float, float] | None) -> float:
    """The domain's last edge (its last cell is closed): the largest integer below ``top`` plus one half for
    integers (so decoding never returns ``top``), the public upper bound, or the learned ``top`` itself."""
    if kind is Kind.INTEGER:
        return top - 0.5
    return bounds[1] if bounds is not None else top


def _close(fine: np.ndarray, weights: np.ndarray, top: float) -> tuple[np.ndarray, np.ndarray]:
    """Replace the last fine edge by the closed top, merging a last cell the replacement would empty."""
    fine, weights = fine.astype(float), weights.astype(float)
    while len(fine) > 2 and fine[-2] >= top:
        fine = np.delete(fine, -2)
        weights = np.append(weights[:-2], weights[-2] + weights[-1])
    fine[-1] = top
    return fine, weights


def _quantile_edges(weights: np.ndarray, bins: int) -> np.ndarray:
    """Indices of the fine edges of about ``bins`` quantile bins over the noisy ``weights``.

    A fine cell holding a bin's worth of mass or more (a spike: a value many rows share, such as a test's
    "not detected" reading or a zero) is a bin of its own, and the other bins are quantile bins of the mass
    around the spikes, so the spike does not swallow the values next to it. Both are post-processing of the
    noisy histogram (free).
    """
    total = float(weights.sum())
    heavy = np.flatnonzero(weights >= total / bins) if total > 0 and bins > 1 else np.array([], dtype=np.int64)
    if len(heavy) == 0:
        return _plain_quantile_edges(weights, bins)
    rest = weights.astype(float).copy()
    rest[heavy] = 0.0
    # Each spike may split a quantile bin in two: 2 bins per spike keep the total at about ``bins``.
    picks = _plain_quantile_edges(rest, max(1, bins - 2 * len(heavy))) if rest.sum() > 0 else [0, len(weights)]
    picks = np.unique(np.concatenate([picks, heavy, heavy + 1]))
    # A bin lighter than a plain quantile bin may be (a sliver the spike edges cut off, or a cell of noise)
    # joins its lighter neighbour that is not a spike, else the spike next to it.
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    floor = MIN_BIN_SHARE * total / bins
    spikes = set(heavy.tolist())
    while len(picks) > 2:
        mass = np.diff(cumulative[picks])
        light = [i for i in range(len(mass)) if picks[i] not in spikes and mass[i] < floor]
        if not light:
            break
        i = min(light, key=lambda i: mass[i])
        plain = [j for j in (i - 1, i + 1) if 0 <= j < len(mass) and picks[j] not in spikes]
        j = min(plain or [j for j in (i - 1, i + 1) if 0 <= j < len(mass)], key=lambda j: mass[j])
        picks = np.delete(picks, max(i, j))
    return picks


def _plain_quantile_edges(weights: np.ndarray, bins: int) -> np.ndarray:
    """Indices of the fine edges nearest to the cumulative shares k / bins: duplicates merged, none where no
    mass lies on one side (it would make an empty bin), and in the middle of a stretch without mass (where every
    edge is as near). Evenly spaced fine edges when there is no mass at all."""
    cells = len(weights)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    total = cumulative[-1]
    if total <= 0 or cells == 1:
        picks = np.round(np.linspace(0, cells, min(bins, cells) + 1))
    else:
        inner = cumulative[1:-1]
        nearest = inner[np.abs(inner[None, :] - total * np.arange(1, bins)[:, None] / bins).argmin(axis=1)]
        first = np.searchsorted(inner, nearest, side="left")
        last = np.searchsorted(inner, nearest, side="right") - 1
        middle = ((first + last) // 2 + 1)[(nearest > 0) & (nearest < total)]
        picks = np.concatenate([[0], middle, [cells]])
    picks = np.unique(picks.astype(np.int64))
    if total > 0:
        while len(picks) > 2:
            mass = np.diff(cumulative[picks])
            lightest = int(np.argmin(mass))
            if mass[lightest] >= MIN_BIN_SHARE * total / bins:
                break
            # merge the lightest bin into its lighter neighbour: drop the edge between them
            right = lightest == 0 or (lightest < len(mass) - 1 and mass[lightest + 1] < mass[lightest - 1])
            picks = np.delete(picks, lightest + 1 if right else lightest)
    return picks


def _numeric_binning(edges: np.ndarray, column: Column) -> NumericBins:
    """Cells over ``edges`` (numbers; nanoseconds for datetimes, rendered as timestamps for SQL)."""
    if column.kind is Kind.DATETIME:
        return NumericBins(tuple(pd.Timestamp(int(e)) for e in edges), null=column.nullable)
    return NumericBins(tuple(float(e) for e in edges), null=column.nullable)


def _outside_warning(column: Column, histogram: _Histogram, weights: np.ndarray) -> list[str]:
    """A warning when the noisy counts put more than a few percent of the rows outside the public bounds."""
    below, above = int(histogram.noisy[0]), int(histogram.noisy[-1])
    total = float(np.clip(histogram.noisy, 0, None).sum())
    outside = float(weights[0] + weights[-1])
    if total <= 0 or outside <= OUTSIDE_WARNING_SHARE * total:
        return []
    return [
        f"column '{column.name}': its public bounds {list(column.bounds or ())} exclude about {outside / total:.0%} "
        f"of its rows (noisy counts: about {max(below, 0)} below and {max(above, 0)} above, of about {int(total)}); "
        "those values are clipped to the bounds. Check the bounds, or leave them out of the schema to learn them"
    ]


def _empty_warning(name: str, histogram: _Histogram) -> str:
    missing = "" if histogram.missing is None else f", noisy count of missing values about {histogram.missing}"
    return (
        f"column '{name}' looks all missing or nearly empty: no cell of its noisy histogram rises above the noise"
        f"{missing}; its bins are a placeholder"
    )


def _show(value: float, kind: Kind) -> str:
    return str(pd.Timestamp(int(value))) if kind is Kind.DATETIME else f"{value:g}"
