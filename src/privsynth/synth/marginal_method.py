"""What MST and AIM share: select, measure, estimate on a graphical model, within one ledger reservation.

McKenna, Miklau and Sheldon, "Winning the NIST Contest: A scalable and general approach to differentially private
synthetic data", Journal of Privacy and Confidentiality 11(3), 2021 (select-measure-estimate); McKenna, Sheldon
and Miklau, "Graphical-model based estimation and inference for differential privacy", ICML 2019 (Private-PGM,
:mod:`privsynth.synth._pgm`).

A marginal method *selects* marginals with the exponential mechanism, *measures* them with Gaussian noise
(:func:`measure`) and *estimates* a graphical model from the noisy answers; synthetic rows are drawn from the
model, which is post-processing. Around the papers, privsynth adds:

- Data are read only through ``Source.counts`` (one GROUP BY per marginal, run by DuckDB or the database), so
  the same fit works on a frame, a Parquet file larger than memory or a database table. The row count is
  private: it is estimated from the noisy 1-way marginals.
- Column domains are public in the schema (free) or learned under DP from a share of the budget
  (:func:`privsynth.synth.domain.learn_domains`); decoding draws numbers inside their bin, never a midpoint.
- The whole budget is reserved in the ledger before any noise is drawn, so a spent cap fails up front and two
  jobs cannot both overdraw it; every measurement and selection is one ledger row under that reservation.
- ``sample(n, conditions=...)`` is exact: the junction tree is conditioned on the evidence, then sampled.
- The privacy unit may be a person who contributes up to ``contribution_bound`` rows (k) instead of a row: every
  mechanism (measurements, selections, DP bounds, key discovery, the DP choice of column kinds) is then
  calibrated to k rows by the accountant (:meth:`~privsynth.privacy.accountant.Accountant.sensitivity`), which
  multiplies each per-row sensitivity by k: the noise grows k times at the same budget.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.binning import OUTSIDE, Categories
from privsynth.data.schema import Schema
from privsynth.data.sources import Source
from privsynth.data.workload import counts_many
from privsynth.errors import DataError, ParameterError
from privsynth.privacy.accountant import Accountant, check_unit
from privsynth.privacy.budget import Budget, check_positive, gaussian_sigma
from privsynth.privacy.mechanisms import gaussian_mechanism
from privsynth.synth import _pgm
from privsynth.synth._pgm import Clique, NoisyMarginal
from privsynth.synth.base import Conditions, Synthesizer
from privsynth.synth.domain import (
    NUMERIC_BINS,
    ColumnDomain,
    cells_to_frame,
    domain_column,
    learn_domains,
    needs_budget,
)
from privsynth.synth.dp import resolve_budget

__all__ = ["Counts", "MarginalMethod", "compress", "compressed_counts", "floor_float", "measure", "whole_number"]

logger = logging.getLogger(__name__)


_SUPPORT_SIGMAS = 3.0
"""MST merges the values of a column whose noisy count is below this many standard deviations (paper, §4)."""


PREPROCESSING_SHARE = 0.2
"""The default share of rho that learns the domains, up to :data:`SHARE_COLUMNS` columns to learn."""

SHARE_COLUMNS = 16
"""Beyond this many columns to learn, the default preprocessing share grows in proportion to them."""

MAX_PREPROCESSING_SHARE = 0.5
"""The most the default preprocessing share grows to (40 columns to learn and more)."""


def default_preprocessing_share(columns: int) -> float:
    """The share of rho that learns the domains of ``columns`` columns when the user gives none: 0.2 up to 16
    columns, then 0.2 x columns / 16, at most 0.5.

    Locating a column's bounds and frequent categories fails abruptly once its share is too small (cells under the
    noise are dropped, so the bounds clip whole tails and categories fall into ``other``), while a measurement's
    noise only grows; so the share per column must not shrink towards 0 as the table widens. Measured (#22, MST,
    epsilon 1, 3 seeds, 3-way TVD, ``benchmarks/results/aim_wide.json``): loans (55 columns) 0.300 with 0.2, 0.281
    with 0.35, 0.268 with 0.5; ames (74) 0.551, 0.518, 0.472; narrow tables keep the 0.2 tuned on them. The column
    count is the declared schema's, not the data's.
    """
    return min(MAX_PREPROCESSING_SHARE, PREPROCESSING_SHARE * max(1.0, columns / SHARE_COLUMNS))


class MarginalMethod(Synthesizer):
    """What MST and AIM share: the budget, the ledger, the domains, the model and sampling from it.

    ``fit(source, schema, epsilon=..., delta=1e-6, ledger=None)``: ``epsilon`` is required; ``delta`` at most
    :data:`~privsynth.synth.dp.MAX_DELTA`; ``ledger`` a :class:`~privsynth.privacy.Ledger`, a URL, a SQLite path,
    None (the default ledger) or False (none).
    ``preprocessing_share`` of rho learns the domains the schema does not declare public (only spent when
    there are any; None: :func:`default_preprocessing_share` of the number of such columns), ``bins`` cells per
    numeric column, ``numeric_bins`` ``"quantile"`` (DP quantiles, also
    inside public bounds) or ``"uniform"`` (equal width inside public bounds, free). ``contribution_bound`` (k,
    default 1) is the most rows any one privacy unit contributes to the table being fitted, and ``unit`` (default
    ``"row"``) names that unit (``"person"``, say): the guarantee then protects a whole unit, every mechanism
    calibrated to k rows (noise times k). Both are the user's choice, never read from the data; keeping at most k
    rows per unit is the caller's job, before the fit (:func:`privsynth.relational.person.bound_contributions`).
    After fitting:
    ``spends_`` (each charge: mechanism, purpose, rho, delta), ``epsilon_``, ``delta_``, ``rho_``,
    ``rows_estimate_`` (the noisy row count), ``preprocessing_share_`` (the share used, 0 when every domain is
    public), ``domains_``, ``measurements_`` and ``model_``.
    """

    differentially_private = True

    model_: _pgm.Model
    domains_: dict[str, ColumnDomain]
    compression_: dict[str, np.ndarray]
    measurements_: list[NoisyMarginal]
    spends_: list[dict[str, Any]]
    epsilon_: float
    delta_: float
    rho_: float
    rows_estimate_: float
    preprocessing_share_: float

    def __init__(
        self,
        *,
        preprocessing_share: float | None,
        bins: int,
        numeric_bins: str,
        iters: int,
        contribution_bound: int = 1,
        unit: str = "row",
    ) -> None:
        share = None if preprocessing_share is None else check_positive("preprocessing_share", preprocessing_share)
        if share is not None and share >= 1:
            raise ParameterError(f"preprocessing_share must be below 1 (a share of the budget), got {share!r}")
        if numeric_bins not in NUMERIC_BINS:
            raise ParameterError(f"numeric_bins must be one of {', '.join(NUMERIC_BINS)}, got {numeric_bins!r}")
        self.preprocessing_share = share
        self.bins = whole_number("bins", bins, minimum=2)
        self.numeric_bins = numeric_bins
        self.iters = whole_number("iters", iters, minimum=1)
        self.unit, self.contribution_bound = check_unit(unit, contribution_bound)

    def _fit(self, source: Source, schema: Schema, *, epsilon: float | None, delta: float | None, ledger: Any) -> None:
        budget = resolve_budget(self.name, epsilon, delta, schema)
        self._check(schema)
        with self._accounting(budget, ledger, source, schema) as (accountant, _, source, schema):
            preprocessing, share = 0.0, 0.0
            learned = needs_budget(schema, self.bins, numeric_bins=self.numeric_bins)
            if learned:
                share = self.preprocessing_share or default_preprocessing_share(len(learned))
                preprocessing = budget.split([share, 1 - share])[0].rho
            domains = learn_domains(
                source, schema, accountant, rho=preprocessing, bins=self.bins, numeric_bins=self.numeric_bins
            )
            left = floor_float(Fraction(budget.rho) - sum((Fraction(c.rho) for c in accountant.charges), Fraction(0)))
            counts = Counts(source, domains)
            model, measurements, compression = self._run(counts, accountant, Budget.from_rho(left, budget.delta))
        self.model_ = model
        self.domains_ = domains
        self.compression_ = compression
        self.measurements_ = measurements
        self.spends_ = [
            {"mechanism": c.mechanism, "purpose": c.purpose, "rho": c.rho, "delta": c.delta} for c in accountant.charges
        ]
        self.epsilon_, self.delta_, self.rho_ = budget.epsilon, budget.delta, budget.rho
        self.rows_estimate_ = model.total
        self.preprocessing_share_ = share
        self._record_fit(budget, accountant, {"rows_estimate": round(float(model.total))})
        if budget.delta * model.total >= 1:
            logger.warning(
                "delta=%g is not below 1/n for this table (about %d rows by the noisy count): choose delta below "
                "%.0e for a meaningful guarantee",
                budget.delta,
                model.total,
                10 ** math.floor(math.log10(0.1 / model.total)),
            )

    def _check(self, schema: Schema) -> None:
        """Refuse settings that do not fit these columns, before anything is reserved or spent."""

    def _released_schema(self) -> Schema:
        """The structure plus the domains the fit released (DP outputs or public): what conditions check."""
        return Schema([domain_column(self.domains_[c.name]) for c in self.schema_], target=self.schema_.target)

    @abstractmethod
    def _run(
        self, counts: Counts, accountant: Accountant, budget: Budget
    ) -> tuple[_pgm.Model, list[NoisyMarginal], dict[str, np.ndarray]]:
        """Spend ``budget`` on selections and measurements; return the model, what was measured (on the
        model's domain) and each compressed column's map from original cell to model cell."""

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        return self._draw(n, {}, rng)

    def _sample_conditional(self, n: int, conditions: Conditions, rng: np.random.Generator) -> pd.DataFrame:
        """Exact conditional sampling: the model conditioned on the condition cells, and the exact values."""
        return self._draw(n, conditions, rng)

    def _draw(self, n: int, conditions: Conditions, rng: np.random.Generator) -> pd.DataFrame:
        columns = list(self.domains_)
        fixed = {c: self.domains_[c].cell_of(v) for c, v in conditions.items()}
        evidence: dict[str, list[int]] = {}
        blanks: dict[int, int] = {}
        for j, column in enumerate(columns):
            mapping = self.compression_.get(column, np.arange(self.domains_[column].size))
            if column in fixed:
                evidence[column] = [int(mapping[fixed[column]])]
            elif (blank := _blank_cell(self.domains_[column])) is not None:
                cell = int(mapping[blank])
                if int((mapping == cell).sum()) == 1 and int(mapping.max()) > 0:
                    blanks[j] = cell  # a merged cell holding it never decodes to it (see _decompress)
        try:
            cells = self.model_.sample(n, rng, evidence)
        except ValueError:
            raise DataError(f"the model gives the conditions {dict(conditions)} probability zero") from None
        for j, cell in blanks.items():
            _redraw_blank(self.model_, cells, columns, j, cell, rng)
        for j, column in enumerate(columns):
            if column in fixed:
                cells[:, j] = fixed[column]
            elif column in self.compression_:
                cells[:, j] = _decompress(
                    cells[:, j], self.compression_[column], rng, _blank_cell(self.domains_[column])
                )
        frame = cells_to_frame(self.domains_, cells, rng, columns)
        for column, value in conditions.items():
            frame[column] = _exact(frame[column], value, column, n)
        return frame

    def sample_given(self, given: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
        """One row per row of ``given``: its columns keep that row's values, the others are drawn from the model
        conditioned on them (post-processing: the data is not read). Same seed, same rows.

        Rows are grouped by the model cells their given values fall in, and each group is drawn exactly from the
        junction tree conditioned on those cells (as :meth:`sample` does with ``conditions``). A given value that
        fits no cell of its column (a category the fit did not release and no ``other`` cell holds, a missing
        value in a column without a missing cell) conditions nothing in that row: the column is drawn with the
        others, and the row keeps the given value. Used to draw a person's child rows given the parent's synthetic
        row (:mod:`privsynth.relational.dp`).
        """
        self._check_fitted()
        if len(given) == 0:
            raise ParameterError("sample_given needs at least one row of given values")
        columns = list(self.domains_)
        unknown = [str(c) for c in given.columns if c not in self.domains_]
        if unknown:
            raise ParameterError(
                f"cannot condition on '{unknown[0]}': the model has no such column ({', '.join(columns)})"
            )
        rng = np.random.default_rng(seed)
        given = given.reset_index(drop=True)
        n = len(given)
        known = [c for c in columns if c in given.columns]
        domain_cells = np.full((n, len(columns)), OUTSIDE, dtype=np.int64)
        model_cells = np.full((n, len(known)), OUTSIDE, dtype=np.int64)
        for i, column in enumerate(known):
            encoded = self.domains_[column].encode(given[column])
            mapping = self.compression_.get(column, np.arange(self.domains_[column].size))
            inside = encoded != OUTSIDE
            domain_cells[:, columns.index(column)] = encoded
            model_cells[inside, i] = mapping[encoded[inside]]
        cells = np.empty((n, len(columns)), dtype=np.int64)
        patterns, group = np.unique(model_cells, axis=0, return_inverse=True)
        for g, pattern in enumerate(patterns):
            rows = np.flatnonzero(group.ravel() == g)
            evidence = {c: [int(cell)] for c, cell in zip(known, pattern, strict=True) if cell != OUTSIDE}
            try:
                cells[rows] = self.model_.sample(len(rows), rng, evidence)
            except ValueError:
                raise DataError("the model gives some rows' given values probability zero") from None
        fixed = domain_cells != OUTSIDE
        for j, column in enumerate(columns):  # as in _draw: a drawn blank cell is redrawn (model cells throughout)
            blank = _blank_cell(self.domains_[column])
            mapping = self.compression_.get(column, np.arange(self.domains_[column].size))
            if blank is not None and int((mapping == mapping[blank]).sum()) == 1 and int(mapping.max()) > 0:
                free = np.flatnonzero(~fixed[:, j])
                part = cells[free]
                _redraw_blank(self.model_, part, columns, j, int(mapping[blank]), rng)
                cells[free] = part
        for j, column in enumerate(columns):
            free = ~fixed[:, j]
            if column in self.compression_:
                blank = _blank_cell(self.domains_[column])
                cells[free, j] = _decompress(cells[free, j], self.compression_[column], rng, blank)
            cells[~free, j] = domain_cells[~free, j]
        frame = cells_to_frame(self.domains_, cells, rng, columns)
        for column in known:
            frame[column] = given[column].to_numpy()
        return frame


class Counts:
    """Exact marginals of the private data, cached for one fit and never released: each goes through a mechanism.

    A marginal inside one already counted is summed from it rather than queried again.
    """

    def __init__(self, source: Source, domains: Mapping[str, ColumnDomain]) -> None:
        self._source = source
        self._domains = domains
        self.columns = list(domains)
        self.sizes = {c: d.size for c, d in domains.items()}
        self._cache: dict[Clique, np.ndarray] = {}

    def __call__(self, clique: Clique) -> np.ndarray:
        if clique in self._cache:
            return self._cache[clique]
        held = [c for c in self._cache if set(clique) <= set(c)]
        if held:
            home = min(held, key=len)
            axes = tuple(i for i, a in enumerate(home) if a not in clique)
            summed = self._cache[home].sum(axis=axes)
            kept = [a for a in home if a in clique]
            table = np.transpose(summed, [kept.index(a) for a in clique])
        else:
            table = self._source.counts(list(clique), [self._domains[c].binning for c in clique], outside="drop")
        self._cache[clique] = table
        return table

    def prefetch(self, cliques: Sequence[Clique]) -> int:
        """Count every clique not already answerable from the cache, all together: one scan of the source per
        batch of marginals (``GROUPING SETS``, :func:`privsynth.data.workload.counts_many`) instead of one query
        each. A clique inside another one asked for is summed from it later. Returns how many were counted."""
        todo: dict[frozenset[str], Clique] = {}
        for clique in cliques:
            key = frozenset(clique)
            if key not in todo and not any(key <= set(held) for held in self._cache):
                todo[key] = tuple(clique)
        maximal = [c for key, c in todo.items() if not any(key < other for other in todo)]
        if maximal:
            binnings = {c: self._domains[c].binning for clique in maximal for c in clique}
            self._cache.update(zip(maximal, counts_many(self._source, maximal, binnings, outside="drop"), strict=True))
        return len(maximal)


def measure(
    cliques: Sequence[Clique], answer: Callable[[Clique], np.ndarray], budget: Budget, accountant: Accountant
) -> list[NoisyMarginal]:
    """The Gaussian mechanism on each marginal, ``budget`` split evenly between them.

    Sensitivity 1 per marginal: adding or removing a record changes one cell by one; k for a privacy unit of up to
    k records (``accountant.contribution_bound``: all k may fall in one cell), so sigma is k times the row-level
    sigma. Each costs its share of rho, so together they cost ``budget.rho`` (zCDP composition).
    """
    shares = budget.split([1 / len(cliques)] * len(cliques)) if len(cliques) > 1 else (budget,)
    out = []
    for clique, share in zip(cliques, shares, strict=True):
        noisy = gaussian_mechanism(
            answer(clique), sensitivity=1.0, rho=share.rho, accountant=accountant, purpose=_purpose(clique)
        )
        sigma = gaussian_sigma(share.rho, accountant.sensitivity(1.0))
        out.append(NoisyMarginal(clique, noisy.ravel().astype(np.float64), sigma))
    return out


def _purpose(clique: Clique) -> str:
    return f"{len(clique)}-way marginal of {' x '.join(repr(c) for c in clique)}"


def compress(ones: list[NoisyMarginal], sizes: Mapping[str, int]) -> tuple[dict[str, np.ndarray], list[NoisyMarginal]]:
    """MST's domain compression: values measured below 3 sigma merge into one cell (post-processing).

    The merged cell's measurement is the sum of its noisy counts over sqrt(k), compared with the model's count
    over sqrt(k), so its noise keeps standard deviation sigma.
    """
    compression: dict[str, np.ndarray] = {}
    out = []
    for m in ones:
        (column,) = m.clique
        rare = m.values < _SUPPORT_SIGMAS * m.sigma
        k = int(rare.sum())
        if k < 2:
            out.append(m)
            continue
        kept = int((~rare).sum())
        mapping = np.full(sizes[column], kept, dtype=np.int64)
        mapping[~rare] = np.arange(kept)
        compression[column] = mapping
        scale = 1 / math.sqrt(k)
        values = np.append(m.values[~rare], m.values[rare].sum() * scale)
        weights = np.append(np.ones(kept), scale)
        out.append(NoisyMarginal(m.clique, values, m.sigma, weights))
    return compression, out


def compressed_counts(
    counts: Counts, compression: Mapping[str, np.ndarray]
) -> tuple[dict[str, int], Callable[[Clique], np.ndarray]]:
    """The compressed domain sizes, and exact marginals counted on it."""
    domain = {c: int(compression[c].max()) + 1 if c in compression else counts.sizes[c] for c in counts.columns}

    def compressed(clique: Clique) -> np.ndarray:
        return _compress_table(counts(clique), clique, compression, domain)

    return domain, compressed


def _compress_table(
    table: np.ndarray, clique: Clique, compression: Mapping[str, np.ndarray], domain: Mapping[str, int]
) -> np.ndarray:
    """An exact marginal re-counted on the compressed domain (merged cells summed)."""
    if not any(c in compression for c in clique):
        return table
    out = np.zeros(tuple(domain[c] for c in clique), dtype=table.dtype)
    index = [compression[c] if c in compression else np.arange(table.shape[i]) for i, c in enumerate(clique)]
    np.add.at(out, np.ix_(*index), table)
    return out


def _blank_cell(domain: ColumnDomain) -> int | None:
    """The ``other`` cell of a column whose other values were never released: it decodes to no value (a
    missing one), so sampling leaves it out whenever the column has another cell to draw."""
    binning = domain.binning
    if isinstance(binning, Categories) and binning.other_index is not None and not domain.other_values:
        return binning.other_index
    return None


def _redraw_blank(
    model: _pgm.Model, cells: np.ndarray, columns: list[str], j: int, blank: int, rng: np.random.Generator
) -> None:
    """Rows drawn in column ``j``'s ``blank`` model cell (see :func:`_blank_cell`) get another cell, drawn from
    the model's distribution of that column given the rest of the row (post-processing).

    The model's log-density is the sum of its clique potentials, so the column given all the others is a softmax
    over the potentials that hold it. Conditioning the whole draw on the column avoiding that cell instead (as
    before) biased every column associated with it: on covid_testing, a quarter of the rows sat in never-released
    clinic names, and dropping them moved the other columns' 1-way marginals by up to 0.17.
    """
    hit = np.flatnonzero(cells[:, j] == blank)
    if len(hit) == 0:
        return
    column = columns[j]
    size = model.domain[column]
    logits = np.zeros((len(hit), size))
    for clique, table in model.potentials.items():
        if column not in clique:
            continue
        others = [a for a in clique if a != column]
        ordered = np.transpose(table, [*(clique.index(a) for a in others), clique.index(column)]).reshape(-1, size)
        index = (
            np.ravel_multi_index(
                tuple(cells[hit, columns.index(a)] for a in others), tuple(model.domain[a] for a in others)
            )
            if others
            else np.zeros(len(hit), dtype=np.int64)
        )
        logits += ordered[index]
    logits[:, blank] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random(len(hit))[:, None]
    cells[hit, j] = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), size - 1)


def _decompress(cells: np.ndarray, mapping: np.ndarray, rng: np.random.Generator, blank: int | None) -> np.ndarray:
    """Original cells for model cells: a kept value is itself, the merged cell one of its values uniformly
    (not the ``blank`` cell, which decodes to no value, unless it is the only one)."""
    merged = int(mapping.max())
    members = np.flatnonzero(mapping == merged)
    if blank is not None and len(members) > 1:
        members = members[members != blank]
    kept = np.flatnonzero(mapping != merged)
    out = np.empty_like(cells)
    rare = cells == merged
    out[~rare] = kept[cells[~rare]] if len(kept) else 0
    out[rare] = members[rng.integers(0, len(members), int(rare.sum()))]
    return out


# ---- budget and ledger -----------------------------------------------------------------------------------------


def floor_float(value: Fraction) -> float:
    """The largest float not above ``value``, so a share computed from exact arithmetic never overdraws."""
    nearest = float(value)
    return math.nextafter(nearest, 0.0) if Fraction(nearest) > value else nearest


def whole_number(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ParameterError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _exact(decoded: pd.Series, value: Any, column: str, n: int) -> pd.Series:
    """The condition value itself for every row, in the decoded column's dtype."""
    try:
        return pd.Series([value] * n, dtype=decoded.dtype)
    except (TypeError, ValueError):
        raise ParameterError(f"the condition {value!r} cannot be stored in '{column}' ({decoded.dtype})") from None
