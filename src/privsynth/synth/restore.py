"""Post-processing shared by every synthesizer: give sampled values the dtype and range of the real column."""

from __future__ import annotations

import logging

import pandas as pd

from privsynth.data.schema import Column, Kind

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
