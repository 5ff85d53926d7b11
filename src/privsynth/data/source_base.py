"""The query interface every source answers: :class:`Source`, rows of one table reachable only through queries.

A synthesizer asks a source how many rows it has, a contingency table of some columns under a data-independent
binning (:meth:`Source.counts`, one GROUP BY written once as a SQLAlchemy expression and compiled for the engine
that runs it), the rows per distinct value of a column, and rows in chunks for the methods that must read rows.
The engines are in :mod:`privsynth.data.duckdb_source` and :mod:`privsynth.data.sql_source`;
:func:`privsynth.data.sources.load_source` opens the right one.
"""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from privsynth.data.binning import OUTSIDE, Binning
from privsynth.errors import DataError, ParameterError

__all__ = ["Source", "digest", "first_line", "storage_kind", "unplaced_error"]


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

    queries: int = 0
    """Queries of counts, value counts and profiles this source has sent to its engine (for the benchmarks)."""

    workload_batch: int = 64
    """How many marginals :func:`privsynth.data.workload.counts_many` asks this engine for in one scan."""

    workload_joint_first: bool = False
    """Whether :func:`privsynth.data.workload.counts_many` groups a batch's binned columns jointly before its
    grouping sets (for engines whose grouping sets copy every row once per set: Spark)."""

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

    def sample(self, rows: int, seed: int = 0) -> pd.DataFrame:
        """A uniform random sample of ``rows`` rows (all of them if fewer), for a non-DP method fitting a table too
        large to read: engines draw it themselves (DuckDB's reservoir, PostgreSQL's ``TABLESAMPLE``, Spark's
        ``sample``); this default keeps a reservoir while the rows stream past in chunks, never holding more than
        ``rows`` of them."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ParameterError(f"rows must be a positive integer, not {rows!r}")
        return self._sample(rows, seed)

    def poisson_sample(self, rate: float, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """A Poisson sample of the rows: each row kept independently with probability ``rate``, drawn by the
        engine where it can draw one (DuckDB's and PostgreSQL's ``random() < rate``, Spark's Bernoulli ``sample``),
        so that only the kept rows leave it. This default streams every row past in chunks and keeps each with a
        generator seeded by the operating system, never holding more than the kept rows and one chunk.

        This is the sampling the RDP accountant of DP-SGD assumes (:func:`privsynth.synth._deep_net.fit_dp_sgd`).
        It takes no seed on purpose: every engine seeds its generator itself (DuckDB and PostgreSQL from the
        operating system, Spark from 63 bits of it), since a known seed would let an attacker predict which rows a
        DP-SGD step used. The generators are fast pseudo-random ones, not cryptographic, like torch's that draws
        the in-memory sample (see ``docs/PRIVACY_NOTES.md``).
        """
        if isinstance(rate, bool) or not isinstance(rate, float | int) or not 0 < rate <= 1:
            raise ParameterError(f"rate must be a probability in (0, 1], not {rate!r}")
        return self._poisson_sample(float(rate), self._columns_or_all(columns))

    def _poisson_sample(self, rate: float, columns: list[str]) -> pd.DataFrame:
        """:meth:`poisson_sample` for checked arguments: the streamed default, for engines that draw none."""
        rng = np.random.default_rng(secrets.randbits(128))
        kept = [chunk[rng.random(len(chunk)) < rate] for chunk in self._chunks(columns, 100_000, None)]
        return _concat(kept) if kept else self._empty(columns)

    def _sample(self, rows: int, seed: int) -> pd.DataFrame:
        """:meth:`sample` for a checked ``rows``: the streamed reservoir, for engines that draw no sample."""
        rng = np.random.default_rng(seed)
        kept: pd.DataFrame | None = None
        seen = 0
        for chunk in self._chunks(self.columns, 100_000, None):
            chunk = chunk.reset_index(drop=True)
            if kept is None or len(kept) < rows:
                take = chunk.iloc[: rows - (0 if kept is None else len(kept))]
                kept = take if kept is None else pd.concat([kept, take], ignore_index=True)
                chunk = chunk.iloc[len(take) :]
                seen += len(take)
            if len(chunk):
                # Algorithm R, vectorised: row t (1-based over the stream) replaces a random slot with
                # probability rows / t.
                t = seen + np.arange(1, len(chunk) + 1)
                slots = (rng.random(len(chunk)) * t).astype(np.int64)
                taken = np.flatnonzero(slots < rows)
                # A slot taken twice in one chunk keeps the later row, as the sequential algorithm would.
                last = pd.Series(taken, index=slots[taken]).groupby(level=0).last()
                for column in kept.columns:
                    kept.loc[last.index.to_numpy(), column] = chunk[column].iloc[last.to_numpy()].to_numpy()
                seen += len(chunk)
        return kept.reset_index(drop=True) if kept is not None else self._empty(self.columns)

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
            raise unplaced_error(bad)
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


def _concat(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0].reset_index(drop=True)


def storage_kind(engine_type: str) -> str:
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


def digest(data: str | bytes) -> str:
    """The SHA-256 of ``data`` in hex: how a source names its content or its location for the ledger."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def first_line(exc: BaseException) -> str:
    """An engine error's first line (or its type), for a message that does not quote the rest."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def unplaced_error(bad: Sequence[str]) -> DataError:
    """The error of ``counts(..., outside="error")`` for values that fit no cell (``bad``: "N value(s) of column
    'c'" each; for the custodian's checks, never on a DP path, which counts with ``outside="drop"``)."""
    return DataError(
        f"{', '.join(bad)} fit none of {'its' if len(bad) == 1 else 'their'} cells (a category missing "
        "from the domain, or a missing value where the column is not nullable); add them to the schema "
        "or allow an 'other' cell"
    )
