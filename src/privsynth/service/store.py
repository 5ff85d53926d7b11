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

import hashlib
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.budget import Budget
from privsynth.privacy.ledger import DatasetRecord, Ledger
from privsynth.service.security import Credentials, with_password, without_password

__all__ = ["ROLES", "DatasetRow", "JobRow", "ReleaseRow", "Store", "User"]

logger = logging.getLogger(__name__)

ROLES: Final = ("admin", "custodian", "analyst")
GRANT_ROLES: Final = ("custodian", "analyst")
Role = Literal["admin", "custodian", "analyst"]
JOB_STATES: Final = ("queued", "running", "done", "failed", "cancelled")
TOKEN_PREFIX: Final = "pst_"
SESSION_HOURS: Final = 12

_metadata = MetaData()

_users = Table(
    "service_users",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

_sessions = Table(
    "service_sessions",
    _metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the id the signed cookie holds
    Column("user_id", Integer, ForeignKey("service_users.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

_datasets = Table(
    "service_datasets",
    _metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("kind", String(8), nullable=False),  # file | sql
    Column("location", Text, nullable=False),  # the stored file, or the SQLAlchemy URL (without its password)
    Column("table_name", String(256), nullable=True),
    Column("holdout", Text, nullable=True),  # held-out real rows (evaluation only), for an uploaded file
    Column("fingerprint", String(256), nullable=False),
    Column("schema", Text, nullable=False),  # JSON of Schema.to_dict()
    Column("target", String(256), nullable=True),
    Column("sensitive", String(256), nullable=True),
    Column("reports_visible", Boolean, nullable=False, default=True),
    Column("created_by", Integer, ForeignKey("service_users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)

_grants = Table(
    "service_grants",
    _metadata,
    Column("dataset_id", String(32), ForeignKey("service_datasets.id"), primary_key=True),
    Column("user_id", Integer, ForeignKey("service_users.id"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("share", Double, nullable=True),  # share of the cap (rho) the grantee's jobs may use; None: role default
)

_jobs = Table(
    "service_jobs",
    _metadata,
    Column("id", String(32), primary_key=True),
    Column("dataset_id", String(32), ForeignKey("service_datasets.id"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("service_users.id"), nullable=False),
    Column("method", String(64), nullable=False),
    Column("epsilon", Double, nullable=True),
    Column("delta", Double, nullable=True),
    Column("rows", Integer, nullable=False),
    Column("seed", Integer, nullable=True),
    Column("conditions", Text, nullable=False, default="{}"),
    Column("params", Text, nullable=False, default="{}"),
    Column("status", String(16), nullable=False, index=True),
    Column("progress", Text, nullable=False, default="{}"),
    Column("reservation_id", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("worker", String(128), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("release_id", String(64), nullable=True),
)

_releases = Table(
    "service_releases",
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(32), ForeignKey("service_jobs.id"), nullable=False, unique=True),
    Column("dataset_id", String(32), ForeignKey("service_datasets.id"), nullable=False, index=True),
    Column("directory", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("method", String(64), nullable=False),
    Column("epsilon", Double, nullable=True),
    Column("delta", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published", Boolean, nullable=False, default=False),  # a non-DP release a custodian shared
)

_audit = Table(
    "service_audit",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user_id", Integer, nullable=True),
    Column("user_name", String(128), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=True),
    Column("outcome", String(16), nullable=False),  # ok | denied | refused | error
    Column("detail", Text, nullable=True),
)

_settings = Table(
    "service_settings",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


class TooManyJobs(ParameterError):
    """A user already has as many jobs queued or running as a user may have at once."""


class ShareExceeded(BudgetExceeded):
    """A job would take its user's jobs past the user's share of the dataset's cap."""


@dataclass(frozen=True)
class User:
    """A person (or script) with a role: ``admin`` manages users and sees everything; a ``custodian`` registers
    datasets and is custodian of those; an ``analyst`` sees only the releases of datasets granted to them."""

    id: int
    name: str
    role: str


@dataclass(frozen=True)
class DatasetRow:
    """A registered dataset: where its rows are (a stored file, or a database the rows never leave), and for an
    upload the real rows held out of synthesis to evaluate releases on (``holdout``)."""

    id: str
    name: str
    kind: str
    location: str
    table_name: str | None
    holdout: str | None
    fingerprint: str
    schema: dict[str, Any]
    target: str | None
    sensitive: str | None
    reports_visible: bool
    created_by: int
    created_at: datetime
    deleted_at: datetime | None

    @property
    def ledger_key(self) -> str:
        """The name the dataset's budget is kept under in the ledger (see :func:`ledger_key`)."""
        return ledger_key(self.id)


@dataclass(frozen=True)
class JobRow:
    """A generation job: queued, running (a worker holds it and beats its heartbeat), done or failed."""

    id: str
    dataset_id: str
    user_id: int
    method: str
    epsilon: float | None
    delta: float | None
    rows: int
    seed: int | None
    conditions: dict[str, Any]
    params: dict[str, Any]
    status: str
    progress: dict[str, Any]
    reservation_id: int | None
    error: str | None
    worker: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    release_id: str | None


@dataclass(frozen=True)
class ReleaseRow:
    """A finished release: synthetic rows, report and card in ``directory``."""

    id: str
    job_id: str
    dataset_id: str
    directory: str
    rows: int
    method: str
    epsilon: float | None
    delta: float | None
    created_at: datetime
    published: bool = False


def ledger_key(dataset_id: str) -> str:
    """The name a service dataset's budget is kept under in the ledger: its service id, so two datasets over the
    same rows or the same table (registered by two custodians) have two budgets, each capped by its custodians."""
    return f"service:{dataset_id}"


def hash_token(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _dataset(row: Row[Any], credentials: Credentials | None = None) -> DatasetRow:
    values = row._asdict()
    if values["kind"] == "sql" and credentials is not None:
        values["location"] = with_password(values["location"], credentials.get(values["id"]))
    values["schema"] = json.loads(values["schema"])
    values["created_at"] = _utc(values["created_at"])
    values["deleted_at"] = _utc(values["deleted_at"])
    return DatasetRow(**values)


def _job(row: Row[Any]) -> JobRow:
    values = row._asdict()
    for key in ("conditions", "params", "progress"):
        values[key] = json.loads(values[key])
    for key in ("heartbeat_at", "created_at", "started_at", "finished_at"):
        values[key] = _utc(values[key])
    return JobRow(**values)


def _release(row: Row[Any]) -> ReleaseRow:
    values = row._asdict()
    values["created_at"] = _utc(values["created_at"])
    return ReleaseRow(**values)


def _wal(engine: Engine) -> None:
    """Readers of a SQLite file in WAL mode never wait for the writer (the mode is stored in the file)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 60000")

    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")


class Store:
    """The service's tables and the privacy ledger, in one database at ``url`` (a SQLAlchemy URL).

    ``data_dir``: the service's folder, where SQL sources' passwords are kept (outside the database); a store
    opened without it reads SQL datasets' URLs without their passwords.
    """

    def __init__(self, url: str, data_dir: Path | None = None) -> None:
        self.ledger = Ledger(url)
        self.url = self.ledger.url
        self._write = self.ledger.engine
        self.sqlite = make_url(self.url).get_backend_name() == "sqlite"
        if self.sqlite:
            self._read = create_engine(self.url)
            _wal(self._read)
        else:
            self._read = self._write
        self.credentials = None if data_dir is None else Credentials(data_dir)
        _metadata.create_all(self._write)
        self._locate_credentials(data_dir)
        self._upgrade()
        self._key_budgets_by_dataset()

    def _locate_credentials(self, data_dir: Path | None) -> None:
        """Where SQL sources' passwords are: the service's data folder, recorded here by the service (a path, not a
        secret), so that a process that opens the store by its URL only (a job's process, a CLI command) finds
        them too; an explicit ``data_dir`` wins and is recorded."""
        with self.ledger.begin() as connection:
            recorded = connection.execute(select(_settings.c.value).where(_settings.c.key == "data_dir")).scalar()
            if data_dir is None:
                if recorded is not None:
                    self.credentials = Credentials(Path(recorded))
                return
            folder = str(Path(data_dir).resolve())
            if recorded != folder:
                connection.execute(_settings.delete().where(_settings.c.key == "data_dir"))
                connection.execute(insert(_settings).values(key="data_dir", value=folder))

    def _upgrade(self) -> None:
        """Bring a database made by an earlier version up to date: add the users' ``disabled_at``, the grants'
        ``share`` (None: the role's default) and the releases' ``published`` (false: a non-DP release stays hidden
        from analysts until a custodian publishes it), drop the
        session key it kept in ``service_settings`` (a reader of the database could sign cookies with it), and
        move SQL sources' passwords out of their stored URLs."""
        columns = {c["name"] for c in inspect(self._write).get_columns("service_users")}
        grants = {c["name"] for c in inspect(self._write).get_columns(_grants.name)}
        releases = {c["name"] for c in inspect(self._write).get_columns(_releases.name)}
        with self.ledger.begin() as connection:
            if "disabled_at" not in columns:
                connection.execute(text("ALTER TABLE service_users ADD COLUMN disabled_at TIMESTAMP"))
            if "share" not in grants:
                kind = Double().compile(dialect=connection.dialect)
                connection.execute(text(f"ALTER TABLE {_grants.name} ADD COLUMN share {kind}"))
            if "published" not in releases:
                connection.execute(
                    text(f"ALTER TABLE {_releases.name} ADD COLUMN published BOOLEAN NOT NULL DEFAULT FALSE")
                )
            connection.execute(_settings.delete().where(_settings.c.key == "session"))
            if self.credentials is None:
                return
            rows = connection.execute(
                select(_datasets.c.id, _datasets.c.location).where(_datasets.c.kind == "sql")
            ).all()
            for dataset_id, location in rows:
                stored, password = without_password(location)
                if password:
                    self.credentials.put(dataset_id, password)
                    connection.execute(update(_datasets).where(_datasets.c.id == dataset_id).values(location=stored))

    def _key_budgets_by_dataset(self) -> None:
        """Give each dataset registered before budgets were kept per dataset id its own budget: the oldest
        dataset over some data takes the budget its fingerprint had (cap, spends and reservations move with it);
        a later one that shared that budget gets a budget without a cap, so nothing runs on it until its
        custodians set one (the spends they shared stay with the first)."""
        known = {record.name for record in self.ledger.datasets()}
        query = select(_datasets.c.id, _datasets.c.fingerprint).order_by(_datasets.c.created_at)
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

    # ---- settings, users, audit ----------------------------------------------------------------------------

    def add_user(self, name: str, role: str) -> tuple[User, str]:
        """Create a user; returns it with its API token (shown once: only its hash is stored)."""
        name = name.strip()
        if not name or len(name) > 128 or any(ch.isspace() for ch in name):
            raise ParameterError(f"a user name is 1 to 128 characters without spaces, not {name!r}")
        if role not in ROLES:
            raise ParameterError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.ledger.begin() as connection:
            if connection.execute(select(_users.c.id).where(_users.c.name == name)).first() is not None:
                raise ParameterError(f"a user named {name!r} already exists; choose another name")
            result = connection.execute(
                insert(_users).values(name=name, role=role, token_hash=hash_token(token), created_at=_now())
            )
            key = result.inserted_primary_key
            assert key is not None
            user = User(id=int(key[0]), name=name, role=role)
        logger.info("added user %s (%s)", name, role)
        return user, token

    def user_by_token(self, token: str) -> User | None:
        """The user whose token this is, unless they are disabled."""
        with self._read.connect() as connection:
            row = connection.execute(
                select(_users.c.id, _users.c.name, _users.c.role).where(
                    _users.c.token_hash == hash_token(token), _users.c.disabled_at.is_(None)
                )
            ).first()
        return None if row is None else User(id=row.id, name=row.name, role=row.role)

    def rotate_token(self, name: str) -> str:
        """A new token for user ``name`` (the old one stops working, and their web sessions end)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.ledger.begin() as connection:
            user_id = connection.execute(select(_users.c.id).where(_users.c.name == name)).scalar()
            if user_id is None:
                raise ParameterError(f"no user named {name!r}")
            connection.execute(update(_users).where(_users.c.id == user_id).values(token_hash=hash_token(token)))
            connection.execute(delete(_sessions).where(_sessions.c.user_id == user_id))
        logger.info("rotated the token of user %s", name)
        return token

    def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable user ``name`` (their token and web sessions stop working at once; grants and history stay) or
        enable them again."""
        with self.ledger.begin() as connection:
            row = connection.execute(select(_users.c.id, _users.c.role).where(_users.c.name == name)).first()
            if row is None:
                raise ParameterError(f"no user named {name!r}")
            connection.execute(
                update(_users).where(_users.c.id == row.id).values(disabled_at=_now() if disabled else None)
            )
            if disabled:
                connection.execute(delete(_sessions).where(_sessions.c.user_id == row.id))
        logger.info("%s user %s", "disabled" if disabled else "enabled", name)
        return User(id=row.id, name=name, role=row.role)

    def disabled(self) -> set[str]:
        """Names of the disabled users."""
        with self._read.connect() as connection:
            return set(connection.execute(select(_users.c.name).where(_users.c.disabled_at.is_not(None))).scalars())

    # ---- web sessions ----------------------------------------------------------------------------------------

    def start_session(self, user: User) -> str:
        """A new web session for ``user``; returns its id (for the signed cookie; only its hash is stored)."""
        session_id = secrets.token_urlsafe(32)
        now = _now()
        with self.ledger.begin() as connection:
            connection.execute(delete(_sessions).where(_sessions.c.expires_at < now))
            connection.execute(
                insert(_sessions).values(
                    id_hash=hash_token(session_id),
                    user_id=user.id,
                    created_at=now,
                    expires_at=now + timedelta(hours=SESSION_HOURS),
                )
            )
        return session_id

    def session_user(self, session_id: str) -> User | None:
        """The user of a live session (not ended, not expired, user not disabled), or None."""
        query = (
            select(_users.c.id, _users.c.name, _users.c.role, _sessions.c.expires_at)
            .join(_users, _users.c.id == _sessions.c.user_id)
            .where(_sessions.c.id_hash == hash_token(session_id), _users.c.disabled_at.is_(None))
        )
        with self._read.connect() as connection:
            row = connection.execute(query).first()
        if row is None or (_utc(row.expires_at) or _now()) <= _now():
            return None
        return User(id=row.id, name=row.name, role=row.role)

    def end_session(self, session_id: str) -> None:
        with self.ledger.begin() as connection:
            connection.execute(delete(_sessions).where(_sessions.c.id_hash == hash_token(session_id)))

    def user(self, user_id: int | None = None, *, name: str | None = None) -> User | None:
        query = select(_users.c.id, _users.c.name, _users.c.role)
        query = query.where(_users.c.id == user_id) if name is None else query.where(_users.c.name == name)
        with self._read.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else User(id=row.id, name=row.name, role=row.role)

    def users(self) -> list[User]:
        with self._read.connect() as connection:
            rows = connection.execute(select(_users.c.id, _users.c.name, _users.c.role).order_by(_users.c.id)).all()
        return [User(id=row.id, name=row.name, role=row.role) for row in rows]

    def has_users(self) -> bool:
        with self._read.connect() as connection:
            return connection.execute(select(_users.c.id).limit(1)).first() is not None

    def audit(
        self, user: User | None, action: str, target: str | None, outcome: str = "ok", detail: str | None = None
    ) -> None:
        """Append one line to the audit log."""
        with self.ledger.begin() as connection:
            connection.execute(
                insert(_audit).values(
                    at=_now(),
                    user_id=None if user is None else user.id,
                    user_name=None if user is None else user.name,
                    action=action,
                    target=target,
                    outcome=outcome,
                    detail=None if detail is None else detail[:2000],
                )
            )

    def audit_log(self, limit: int = 500, dataset_id: str | None = None) -> list[dict[str, Any]]:
        query = select(_audit).order_by(_audit.c.id.desc()).limit(limit)
        if dataset_id is not None:
            query = query.where(_audit.c.target.like(f"%{dataset_id}%"))
        with self._read.connect() as connection:
            rows = connection.execute(query).all()
        return [{**row._asdict(), "at": _utc(row.at).isoformat()} for row in rows]  # type: ignore[union-attr]

    # ---- datasets and grants ---------------------------------------------------------------------------------

    def add_dataset(
        self,
        *,
        name: str,
        kind: str,
        location: str,
        table_name: str | None,
        fingerprint: str,
        schema: dict[str, Any],
        owner: User,
        dataset_id: str | None = None,
        holdout: str | None = None,
    ) -> DatasetRow:
        """Register a dataset (and in the ledger its budget, under :attr:`DatasetRow.ledger_key`); its creator
        becomes its custodian. A SQL ``location``'s password is kept in the credentials folder, not here."""
        dataset_id = dataset_id or uuid.uuid4().hex
        if kind == "sql":
            location, password = without_password(location)
            if password:
                if self.credentials is None:
                    raise ParameterError("this store has no credentials folder to keep a database password in")
                self.credentials.put(dataset_id, password)
        with self.ledger.begin() as connection:
            connection.execute(
                insert(_datasets).values(
                    id=dataset_id,
                    name=name,
                    kind=kind,
                    location=location,
                    table_name=table_name,
                    holdout=holdout,
                    fingerprint=fingerprint,
                    schema=json.dumps(schema),
                    reports_visible=False,
                    created_by=owner.id,
                    created_at=_now(),
                )
            )
            connection.execute(insert(_grants).values(dataset_id=dataset_id, user_id=owner.id, role="custodian"))
        found = self.dataset(dataset_id)
        assert found is not None
        self.ledger.register(found.ledger_key, content=fingerprint)
        return found

    def dataset(self, dataset_id: str, *, include_deleted: bool = False) -> DatasetRow | None:
        query = select(_datasets).where(_datasets.c.id == dataset_id)
        if not include_deleted:
            query = query.where(_datasets.c.deleted_at.is_(None))
        with self._read.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _dataset(row, self.credentials)

    def datasets(self, user: User) -> list[DatasetRow]:
        """The datasets ``user`` may see: all for an admin, those granted otherwise."""
        query = select(_datasets).where(_datasets.c.deleted_at.is_(None)).order_by(_datasets.c.created_at)
        if user.role != "admin":
            granted = select(_grants.c.dataset_id).where(_grants.c.user_id == user.id)
            query = query.where(_datasets.c.id.in_(granted))
        with self._read.connect() as connection:
            return [_dataset(row, self.credentials) for row in connection.execute(query)]

    def access(self, user: User, dataset_id: str) -> str | None:
        """``user``'s role on the dataset: ``admin``, ``custodian``, ``analyst``, or None (no access)."""
        if user.role == "admin":
            return "admin"
        with self._read.connect() as connection:
            role = connection.execute(
                select(_grants.c.role).where(_grants.c.dataset_id == dataset_id, _grants.c.user_id == user.id)
            ).scalar()
        return None if role is None else str(role)

    def grant(self, dataset_id: str, user: User, role: str, share: float | None = None) -> None:
        """Give ``user`` ``role`` on the dataset; ``share`` is the share of the cap (0 to 1, in rho) the user's
        jobs may use together (None: the role's default, :func:`privsynth.service.limits.default_share`)."""
        if share is not None and not 0 < share <= 1:
            raise ParameterError(f"a grant's share of the cap is above 0 and at most 1, not {share!r}")
        if role not in GRANT_ROLES:
            raise ParameterError(f"a grant's role is {' or '.join(GRANT_ROLES)}, not {role!r}")
        if role == "custodian" and user.role == "analyst":
            raise ParameterError(f"user {user.name!r} is an analyst; only a custodian or admin can be a custodian")
        with self.ledger.begin() as connection:
            connection.execute(_grants.delete().where(_grants.c.dataset_id == dataset_id, _grants.c.user_id == user.id))
            connection.execute(insert(_grants).values(dataset_id=dataset_id, user_id=user.id, role=role, share=share))

    def grant_share(self, dataset_id: str, user: User) -> float | None:
        """The share of the cap ``user``'s grant on the dataset carries (None: the role's default)."""
        with self._read.connect() as connection:
            share = connection.execute(
                select(_grants.c.share).where(_grants.c.dataset_id == dataset_id, _grants.c.user_id == user.id)
            ).scalar()
        return None if share is None else float(share)

    def revoke(self, dataset_id: str, user: User) -> bool:
        with self.ledger.begin() as connection:
            result = connection.execute(
                _grants.delete().where(_grants.c.dataset_id == dataset_id, _grants.c.user_id == user.id)
            )
        return bool(result.rowcount)

    def grants(self, dataset_id: str) -> list[dict[str, Any]]:
        query = (
            select(_users.c.name, _users.c.role.label("user_role"), _grants.c.role, _grants.c.share)
            .join(_users, _users.c.id == _grants.c.user_id)
            .where(_grants.c.dataset_id == dataset_id)
            .order_by(_users.c.name)
        )
        with self._read.connect() as connection:
            return [row._asdict() for row in connection.execute(query)]

    def update_dataset(self, dataset_id: str, **values: Any) -> None:
        allowed = {"schema", "target", "sensitive", "reports_visible", "name"}
        unknown = set(values) - allowed
        if unknown:
            raise ParameterError(f"cannot change {', '.join(sorted(unknown))} of a dataset")
        if "schema" in values:
            values["schema"] = json.dumps(values["schema"])
        with self.ledger.begin() as connection:
            connection.execute(update(_datasets).where(_datasets.c.id == dataset_id).values(**values))

    def delete_dataset(self, dataset_id: str) -> None:
        """Mark the dataset deleted (its ledger rows and releases stay: the budget was spent)."""
        with self.ledger.begin() as connection:
            connection.execute(update(_datasets).where(_datasets.c.id == dataset_id).values(deleted_at=_now()))

    def budget(self, dataset: DatasetRow) -> DatasetRecord:
        return self.ledger.dataset(dataset.ledger_key)

    # ---- jobs ------------------------------------------------------------------------------------------------

    def submit(
        self,
        dataset: DatasetRow,
        user: User,
        *,
        method: str,
        rows: int,
        budget: Budget | None,
        seed: int | None,
        conditions: dict[str, Any],
        params: dict[str, Any],
        share: float = 1.0,
        max_active: int | None = None,
    ) -> JobRow:
        """Queue a job; a DP job's whole budget is reserved in the same transaction (or nothing is stored).

        Raises :class:`~privsynth.errors.BudgetExceeded` when the dataset's cap cannot hold it, or when ``user``'s
        jobs on the dataset (reserved or spent) and this one would pass ``share`` of the cap (in rho); and
        :class:`TooManyJobs` when ``user`` already has ``max_active`` jobs queued or running.
        """
        job_id = uuid.uuid4().hex
        with self.ledger.begin() as connection:
            current = connection.execute(
                select(_datasets.c.deleted_at).where(_datasets.c.id == dataset.id).with_for_update()
            ).first()
            if current is None or current.deleted_at is not None:
                raise ParameterError(f"dataset {dataset.id} was deleted; no job can run on it")
            reservation = None
            if budget is not None and share < 1:
                self._check_share(connection, dataset, user, budget, share)
            if budget is not None:
                reservation = self.ledger.reserve(
                    dataset.ledger_key,
                    budget.rho,
                    delta=budget.approx_delta,
                    purpose=f"service job {job_id} ({method}, epsilon={budget.epsilon:g}, delta={budget.delta:g})",
                    connection=connection,
                )
            if max_active is not None:
                active = connection.execute(
                    select(_jobs.c.id).where(_jobs.c.user_id == user.id, _jobs.c.status.in_(("queued", "running")))
                ).all()
                if len(active) >= max_active:
                    raise TooManyJobs(
                        f"you have {len(active)} jobs queued or running, the most a user may have at once; wait "
                        "for one to finish, or cancel one (POST /api/jobs/<id>/cancel)"
                    )
            connection.execute(
                insert(_jobs).values(
                    id=job_id,
                    dataset_id=dataset.id,
                    user_id=user.id,
                    method=method,
                    epsilon=None if budget is None else budget.epsilon,
                    delta=None if budget is None else budget.delta,
                    rows=rows,
                    seed=seed,
                    conditions=json.dumps(conditions),
                    params=json.dumps(params),
                    status="queued",
                    progress=json.dumps({}),
                    reservation_id=reservation,
                    created_at=_now(),
                )
            )
        found = self.job(job_id)
        assert found is not None
        return found

    def _check_share(
        self, connection: Connection, dataset: DatasetRow, user: User, budget: Budget, share: float
    ) -> None:
        """Refuse a job that would take ``user``'s jobs on the dataset past ``share`` of its cap (in rho:
        reservations still held and spends committed count, cancelled ones do not)."""
        record = self.budget(dataset)
        if record.cap is None:
            return
        held = connection.execute(
            select(_jobs.c.reservation_id).where(
                _jobs.c.dataset_id == dataset.id, _jobs.c.user_id == user.id, _jobs.c.reservation_id.is_not(None)
            )
        ).scalars()
        ids = set(held)
        used = sum(s.rho for s in self.ledger.entries(record.fingerprint) if s.id in ids and s.status != "cancelled")
        allowed = share * record.cap.rho
        if used + budget.rho > allowed * (1 + 1e-12):
            raise ShareExceeded(
                f"refused: your jobs on '{dataset.name}' may use {share:.0%} of its budget (rho={allowed:.6g}); "
                f"they hold rho={used:.6g} and this job asks for rho={budget.rho:.6g}; ask the dataset's custodian "
                "for a larger share, or a smaller epsilon; nothing was reserved"
            )

    def job(self, job_id: str) -> JobRow | None:
        with self._read.connect() as connection:
            row = connection.execute(select(_jobs).where(_jobs.c.id == job_id)).first()
        return None if row is None else _job(row)

    def jobs(self, dataset_ids: list[str] | None = None, *, status: str | None = None) -> list[JobRow]:
        query = select(_jobs).order_by(_jobs.c.created_at.desc())
        if dataset_ids is not None:
            query = query.where(_jobs.c.dataset_id.in_(dataset_ids))
        if status is not None:
            query = query.where(_jobs.c.status == status)
        with self._read.connect() as connection:
            return [_job(row) for row in connection.execute(query)]

    def claim(self, worker: str) -> JobRow | None:
        """Take the oldest queued job for ``worker`` (atomically: two workers never take the same job)."""
        with self.ledger.begin() as connection:
            query = select(_jobs.c.id).where(_jobs.c.status == "queued").order_by(_jobs.c.created_at).limit(1)
            if not self.sqlite:
                query = query.with_for_update(skip_locked=True)
            job_id = connection.execute(query).scalar()
            if job_id is None:
                return None
            now = _now()
            claimed = connection.execute(
                update(_jobs)
                .where(_jobs.c.id == job_id, _jobs.c.status == "queued")
                .values(status="running", worker=worker, started_at=now, heartbeat_at=now)
            )
            if claimed.rowcount != 1:
                return None
        return self.job(str(job_id))

    def beat(self, job_id: str, progress: dict[str, Any] | None = None) -> None:
        """The worker is alive (and, optionally, how far the job is)."""
        values: dict[str, Any] = {"heartbeat_at": _now()}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with self.ledger.begin() as connection:
            connection.execute(update(_jobs).where(_jobs.c.id == job_id, _jobs.c.status == "running").values(**values))

    def finish(self, job: JobRow, release_id: str, directory: str, rows: int) -> bool:
        """Record the release and commit the job's reservation in one transaction.

        Returns False (and records nothing) when the job is no longer running: a sweeper declared its worker
        dead and settled the reservation, so the release must not be published.
        """
        with self.ledger.begin() as connection:
            status = connection.execute(select(_jobs.c.status).where(_jobs.c.id == job.id).with_for_update()).scalar()
            if status != "running":
                return False
            if job.reservation_id is not None:
                self.ledger.commit(job.reservation_id, release_id=release_id, connection=connection)
            connection.execute(
                insert(_releases).values(
                    id=release_id,
                    job_id=job.id,
                    dataset_id=job.dataset_id,
                    directory=directory,
                    rows=rows,
                    method=job.method,
                    epsilon=job.epsilon,
                    delta=job.delta,
                    created_at=_now(),
                )
            )
            connection.execute(
                update(_jobs)
                .where(_jobs.c.id == job.id)
                .values(status="done", finished_at=_now(), release_id=release_id, progress=json.dumps({"done": 1}))
            )
        self.audit(None, "job done", f"job:{job.id}", detail=f"release:{release_id} ({rows} rows, {job.method})")
        return True

    def fail(
        self, job_id: str, error: str, *, only_if_stale: datetime | None = None, status: str = "failed"
    ) -> str | None:
        """Mark a queued or running job failed (or ``status="cancelled"``) and settle its reservation (committed if
        a mechanism drew noise under it, cancelled otherwise), in one transaction. ``only_if_stale``: only if its
        heartbeat is older.

        Returns how the reservation was settled (``committed``, ``cancelled``, ``none``), or None when the job was
        not failed (already finished, or alive).
        """
        with self.ledger.begin() as connection:
            row = connection.execute(select(_jobs).where(_jobs.c.id == job_id).with_for_update()).first()
            if row is None or row.status not in ("queued", "running"):
                return None
            heartbeat = _utc(row.heartbeat_at)
            if only_if_stale is not None and heartbeat is not None and heartbeat >= only_if_stale:
                return None
            outcome = "none"
            if row.reservation_id is not None:
                outcome = self.ledger.settle(row.reservation_id, connection=connection) or "already settled"
            connection.execute(
                update(_jobs).where(_jobs.c.id == job_id).values(status=status, error=error, finished_at=_now())
            )
        logger.info("job %s failed (%s); reservation %s", job_id, error, outcome)
        self.audit(None, "job failed", f"job:{job_id}", "error", f"{error} (reservation: {outcome})")
        return outcome

    def sweep(self, stale_after: float) -> list[str]:
        """Fail the running jobs whose worker has not beaten for ``stale_after`` seconds (it was killed, or the
        server restarted); returns their ids."""
        limit = _now() - timedelta(seconds=stale_after)
        failed = []
        for job in self.jobs(status="running"):
            if job.heartbeat_at is None or job.heartbeat_at < limit:
                outcome = self.fail(
                    job.id,
                    f"the worker ({job.worker}) stopped while running the job (no heartbeat for {stale_after:g} s); "
                    "submit it again",
                    only_if_stale=limit,
                )
                if outcome is not None:
                    failed.append(job.id)
        return failed

    # ---- releases --------------------------------------------------------------------------------------------

    def release(self, release_id: str) -> ReleaseRow | None:
        with self._read.connect() as connection:
            row = connection.execute(select(_releases).where(_releases.c.id == release_id)).first()
        return None if row is None else _release(row)

    def set_published(self, release_id: str, published: bool) -> None:
        """Share (or stop sharing) a non-DP release with the dataset's analysts."""
        with self.ledger.begin() as connection:
            connection.execute(update(_releases).where(_releases.c.id == release_id).values(published=published))

    def releases(self, dataset_ids: list[str]) -> list[ReleaseRow]:
        query = select(_releases).where(_releases.c.dataset_id.in_(dataset_ids)).order_by(_releases.c.created_at.desc())
        with self._read.connect() as connection:
            return [_release(row) for row in connection.execute(query)]
