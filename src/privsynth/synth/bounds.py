"""DP bounds and quantile bins of a numeric column (integer, float, datetime), from two noisy histograms.

Gillenwater, Joseph and Kulesza, "Differentially Private Quantiles", ICML 2021 (the noisy-histogram route to DP
quantiles, compared there with the alternatives); Zhang, Xiao and Xie, "PrivTree", SIGMOD 2016 (two levels of a
data-dependent partition); Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy",
NeurIPS 2020 (the noise).

A noisy histogram over a fixed geometric grid (sign times powers of sqrt 2 from 2^-16 to 2^48; calendar years
1800-2200 for datetimes) shows where the mass is; the bounds are the grid cells holding its noisy 0.5% and 99.5%
quantiles, never the minimum and maximum, widened outward over a tail whose next cells are clearly above the noise
though under the strict cut (:data:`TAIL_SIGMAS`), and reaching down to 0 when the lower bound is a small fraction
of the upper (:data:`ZERO_REACH`). A second noisy histogram, on up to :data:`MAX_FINE_CELLS` cells placed
where the first one found mass (one per value for integer ranges of up to :data:`MAX_INTEGER_CELLS` values), gives
equal-mass bin edges from its cumulative sums and is kept as the within-bin structure that decoding samples from.
Public bounds replace the first step's bounds, not its placement of the fine cells, and their noisy outside counts
warn when the bounds exclude much of the data. For a float column a last noisy histogram counts, per bin, the rows
on a whole multiple of 100 or 10 times a unit (values recorded to an integer or one decimal) and the others, so
decoding can draw recorded values instead of numbers spread evenly inside a bin (:class:`RecordedGrid`).

Each histogram reads the data only through counts under a binning fixed by earlier noisy outputs (one scan per
stage for all columns, :func:`learn_many_bins`) and has L2 sensitivity 1 (one record added or removed changes one
cell by one); every spend goes through the accountant, with a purpose naming the column. Everything after the two
histograms is post-processing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from privsynth.data.binning import NumericBins
from privsynth.data.schema import Column, Kind
from privsynth.data.sources import Source
from privsynth.data.workload import counts_many
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import gaussian_sigma, split_exactly

__all__ = ["LearnedBins", "RecordedGrid", "learn_bins", "learn_many_bins", "numeric_binning"]

BOUNDS_QUANTILE = 0.005
"""Learned bounds are the grid cells holding this noisy quantile and its mirror: 0.5% and 99.5%."""

STAGE_SHARES = (0.25, 0.65, 0.1)
"""A numeric column's share of rho, split between the coarse histogram (bounds), the fine one (bins) and the
search for the exact value of each spike (:func:`_with_points`), or, without a spike, a second measurement of
the fine histogram."""

GRID_SHARE = 0.1
"""A float column's share of rho spent on the grid its values are recorded on (:func:`_recorded_grid`); the rest
is split by :data:`STAGE_SHARES`. Integer and datetime columns spend nothing on it."""

MAX_GRID_CELLS = 16_384
"""Most cells of the histogram that finds a float column's recorded grid: its unit is the smallest power of ten
from 0.01 up whose cells of one unit cover the bins' range within this many."""

GRID_SIGMAS = 2.0
"""A bin's share of values spread evenly is taken as 0 (every value on the grid) or 1 (none) when its noisy
estimate lies within this many standard errors of it; a bin whose noisy total is within three standard
deviations of 0 decodes spread evenly, as without a grid."""

SPIKE_PARTS = 4096
"""Parts the spike cells are split into to find the value each spike's rows share (a 0.4-wide cell into parts
of 1e-4: the roundest number in the heaviest part is then the recorded value)."""

SPIKE_SHARE = 0.8
"""A spike's heaviest part is its point when it holds this share of the cell's noisy mass: a point, not a dense
stretch of values."""

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

