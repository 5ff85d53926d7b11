"""Where rows live, and the queries privsynth may run on them.

A :class:`Source` answers the few questions synthesizers ask: how many rows, a contingency table of some
columns under a data-independent binning (``counts``, one GROUP BY), and rows in chunks for the methods that
must read rows. ``counts`` is written once as a SQLAlchemy expression and compiled for the engine that runs
it: DuckDB for frames, CSV, Parquet and DuckDB files (streaming, so a Parquet file larger than memory works),
and the database itself for a SQL URL. Raw rows never leave the engine for ``counts``.

:func:`load_source` opens any of them. The query interface is :mod:`privsynth.data.source_base`, the engines
:mod:`privsynth.data.duckdb_source` and :mod:`privsynth.data.sql_source`; their classes are re-exported here, the
one import path callers use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from privsynth.data.duckdb_source import (
    DuckDBSource,
    csv_source,
    duckdb_table_source,
    frame_source,
    parquet_source,
)
from privsynth.data.source_base import Source
from privsynth.data.sql_source import SQLSource
from privsynth.errors import DataError, ParameterError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame

__all__ = [
    "CSV_SUFFIXES",
    "DUCKDB_SUFFIXES",
    "PARQUET_SUFFIXES",
    "DuckDBSource",
    "SQLSource",
    "Source",
    "frame_source",
    "load_source",
]

CSV_SUFFIXES = {".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
DUCKDB_SUFFIXES = {".duckdb", ".ddb"}


def load_source(
    data: pd.DataFrame | str | Path | Source | SparkFrame | None,
    *,
    table: str | None = None,
    query: str | None = None,
    delimiter: str | None = None,
    name: str | None = None,
    engine: str | None = None,
    spark_master: str | None = None,
) -> Source:
    """Open ``data``: a DataFrame, a CSV, Parquet or DuckDB path, or a SQLAlchemy URL; with ``engine="spark"``
    (or ``spark:TABLE``, or a ``pyspark.sql.DataFrame``) rows that Spark reads and counts
    (:func:`privsynth.data.spark.spark_source`, on ``spark_master``, default ``local[2]``).

    ``table`` names a table of a DuckDB file or a database; ``query`` (databases and Spark) selects the rows with
    SQL; ``delimiter`` is the CSV field separator, sniffed when not given.
    """
    if isinstance(data, Source):
        return data
    if engine not in (None, "duckdb", "spark"):
        raise ParameterError(f"engine must be 'duckdb' or 'spark', not {engine!r}")
    is_spark_frame = type(data).__module__.startswith("pyspark.")
    if engine == "spark" or is_spark_frame or (isinstance(data, str) and data.startswith("spark:")):
        from privsynth.data.spark import spark_source

        if isinstance(data, pd.DataFrame):
            raise ParameterError("a pandas data frame is read by DuckDB; give Spark a table, a path or its DataFrame")
        if delimiter is not None:
            raise ParameterError("delimiter= does not apply to Spark sources (Spark reads CSV with a header row)")
        target = f"spark:{table}" if table is not None else None if query is not None else data
        return spark_source(target, query=query, master=spark_master, name=name)
    if spark_master is not None:
        raise ParameterError("spark_master= only applies with engine='spark'")
    if data is None:
        raise ParameterError("load_source needs data: a data frame, a path or a SQL URL")
    text = "" if isinstance(data, pd.DataFrame) else str(data)
    if "://" in text:
        return SQLSource(text, table=table, query=query)
    if query is not None:
        raise ParameterError("query= only applies to a SQL URL; load the rows and filter them instead")
    if isinstance(data, pd.DataFrame):
        _no_table(table, "a data frame")
        return frame_source(data, name or "data frame")
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"file '{path}' does not exist")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder; give a CSV, Parquet or DuckDB file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix in DUCKDB_SUFFIXES:
        return duckdb_table_source(path, table)
    if suffix in PARQUET_SUFFIXES:
        _no_table(table, "a Parquet file")
        return parquet_source(path)
    if suffix in CSV_SUFFIXES or suffix == "":
        _no_table(table, "a CSV file")
        return csv_source(path, delimiter)
    raise DataError(f"'{path}' has an unknown file type '{suffix}'; use .csv, .parquet or .duckdb")


def _no_table(table: str | None, what: str) -> None:
    if table is not None:
        raise ParameterError(f"table= only applies to a DuckDB file or a SQL URL, not to {what}")
