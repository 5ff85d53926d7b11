"""Sources evaluated by an in-process DuckDB: a pandas frame, a CSV or Parquet file, a table of a DuckDB file.

DuckDB streams files (a Parquet file larger than memory works) and scans a frame without copying it. The
:class:`~privsynth.data.source_base.Source` queries are compiled with PostgreSQL's SQLAlchemy dialect, adjusted
so date and time literals keep their type.
"""

from __future__ import annotations

import datetime
import gzip
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGCompiler, PGDialect

from privsynth.data.hashing import file_sha256
from privsynth.data.source_base import Source, digest, first_line, storage_kind
from privsynth.errors import DataError, ParameterError, SourceError

__all__ = ["DuckDBSource", "csv_source", "duckdb_table_source", "frame_source", "parquet_source"]

logger = logging.getLogger(__name__)

_DELIMITERS = [",", ";", "\t", "|"]


class _DuckDBCompiler(PGCompiler):
    """PostgreSQL SQL as DuckDB should read it: date and time literals are typed.

    A bare string next to a DATE column is cast to DATE, which would drop the time of day of a bin edge.
    """

    def render_literal_value(self, value: Any, type_: sa.types.TypeEngine[Any]) -> str:
        if isinstance(value, datetime.datetime):
            kind = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
            return f"{kind} '{value.isoformat(sep=' ')}'"
        if isinstance(value, datetime.date):
            return f"DATE '{value.isoformat()}'"
        if isinstance(value, float) and not math.isfinite(value):
            return f"'{value}'::DOUBLE"
        return str(super().render_literal_value(value, type_))  # type: ignore[no-untyped-call]


class _DuckDBDialect(PGDialect):
    statement_compiler = _DuckDBCompiler


# A placeholder style other than pyformat, so that '%' in a literal or a name is not doubled to '%%'.
_DUCKDB_DIALECT = _DuckDBDialect(paramstyle="qmark")  # type: ignore[no-untyped-call]


