"""Tokens for the deep generators: each column becomes a small vocabulary, and tokens decode back to values.

- Categories are tokens; categories seen fewer than ``rare`` times share one *other* token, which decodes to one
  of them by frequency (the network never learns a rare value's own associations).
- Numbers (and datetimes, as nanoseconds) with at most ``bins`` distinct values are tokens for their exact
  values. Others are cut into up to ``bins`` quantile bins; a bin decodes through its own quantile function
  (``within`` points), so values are spread inside the bin as the real ones are: exactly for bins that hold
  few distinct values, linearly interpolated for continuous ones. Never a constant midpoint. (A second token
  for the position inside the bin, predicted like any column, was tried: on nassCDS and nafld1 it fitted
  no better and cost more time.)
- A missing value is its own token.

These codecs read the data (categories, quantiles): they serve the non-private ``deep`` method. ``dp-deep``
uses :class:`DomainCodec`, built on the public or DP-learned domains of :mod:`privsynth.synth.domain`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from privsynth.data.binning import OUTSIDE, Categories, NumericBins, category_key, is_missing
from privsynth.data.schema import Column, Kind
from privsynth.errors import DataError, ParameterError
from privsynth.synth.domain import ColumnDomain
from privsynth.synth.restore import as_numbers, from_numbers, restore_dtype


class Codec(Protocol):
    """How one column maps to tokens ``0 .. size-1`` and back."""

    @property
    def column(self) -> Column: ...

    @property
    def size(self) -> int: ...

    def encode(self, values: pd.Series) -> np.ndarray:
        """Token of each value."""
        ...

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> pd.Series:
        """Values for ``tokens`` in the column's dtype (post-processing)."""
        ...

    def condition(self, value: Any) -> tuple[int, Any]:
        """The token that holds a condition ``value`` and the exact value to output for it."""
        ...

    def restore(self, values: pd.Series) -> pd.Series:
        """Condition values (one per row) in the column's dtype."""
        ...

    def categories(self) -> list[Any]:
        """The categories this codec can produce (empty for numbers)."""
        ...

    def sampled(self) -> np.ndarray:
        """Which tokens sampling may draw (a boolean per token)."""
        ...


def fit_codec(column: Column, data: pd.Series, *, bins: int, within: int, rare: int) -> Codec:
    """The codec for ``column`` learned from its values ``data`` (non-private)."""
    if column.kind is Kind.CATEGORICAL:
        return CategoryCodec.fit(column, data, rare)
    if column.kind.numeric:
        return NumberCodec.fit(column, data, bins, within)
    raise DataError(f"the deep generator cannot model {column.kind.value} column '{column.name}'; exclude it")


@dataclass
class CategoryCodec:
    """Tokens: one per frequent category, then *other* (rare and unseen categories), then *missing*."""

    column: Column
    values: list[Any]
    rare_values: list[Any]
    rare_weights: np.ndarray
    other: bool
    null: bool

    @classmethod
    def fit(cls, column: Column, data: pd.Series, rare: int) -> CategoryCodec:
        counts = data.dropna().map(category_key).value_counts(sort=True)
        frequent = [v for v, c in counts.items() if c >= rare]
        rare_counts = counts[counts < rare]
        seen = {category_key(v) for v in counts.index}
        unseen = [v for v in column.categories or [] if category_key(v) not in seen]
        return cls(
            column,
            values=frequent,
            rare_values=list(rare_counts.index) + unseen,
            rare_weights=np.concatenate([rare_counts.to_numpy(dtype=float), np.zeros(len(unseen))]),
            other=len(rare_counts) > 0 or len(unseen) > 0,
            null=bool(data.isna().any()),
        )

    @property
    def size(self) -> int:
        return len(self.values) + int(self.other) + int(self.null)

    @property
    def _other_token(self) -> int:
        return len(self.values)

    @property
    def _null_token(self) -> int:
        return len(self.values) + int(self.other)

    def encode(self, values: pd.Series) -> np.ndarray:
        lookup = {category_key(v): i for i, v in enumerate(self.values)}
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        cells = [lookup.get(category_key(u), self._other_token if self.other else OUTSIDE) for u in uniques]
        cells.append(self._null_token if self.null else OUTSIDE)
        tokens = np.asarray(cells, dtype=np.int64)[codes]
        if (tokens == OUTSIDE).any():
            raise DataError(f"column '{self.column.name}' holds a value the model was not fitted on")
        return tokens

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = np.empty(len(tokens), dtype=object)
        out[:] = None
        known = tokens < len(self.values)
        out[known] = _objects(self.values)[tokens[known]]
        if self.other:
            hit = np.flatnonzero(tokens == self._other_token)
            weights = self.rare_weights if self.rare_weights.sum() > 0 else np.ones(len(self.rare_values))
            picks = rng.choice(len(self.rare_values), size=len(hit), p=weights / weights.sum())
            out[hit] = _objects(self.rare_values)[picks]
        return restore_dtype(pd.Series(out, dtype=object, name=self.column.name), self.column)

    def condition(self, value: Any) -> tuple[int, Any]:
        if self.null and is_missing(value):
            return self._null_token, None
        key = category_key(value)
        for i, v in enumerate(self.values):
            if category_key(v) == key:
                return i, v
        for v in self.rare_values:
            if category_key(v) == key:
                return self._other_token, v
        raise ParameterError(f"'{value}' is not a category of '{self.column.name}' the model knows")

    def restore(self, values: pd.Series) -> pd.Series:
        return restore_dtype(values.rename(self.column.name), self.column)

    def categories(self) -> list[Any]:
        seen_rare = [v for v, w in zip(self.rare_values, self.rare_weights, strict=True) if w > 0]
        return [*self.values, *seen_rare]

    def sampled(self) -> np.ndarray:
        return np.ones(self.size, dtype=bool)


