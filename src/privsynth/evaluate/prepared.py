"""One encoding of the real, synthetic and holdout rows that every evaluation section reads.

Each evaluated column is encoded once: numbers as floats (datetimes as nanoseconds since the epoch), categories
as integer codes over the union of the values seen in any of the frames, missing as NaN. From that encoding come
the fixed binning the marginal metrics count on (categories as they are, numbers in 16 quantile bins of the real
data, missing as a bin of its own), the feature matrix the classifiers learn from, and the distance encoding the
nearest-neighbour metrics use. Evaluation reads real data freely: it runs where the private data lives, and its
report is for the data owner, not for release.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from privsynth.data.binning import category_key
from privsynth.data.schema import Kind, Schema
from privsynth.errors import DataError, ParameterError, SchemaError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

QUANTILE_BINS = 16
_MODEL_CATEGORY_CAP = 250  # categories past this (rarest in the real data) share one code for the classifiers
_EVALUATED_KINDS = (Kind.CATEGORICAL, Kind.INTEGER, Kind.FLOAT, Kind.DATETIME)


@dataclass(frozen=True)
class ColumnCode:
    """How one column is encoded: its categories (categorical) or its quantile cut points (numeric)."""

    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    cuts: tuple[float, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.kind.numeric

    @property
    def bins(self) -> int:
        """Cells of the fixed binning; the last one holds missing values."""
        return (len(self.cuts) + 2) if self.numeric else (len(self.categories) + 1)

    def bin_labels(self) -> list[str]:
        """A readable name for every cell of the fixed binning."""
        if not self.numeric:
            return [*self.categories, "(missing)"]
        edges = ["-inf", *(f"{c:.4g}" for c in self.cuts), "inf"]
        return [f"[{a}, {b})" for a, b in itertools.pairwise(edges)] + ["(missing)"]


@dataclass(frozen=True)
class Table:
    """Rows of one frame: ``values`` (numbers, category codes, NaN for missing) and ``cells`` (fixed bins)."""

    values: FloatArray
    cells: IntArray

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def take(self, rows: IntArray | BoolArray) -> Table:
        return Table(self.values[rows], self.cells[rows])


@dataclass(frozen=True)
class Prepared:
    """The evaluated columns and the three frames encoded on them."""

    columns: tuple[ColumnCode, ...]
    real: Table
    synthetic: Table
    holdout: Table | None
    target: str | None
    sensitive: str | None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def index(self, name: str) -> int:
        return self.names.index(name)


def prepare(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame | None,
    target: str | None,
    sensitive: str | None,
    schema: Schema | None,
) -> Prepared:
    """Validate the inputs and encode them; errors name the argument and the column at fault."""
    _check_frame(real, "real")
    _check_frame(synthetic, "synthetic")
    if holdout is not None:
        _check_frame(holdout, "holdout")
    if schema is None:
        schema = Schema.infer(real)
    elif not isinstance(schema, Schema):
        raise ParameterError(f"schema must be a privsynth Schema or None, not {type(schema).__name__}")
    kinds: dict[str, Kind] = {}
    for col in schema.synthesized():
        if col.kind not in _EVALUATED_KINDS:
            logger.info("column '%s' (%s) is not evaluated: only table columns are", col.name, col.kind.value)
            continue
        kinds[col.name] = col.kind
    if not kinds:
        raise SchemaError("the schema marks no categorical or numeric column for synthesis; nothing to evaluate")
    frames = {"real": real, "synthetic": synthetic, "holdout": holdout}
    for label, frame in frames.items():
        if frame is None:
            continue
        missing = [name for name in kinds if name not in frame.columns]
        if missing:
            raise DataError(
                f"the {label} data lacks column(s) {missing} that the schema evaluates; "
                f"{label} columns: {[str(c) for c in frame.columns]}"
            )
    for role, name in (("target", target), ("sensitive", sensitive)):
        if name is not None and name not in kinds:
            raise ParameterError(
                f"{role} column '{name}' is not among the evaluated columns ({', '.join(kinds)}); "
                "name a column of the real data that the schema synthesizes"
            )
    if target is not None and target == sensitive:
        raise ParameterError(f"'{target}' is both the target and the sensitive column; pick different columns")

    columns: list[ColumnCode] = []
    raw: dict[str, list[npt.NDArray[Any]]] = {}
    for name, kind in kinds.items():
        present = [(label, f[name]) for label, f in frames.items() if f is not None]
        if kind.numeric:
            numbers = [_numbers(values, name, label, kind) for label, values in present]
            columns.append(ColumnCode(name, kind, cuts=_quantile_cuts(numbers[0])))
            raw[name] = numbers
        else:
            keys = [_category_keys(values) for _, values in present]
            categories = _category_order(keys)
            lookup = {key: code for code, key in enumerate(categories)}
            raw[name] = [np.array([np.nan if k is None else lookup[k] for k in ks], dtype=np.float64) for ks in keys]
            columns.append(ColumnCode(name, kind, categories=categories))
    tables = [_table(columns, [raw[c.name][i] for c in columns]) for i in range(len(raw[columns[0].name]))]
    return Prepared(
        tuple(columns),
        tables[0],
        tables[1],
        tables[2] if holdout is not None else None,
        target,
        sensitive,
    )


def model_features(data: Prepared, table: Table, columns: Sequence[int]) -> FloatArray:
    """The classifier's inputs: numbers as they are, category codes capped (rarest categories merged)."""
    out = table.values[:, list(columns)].copy()
    for j, c in enumerate(columns):
        if not data.columns[c].numeric:
            out[:, j] = np.minimum(out[:, j], _MODEL_CATEGORY_CAP)
    return out


