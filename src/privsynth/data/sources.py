"""Where rows live, and the queries privsynth may run on them.

A :class:`Source` answers the few questions synthesizers ask: how many rows, a contingency table of some
columns under a data-independent binning (``counts``, one GROUP BY), and rows in chunks for the methods that
must read rows. ``counts`` is written once as a SQLAlchemy expression and compiled for the engine that runs
it: DuckDB for frames, CSV, Parquet and DuckDB files (streaming, so a Parquet file larger than memory works),
and the database itself for a SQL URL. Raw rows never leave the engine for ``counts``.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import logging
import math
from abc import ABC, abstractmethod
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

from privsynth.data.binning import OUTSIDE, Binning
from privsynth.data.hashing import file_sha256
from privsynth.errors import DataError, ParameterError, SourceError

logger = logging.getLogger(__name__)

CSV_SUFFIXES = {".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
DUCKDB_SUFFIXES = {".duckdb", ".ddb"}
_DELIMITERS = [",", ";", "\t", "|"]


class Source(ABC):
    """Rows of one table, reachable only through queries."""

    name: str

    @property
    @abstractmethod
    def columns(self) -> list[str]:
        """Column names, in table order."""

    @abstractmethod
    def num_rows(self) -> int:
        """Exact row count (a private statistic: do not release it without noise)."""

    @abstractmethod
    def _relation(self) -> sa.FromClause:
        """The table the queries of :meth:`counts` select from."""

    @abstractmethod
    def _run_counts(self, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
        """Execute a GROUP BY query built by :meth:`counts` and return its rows."""

    @abstractmethod
    def _chunks(self, columns: list[str], chunk_rows: int, limit: int | None) -> Iterator[pd.DataFrame]:
        """Up to ``limit`` rows of ``columns`` (all if None), in chunks of ``chunk_rows`` but the last."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A hash that identifies the data (content for files and frames, location for databases).

        A function of the private rows: keep it on the custodian's side (the ledger stores only a keyed hash of
        it); never put it in a DP release."""

    declares_types: bool = True
    """Whether :meth:`storage_types` are declared by the storage (Parquet, a database, a typed frame) rather than
    guessed from the values (a CSV file)."""

    @abstractmethod
    def storage_types(self) -> dict[str, str]:
        """Each column's type as the engine stores it (``integer``, ``float``, ``datetime``, ``boolean`` or
        ``string``): the structure a DP fit may use without a reviewed schema. A CSV file's types are what DuckDB's
        reader declares for it."""

    def iter_chunks(self, columns: Sequence[str] | None = None, chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
        """Rows in chunks of ``chunk_rows`` (the last may be shorter), for methods that must see rows."""
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ParameterError(f"chunk_rows must be a positive integer, not {chunk_rows!r}")
        return self._chunks(self._columns_or_all(columns), chunk_rows, None)

    def head(self, rows: int = 10_000, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The first ``rows`` rows, or all if fewer (for schema inference on sources too large to read whole).

        Files and frames keep their row order; a database table has none, so there "first" means any.
        """
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ParameterError(f"rows must be a non-negative integer, not {rows!r}")
        names = self._columns_or_all(columns)
        chunks = list(self._chunks(names, max(rows, 1), rows))
        return _concat(chunks) if chunks else self._empty(names)

    def to_pandas(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All rows as one frame. Avoid on sources larger than memory; prefer ``counts``, ``iter_chunks``."""
        names = self._columns_or_all(columns)
        chunks = list(self._chunks(names, 100_000, None))
        return _concat(chunks) if chunks else self._empty(names)

    def counts(
        self,
        columns: Sequence[str],
        binnings: Sequence[Binning] | Mapping[str, Binning],
        *,
        outside: str = "error",
    ) -> np.ndarray:
        """The contingency table of ``columns`` under ``binnings``: an int64 array of shape (b1.size, ...).

        Cell ``[i, j, ...]`` counts rows whose first column falls in cell ``i`` of the first binning, and so
        on. A value that fits no cell (a category missing from a list without an ``other`` cell, or a missing
        value without a ``null`` cell) is a :class:`DataError` naming how many (for the custodian's checks);
        with ``outside="drop"`` such rows are left out of the table and nothing is said, which is what a DP
        mechanism needs: one record still changes one cell by at most one, and no error tells whether such a
        record exists.
        """
        if outside not in ("error", "drop"):
            raise ParameterError(f"outside must be 'error' or 'drop', not {outside!r}")
        columns = list(columns)
        if isinstance(binnings, Mapping):
            absent = [c for c in columns if c not in binnings]
            if absent:
                raise ParameterError(f"counts has no binning for column '{absent[0]}'")
            binnings = [binnings[c] for c in columns]
        if len(binnings) != len(columns):
            raise ParameterError(f"counts needs one binning per column; got {len(binnings)} for {columns}")
        self._check_columns(columns)
        table = self._relation()
        cells = [b.sql(table.c[c]).label(f"c{i}") for i, (c, b) in enumerate(zip(columns, binnings, strict=True))]
        query = sa.select(*cells, sa.func.count().label("n")).select_from(table)
        if cells:
            # Positional GROUP BY: the CASE expressions carry bound values, which some engines will not match
            # between the select list and a repeated GROUP BY expression.
            query = query.group_by(*(sa.literal_column(str(i + 1)) for i in range(len(cells))))
        out = np.zeros(tuple(b.size for b in binnings), dtype=np.int64)
        unplaced = dict.fromkeys(columns, 0)
        for row in self._run_counts(query):
            index, n = tuple(int(v) for v in row[:-1]), int(row[-1])
            if OUTSIDE in index:
                for column, cell in zip(columns, index, strict=True):
                    if cell == OUTSIDE:
                        unplaced[column] += n
                continue
            out[index] += n
        bad = [f"{n} value(s) of column '{c}'" for c, n in unplaced.items() if n]
        if bad and outside == "error":
            raise DataError(
                f"{', '.join(bad)} fit none of {'its' if len(bad) == 1 else 'their'} cells (a category missing "
                "from the domain, or a missing value where the column is not nullable); add them to the schema "
                "or allow an 'other' cell"
            )
        return out

    def value_counts(self, column: str) -> list[tuple[Any, int]]:
        """Rows per distinct value of ``column`` (one GROUP BY on the raw value), missing values as ``None``.

        This is the histogram DP key discovery needs when a column's categories are not public; its keys and
        counts are private and may only be released through a mechanism. Like :meth:`counts` it runs inside
        the engine and returns one row per distinct value, in no particular order.
        """
        self._check_columns([column])
        table = self._relation()
        query = (
            sa.select(table.c[column].label("v"), sa.func.count().label("n"))
            .select_from(table)
            .group_by(sa.literal_column("1"))
        )
        return [(row[0], int(row[1])) for row in self._run_counts(query)]

    def _columns_or_all(self, columns: Sequence[str] | None) -> list[str]:
        names = self.columns if columns is None else list(columns)
        self._check_columns(names)
        return names

    def _check_columns(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise DataError(f"{self.name} has no column(s) {missing}; it has {self.columns}")

    def _empty(self, columns: list[str]) -> pd.DataFrame:
        return pd.DataFrame(columns=columns)


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
                    str(c): _storage_kind(str(t)) for c, t in zip(relation.columns, relation.types, strict=True)
                }
        except duckdb.Error as exc:
            raise DataError(f"{name} cannot be read: {_first_line(exc)}") from None

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


class SQLSource(Source):
    """A table (or query) in any database SQLAlchemy reaches; ``counts`` runs inside that database."""

    def __init__(self, url: str, table: str | None = None, query: str | None = None) -> None:
        if (table is None) == (query is None):
            raise ParameterError("a SQL URL needs exactly one of table=... or query=... (--table in the CLI)")
        try:
            parsed = sa.engine.make_url(url)
        except (sa.exc.ArgumentError, ValueError):
            raise SourceError(f"cannot connect to '{_hide_password(url)}': it is not a SQLAlchemy URL") from None
        shown = parsed.render_as_string(hide_password=True)
        self.url = url
        self.name = f"{shown} [{table or 'query'}]"
        try:
            self._engine = sa.create_engine(parsed)
            with self._engine.connect() as con:
                con.execute(sa.text("SELECT 1"))
        except ImportError as exc:
            raise SourceError(
                f"cannot connect to {shown}: its database driver is not installed ({_first_line(exc)})"
            ) from None
        except (sa.exc.SQLAlchemyError, ValueError) as exc:
            raise SourceError(f"cannot connect to {shown}: {_first_line(exc)}") from None
        self._table = table
        self._from: sa.FromClause
        if table is not None:
            schema, _, bare = table.rpartition(".")
            try:
                self._from = sa.Table(bare, sa.MetaData(), schema=schema or None, autoload_with=self._engine)
            except sa.exc.NoSuchTableError:
                raise SourceError(f"{shown} has no table '{table}'") from None
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(f"table '{table}' on {shown} cannot be read: {_first_line(exc)}") from None
        else:
            # Every colon is text (no bind parameters are passed), and a trailing ';' would end the subquery.
            text = str(query).strip().rstrip(";").strip().replace(":", "\\:")
            try:
                with self._engine.connect() as con:
                    keys = list(con.execute(sa.text(f"SELECT * FROM ({text}) AS q WHERE 1 = 0")).keys())
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(f"the query on {shown} fails: {_first_line(exc)}") from None
            self._from = sa.text(text).columns(*(sa.column(k) for k in keys)).subquery("source")
        self._columns = [str(c.name) for c in self._from.columns]

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def num_rows(self) -> int:
        return int(self._run_counts(sa.select(sa.func.count()).select_from(self._from))[0][0])

    def _relation(self) -> sa.FromClause:
        return self._from

    def _run_counts(self, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
        logger.debug("counts on %s: %s", self.name, query)
        try:
            with self._engine.connect() as con:
                return [tuple(r) for r in con.execute(query).fetchall()]
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"querying {self.name} failed: {_first_line(exc)}") from None

    def _chunks(self, columns: list[str], chunk_rows: int, limit: int | None) -> Iterator[pd.DataFrame]:
        query = sa.select(*(self._from.c[c] for c in columns))
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect().execution_options(stream_results=True) as con:
            yield from pd.read_sql(query, con, chunksize=chunk_rows)

    def storage_types(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for column in self._from.columns:
            try:
                python = column.type.python_type
            except NotImplementedError:
                python = str
            out[str(column.name)] = _storage_kind(python.__name__)
        return out

    def fingerprint(self) -> str:
        # A database table is identified by where it lives, not by its (changing) content.
        where = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        return _digest(f"sql:{where}:{self._table or str(self._from)}")


def load_source(
    data: pd.DataFrame | str | Path | Source,
    *,
    table: str | None = None,
    query: str | None = None,
    delimiter: str | None = None,
    name: str | None = None,
) -> Source:
    """Open ``data``: a DataFrame, a CSV, Parquet or DuckDB path, or a SQLAlchemy URL.

    ``table`` names a table of a DuckDB file or a database; ``query`` (databases only) selects the rows with
    SQL; ``delimiter`` is the CSV field separator, sniffed when not given.
    """
    if isinstance(data, Source):
        return data
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
        return _duckdb_table_source(path, table)
    if suffix in PARQUET_SUFFIXES:
        _no_table(table, "a Parquet file")
        return _file_source(path, f"read_parquet({_literal(str(path))})")
    if suffix in CSV_SUFFIXES or suffix == "":
        _no_table(table, "a CSV file")
        return _csv_source(path, delimiter)
    raise DataError(f"'{path}' has an unknown file type '{suffix}'; use .csv, .parquet or .duckdb")


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
    return DuckDBSource(duckdb.connect(), name, _digest(header + content), frame=frame, declares_types=False)


def _as_text(value: Any) -> str:
    return str(value)


def _file_source(path: Path, relation: str) -> DuckDBSource:
    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW source AS SELECT * FROM {relation}")
    except duckdb.Error as exc:
        raise DataError(f"'{path}' cannot be read: {_first_line(exc)}") from None
    return DuckDBSource(con, str(path), partial(file_sha256, path))


def _csv_source(path: Path, delimiter: str | None) -> DuckDBSource:
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


def _duckdb_table_source(path: Path, table: str | None) -> DuckDBSource:
    if table is None:
        raise ParameterError(f"'{path}' is a DuckDB database; say which table to read with --table")
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {_literal(str(path))} AS db (READ_ONLY)")
        con.execute(f"CREATE VIEW source AS SELECT * FROM db.{_quote(table)}")
    except duckdb.Error as exc:
        raise SourceError(f"table '{table}' in '{path}' cannot be read: {_first_line(exc)}") from None
    return DuckDBSource(con, f"{path} [{table}]", _digest(f"duckdb:{path.resolve()}:{table}"))


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


def _concat(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0].reset_index(drop=True)


def _no_table(table: str | None, what: str) -> None:
    if table is not None:
        raise ParameterError(f"table= only applies to a DuckDB file or a SQL URL, not to {what}")


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


def _storage_kind(engine_type: str) -> str:
    """``integer``, ``float``, ``datetime``, ``boolean`` or ``string`` for an engine's (or Python's) type name."""
    name = engine_type.upper()
    if name.startswith(("BOOL",)):
        return "boolean"
    if any(t in name for t in ("INT", "HUGEINT")):
        return "integer"
    if any(t in name for t in ("FLOAT", "DOUBLE", "DECIMAL", "REAL", "NUMERIC")):
        return "float"
    if any(t in name for t in ("TIMESTAMP", "DATE")):
        return "datetime"
    return "string"


def _digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


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


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
