"""A table, or the rows of a query, in any database SQLAlchemy reaches: ``counts`` runs inside that database."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pandas as pd
import sqlalchemy as sa

from privsynth.data.source_base import Source, digest, first_line, storage_kind
from privsynth.errors import ParameterError, SourceError

__all__ = ["SQLSource", "database_tables"]

logger = logging.getLogger(__name__)


class SQLSource(Source):
    """A table (or query) in any database SQLAlchemy reaches; ``counts`` runs inside that database."""

    def __init__(self, url: str, table: str | None = None, query: str | None = None) -> None:
        if (table is None) == (query is None):
            raise ParameterError("a SQL URL needs exactly one of table=... or query=... (--table in the CLI)")
        self._engine, shown = _connect(url)
        self.url = url
        self.name = f"{shown} [{table or 'query'}]"
        self._table = table
        self._from: sa.FromClause
        if table is not None:
            schema, _, bare = table.rpartition(".")
            try:
                self._from = sa.Table(bare, sa.MetaData(), schema=schema or None, autoload_with=self._engine)
            except sa.exc.NoSuchTableError:
                raise SourceError(f"{shown} has no table '{table}'") from None
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(f"table '{table}' on {shown} cannot be read: {first_line(exc)}") from None
        else:
            # Every colon is text (no bind parameters are passed), and a trailing ';' would end the subquery.
            text = str(query).strip().rstrip(";").strip().replace(":", "\\:")
            try:
                with self._engine.connect() as con:
                    keys = list(con.execute(sa.text(f"SELECT * FROM ({text}) AS q WHERE 1 = 0")).keys())
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(f"the query on {shown} fails: {first_line(exc)}") from None
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
        self.queries += 1
        try:
            with self._engine.connect() as con:
                return [tuple(r) for r in con.execute(query).fetchall()]
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"querying {self.name} failed: {first_line(exc)}") from None

    def _chunks(self, columns: list[str], chunk_rows: int, limit: int | None) -> Iterator[pd.DataFrame]:
        query = sa.select(*(self._from.c[c] for c in columns))
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect().execution_options(stream_results=True) as con:
            yield from pd.read_sql(query, con, chunksize=chunk_rows)

    def _sample(self, rows: int, seed: int) -> pd.DataFrame:
        """On a PostgreSQL table, ``TABLESAMPLE BERNOULLI`` (seeded with ``REPEATABLE``) at 1.1 times the share
        wanted, then ``rows`` of those in a seeded random order: the database reads the table and sends only the sample.
        Other databases and queries: the streaming reservoir of :meth:`Source.sample`."""
        if self._engine.dialect.name != "postgresql" or not isinstance(self._from, sa.Table):
            return super()._sample(rows, seed)
        percent = min(100.0, 110.0 * rows / max(self.num_rows(), 1))
        sampled = sa.tablesample(self._from, sa.func.bernoulli(percent), seed=sa.literal(int(seed)))
        # Random order, seeded too: the hash of each sampled row's physical address and the seed.
        order = sa.func.md5(sa.cast(sa.literal_column("ctid"), sa.Text) + sa.literal(f":{int(seed)}"))
        query = sa.select(*sampled.c).order_by(order).limit(rows)
        try:
            with self._engine.connect() as con:
                return pd.read_sql(query, con)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"sampling {self.name} failed: {first_line(exc)}") from None

    def _poisson_sample(self, rate: float, columns: list[str]) -> pd.DataFrame:
        """On PostgreSQL, each row kept by the server with probability ``rate`` (``random() < rate`` after
        ``setseed`` with 52 bits from the operating system, on the same connection). Other databases differ in
        what ``random()`` returns: there the rows stream past and are kept by :meth:`Source.poisson_sample`."""
        if self._engine.dialect.name != "postgresql":
            return super()._poisson_sample(rate, columns)
        seed = secrets.randbits(52) / 2**52 * 2 - 1  # setseed takes a double in [-1, 1]
        query = sa.select(*(self._from.c[c] for c in columns)).where(sa.func.random() < sa.literal(rate, sa.Float))
        self.queries += 1
        try:
            with self._engine.connect() as con:
                con.execute(sa.select(sa.func.setseed(seed)))
                return pd.read_sql(query, con)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"sampling {self.name} failed: {first_line(exc)}") from None

    def storage_types(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for column in self._from.columns:
            try:
                python = column.type.python_type
            except NotImplementedError:
                python = str
            out[str(column.name)] = storage_kind(python.__name__)
        return out

    def fingerprint(self) -> str:
        # A database table is identified by where it lives, not by its (changing) content.
        where = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        return digest(f"sql:{where}:{self._table or str(self._from)}")


def _connect(url: str) -> tuple[sa.Engine, str]:
    """An engine on ``url``, checked by one ``SELECT 1``, and the URL as errors and names show it (no password)."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise SourceError(f"cannot connect to '{_hide_password(url)}': it is not a SQLAlchemy URL") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = sa.create_engine(parsed)
        with engine.connect() as con:
            con.execute(sa.text("SELECT 1"))
    except ImportError as exc:
        raise SourceError(
            f"cannot connect to {shown}: its database driver is not installed ({first_line(exc)})"
        ) from None
    except (sa.exc.SQLAlchemyError, ValueError) as exc:
        raise SourceError(f"cannot connect to {shown}: {first_line(exc)}") from None
    return engine, shown


def database_tables(url: str) -> list[str]:
    """The tables of the database's default schema at ``url``, sorted (errors name the URL without its password)."""
    engine, shown = _connect(url)
    try:
        return sorted(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"the tables of {shown} cannot be listed: {first_line(exc)}") from None
    finally:
        engine.dispose()


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
