"""Where privsynth's own database is and how it is opened: the one set-up shared by the privacy ledger, the
release registry (:mod:`privsynth.provenance.lineage`) and the service's store, which keep their tables in the
same database.

The database is a SQLite file by default (``~/.privsynth/ledger.sqlite``, or ``$PRIVSYNTH_LEDGER``); any
SQLAlchemy URL works. On SQLite a connection waits up to a minute for another process's write lock instead of
failing at once; a writer that must check and then insert (the ledger's cap check) takes the lock at ``BEGIN``
(:func:`open_engine` with ``serialized=True``), and reads can go through a second engine that never queues behind
a writer (:func:`open_reader`). SQLite hands back naive datetimes; every timestamp stored is UTC (:func:`utc`).
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, overload

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = [
    "DEFAULT_LEDGER_PATH",
    "LEDGER_ENV_VAR",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "display_url",
    "is_sqlite",
    "open_engine",
    "open_reader",
    "resolve_url",
    "utc",
]

LEDGER_ENV_VAR: Final = "PRIVSYNTH_LEDGER"
DEFAULT_LEDGER_PATH: Final = Path("~/.privsynth/ledger.sqlite")
SQLITE_BUSY_TIMEOUT_SECONDS: Final = 60.0


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """A SQLAlchemy URL from an argument, ``$PRIVSYNTH_LEDGER`` or the default path, in that order."""
    chosen: str | os.PathLike[str] = url or os.environ.get(LEDGER_ENV_VAR) or DEFAULT_LEDGER_PATH
    text = os.fspath(chosen)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def is_sqlite(url: str) -> bool:
    """Whether ``url`` is a SQLite database (a file, or in memory)."""
    return make_url(url).get_backend_name() == "sqlite"


def display_url(url: str) -> str:
    """``url`` with any password hidden: the form a log line, an error or a ``repr`` may show."""
    return make_url(url).render_as_string(hide_password=True)


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite hands back naive ones; every timestamp stored is UTC)."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def open_engine(url: str, *, serialized: bool = False) -> Engine:
    """An engine on ``url``; on SQLite its connections wait for another process's write lock (up to
    :data:`SQLITE_BUSY_TIMEOUT_SECONDS`), and with ``serialized`` every transaction takes the write lock at BEGIN,
    so a check followed by an insert cannot interleave with another process's."""
    sqlite = is_sqlite(url)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS} if sqlite else {}
    engine = create_engine(url, connect_args=connect_args)
    if sqlite and serialized:
        _serialize_sqlite_transactions(engine)
    return engine


def open_reader(url: str, writer: Engine, *, wal: bool = False) -> Engine:
    """An engine for reads that never queue behind a write: on SQLite a second engine on the file, which does not
    take the write lock (with ``wal``, the file is switched to WAL mode, stored in the file, so readers do not
    wait for a writer at all); elsewhere ``writer`` itself."""
    if not is_sqlite(url):
        return writer
    reader = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    if wal:
        with reader.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    return reader


def _serialize_sqlite_transactions(engine: Engine) -> None:
    """Make every SQLite transaction take the write lock at BEGIN, so check-then-insert cannot interleave.

    pysqlite's own transaction handling is switched off (it would issue a plain deferred BEGIN), as the
    SQLAlchemy documentation recommends for controlling SQLite's locking.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