@dataclass
class NumberCodec:
    """Tokens for exact values (``points``) or quantile bins (``edges``) with a quantile function per bin.

    Each bin keeps its quantile function as ``support`` values at cumulative probabilities ``cdf``: linearly
    interpolated for a ``continuous`` bin (the real quantiles at ``within + 1`` equal steps), a step function
    for a bin of few distinct values (those values and their cumulative shares).
    """

    column: Column
    points: np.ndarray | None
    edges: np.ndarray | None
    support: list[np.ndarray]
    cdf: list[np.ndarray]
    continuous: np.ndarray
    null: bool

    @classmethod
    def fit(cls, column: Column, data: pd.Series, bins: int, within: int) -> NumberCodec:
        numbers = as_numbers(column, data)
        present = numbers[~np.isnan(numbers)]
        null = bool(np.isnan(numbers).any())
        if present.size == 0:
            raise DataError(f"column '{column.name}' has no values to learn from; exclude it in the schema")
        distinct = np.unique(present)
        if len(distinct) <= bins:
            return cls(column, distinct, None, [], [], np.zeros(0, dtype=bool), null)
        edges = _edges(present, bins)
        index = _bin_of(edges, present)
        support: list[np.ndarray] = []
        cdf: list[np.ndarray] = []
        continuous = np.zeros(len(edges) - 1, dtype=bool)
        grid = np.linspace(0.0, 1.0, within + 1)
        for b in range(len(edges) - 1):
            inside = np.sort(present[index == b])
            if inside.size == 0:  # a bin between repeated quantiles: spread over its width
                support.append(edges[b : b + 2].copy())
                cdf.append(np.array([0.0, 1.0]))
                continuous[b] = True
                continue
            values, counts = np.unique(inside, return_counts=True)
            if len(values) <= within:
                support.append(values)
                cdf.append(np.cumsum(counts) / counts.sum())
            else:
                support.append(np.quantile(inside, grid))
                cdf.append(grid)
                continuous[b] = True
        return cls(column, None, edges, support, cdf, continuous, null)

    @property
    def bins(self) -> int:
        return len(self.points) if self.points is not None else len(self.support)

    @property
    def size(self) -> int:
        return self.bins + int(self.null)

    def encode(self, values: pd.Series) -> np.ndarray:
        numbers = as_numbers(self.column, values)
        missing = np.isnan(numbers)
        if missing.any() and not self.null:
            raise DataError(f"column '{self.column.name}' has missing values the model was not fitted on")
        tokens = self._token_of(np.nan_to_num(numbers))
        tokens[missing] = self.bins
        return tokens

    def _token_of(self, numbers: np.ndarray) -> np.ndarray:
        if self.edges is not None:
            return _bin_of(self.edges, numbers)
        points = np.asarray(self.points)
        right = np.clip(np.searchsorted(points, numbers), 0, len(points) - 1)
        left = np.clip(right - 1, 0, len(points) - 1)
        closer = np.abs(points[left] - numbers) <= np.abs(points[right] - numbers)
        return np.where(closer, left, right).astype(np.int64)

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> pd.Series:
        nulls = tokens >= self.bins
        values = np.full(len(tokens), np.nan)
        if self.points is not None:
            values[~nulls] = self.points[tokens[~nulls]]
            return from_numbers(self.column, values)
        u = rng.random(len(tokens))
        for b in np.unique(tokens[~nulls]):
            rows = tokens == b
            if self.continuous[b]:
                values[rows] = np.interp(u[rows], self.cdf[b], self.support[b])
            else:
                pick = np.minimum(np.searchsorted(self.cdf[b], u[rows], side="right"), len(self.cdf[b]) - 1)
                values[rows] = self.support[b][pick]
        if self.column.kind is Kind.INTEGER:
            values = np.round(values)
        return from_numbers(self.column, values)

    def condition(self, value: Any) -> tuple[int, Any]:
        number = float(as_numbers(self.column, pd.Series([value]))[0])
        if np.isnan(number):
            if not self.null:
                raise ParameterError(f"'{self.column.name}' had no missing values; the model cannot condition on one")
            return self.bins, value
        return int(self._token_of(np.array([number]))[0]), value

    def restore(self, values: pd.Series) -> pd.Series:
        return from_numbers(self.column, as_numbers(self.column, values))

    def categories(self) -> list[Any]:
        return []

    def sampled(self) -> np.ndarray:
        return np.ones(self.size, dtype=bool)


