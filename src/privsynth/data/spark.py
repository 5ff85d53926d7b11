"""Tables that live in Spark: a catalog table, a ``spark.sql`` query, a Parquet/CSV/Delta path read by Spark, or a
``pyspark.sql.DataFrame``.

:class:`SparkSource` is a :class:`~privsynth.data.sources.Source` like the others: ``counts`` is the same
SQLAlchemy expression, compiled for Spark SQL and run by ``spark.sql`` on a temporary view of the rows, so a
contingency table is computed by the cluster and only its cells come back to privsynth (raw rows never leave
Spark for ``counts``). Values in the query (bin edges, category labels) travel as named parameters, never as text
pasted into the SQL. Column types come from Spark's schema (declared by Parquet, Delta or a catalog table; a CSV
file's are Spark's guess, so :attr:`declares_types` is false for it).

Spark needs Java (17 or later) and ``pyspark`` (``pip install 'privsynth[spark]'``). Without a session of the
caller's, :func:`spark_session` starts one on ``local[2]`` (or the master given), with its web UI off.
"""

from __future__ import annotations

import logging
import math
import secrets
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect, PGTypeCompiler

from privsynth.data.source_base import Source, digest, first_line, storage_kind
from privsynth.errors import ParameterError, SourceError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

DEFAULT_MASTER = "local[2]"
"""The master a session of privsynth's own runs on when none is given: this machine, two cores."""

_SPARK_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json", ".orc": "orc"}


class _SparkTypeCompiler(PGTypeCompiler):
    """Spark SQL's names for the types a binning casts to."""

    def visit_DATETIME(self, type_: Any, **kw: Any) -> str:  # noqa: N802 (SQLAlchemy's visitor name)
        return "TIMESTAMP"

    def visit_TIMESTAMP(self, type_: Any, **kw: Any) -> str:  # noqa: N802
        return "TIMESTAMP"

    def visit_FLOAT(self, type_: Any, **kw: Any) -> str:  # noqa: N802
        return "DOUBLE"

    def visit_double(self, type_: Any, **kw: Any) -> str:
        return "DOUBLE"

    def visit_DOUBLE_PRECISION(self, type_: Any, **kw: Any) -> str:  # noqa: N802
        return "DOUBLE"


class _SparkDialect(PGDialect):
    """PostgreSQL's SQL, which Spark reads with ``spark.sql.ansi.doubleQuotedIdentifiers`` on, with Spark's type
    names."""

    type_compiler_cls = _SparkTypeCompiler
    # Spark's parameter markers are ``:name``; values are bound by Spark, so no quoting rule of ours applies.
    default_paramstyle = "named"


_DIALECT = _SparkDialect(paramstyle="named")  # type: ignore[no-untyped-call]


