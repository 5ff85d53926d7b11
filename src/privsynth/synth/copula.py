"""Gaussian copula synthesizer (non-private): marginals kept per column, dependence as one correlation matrix.

Each column is mapped to a standard normal score: numerics through their empirical CDF (ranks, ties broken at
random), categories through disjoint CDF intervals sized by their frequency (the encoding SDV's copula uses).
A missing-value indicator gets its own score, so missingness can correlate with other columns. The model keeps
a quantile grid per numeric column rather than the rows, so sampling interpolates new values instead of
replaying records. Reference: Patki, Wedge, Veeramachaneni, "The Synthetic Data Vault", IEEE DSAA 2016.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from privsynth.data.binning import category_key
from privsynth.data.schema import Column, Kind, Schema
from privsynth.data.sources import Source
from privsynth.errors import DataError, ParameterError
from privsynth.progress import report
from privsynth.synth.base import Synthesizer, register
from privsynth.synth.restore import as_numbers, restore_dtype

_EPS = 1e-9


@dataclass
class _CategoricalMarginal:
    column: Column
    values: list[Any]  # None stands for missing
    cdf: np.ndarray  # len(values) + 1 increasing edges from 0 to 1

    @classmethod
    def fit(cls, column: Column, data: pd.Series) -> _CategoricalMarginal:
        freq = data.value_counts(dropna=False, sort=False)
        values = [None if pd.isna(v) else v for v in freq.index]
        cdf = np.concatenate([[0.0], np.cumsum(freq.to_numpy(dtype=float)) / freq.sum()])
        return cls(column, values, cdf)

    @property
    def dims(self) -> int:
        return 1

    def to_normal(self, data: pd.Series, rng: np.random.Generator) -> np.ndarray:
        index = {(None if v is None else category_key(v)): i for i, v in enumerate(self.values)}
        codes = np.array([index[None if pd.isna(v) else category_key(v)] for v in data], dtype=np.int64)
        low, high = self.cdf[codes], self.cdf[codes + 1]
        return _normal_score(low + (high - low) * rng.random(len(codes)))[:, None]

    def given_normal(self, data: pd.Series) -> np.ndarray:
        """The score at the middle of each given value's interval (NaN for a value the model does not know)."""
        index = {(None if v is None else category_key(v)): i for i, v in enumerate(self.values)}
        codes = np.array([index.get(None if pd.isna(v) else category_key(v), -1) for v in data], dtype=np.int64)
        middle = (self.cdf[codes] + self.cdf[codes + 1]) / 2
        return np.where(codes >= 0, _normal_score(middle), np.nan)[:, None]

    def from_normal(self, z: np.ndarray) -> pd.Series:
        codes = np.clip(np.searchsorted(self.cdf, stats.norm.cdf(z[:, 0]), side="right") - 1, 0, len(self.values) - 1)
        return pd.Series(np.array(self.values, dtype=object)[codes], name=self.column.name)