TAIL_SIGMAS = 2.0
"""Learned bounds widen, one coarse cell at a time outward (at most :data:`MAX_TAIL_CELLS`), while the next cell's
noisy count is above this many noise standard deviations (and :data:`TAIL_RATIO` of the end cell's): a tail under
the strict bounds cut but clearly there (loans' ``installment``: 6% of rows above 1,024 and 6% under 128 were
clipped at eps 1 over 55 columns). Post-processing of the coarse histogram; a bound never crosses 0."""

MAX_TAIL_CELLS = 4
"""Most coarse cells a learned bound widens by (:data:`TAIL_SIGMAS`)."""

TAIL_RATIO = 0.05
"""A bound widens into the next cell only when that cell's noisy count is also at least this share of the
current end cell's: a tail continues the mass at the edge. Noise alone passes 2 sigma next to a column whose mass
sits in one cell (nassCDS ``yearacc``, 21,000 rows in [1448, 2048): 4 fits in 100 widened to 2896 or 4096, past
the 1,024 values that get one fine cell each, and lost its one bin per year)."""

ZERO_REACH = 64.0
"""A learned lower bound that is positive and below this fraction of the upper one reaches down to 0: values
near 0 spread over many geometric cells (ages 0.0, 0.1, ..., 0.4 in five cells of 130-200 rows each) and none
rises above the coarse histogram's noise, although together they are a large share of the column (6.9% of
covid_testing's ages, clipped to 0.5 without it). Post-processing of the noisy bounds: the fine histogram then
measures the cell between 0 and the bound like any other."""

OUTSIDE_WARNING_SHARE = 0.05
"""Warn when the noisy counts put more than this share of a column's rows outside its public bounds."""

_GRID_OCTAVES = (-16, 48)
_GRID_STEPS = 2
_POOL_SIZES = (1, 2, 4, 8, 16)
_GRID_YEARS = (*range(1800, 1900, 10), *range(1900, 2100), *range(2100, 2201, 10))
_SECOND = 1e9  # nanoseconds: datetime edges are whole seconds
_PLACEHOLDER = (0.0, float(pd.Timestamp("2000-01-01").value))  # where the one bin of a column with no data sits