def spark_session(master: str | None = None) -> SparkSession:
    """The active Spark session, or a new one on ``master`` (default ``local[2]``) set up for privsynth's queries.

    An existing session is reused as it is (the caller's configuration wins) except for the one SQL setting the
    queries need: double-quoted identifiers (column names with spaces or capitals).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SourceError("Spark sources need pyspark: pip install 'privsynth[spark]' (and Java 17 or later)") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        session = active
    else:
        if shutil.which("java") is None and not _java_home():
            raise SourceError("Spark needs Java 17 or later; install it (Debian: openjdk-17-jre-headless)")
        builder = (
            SparkSession.builder.master(master or DEFAULT_MASTER)
            .appName("privsynth")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.sql.session.timeZone", "UTC")
        )
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # py4j and Spark raise many types; the first line says what failed
            raise SourceError(f"Spark did not start on {master or DEFAULT_MASTER}: {first_line(exc)}") from None
        session.sparkContext.setLogLevel("ERROR")
    session.conf.set("spark.sql.ansi.doubleQuotedIdentifiers", "true")
    return session


class SparkSource(Source):
    """Rows of a Spark DataFrame; ``counts`` run as Spark SQL on a temporary view of them."""

    workload_joint_first = True
    """Spark's plan for ``GROUPING SETS`` copies every row once per set (``Expand``): in batches of 16 sets over
    the rows, 91 nassCDS pairs on 1M rows took 199 s in one batch, 99 s in batches of 16, 165 s in batches of 4 and
    222 s one by one (local[2] on a loaded machine). Grouping the batch's binned columns jointly first makes the
    copies of the joint's cells instead: the same 91 pairs in one query took 13.6 s of the JVM's CPU against
    33.9 s in six batches of 16 over the rows (``benchmarks/results/spark_workload.json``), so Spark takes the
    default batch of 64."""

    def __init__(self, frame: DataFrame, name: str, *, location: str, declares_types: bool = True) -> None:
        self._frame = frame
        self._spark = frame.sparkSession
        self._spark.conf.set("spark.sql.ansi.doubleQuotedIdentifiers", "true")
        self.name = name
        self.location = location
        self.declares_types = declares_types
        self._view = f"privsynth_{uuid.uuid4().hex}"
        frame.createOrReplaceTempView(self._view)
        self._columns = list(frame.columns)
        if len(set(self._columns)) != len(self._columns):
            raise SourceError(f"{name} has two columns of the same name; rename them in Spark first")
        self._from = sa.table(self._view, *(sa.column(c) for c in self._columns))

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def frame(self) -> DataFrame:
        """The Spark DataFrame behind the source."""
        return self._frame

    def num_rows(self) -> int:
        self.queries += 1
        return int(self._frame.count())

    def _relation(self) -> sa.FromClause:
        return self._from

    def _run_counts(self, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
        compiled = query.compile(dialect=_DIALECT)
        params = {key: _spark_value(value) for key, value in compiled.params.items()}
        logger.debug("counts on %s: %s", self.name, compiled)
        self.queries += 1
        try:
            rows = self._spark.sql(str(compiled), args=params).collect()
        except Exception as exc:  # Spark's AnalysisException and py4j errors; both name the failing part
            raise SourceError(f"querying {self.name} in Spark failed: {first_line(exc)}") from None
        return [tuple(row) for row in rows]

    def _chunks(self, columns: list[str], chunk_rows: int, limit: int | None) -> Iterator[pd.DataFrame]:
        frame = self._frame.select(*columns)
        if limit is not None:
            frame = frame.limit(limit)
        self.queries += 1
        buffer: list[tuple[Any, ...]] = []
        for row in frame.toLocalIterator(prefetchPartitions=True):
            buffer.append(tuple(row))
            if len(buffer) == chunk_rows:
                yield pd.DataFrame.from_records(buffer, columns=columns)
                buffer = []
        if buffer:
            yield pd.DataFrame.from_records(buffer, columns=columns)

    def storage_types(self) -> dict[str, str]:
        return {field.name: storage_kind(field.dataType.simpleString()) for field in self._frame.schema.fields}

    def fingerprint(self) -> str:
        # Like a database table, a Spark table is identified by where it lives, not by its (large) content.
        return digest(f"spark:{self.location}")

    def _sample(self, rows: int, seed: int) -> pd.DataFrame:
        """About ``rows`` rows drawn uniformly inside Spark (a Bernoulli sample, at most ``rows``): what a non-DP
        method fits on when the table is too large to read."""
        total = self.num_rows()
        fraction = min(1.0, 1.1 * rows / max(total, 1))
        sampled = self._frame.sample(withReplacement=False, fraction=fraction, seed=seed).limit(rows)
        self.queries += 1
        records = [tuple(r) for r in sampled.collect()]
        return pd.DataFrame.from_records(records, columns=self._columns)

    def _poisson_sample(self, rate: float, columns: list[str]) -> pd.DataFrame:
        """Each row kept by Spark with probability ``rate``: ``sample(withReplacement=False)`` is a Bernoulli
        sample (one uniform per row from each partition's generator), seeded with 63 bits from the operating
        system."""
        sampled = self._frame.select(*columns).sample(withReplacement=False, fraction=rate, seed=secrets.randbits(63))
        self.queries += 1
        records = [tuple(r) for r in sampled.collect()]
        return pd.DataFrame.from_records(records, columns=columns)

    def close(self) -> None:
        """Drop the temporary view (the session stays: it may be the caller's)."""
        self._spark.catalog.dropTempView(self._view)


def spark_source(
    data: DataFrame | str | Path | None = None,
    *,
    query: str | None = None,
    master: str | None = None,
    name: str | None = None,
) -> SparkSource:
    """Open rows in Spark: a ``pyspark.sql.DataFrame``, ``spark:TABLE`` (a catalog table), a Parquet, CSV, JSON,
    ORC or Delta path (a file or a folder of files), or, with ``query=``, the rows of a ``spark.sql`` query.

    ``master`` is the Spark master URL of a new session (default ``local[2]``); an active session is reused.
    """
    if (data is None) == (query is None):
        raise ParameterError("a Spark source needs exactly one of a table, path or data frame, or query=...")
    if query is not None:
        session = spark_session(master)
        try:
            frame = session.sql(str(query).strip().rstrip(";"))
        except Exception as exc:
            raise SourceError(f"the Spark query fails: {first_line(exc)}") from None
        return SparkSource(frame, name or "Spark query", location=f"query:{query}")
    if data is None:  # unreachable: checked above (for the type checker)
        raise ParameterError("a Spark source needs a table, path or data frame")
    if not isinstance(data, str | Path):
        return SparkSource(data, name or "Spark data frame", location=f"frame:{id(data)}")
    text = str(data)
    if text.startswith("spark:"):
        table = text.removeprefix("spark:")
        session = spark_session(master)
        try:
            frame = session.table(table)
        except Exception as exc:
            raise SourceError(f"Spark has no table '{table}': {first_line(exc)}") from None
        return SparkSource(frame, name or table, location=f"table:{table}")
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"'{path}' does not exist; give a Parquet, CSV or Delta path, or spark:TABLE")
    fmt = _format_of(path)
    session = spark_session(master)
    reader = session.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", "true").option("inferSchema", "true")
    try:
        frame = reader.load(str(path.resolve()))
    except Exception as exc:
        raise SourceError(f"Spark cannot read '{path}' as {fmt}: {first_line(exc)}") from None
    return SparkSource(frame, name or path.stem, location=f"path:{path.resolve()}", declares_types=fmt != "csv")


def _format_of(path: Path) -> str:
    if path.is_dir():
        if (path / "_delta_log").is_dir():
            return "delta"
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file() and not p.name.startswith(("_", "."))}
        formats = {_SPARK_SUFFIXES[s] for s in suffixes if s in _SPARK_SUFFIXES}
        if len(formats) == 1:
            return formats.pop()
        raise SourceError(f"folder '{path}' holds no single file type Spark reads (Parquet, CSV, JSON, ORC, Delta)")
    suffix = path.suffix.lower()
    if suffix not in _SPARK_SUFFIXES:
        raise SourceError(f"'{path}' has a file type Spark sources do not read ('{suffix}'); use Parquet or CSV")
    return _SPARK_SUFFIXES[suffix]


def _spark_value(value: Any) -> Any:
    """A bound value as Spark takes it: NumPy scalars as Python ones, non-finite floats as Spark doubles."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        from pyspark.sql import functions

        return functions.lit(value)
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _java_home() -> bool:
    import os

    home = os.environ.get("JAVA_HOME")
    return bool(home) and (Path(str(home)) / "bin" / "java").exists()