@dataclass
class _NumericMarginal:
    column: Column
    probabilities: np.ndarray
    quantiles: np.ndarray  # numeric values (datetimes as ns since epoch) at ``probabilities``
    missing_rate: float

    @classmethod
    def fit(cls, column: Column, data: pd.Series, grid: int) -> _NumericMarginal:
        numbers = as_numbers(column, data)
        present = numbers[~np.isnan(numbers)]
        if present.size == 0:
            raise DataError(f"column '{column.name}' has no values to learn from")
        probabilities = np.linspace(0.0, 1.0, grid + 1)
        quantiles = np.quantile(present, probabilities)
        return cls(column, probabilities, quantiles, float(np.isnan(numbers).mean()))

    @property
    def dims(self) -> int:
        return 2 if self.missing_rate > 0 else 1

    def to_normal(self, data: pd.Series, rng: np.random.Generator) -> np.ndarray:
        numbers = as_numbers(self.column, data)
        missing = np.isnan(numbers)
        u = rng.random(len(numbers))  # missing values get an independent score
        present = np.flatnonzero(~missing)
        # Ranks with ties broken at random give an exactly uniform score for the observed values.
        order = np.lexsort((rng.random(present.size), numbers[present]))
        ranks = np.empty(present.size)
        ranks[order] = np.arange(present.size)
        u[present] = (ranks + 0.5) / present.size
        scores = [_normal_score(u)]
        if self.dims == 2:
            rate = self.missing_rate
            v = np.where(missing, rate * rng.random(len(numbers)), rate + (1 - rate) * rng.random(len(numbers)))
            scores.append(_normal_score(v))
        return np.column_stack(scores)

    def given_normal(self, data: pd.Series) -> np.ndarray:
        """The scores of given values: the middle of the CDF interval a value's quantiles span (a value held by
        many rows spans a wide one); a missing value gets the middle of the missing indicator's interval, and
        its value score is left free (NaN)."""
        numbers = as_numbers(self.column, data)
        missing = np.isnan(numbers)
        p = self.probabilities
        first = np.clip(np.searchsorted(self.quantiles, numbers, side="left"), 0, len(p) - 1)
        last = np.clip(np.searchsorted(self.quantiles, numbers, side="right") - 1, 0, len(p) - 1)
        u = np.where(last > first, (p[first] + p[last]) / 2, np.interp(numbers, self.quantiles, p))
        scores = [np.where(missing, np.nan, _normal_score(u))]
        if self.dims == 2:
            rate = self.missing_rate
            scores.append(_normal_score(np.where(missing, rate / 2, rate + (1 - rate) / 2)))
        return np.column_stack(scores)

    def from_normal(self, z: np.ndarray) -> pd.Series:
        values = np.interp(stats.norm.cdf(z[:, 0]), self.probabilities, self.quantiles)
        if self.column.kind in (Kind.INTEGER, Kind.DATETIME):
            values = np.round(values)
        if self.dims == 2:
            values[stats.norm.cdf(z[:, 1]) < self.missing_rate] = np.nan
        if self.column.kind is Kind.DATETIME:
            return pd.Series(pd.to_datetime(values, unit="ns"), name=self.column.name)
        return pd.Series(values, name=self.column.name)


_Marginal = _CategoricalMarginal | _NumericMarginal