def trainable(X: FloatArray) -> FloatArray:
    """``X`` with every all-missing column set to 0: gradient boosting cannot bin a column with no value."""
    empty = np.isnan(X).all(axis=0)
    if not empty.any():
        return X
    out = X.copy()
    out[:, empty] = 0.0
    return out


def categorical_mask(data: Prepared, columns: Sequence[int]) -> BoolArray:
    return np.array([not data.columns[c].numeric for c in columns], dtype=bool)


def distance_encoding(data: Prepared, tables: Sequence[Table]) -> list[FloatArray]:
    """A common numeric encoding whose Euclidean distance mixes kinds fairly.

    A number becomes its mid-rank among the values of all ``tables`` together, scaled to [0, 1] (no column
    dominates through its units or outliers, and no table's values define the scale), with a missing-value
    indicator when any value is missing; a category becomes a one-hot vector scaled by 1/sqrt(2), so a mismatch
    adds exactly 1 to the squared distance and missing is a category.
    """
    parts: list[list[FloatArray]] = [[] for _ in tables]
    for j, col in enumerate(data.columns):
        if col.numeric:
            pooled = np.concatenate([t.values[:, j] for t in tables])
            reference = np.sort(pooled[~np.isnan(pooled)])
            has_missing = any(np.isnan(t.values[:, j]).any() for t in tables)
            for part, table in zip(parts, tables, strict=True):
                x = table.values[:, j]
                missing = np.isnan(x)
                ranks = (np.searchsorted(reference, x, "left") + np.searchsorted(reference, x, "right")) / (
                    2.0 * max(len(reference), 1)
                )
                ranks[missing] = 0.5
                part.append(ranks[:, None])
                if has_missing:
                    part.append(missing.astype(np.float64)[:, None])
        else:
            eye = np.eye(col.bins, dtype=np.float64) / np.sqrt(2.0)
            for part, table in zip(parts, tables, strict=True):
                part.append(eye[table.cells[:, j]])
    return [np.hstack(p) for p in parts]


def row_keys(table: Table) -> npt.NDArray[np.uint64]:
    """A hash per row of the encoded values: equal rows (missing equal to missing) hash equal."""
    hashed = pd.util.hash_pandas_object(pd.DataFrame(table.values + 0.0), index=False)
    return np.asarray(hashed.to_numpy(), dtype=np.uint64)


def _check_frame(frame: Any, label: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ParameterError(f"{label} must be a pandas DataFrame, not {type(frame).__name__}")
    if frame.shape[1] == 0:
        raise DataError(f"the {label} data has no columns")
    if len(frame) == 0:
        raise DataError(f"the {label} data has no rows; evaluation needs rows in real, synthetic and holdout")


def _numbers(values: pd.Series, name: str, label: str, kind: Kind) -> FloatArray:
    """Numbers as floats (datetimes as nanoseconds); a value that is not a number is a DataError."""
    if kind is Kind.DATETIME:
        parsed = pd.to_datetime(values, errors="coerce", format="mixed")
        stamps = parsed.to_numpy(dtype="datetime64[ns]")
        out = stamps.astype(np.int64).astype(np.float64)
        out[np.isnat(stamps)] = np.nan
        bad = parsed.isna().to_numpy() & values.notna().to_numpy()
    else:
        parsed = pd.to_numeric(values, errors="coerce")
        out = np.asarray(parsed, dtype=np.float64)
        bad = np.isnan(out) & values.notna().to_numpy()
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(
            f"column '{name}' of the {label} data is {kind.value} but holds {example!r} "
            f"({int(bad.sum())} such values); convert them to numbers or empty cells"
        )
    if np.isinf(out).any():
        raise DataError(f"column '{name}' of the {label} data holds infinite values; replace them")
    return out


def _quantile_cuts(real: FloatArray) -> tuple[float, ...]:
    """Inner cut points of 16 quantile bins of the real values (repeated cut points merged)."""
    present = real[~np.isnan(real)]
    if len(present) == 0:
        return ()
    cuts = np.unique(np.quantile(present, np.arange(1, QUANTILE_BINS) / QUANTILE_BINS))
    return tuple(float(c) for c in cuts)


def _category_keys(values: pd.Series) -> list[str | None]:
    """Each value as a canonical string (1, 1.0 and "1" agree, as in binning), None for missing."""
    missing = values.isna().to_numpy()
    return [None if m else str(category_key(v)) for v, m in zip(values.to_numpy(), missing, strict=True)]


def _category_order(keys: Sequence[list[str | None]]) -> tuple[str, ...]:
    """Categories by frequency in the real data, then those seen only in the other frames."""
    order: dict[str, None] = {}
    for frame_keys in keys:
        counts = pd.Series([k for k in frame_keys if k is not None], dtype=object).value_counts(sort=True)
        for key in counts.index:
            order.setdefault(str(key), None)
    return tuple(order)


def _table(columns: Sequence[ColumnCode], values: Sequence[FloatArray]) -> Table:
    matrix = np.column_stack(values).astype(np.float64)
    cells = np.empty(matrix.shape, dtype=np.int64)
    for j, col in enumerate(columns):
        x = matrix[:, j]
        missing = np.isnan(x)
        if col.numeric:
            binned = np.searchsorted(np.asarray(col.cuts, dtype=np.float64), np.nan_to_num(x), side="right")
        else:
            binned = np.nan_to_num(x).astype(np.int64)
        cells[:, j] = np.where(missing, col.bins - 1, binned)
    return Table(matrix, cells)
