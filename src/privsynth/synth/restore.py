"""Shared by every synthesizer: a column's values as numbers and back, and post-processing that gives sampled
values the dtype and range of the real column."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from privsynth.data.schema import Column, Kind
from privsynth.errors import DataError

logger = logging.getLogger(__name__)


def restore_dtype(values: pd.Series, column: Column) -> pd.Series:
    """``values`` clipped to the column's bounds and cast to its recorded dtype.

    An integer column that has gained missing values becomes pandas' nullable ``Int64`` instead of failing.
    """
    if column.kind in (Kind.INTEGER, Kind.FLOAT) and column.bounds is not None:
        low, high = (float(b) for b in column.bounds)
        values = values.astype(float).clip(low, high)
    if column.kind is Kind.DATETIME:
        if "tz" in column.dtype or "UTC" in column.dtype:
            return pd.to_datetime(values).dt.tz_localize("UTC")
        if column.dtype.startswith("datetime64"):
            return pd.to_datetime(values).astype(pd.api.types.pandas_dtype(column.dtype))
        return pd.to_datetime(values).dt.strftime("%Y-%m-%dT%H:%M:%S").where(values.notna())
    try:
        return values.astype(pd.api.types.pandas_dtype(column.dtype))
    except (TypeError, ValueError):
        if pd.api.types.is_integer_dtype(column.dtype) and values.isna().any():
            return values.astype("Int64")
        logger.debug("column '%s' kept dtype %s (cannot cast to %s)", column.name, values.dtype, column.dtype)
        return values


def as_numbers(column: Column, data: pd.Series) -> np.ndarray:
    """Numbers as floats (datetimes as nanoseconds since the epoch), NaN for missing."""
    if column.kind is Kind.DATETIME:
        stamps = pd.to_datetime(data, format="mixed")
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        out = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(float)
        out[stamps.isna().to_numpy()] = np.nan
        return out
    numbers = pd.to_numeric(data, errors="coerce")
    bad = data.notna() & numbers.isna()
    if bad.any():
        raise DataError(f"column '{column.name}' is {column.kind.value} but holds {data[bad].iloc[0]!r}")
    return numbers.to_numpy(dtype=float)


def from_numbers(column: Column, values: np.ndarray) -> pd.Series:
    """Numbers back to the column's values and dtype (datetimes from nanoseconds)."""
    if column.kind is Kind.DATETIME:
        stamps = pd.Series(pd.to_datetime(values, unit="ns"), name=column.name)
        return restore_dtype(stamps, column)
    return restore_dtype(pd.Series(values, name=column.name), column)
