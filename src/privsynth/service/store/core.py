"""The service's database: users, datasets, grants, jobs, releases and the audit log, beside the privacy ledger.

The tables live in the same database as the ledger (SQLite by default, PostgreSQL by URL) and every write runs
on the ledger's engine, so a job's reservation is taken in the transaction that creates the job, and committed
in the transaction that records its release: a release never exists without its spend, and a spend is never
made twice. On SQLite each write transaction holds the database's write lock from BEGIN; reads go through a
second engine in WAL mode and never wait for a writer.

Tokens are stored as SHA-256 hashes: a token is 32 random bytes, so a slow password hash would add nothing but
latency to every request. Secrets that would make a reader of this database an admin or a database user are kept
elsewhere (see :mod:`privsynth.service.security`): the session-signing key, and SQL sources' passwords. A web
session is a row here, so signing out, rotating a token or disabling a user ends it at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Double, insert, inspect, select, text, update

from privsynth.privacy.database import is_sqlite, open_reader
from privsynth.privacy.ledger import Ledger
from privsynth.service.security import Credentials, without_password
from privsynth.service.store.jobs import JobTables
from privsynth.service.store.records import ledger_key
from privsynth.service.store.releases import ReleaseTables
from privsynth.service.store.tables import datasets_table, grants_table, metadata, releases_table, settings_table
from privsynth.service.store.users import UserTables

logger = logging.getLogger(__name__)


class Store(UserTables, JobTables, ReleaseTables):
    """The service's tables and the privacy ledger, in one database at ``url`` (a SQLAlchemy URL).

    ``data_dir``: the service's folder, where SQL sources' passwords are kept (outside the database); a store
    opened without it reads SQL datasets' URLs without their passwords.
    """

    def __init__(self, url: str, data_dir: Path | None = None) -> None:
        self.ledger = Ledger(url)
        self.url = self.ledger.url
        self._write = self.ledger.engine
        self.sqlite = is_sqlite(self.url)
        self._read = open_reader(self.url, self._write, wal=True)  # readers never wait for the writer
        self.credentials = None if data_dir is None else Credentials(data_dir)
        metadata.create_all(self._write)
        self._locate_credentials(data_dir)
        self._upgrade()
        self._key_budgets_by_dataset()

    def _locate_credentials(self, data_dir: Path | None) -> None:
        """Where SQL sources' passwords are: the service's data folder, recorded here by the service (a path, not a
        secret), so that a process that opens the store by its URL only (a job's process, a CLI command) finds
        them too; an explicit ``data_dir`` wins and is recorded."""
        with self.ledger.begin() as connection:
            recorded = connection.execute(
                select(settings_table.c.value).where(settings_table.c.key == "data_dir")
            ).scalar()
            if data_dir is None:
                if recorded is not None:
                    self.credentials = Credentials(Path(recorded))
                return
            folder = str(Path(data_dir).resolve())
            if recorded != folder:
                connection.execute(settings_table.delete().where(settings_table.c.key == "data_dir"))
                connection.execute(insert(settings_table).values(key="data_dir", value=folder))

    def _upgrade(self) -> None:
        """Bring a database made by an earlier version up to date: add the users' ``disabled_at``, the grants'
        ``share`` (None: the role's default) and the releases' ``published`` (false: a non-DP release stays hidden
        from analysts until a custodian publishes it), drop the
        session key it kept in ``service_settings`` (a reader of the database could sign cookies with it), and
        move SQL sources' passwords out of their stored URLs."""
        columns = {c["name"] for c in inspect(self._write).get_columns("service_users")}
        grants = {c["name"] for c in inspect(self._write).get_columns(grants_table.name)}
        releases = {c["name"] for c in inspect(self._write).get_columns(releases_table.name)}
        with self.ledger.begin() as connection:
            if "disabled_at" not in columns:
                connection.execute(text("ALTER TABLE service_users ADD COLUMN disabled_at TIMESTAMP"))
            if "share" not in grants:
                kind = Double().compile(dialect=connection.dialect)
                connection.execute(text(f"ALTER TABLE {grants_table.name} ADD COLUMN share {kind}"))
            if "published" not in releases:
                connection.execute(
                    text(f"ALTER TABLE {releases_table.name} ADD COLUMN published BOOLEAN NOT NULL DEFAULT FALSE")
                )
            connection.execute(settings_table.delete().where(settings_table.c.key == "session"))
            if self.credentials is None:
                return
            rows = connection.execute(
                select(datasets_table.c.id, datasets_table.c.location).where(datasets_table.c.kind == "sql")
            ).all()
            for dataset_id, location in rows:
                stored, password = without_password(location)
                if password:
                    self.credentials.put(dataset_id, password)
                    connection.execute(
                        update(datasets_table).where(datasets_table.c.id == dataset_id).values(location=stored)
                    )

    def _key_budgets_by_dataset(self) -> None:
        """Give each dataset registered before budgets were kept per dataset id its own budget: the oldest
        dataset over some data takes the budget its fingerprint had (cap, spends and reservations move with it);
        a later one that shared that budget gets a budget without a cap, so nothing runs on it until its
        custodians set one (the spends they shared stay with the first)."""
        known = {record.name for record in self.ledger.datasets()}
        query = select(datasets_table.c.id, datasets_table.c.fingerprint).order_by(datasets_table.c.created_at)
        with self._read.connect() as connection:
            rows = connection.execute(query).all()
        for dataset_id, fingerprint in rows:
            key = ledger_key(dataset_id)
            if key in known:
                continue
            if fingerprint in known:
                self.ledger.rename(fingerprint, key)
                known.discard(fingerprint)
            else:
                self.ledger.register(key)
                logger.warning("dataset %s shared its budget with an older dataset: it has no cap until set", key)
            known.add(key)

    def close(self) -> None:
        """Release the database connections."""
        self._read.dispose()
        self.ledger.close()