def _objects(values: list[Any]) -> np.ndarray:
    """``values`` as a 1-d object array (whatever the values are)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _edges(present: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges for ``present``: a bin of its own for every value held by at least 1/``bins`` of the rows (a
    spike: 45 for a negative PCR cycle threshold, 0 for a count), quantile bins over the other values.

    Plain quantile edges would merge a spike with its neighbours into one token, and the model could no longer
    tell the spike's rows (negative tests) from the rows next to it (positive ones).
    """
    values, counts = np.unique(present, return_counts=True)
    spikes = values[counts * bins >= present.size]
    rest = present[~np.isin(present, spikes)]
    quantiles = np.quantile(rest, np.linspace(0.0, 1.0, max(bins - len(spikes), 1) + 1)) if rest.size else np.zeros(0)
    return np.unique(np.concatenate([quantiles, spikes, np.nextafter(spikes, np.inf)]))


def _bin_of(edges: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Bin ``[edges[i], edges[i+1])`` of each number; the last bin also holds the top edge, outliers clip."""
    return np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, len(edges) - 2).astype(np.int64)


@dataclass
class DomainCodec:
    """A codec over a public or DP-learned :class:`~privsynth.synth.domain.ColumnDomain` (``dp-deep``).

    A DP fit must not fail on the data (the failure, and any value it names, would be a release outside the
    mechanism), so every value gets a token and nothing is reported:

    - a category outside the domain goes to the domain's *other* cell, or to an extra *unexpected* token when
      the domain has none (public categories without ``other``);
    - a number outside the domain is clipped into its first or last cell (a bound is a clipping bound), and a
      value that is not a number (or date) counts as missing;
    - a missing value goes to the domain's missing cell, or to an extra *missing* token when it has none.

    Whether the extra tokens exist depends on the domain only, never on the data. The network trains on them
    like on any token (under DP-SGD: a row's unexpected value is one more input, bounded by the clipping), and
    sampling never draws them (:meth:`sampled` masks them): they keep out-of-domain rows from being counted in
    a real cell without ever producing a value the domain does not hold.

    The column kept here has no categories or bounds unless the schema declares them public: inferred ones
    come from the rows (a canary's category would be one of them) and must not reach a model file.
    """

    domain: ColumnDomain

    def __post_init__(self) -> None:
        column = self.domain.column
        if not column.public and (column.categories is not None or column.bounds is not None):
            column = dataclasses.replace(column, categories=None, bounds=None)
            self.domain = dataclasses.replace(self.domain, column=column)

    @property
    def column(self) -> Column:
        return self.domain.column

    @property
    def _unexpected_token(self) -> int | None:
        binning = self.domain.binning
        if isinstance(binning, Categories) and binning.other_index is None:
            return self.domain.size
        return None

    @property
    def _missing_token(self) -> int | None:
        if self.domain.binning.null_index is not None:
            return None
        return self.domain.size + int(self._unexpected_token is not None)

    @property
    def size(self) -> int:
        return self.domain.size + int(self._unexpected_token is not None) + int(self._missing_token is not None)

    def sampled(self) -> np.ndarray:
        """Which tokens sampling may draw: the domain's cells, not the extra tokens."""
        return np.arange(self.size) < self.domain.size

    def encode(self, values: pd.Series) -> np.ndarray:
        binning = self.domain.binning
        values = values.reset_index(drop=True)
        if isinstance(binning, Categories):
            missing = values.isna().to_numpy()
            tokens = np.asarray(binning.encode(values), dtype=np.int64)
            fallback = binning.other_index if binning.other_index is not None else self._unexpected_token
            tokens[(tokens == OUTSIDE) & ~missing] = int(fallback if fallback is not None else OUTSIDE)
        else:
            numbers = _coerced_numbers(self.column, values)
            missing = np.isnan(numbers)
            tokens = np.searchsorted(self._inner_edges(), np.nan_to_num(numbers), side="right").astype(np.int64)
        null = binning.null_index if binning.null_index is not None else self._missing_token
        tokens[missing] = int(null if null is not None else OUTSIDE)
        return tokens

    def _edges(self) -> np.ndarray:
        binning = self.domain.binning
        assert isinstance(binning, NumericBins)
        return _coerced_numbers(self.column, pd.Series(binning.edges, dtype=object))

    def _inner_edges(self) -> np.ndarray:
        return self._edges()[1:-1]

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> pd.Series:
        return self.domain.decode(tokens, rng)

    def condition(self, value: Any) -> tuple[int, Any]:
        """The cell of a condition ``value`` in the DP domain. A value outside it fails without naming the
        domain's categories or bounds, or the value itself (the message may reach a log or an analyst;
        :meth:`categories` lists the categories the model can generate)."""
        name, binning = self.column.name, self.domain.binning
        if is_missing(value):
            if binning.null_index is None:
                raise ParameterError(f"'{name}' has no missing values in the model's domain")
            return binning.null_index, None
        if isinstance(binning, Categories):
            keys = {category_key(v): (i, v) for i, v in enumerate(binning.values)}
            for candidate in (value, _as_number(value)):
                if candidate is not None and category_key(candidate) in keys:
                    return keys[category_key(candidate)]
            if binning.other_index is not None:
                for v in self.domain.other_values:
                    if category_key(v) == category_key(value) or str(v) == str(value):
                        return binning.other_index, v
            for i, v in enumerate(binning.values):
                if str(v) == str(value):
                    return i, v
            raise ParameterError(
                f"the value given for '{name}' is not a category the model can generate (outside its DP domain); "
                f"known_categories('{name}') lists those it can"
            )
        number = _coerced_numbers(self.column, pd.Series([value], dtype=object))[0]
        if np.isnan(number):
            raise ParameterError(f"'{name}' is {self.column.kind.value}; the value given for it is not one")
        edges = self._edges()
        if not edges[0] <= number <= edges[-1]:
            raise ParameterError(f"the value given for '{name}' is outside the model's DP domain of that column")
        return int(np.searchsorted(edges[1:-1], number, side="right")), value

    def restore(self, values: pd.Series) -> pd.Series:
        column = self.column
        if column.kind.numeric:
            return from_numbers(column, as_numbers(column, values))
        return restore_dtype(values.rename(column.name), column)

    def categories(self) -> list[Any]:
        binning = self.domain.binning
        return [*binning.values, *self.domain.other_values] if isinstance(binning, Categories) else []


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _coerced_numbers(column: Column, data: pd.Series) -> np.ndarray:
    """Numbers as floats (datetimes as nanoseconds, UTC), NaN for missing values and for values that are not
    numbers or dates: the DP path's reading, which never fails on a value (and so never names one)."""
    if column.kind is Kind.DATETIME:
        stamps = pd.to_datetime(data, format="mixed", errors="coerce", utc=True).dt.tz_localize(None)
        out = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(float)
        out[stamps.isna().to_numpy()] = np.nan
        return out
    numbers = pd.to_numeric(data, errors="coerce")
    return np.asarray(numbers, dtype=float)