@register
class GaussianCopula(Synthesizer):
    """Gaussian copula over empirical marginals; fast, non-private, a strong baseline for 1- and 2-way structure.

    Parameters
    ----------
    quantiles:
        Number of quantile intervals kept per numeric column (the model stores ``quantiles + 1`` values, not rows).
    """

    name = "copula"

    def __init__(self, quantiles: int = 1000) -> None:
        self.quantiles = quantiles

    def _fit(self, source: Source, schema: Schema, *, epsilon: float | None, delta: float | None, ledger: Any) -> None:
        report("fit copula", 0, 3, "reading data")
        df = source.to_pandas(schema.names)
        if df.empty:
            raise DataError(f"{source.name} has no rows to learn from")
        report("fit copula", 1, 3, "marginals")
        rng = np.random.default_rng(0)
        self.marginals_: list[_Marginal] = [_fit_marginal(col, df[col.name], self.quantiles) for col in schema]
        latent = np.column_stack([m.to_normal(df[m.column.name], rng) for m in self.marginals_])
        report("fit copula", 2, 3, "correlation")
        self.correlation_ = _nearest_correlation(np.corrcoef(latent, rowvar=False))
        self._cholesky = np.linalg.cholesky(self.correlation_)
        report("fit copula", 3, 3)

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        z = rng.standard_normal((n, self._cholesky.shape[0])) @ self._cholesky.T
        columns: dict[str, pd.Series] = {}
        start = 0
        for marginal in self.marginals_:
            values = marginal.from_normal(z[:, start : start + marginal.dims])
            start += marginal.dims
            columns[marginal.column.name] = restore_dtype(values, marginal.column)
        return pd.DataFrame(columns)

    def sample_given(self, given: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
        """One row per row of ``given``: its columns keep that row's values, the others are drawn from the
        Gaussian conditional given their scores (a category at the middle of its interval, a number at the middle
        of the quantiles it spans). Same seed, same rows."""
        self._check_fitted()
        if len(given) == 0:
            raise ParameterError("sample_given needs at least one row of given values")
        names = [m.column.name for m in self.marginals_]
        unknown = [str(c) for c in given.columns if c not in names]
        if unknown:
            raise ParameterError(
                f"cannot condition on '{unknown[0]}': the model has no such column ({', '.join(names)})"
            )
        rng = np.random.default_rng(seed)
        fixed = np.full((len(given), self.correlation_.shape[0]), np.nan)
        start = 0
        for marginal in self.marginals_:
            if marginal.column.name in given.columns:
                scores = marginal.given_normal(given[marginal.column.name].reset_index(drop=True))
                fixed[:, start : start + marginal.dims] = scores
            start += marginal.dims
        z = np.empty_like(fixed)
        for pattern in np.unique(~np.isnan(fixed), axis=0):  # rows that fix the same latent coordinates
            rows = np.flatnonzero((~np.isnan(fixed) == pattern).all(axis=1))
            z[rows] = _conditional_normal(self.correlation_, fixed[rows], pattern, rng)
        columns: dict[str, pd.Series] = {}
        start = 0
        for marginal in self.marginals_:
            name = marginal.column.name
            values = marginal.from_normal(z[:, start : start + marginal.dims])
            start += marginal.dims
            kept = given[name].reset_index(drop=True).rename(name) if name in given.columns else values
            columns[name] = restore_dtype(kept, marginal.column)
        return pd.DataFrame(columns)


def _conditional_normal(
    correlation: np.ndarray, fixed: np.ndarray, known: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Standard-normal latent rows with the ``known`` coordinates at ``fixed`` and the others drawn from their
    Gaussian conditional (mean ``S_uk S_kk^-1 z_k``, covariance ``S_uu - S_uk S_kk^-1 S_ku``)."""
    out = fixed.copy()
    free = ~known
    if not known.any():
        return np.asarray(rng.standard_normal(fixed.shape) @ np.linalg.cholesky(correlation).T)
    if not free.any():
        return out
    s_kk = correlation[np.ix_(known, known)]
    s_uk = correlation[np.ix_(free, known)]
    weights = np.linalg.solve(s_kk, s_uk.T).T
    covariance = correlation[np.ix_(free, free)] - weights @ s_uk.T
    chol = np.linalg.cholesky(_nearest_correlation_like(covariance))
    noise = rng.standard_normal((len(fixed), int(free.sum()))) @ chol.T
    out[:, free] = fixed[:, known] @ weights.T + noise
    return out


def _nearest_correlation_like(matrix: np.ndarray) -> np.ndarray:
    """A covariance matrix with eigenvalues lifted to be positive definite (for a Cholesky factor)."""
    matrix = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(matrix)
    return np.asarray(vectors @ np.diag(np.clip(values, 1e-9, None)) @ vectors.T)


def _fit_marginal(column: Column, data: pd.Series, grid: int) -> _Marginal:
    if column.kind is Kind.CATEGORICAL:
        return _CategoricalMarginal.fit(column, data)
    if column.kind in (Kind.INTEGER, Kind.FLOAT, Kind.DATETIME):
        return _NumericMarginal.fit(column, data, grid)
    raise DataError(f"the copula cannot model {column.kind.value} column '{column.name}'; exclude it in the schema")


def _normal_score(u: np.ndarray) -> np.ndarray:
    return np.asarray(stats.norm.ppf(np.clip(u, _EPS, 1 - _EPS)))


def _nearest_correlation(matrix: np.ndarray) -> np.ndarray:
    """The matrix with negative eigenvalues lifted, rescaled to unit diagonal: a valid correlation matrix."""
    matrix = np.nan_to_num((matrix + matrix.T) / 2, nan=0.0)
    np.fill_diagonal(matrix, 1.0)
    values, vectors = np.linalg.eigh(matrix)
    fixed = vectors @ np.diag(np.clip(values, 1e-6, None)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    return np.asarray(fixed / np.outer(scale, scale))