@dataclass(frozen=True)
class RecordedGrid:
    """The grid a float column's values are recorded on, per bin: ``shares[b]`` is the probability that a value of
    bin ``b`` lies on a whole multiple of ``100 * unit`` (an integer, when the unit is 0.01), on one of ``10 * unit``
    only (one decimal), or anywhere (a number as fine as it comes), from a noisy histogram (post-processing).

    :meth:`snap` draws a value inside a sub-bin ``[low, high)`` by those shares: uniformly among the sub-bin's
    multiples of the drawn step, or uniformly in the sub-bin when it holds none or the draw is 'anywhere'.
    """

    unit: float
    shares: np.ndarray

    def snap(
        self,
        cells: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
        rng: np.random.Generator,
        cell: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """A value per row inside its sub-bin ``[low, high)`` (a point when ``low == high``), drawn by bin ``cells``'
        shares; a row whose sub-bin holds no multiple of the drawn step takes one from its whole bin ``cell``
        (``(low, high)`` of the bins) when that holds one, else tries the finer step."""
        shares = self.shares[np.clip(cells, 0, len(self.shares) - 1)]
        level = (rng.random(len(cells))[:, None] > np.cumsum(shares, axis=1)[:, :2]).sum(axis=1)
        values = low + rng.random(len(cells)) * (high - low)
        for coarse, factor in ((0, 100), (1, 10)):
            step = self.unit * factor
            decimals = max(0, -math.floor(math.log10(step) + 1e-9))
            for lo, hi in ((low, high), *([cell] if cell is not None else [])):
                first = np.ceil(np.round(lo / step, 6))
                count = np.ceil(np.round(hi / step, 6)) - first
                if coarse == 1:  # multiples of 10 units that are not multiples of 100
                    count -= np.ceil(np.round(hi / (10 * step), 6)) - np.ceil(np.round(lo / (10 * step), 6))
                rows = np.flatnonzero((level == coarse) & (count >= 1) & (high > low))
                j = np.floor(rng.random(len(rows)) * count[rows])
                k = first[rows] + j if coarse == 0 else _nth_off_tens(first[rows], j)
                values[rows] = np.round(k * step, decimals)
                level[rows] = -1
            level[level == coarse] = coarse + 1  # no multiple of this step inside: try the finer one
        return np.asarray(values, dtype=float)


def _nth_off_tens(first: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The ``j``-th (from 0) integer at or after ``first`` that is not a multiple of 10.

    ``f(x) = x - floor(x / 10)`` counts such integers up to ``x`` (it stays flat on multiples of 10), so the
    one wanted is the smallest ``x`` with ``f(x) = f(first - 1) + j + 1``: ``x = t + floor((t - 1) / 9)``.
    """
    before = first - 1
    t = before - np.floor(before / 10) + j + 1
    return np.asarray(t + np.floor((t - 1) / 9), dtype=float)


@dataclass(frozen=True)
class LearnedBins:
    """What learning a numeric column releases: its cells, the fine histogram ``(edges, weights)`` that decoding
    samples a sub-bin from (None: uniform inside the cell), what it cost, data-quality warnings, and for a float
    column the grid its values are recorded on (None: none learned)."""

    binning: NumericBins
    within: tuple[np.ndarray, np.ndarray] | None
    cost: str
    warnings: tuple[str, ...]
    grid: RecordedGrid | None = None


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


_Steps = Generator[NumericBins, np.ndarray, LearnedBins]
"""Learning one column's bins as steps: each yields the binning it needs the exact counts of (``outside="drop"``)
and is sent them, so :func:`learn_many_bins` can fetch a stage's counts for every column in one scan."""


def _measure(
    column: Column, edges: np.ndarray, rho: float, accountant: Accountant, purpose: str
) -> Generator[NumericBins, np.ndarray, _Histogram]:
    """A noisy histogram of ``column`` over cells ``edges`` (values outside clip into the end cells); yields the
    binning and is sent its exact counts.

    Sensitivity: one record is in exactly one cell (the missing cell included), L2 sensitivity 1; k for a
    privacy unit of up to k records (the accountant calibrates the noise to it, sigma k times). Cost: rho.
    """
    from privsynth.privacy.mechanisms import gaussian_mechanism

    binning = numeric_binning(edges, column)
    exact = yield binning
    noisy = gaussian_mechanism(
        exact,
        sensitivity=1.0,
        rho=rho,
        accountant=accountant,
        purpose=purpose,
    )
    missing = None if binning.null_index is None else int(noisy[binning.null_index])
    sigma = gaussian_sigma(rho, accountant.sensitivity(1.0))
    return _Histogram(noisy=np.asarray(noisy[: binning.bins]), missing=missing, sigma=sigma)


def learn_bins(
    source: Source,
    column: Column,
    accountant: Accountant,
    rho: float,
    bins: int,
    bounds: tuple[float, float] | None = None,
) -> LearnedBins:
    """Bounds (or the public ``bounds``, as numbers: nanoseconds for datetimes) from a coarse noisy histogram,
    then about ``bins`` quantile bins from a fine one, then the value each spike's rows share (a fine cell with a
    bin's worth of mass) or, without a spike, the fine histogram again. Cost: ``rho``, split by
    :data:`STAGE_SHARES` (all on the fine one for integer public bounds of at most :data:`MAX_INTEGER_CELLS`
    values; the last two shares are left unspent when the coarse histogram finds nothing above the noise)."""
    return learn_many_bins(source, [(column, rho, bounds)], accountant, bins)[column.name]


def learn_many_bins(
    source: Source,
    columns: Sequence[tuple[Column, float, tuple[float, float] | None]],
    accountant: Accountant,
    bins: int,
) -> dict[str, LearnedBins]:
    """:func:`learn_bins` for each ``(column, rho, bounds)``, stage by stage: the coarse histograms of every
    column come from one scan (``GROUPING SETS``, :func:`privsynth.data.workload.counts_many`, in batches of
    ``Source.workload_batch``), then the fine ones, then the spikes', so a fit reads the table three times
    whatever its width, not three times per column.

    Each column's mechanisms, rho and sensitivity are those of :func:`learn_bins`; only how the exact counts are
    fetched changes (and the order of the spends: stage by stage, columns in the given order within a stage).
    """
    results: dict[str, LearnedBins] = {}
    running: dict[str, _Steps] = {}
    wanted: dict[str, NumericBins] = {}

    def advance(name: str, steps: _Steps, exact: np.ndarray | None) -> None:
        try:
            wanted[name] = next(steps) if exact is None else steps.send(exact)
            running[name] = steps
        except StopIteration as done:
            results[name] = done.value

    for column, rho, bounds in columns:
        advance(column.name, _learning(column, accountant, rho, bins, bounds), None)
    while wanted:
        names = list(wanted)
        tables = counts_many(source, [(n,) for n in names], dict(wanted), outside="drop")
        wanted.clear()
        for name, table in zip(names, tables, strict=True):
            advance(name, running.pop(name), table)
    return {column.name: results[column.name] for column, _, _ in columns}


def _learning(
    column: Column, accountant: Accountant, rho: float, bins: int, bounds: tuple[float, float] | None
) -> _Steps:
    """The steps of :func:`learn_bins` for one column (see :data:`_Steps`)."""
    name, kind = column.name, column.kind
    rho_grid = 0.0
    if kind is Kind.FLOAT:
        rho_grid, rho = split_exactly(rho, [GRID_SHARE, 1 - GRID_SHARE])
    rho_coarse, rho_fine, rho_point = split_exactly(rho, STAGE_SHARES)
    warnings: list[str] = []
    if bounds is not None and kind is Kind.INTEGER and bounds[1] - bounds[0] + 1 <= MAX_INTEGER_CELLS:
        low, top = bounds[0], bounds[1] + 1  # one fine cell per integer: no coarse stage needed
        fine, rho_fine, rho_point, learned = np.arange(low, top + 1), rho, 0.0, "public bounds"
    else:
        grid = _grid(kind)
        if bounds is not None:
            low, top = bounds[0], _exclusive_top(bounds[1], kind)
            edges = np.concatenate([[low], grid[(grid > low) & (grid < bounds[1])], [top]])
            purpose = f"domain of '{name}': where its mass lies inside its public bounds (noisy geometric histogram)"
        else:
            edges = grid
            purpose = f"domain of '{name}': bounds (noisy histogram on a fixed geometric grid)"
        coarse = yield from _measure(column, edges, rho_coarse, accountant, purpose)
        weights = coarse.pooled_weights(BOUNDS_FALSE_CELL_RATE)
        spent = f"rho={rho_coarse:.4g} on a noisy {len(edges) - 1}-cell geometric histogram"
        learned = f"public bounds, mass located with {spent}" if bounds is not None else f"bounds from {spent}"
        if bounds is None:
            if weights.sum() <= 0:
                cell = int(np.searchsorted(edges, _PLACEHOLDER[kind is Kind.DATETIME], side="right")) - 1
                low, top = float(edges[cell]), float(edges[cell + 1])
                binning = numeric_binning(np.array([low, _closed_top(top, kind, None)]), column)
                cost = f"{learned}; a placeholder bin (rho={rho_fine + rho_point + rho_grid:.4g} left unspent)"
                return LearnedBins(binning, None, cost, (_empty_warning(name, coarse),))
            first, last = _quantile_cells(weights, BOUNDS_QUANTILE)
            warnings += _thin_mass_warning(name, coarse, weights)
            first, last = _widen(coarse, edges, first, last)
            edges, weights = _reach_zero(edges, weights, first, last, kind)
            low, top = float(edges[0]), float(edges[-1])
        sigma = gaussian_sigma(rho_fine, accountant.sensitivity(1.0))
        cells = int(np.clip(round(weights.sum() / (FINE_CELL_SIGMAS * sigma)), 2 * bins, MAX_FINE_CELLS))
        fine = _allocate(edges, weights, cells, kind)
    measured = _padded(fine, kind) if bounds is not None else fine
    purpose = f"domain of '{name}': quantile bins (noisy {len(fine) - 1}-cell histogram)"
    histogram = yield from _measure(column, measured, rho_fine, accountant, purpose)
    if bounds is not None:
        warnings += _outside_warning(column, histogram, histogram.weights())
    shaped = _shape(histogram, fine, column, bins, bounds, top)
    cost = f"{learned}; {shaped.shape} from rho={rho_fine:.4g} on a noisy {len(measured) - 1}-cell histogram"
    if rho_point > 0:
        spikes = _spike_cells(shaped.fine, shaped.weights, bins, kind)
        if spikes:
            within, found = yield from _with_points(column, accountant, rho_point, shaped, spikes, histogram.sigma)
            cost += f"; {found} of {len(spikes)} spike(s) located at a point with rho={rho_point:.4g}"
            shaped = dataclasses.replace(shaped, within=within)
        else:
            purpose = f"domain of '{name}': quantile bins, measured again (no spike to locate)"
            again = yield from _measure(column, measured, rho_point, accountant, purpose)
            shaped = _shape(_pooled(histogram, again), fine, column, bins, bounds, top)
            cost = (
                f"{learned}; {shaped.shape} from rho={rho_fine + rho_point:.4g} on a noisy "
                f"{len(measured) - 1}-cell histogram (measured twice)"
            )
    recorded = None
    if rho_grid > 0:
        recorded = yield from _recorded_grid(column, shaped.edges, rho_grid, accountant)
        cost += f"; the grid its values are recorded on from rho={rho_grid:.4g} (unit {recorded.unit:g})"
    binning = numeric_binning(shaped.edges, column)
    return LearnedBins(binning, shaped.within, cost, (*warnings, *shaped.warnings), recorded)


def _recorded_grid(
    column: Column, edges: np.ndarray, rho: float, accountant: Accountant
) -> Generator[NumericBins, np.ndarray, RecordedGrid]:
    """The grid a float column's values are recorded on, per bin of ``edges``, from one noisy histogram.

    The unit ``u`` is the smallest power of ten from 0.01 up whose cells ``[(k - 1/2) u, (k + 1/2) u)`` cover the
    inner bins' range (all but the two end bins, which may stretch to an outlier) in at most
    :data:`MAX_GRID_CELLS` (equal cells: the engine computes each row's by arithmetic); the cells left cover
    the end bins as far as they reach, evenly each side.
    Their exact counts are summed, inside this mechanism, into three per bin: the rows nearest a multiple ``k``
    of ``u`` with ``k`` a multiple of 100, of 10 only, or neither; those ``3 x bins`` sums are released with
    Gaussian noise. Sensitivity: a record falls in at most one of them (none when outside the range), L2
    sensitivity 1 (k for a unit of k records, calibrated by the accountant); cost ``rho``. The exact cell counts
    never leave this function.

    Each bin's shares are post-processing of its three noisy sums, read as a mixture: values spread evenly fall in
    the three classes with probabilities 1/100, 9/100 and 90/100, values recorded on a grid in their own class only;
    the share spread evenly is rounded to 0 or 1 when within :data:`GRID_SIGMAS` standard errors of it.
    """
    from privsynth.privacy.mechanisms import gaussian_mechanism

    low, high = float(edges[0]), float(edges[-1])
    inner_low, inner_high = (float(edges[1]), float(edges[-2])) if len(edges) > 3 else (low, high)
    unit = 0.01
    while (inner_high - inner_low) / unit + 2 > MAX_GRID_CELLS:
        unit *= 10
    # The end bins are covered as far as the cells left allow: a wide end bin (public bounds at an outlier,
    # covid_testing's col_rec_tat up to 61,370) would otherwise coarsen the unit for every bin (to 10).
    spare = (MAX_GRID_CELLS - 2 - (inner_high - inner_low) / unit) * unit / 2
    low, high = max(low, inner_low - spare), min(high, inner_high + spare)
    first, last = math.floor(low / unit), math.ceil(high / unit)
    # a cell more each side catches (clipped) the values outside the range, which count in no class
    cells = np.linspace((first - 1.5) * unit, (last + 1.5) * unit, last - first + 4)
    exact = yield numeric_binning(cells, column)
    multiples = np.arange(first, last + 1)
    classes = np.where(multiples % 100 == 0, 0, np.where(multiples % 10 == 0, 1, 2))
    inner = np.asarray(edges[1:-1], dtype=float)
    bins = np.searchsorted(inner, multiples * unit, side="right")
    table = np.zeros((len(edges) - 1, 3), dtype=np.int64)
    np.add.at(table, (bins, classes), np.asarray(exact[1 : len(multiples) + 1], dtype=np.int64))
    noisy = gaussian_mechanism(
        table.ravel(),
        sensitivity=1.0,
        rho=rho,
        accountant=accountant,
        purpose=f"domain of '{column.name}': the grid its values are recorded on (noisy {table.size}-cell histogram)",
    )
    counts = np.asarray(noisy, dtype=float).reshape(table.shape)
    sigma = gaussian_sigma(rho, accountant.sensitivity(1.0))
    total = counts.sum(axis=1)
    seen = total > 3 * sigma * math.sqrt(3)
    observed = counts / np.where(seen, total, 1.0)[:, None]
    spread = np.clip(observed[:, 2] / 0.9, 0.0, 1.0)  # values spread evenly fall in the last class 9 times in 10
    error = GRID_SIGMAS * sigma / (0.9 * np.where(seen, total, 1.0))
    spread = np.where(~seen | (spread > 1 - error), 1.0, np.where(spread < error, 0.0, spread))
    grid = np.clip(observed[:, :2] - np.outer(spread, [0.01, 0.09]), 0.0, None)
    grid = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1e-12) * (1 - spread)[:, None]
    shares = np.column_stack([grid, 1 - grid.sum(axis=1)])
    return RecordedGrid(unit=unit, shares=shares)


@dataclass(frozen=True)
class _Shaped:
    """Bins made from a fine histogram (post-processing): edges, the fine cells and their weights, what
    decoding samples inside a bin (``within``), a description, and warnings."""

    edges: np.ndarray
    fine: np.ndarray
    weights: np.ndarray
    within: tuple[np.ndarray, np.ndarray] | None
    shape: str
    warnings: tuple[str, ...]


def _shape(
    histogram: _Histogram,
    fine: np.ndarray,
    column: Column,
    bins: int,
    bounds: tuple[float, float] | None,
    top: float,
) -> _Shaped:
    """Quantile bins (one cell per value for a few integers, one cell for a constant column) from the fine
    histogram over ``fine`` (padded by a cell each side when ``bounds`` are public)."""
    name, kind = column.name, column.kind
    warnings: list[str] = []
    weights = histogram.pooled_weights(FALSE_CELL_RATE)
    if bounds is not None:
        weights = np.concatenate([[weights[0] + weights[1]], weights[2:-2], [weights[-2] + weights[-1]]])
        if weights.sum() <= 0:
            warnings.append(_empty_warning(name, histogram))
    within: tuple[np.ndarray, np.ndarray] | None
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
        fine, weights = fine[heavy : heavy + 2], weights[heavy : heavy + 1]
        warnings.append(
            f"column '{name}' has (nearly) a single value: {CONSTANT_SHARE:.0%} of its noisy mass or more lies in "
            "one cell; it is kept as a constant column"
        )
    return _Shaped(edges, fine, weights, within, shape, tuple(warnings))


def _pooled(first: _Histogram, second: _Histogram) -> _Histogram:
    """Two noisy measurements of the same cells as one: weighted by their inverse variances (post-processing)."""
    a, b = 1 / first.sigma**2, 1 / second.sigma**2
    noisy = (a * first.noisy + b * second.noisy) / (a + b)
    missing = None
    if first.missing is not None and second.missing is not None:
        missing = round((a * first.missing + b * second.missing) / (a + b))
    return _Histogram(noisy=noisy, missing=missing, sigma=1 / math.sqrt(a + b))


def _spike_cells(fine: np.ndarray, weights: np.ndarray, bins: int, kind: Kind) -> list[int]:
    """Fine cells holding a bin's worth of noisy mass or more, wider than one value (a value many rows share
    may sit anywhere inside them); datetimes are left out."""
    total = float(weights.sum())
    if total <= 0 or kind is Kind.DATETIME or len(weights) < 1:
        return []
    heavy = np.flatnonzero(weights >= total / bins)
    wide = (fine[heavy + 1] - fine[heavy]) > (1.0 if kind is Kind.INTEGER else 0.0)
    return [int(i) for i in heavy[wide]]


def _with_points(
    column: Column,
    accountant: Accountant,
    rho: float,
    shaped: _Shaped,
    spikes: list[int],
    fine_sigma: float,
) -> Generator[NumericBins, np.ndarray, tuple[tuple[np.ndarray, np.ndarray], int]]:
    """The fine histogram with each spike cell ``[a, b)`` split around the point ``v`` its rows share, when one
    is found: ``[a, v)``, ``[v, v]`` (which decodes to ``v`` exactly) and ``[v, b)``.

    One noisy histogram (cost ``rho``, sensitivity 1: the parts of all spike cells, the gaps between them and a
    cell each side are one partition of the line) splits every spike cell into equal parts, at most
    :data:`SPIKE_PARTS` in all. A spike's heaviest part is its point when it holds :data:`SPIKE_SHARE` of the
    cell's noisy mass from the fine histogram (up to three standard deviations of both noises) and rises five
    above 0; the point is the roundest number (fewest decimals) in that part: recorded values are round, so it
    is the value the rows share (post-processing).
    """
    kind = column.kind
    per_spike = max(2, SPIKE_PARTS // len(spikes))
    parts = []
    for i in spikes:
        cut = np.linspace(shaped.fine[i], _reach(shaped.fine, i, kind), per_spike + 1)
        parts.append(np.unique(np.round(cut)) if kind is Kind.INTEGER else cut)
    edges = np.unique(np.concatenate(parts))
    purpose = f"domain of '{column.name}': the value a spike's rows share ({len(spikes)} spike(s), noisy histogram)"
    histogram = yield from _measure(column, _padded(edges, kind), rho, accountant, purpose)
    noisy = histogram.noisy[1:-1]
    out_edges, out_weights, found = [float(shaped.fine[0])], [], 0
    for i, weight in enumerate(shaped.weights):
        low, high = float(shaped.fine[i]), float(shaped.fine[i + 1])
        point, peak = None, 0.0
        if i in spikes:
            inside = np.flatnonzero((edges[:-1] >= low) & (edges[1:] <= _reach(shaped.fine, i, kind)))
            heaviest = int(inside[np.argmax(noisy[inside])])
            peak = float(noisy[heaviest])
            noise = 3 * math.hypot(histogram.sigma, fine_sigma)
            if peak >= 5 * histogram.sigma and peak >= SPIKE_SHARE * float(weight) - noise:
                point = _roundest(float(edges[heaviest]), float(edges[heaviest + 1]), kind)
        if point is None:
            out_edges.append(high)
            out_weights.append(float(weight))
            continue
        found += 1
        rest = float(weight) - min(max(peak, 0.0), float(weight))
        left = rest if point >= high else rest / 2 if point > low else 0.0
        out_edges += [point, point, high]
        out_weights += [left, float(weight) - rest, rest - left]
    return (np.array(out_edges), np.clip(np.array(out_weights), 0.0, None)), found


def _reach(fine: np.ndarray, i: int, kind: Kind) -> float:
    """Where the parts of fine cell ``i`` end: its upper edge, or, for the domain's last cell (closed: it holds its
    upper edge, a public upper bound such as a test's 'not detected' reading of 45.0), just above that edge, so
    the value on it falls in the last part and not in the padding cell above."""
    high = float(fine[i + 1])
    if i < len(fine) - 2:
        return high
    return _exclusive_top(math.floor(high) if kind is Kind.INTEGER else high, kind)


def _roundest(low: float, high: float, kind: Kind) -> float:
    """The number with the fewest decimals in ``[low, high)`` (its lower end when none has 12 or fewer)."""
    for decimals in range(-6, 13):
        scale = 10.0**decimals
        candidate = math.ceil(low * scale) / scale
        if low <= candidate < high:
            return float(round(candidate, max(decimals, 0)))
    return low


def _widen(coarse: _Histogram, edges: np.ndarray, first: int, last: int) -> tuple[int, int]:
    """The cells ``first`` to ``last`` widened outward while the next cell's noisy count exceeds
    :data:`TAIL_SIGMAS` sigma and :data:`TAIL_RATIO` of the end cell's (at most :data:`MAX_TAIL_CELLS` each side,
    never across the edge at 0)."""
    cut = TAIL_SIGMAS * coarse.sigma
    floor = int(np.searchsorted(edges, 0.0)) if edges[first] >= 0 else 0
    ceiling = int(np.searchsorted(edges, 0.0)) - 1 if edges[last + 1] <= 0 else len(coarse.noisy) - 1

    def continues(cell: int, edge: int) -> bool:
        return bool(coarse.noisy[cell] > max(cut, TAIL_RATIO * coarse.noisy[edge]))

    for _ in range(MAX_TAIL_CELLS):
        if first - 1 < floor or not continues(first - 1, first):
            break
        first -= 1
    for _ in range(MAX_TAIL_CELLS):
        if last + 1 > ceiling or not continues(last + 1, last):
            break
        last += 1
    return first, last


def _reach_zero(
    edges: np.ndarray, weights: np.ndarray, first: int, last: int, kind: Kind
) -> tuple[np.ndarray, np.ndarray]:
    """The coarse cells ``first`` to ``last`` (edges and noisy weights), preceded by one cell from 0 to the first
    when the lower bound is positive and under 1 / :data:`ZERO_REACH` of the upper one (that cell's weight: the
    located mass of the cells it merges). Post-processing of the coarse histogram."""
    low, top = float(edges[first]), float(edges[last + 1])
    if kind is Kind.DATETIME or low <= 0 or top < ZERO_REACH * low:
        return edges[first : last + 2], weights[first : last + 1]
    zero = int(np.searchsorted(edges, 0.0))
    return (
        np.concatenate([[0.0], edges[first : last + 2]]),
        np.concatenate([[weights[zero:first].sum()], weights[first : last + 1]]),
    )


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


def numeric_binning(edges: np.ndarray, column: Column) -> NumericBins:
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


def _thin_mass_warning(name: str, coarse: _Histogram, weights: np.ndarray) -> list[str]:
    """A warning when the coarse cells above the noise hold too little of the noisy row count to trust the bounds."""
    located, rows = float(weights.sum()), float(coarse.noisy.sum())
    if rows > 3 * coarse.sigma * math.sqrt(len(coarse.noisy)) and located < THIN_MASS_WARNING * rows:
        return [
            f"column '{name}': its share of the budget is too small to locate its bounds well: the cells above "
            f"the noise hold about {located:.0f} of about {rows:.0f} rows (noisy counts), and values outside the "
            "learned bounds are clipped. Give preprocessing more budget, or declare the column's bounds public"
        ]
    return []


def _empty_warning(name: str, histogram: _Histogram) -> str:
    missing = "" if histogram.missing is None else f", noisy count of missing values about {histogram.missing}"
    return (
        f"column '{name}' looks all missing or nearly empty: no cell of its noisy histogram rises above the noise"
        f"{missing}; its bins are a placeholder"
    )