class DuckDBSource(Source):
    """A relation evaluated by an in-process DuckDB: a pandas frame, a CSV or Parquet file, a DuckDB table."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        name: str,
        fingerprint: str | Callable[[], str],
        frame: pd.DataFrame | None = None,
        *,
        view: str = "source",
        declares_types: bool = True,
    ) -> None:
        self._con = connection
        self.name = name
        self._fingerprint = fingerprint
        self._frame = frame
        self._view = view
        self.declares_types = declares_types
        self._as_text: str | None = None  # a CSV file read with every column as text, skipping malformed lines
        try:
            with self._cursor() as cursor:
                relation = cursor.sql(f"SELECT * FROM {view} LIMIT 0")
                self._columns = [str(c) for c in relation.columns]
                self._text = {str(c) for c, t in zip(relation.columns, relation.types, strict=True) if t == "VARCHAR"}
                self._types = {
                    str(c): storage_kind(str(t)) for c, t in zip(relation.columns, relation.types, strict=True)
                }
        except duckdb.Error as exc:
            raise DataError(f"{name} cannot be read: {first_line(exc)}") from None

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def _relation(self) -> sa.FromClause:
        return sa.table(self._view, *(sa.column(c, sa.String() if c in self._text else None) for c in self._columns))

    def num_rows(self) -> int:
        return int(self._fetch(f"SELECT count(*) FROM {self._view}")[0][0])

    def _run_counts(self, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
        sql = str(query.compile(dialect=_DUCKDB_DIALECT, compile_kwargs={"literal_binds": True}))
        logger.debug("counts on %s: %s", self.name, sql)
        self.queries += 1
        return self._fetch(sql)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for each query, so that a query does not break an open chunk reader."""
        cursor = self._con.cursor()
        if self._frame is not None:
            # A registered frame is visible only to the connection it was registered with.
            cursor.register("source", self._frame)
        return cursor

    def _fetch(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            with self._cursor() as cursor:
                return [tuple(r) for r in cursor.execute(sql).fetchall()]
        except duckdb.Error as exc:
            raise _read_error(self.name, exc) from None

    def _sample(self, rows: int, seed: int) -> pd.DataFrame:
        """``rows`` rows drawn by DuckDB's reservoir sample (seeded; one pass, ``rows`` rows held)."""
        names = ", ".join(_quote(c) for c in self._columns)
        return self._select(
            f"SELECT {names} FROM {self._view} USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({int(seed)})"
        )

    def _poisson_sample(self, rate: float, columns: list[str]) -> pd.DataFrame:
        """Each row kept by DuckDB with probability ``rate`` (``random() < rate``, one uniform per row from
        DuckDB's generator, which it seeds from the operating system: no seed is set)."""
        names = ", ".join(_quote(c) for c in columns)
        self.queries += 1
        return self._select(f"SELECT {names} FROM {self._view} WHERE random() < {float(rate)!r}")

    def _select(self, sql: str) -> pd.DataFrame:
        """The rows ``sql`` selects, as a frame with the types chunks have; DuckDB's errors as a read error."""
        try:
            with self._cursor() as cursor:
                out: pd.DataFrame = cursor.sql(sql).to_arrow_table().to_pandas()
                return out
        except duckdb.Error as exc:
            raise _read_error(self.name, exc) from None

    def _chunks(self, columns: list[str], chunk_rows: int, limit: int | None) -> Iterator[pd.DataFrame]:
        sql = f"SELECT {', '.join(_quote(c) for c in columns)} FROM {self._view}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self._cursor()
        try:
            reader = cursor.sql(sql).to_arrow_reader(chunk_rows)
        except duckdb.Error as exc:
            cursor.close()
            raise _read_error(self.name, exc) from None
        return _rechunk(self._batches(reader, cursor), chunk_rows)

    def _batches(self, reader: pa.RecordBatchReader, cursor: duckdb.DuckDBPyConnection) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except (duckdb.Error, OSError) as exc:  # an error met while streaming arrives as OSError
            raise _read_error(self.name, exc) from None
        finally:
            reader.close()
            cursor.close()

    def storage_types(self) -> dict[str, str]:
        return dict(self._types)

    def retyped(self, types: Mapping[str, str]) -> DuckDBSource:
        """The same rows with each column cast to ``types`` (``integer``, ``float``, ``datetime``, ``boolean``,
        ``string``) by ``TRY_CAST``: a value that does not parse becomes missing. Columns not named keep their type.

        A CSV file is read again with every column as text and malformed lines skipped, so that nothing about
        its values (a type guessed from its first rows, a line that does not parse) can make a read fail: this
        is how a DP fit reads a CSV file."""
        casts = {"integer": "BIGINT", "float": "DOUBLE", "datetime": "TIMESTAMP", "boolean": "BOOLEAN"}
        casts["string"] = "VARCHAR"
        select = ", ".join(
            f"TRY_CAST(CAST({_quote(c)} AS VARCHAR) AS {casts[types[c]]}) AS {_quote(c)}" if c in types else _quote(c)
            for c in self._columns
        )
        view = f"typed_{len(self._views())}"
        with self._cursor() as cursor:
            cursor.execute(f"CREATE VIEW {view} AS SELECT {select} FROM {self._as_text or self._view}")
        return DuckDBSource(self._con, self.name, self._fingerprint, self._frame, view=view)

    def parse_counts(self, columns: Sequence[str]) -> np.ndarray:
        """Per column, in one scan: how many values are non-empty, how many of those do not parse as a number,
        how many numbers are not whole, and how many non-numbers do not parse as a timestamp; shape
        (len(columns), 4). Exact counts of private rows: release them only through a mechanism (each row adds at
        most one to each of them)."""
        self._check_columns(columns)
        parts: list[str] = []
        for column in columns:
            text = f"NULLIF(trim(CAST({_quote(column)} AS VARCHAR)), '')"
            number = f"TRY_CAST({text} AS DOUBLE)"
            parts += [
                f"count({text})",
                f"count(CASE WHEN {text} IS NOT NULL AND {number} IS NULL THEN 1 END)",
                f"count(CASE WHEN {number} IS NOT NULL AND NOT (isfinite({number}) AND {number} = round({number})) "
                "THEN 1 END)",
                f"count(CASE WHEN {text} IS NOT NULL AND {number} IS NULL AND TRY_CAST({text} AS TIMESTAMP) IS NULL "
                "THEN 1 END)",
            ]
        row = self._fetch(f"SELECT {', '.join(parts)} FROM {self._as_text or self._view}")[0]
        return np.asarray(row, dtype=np.int64).reshape(len(columns), 4)

    def _views(self) -> list[str]:
        return [str(r[0]) for r in self._fetch("SELECT view_name FROM duckdb_views() WHERE NOT internal")]

    def fingerprint(self) -> str:
        # A file is hashed when first asked, not on opening: reading it whole is the cost of a large file.
        if not isinstance(self._fingerprint, str):
            self._fingerprint = self._fingerprint()
        return self._fingerprint


def frame_source(df: pd.DataFrame, name: str = "data frame") -> DuckDBSource:
    """A source over a pandas frame held in memory (DuckDB scans it without copying)."""
    if df.shape[1] == 0:
        raise DataError(f"{name} has no columns")
    if len(set(map(str, df.columns))) != df.shape[1]:
        raise DataError(f"{name} has duplicate column names: {list(df.columns)}")
    frame = df.rename(columns=str)
    content = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    header = "|".join(frame.columns).encode()
    # DuckDB types an object column from a sample of its values and fails on a later value of another type:
    # a column that mixes types is handed over as text, so that no value can make a query fail.
    mixed = [c for c in frame.columns if frame[c].dtype == object and "mixed" in pd.api.types.infer_dtype(frame[c])]
    if mixed:
        frame = frame.assign(**{c: frame[c].map(_as_text, na_action="ignore").astype("string") for c in mixed})
    # pandas guesses a CSV's dtypes from its values; a DP fit without a schema chooses kinds under DP instead.
    return DuckDBSource(duckdb.connect(), name, digest(header + content), frame=frame, declares_types=False)


def _as_text(value: Any) -> str:
    return str(value)


def _file_source(path: Path, relation: str) -> DuckDBSource:
    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW source AS SELECT * FROM {relation}")
    except duckdb.Error as exc:
        raise DataError(f"'{path}' cannot be read: {first_line(exc)}") from None
    return DuckDBSource(con, str(path), partial(file_sha256, path))


def parquet_source(path: Path) -> DuckDBSource:
    """A Parquet file, streamed by DuckDB (a file larger than memory works)."""
    return _file_source(path, f"read_parquet({_literal(str(path))})")


def csv_source(path: Path, delimiter: str | None) -> DuckDBSource:
    lines = _nonblank_lines(path, 2)
    if not lines:
        raise DataError(f"'{path}' is empty; a CSV needs a header line and at least one row")
    if len(lines) < 2:
        raise DataError(f"'{path}' has a header but no rows")
    options = "header = true"
    if delimiter is not None:
        options += f", delim = {_literal(delimiter)}"
    source = _file_source(path, f"read_csv({_literal(str(path))}, {options})")
    source.declares_types = False  # DuckDB reads a CSV file's types from its values
    source._as_text = f"read_csv({_literal(str(path))}, {options}, all_varchar = true, ignore_errors = true)"
    if len(source.columns) == 1:
        found = [d for d in _DELIMITERS if d in lines[0] and d != delimiter]
        if found:
            raise DataError(
                f"'{path}' was read as a single column, but its header contains {found[0]!r}; "
                f"pass --delimiter {found[0]!r} (or delimiter={found[0]!r})"
            )
    return source


def duckdb_table_source(path: Path, table: str | None) -> DuckDBSource:
    if table is None:
        raise ParameterError(f"'{path}' is a DuckDB database; say which table to read with --table")
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {_literal(str(path))} AS db (READ_ONLY)")
        con.execute(f"CREATE VIEW source AS SELECT * FROM db.{_quote(table)}")
    except duckdb.Error as exc:
        raise SourceError(f"table '{table}' in '{path}' cannot be read: {first_line(exc)}") from None
    return DuckDBSource(con, f"{path} [{table}]", digest(f"duckdb:{path.resolve()}:{table}"))


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pd.DataFrame]:
    """Frames of exactly ``rows`` rows (the last may be shorter), whatever the sizes of the batches read."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).to_pandas()
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).to_pandas()


def _nonblank_lines(path: Path, n: int) -> list[str]:
    """The first ``n`` lines that are not blank (fewer if the file has fewer)."""
    opener: Any = gzip.open if path.suffix.lower() == ".gz" else open
    found: list[str] = []
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                found.append(line)
                if len(found) == n:
                    break
    return found


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_error(name: str, exc: BaseException) -> DataError:
    """DuckDB's first line, its conversion detail if any (not the raw line it quotes), and what to do."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = "; ".join(lines[:1] + [line for line in lines[1:] if line.startswith("Error when converting")])
    if "CSV Error" in message:
        message += (
            " (the column types of a CSV are guessed from its first rows: correct the value, or convert the file "
            "to Parquet with the types you mean)"
        )
    return DataError(f"reading {name} failed: {message or type(exc).__name__}")
