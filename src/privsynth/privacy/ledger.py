"""The persistent privacy ledger: every spend on every dataset, checked against a per-dataset cap.

Spends compose additively in rho (zero-concentrated DP, Bun and Steinke, "Concentrated Differential Privacy",
TCC 2016, Lemma 2.3) and are reported in epsilon at the cap's delta (Canonne, Kamath and Steinke 2020, see
:mod:`privsynth.privacy.budget`). Some mechanisms (DP key discovery by a noisy threshold) are only
delta-approximately rho-zCDP; approximate zCDP composes by adding the rhos and adding the deltas (ibid.,
Section 8), so the ledger also records each spend's approximate delta and adds those up across releases.

A cap is the (epsilon, delta) the user gave; its rho with nothing spent approximately is stored beside it. With
rho R and approximate delta D spent or reserved in all, the releases together are (epsilon, delta)-DP when
D < delta and R-zCDP implies (epsilon, delta - D)-DP: the check is D below the cap's delta and R at most the rho
that (epsilon, delta - D) buys, in exact arithmetic (:func:`~privsynth.privacy.budget.fits_within`).
Composition is a sum in rho and in delta, so spends made at different deltas add up, which they would not in
epsilon.

The ledger is a SQLite file by default (``~/.privsynth/ledger.sqlite``, or ``$PRIVSYNTH_LEDGER``); any
SQLAlchemy URL works. The check against the cap and the insert run in one transaction that holds a write lock
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on the dataset row elsewhere), so two processes
spending at once cannot both pass the cap.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import (
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
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.budget import Budget, check_positive, epsilon_from_rho_delta, fits_within

__all__ = ["DEFAULT_LEDGER_PATH", "LEDGER_ENV_VAR", "DatasetRecord", "Ledger", "Spend", "resolve_url"]

logger = logging.getLogger(__name__)

LEDGER_ENV_VAR: Final = "PRIVSYNTH_LEDGER"
DEFAULT_LEDGER_PATH: Final = Path("~/.privsynth/ledger.sqlite")

_COMMITTED: Final = "committed"
_RESERVED: Final = "reserved"
_CANCELLED: Final = "cancelled"
_SQLITE_BUSY_TIMEOUT_SECONDS: Final = 60.0

_metadata = MetaData()

_datasets = Table(
    "privsynth_datasets",
    _metadata,
    Column("fingerprint", String(256), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("cap_rho", Double, nullable=True),
    Column("cap_epsilon", Double, nullable=True),
    Column("cap_delta", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

_spends = Table(
    "privsynth_spends",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(256), ForeignKey("privsynth_datasets.fingerprint"), nullable=False, index=True),
    Column("rho", Double, nullable=False),
    Column("epsilon", Double, nullable=True),
    Column("delta", Double, nullable=True),
    Column("mechanism", String(256), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reservation_id", Integer, ForeignKey("privsynth_spends.id"), nullable=True, index=True),
    Column("release_id", String(256), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("approx_delta", Double, nullable=False, server_default=text("0")),
)


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset known to the ledger, with its cap and what has been spent on it: rho, and the approximate
    delta of mechanisms that are only approximately zCDP."""

    fingerprint: str
    name: str
    cap: Budget | None
    spent_rho: float
    reserved_rho: float
    created_at: datetime
    spent_approx_delta: float = 0.0
    reserved_approx_delta: float = 0.0

    @property
    def remaining_rho(self) -> float:
        """Rho still available under the cap (infinite without a cap, never negative): the rho the cap's epsilon
        buys at the delta that committed and reserved approximate deltas leave, less the rho already used."""
        if self.cap is None:
            return math.inf
        allowed = _cap_rho_at(self.cap, Fraction(self.spent_approx_delta) + Fraction(self.reserved_approx_delta))
        return max(0.0, allowed - self.spent_rho - self.reserved_rho)

    @property
    def spent_epsilon(self) -> float | None:
        """Committed spends as epsilon at the cap's delta, or ``None`` without a cap.

        Rho is converted at the delta the committed approximate deltas leave (``cap.delta - spent_approx_delta``);
        infinite once they use the cap's whole delta, since no epsilon then holds at that delta.
        """
        if self.cap is None:
            return None
        if self.spent_approx_delta >= self.cap.delta:
            return math.inf
        return epsilon_from_rho_delta(self.spent_rho, self.cap.delta - self.spent_approx_delta)


@dataclass(frozen=True)
class Spend:
    """One ledger row: a mechanism's spend, or a reservation of budget for a job.

    ``status`` is ``committed``, ``reserved`` or ``cancelled``. A spend made under a reservation names it in
    ``reservation_id``; it draws on the reservation and does not count against the cap a second time.
    ``epsilon`` is this spend's rho alone, at ``delta`` (the cap's), for display: spends add up in rho, not
    epsilon. ``approx_delta`` is the delta of an approximately zCDP mechanism (0 for the others; for a
    reservation, the approximate delta it holds), which adds up across spends like rho.
    """

    id: int
    dataset: str
    rho: float
    epsilon: float | None
    delta: float | None
    mechanism: str
    purpose: str
    status: str
    reservation_id: int | None
    release_id: str | None
    created_at: datetime
    approx_delta: float = 0.0


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """A SQLAlchemy URL from an argument, ``$PRIVSYNTH_LEDGER`` or the default path, in that order."""
    chosen: str | os.PathLike[str] = url or os.environ.get(LEDGER_ENV_VAR) or DEFAULT_LEDGER_PATH
    text = os.fspath(chosen)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every timestamp in the ledger is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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


def _spend_from_row(row: Row[Any]) -> Spend:
    return Spend(
        id=row.id,
        dataset=row.dataset,
        rho=row.rho,
        epsilon=row.epsilon,
        delta=row.delta,
        mechanism=row.mechanism,
        purpose=row.purpose,
        status=row.status,
        reservation_id=row.reservation_id,
        release_id=row.release_id,
        created_at=_utc(row.created_at),
        approx_delta=row.approx_delta,
    )


def _add_missing_columns(engine: Engine) -> None:
    """Bring a ledger created by an older privsynth up to the current schema: add ``approx_delta`` (0 for every
    existing row, which is what those rows spent approximately) when ``privsynth_spends`` lacks it.

    The column is added inside a write transaction after checking again, so two processes opening the same old
    file at once add it once (SQLite's ``BEGIN IMMEDIATE``; PostgreSQL's ``ADD COLUMN IF NOT EXISTS``).
    """
    if "approx_delta" in {column["name"] for column in inspect(engine).get_columns(_spends.name)}:
        return
    with engine.begin() as connection:
        if "approx_delta" in {column["name"] for column in inspect(connection).get_columns(_spends.name)}:
            return
        guard = " IF NOT EXISTS" if connection.dialect.name == "postgresql" else ""
        column_type = Double().compile(dialect=connection.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {_spends.name} ADD COLUMN{guard} approx_delta {column_type} NOT NULL DEFAULT 0"
        )
    logger.info("added column approx_delta to %s in the privacy ledger", _spends.name)


def _round_up(value: Fraction) -> float:
    """The smallest float not below ``value``: an amount spent, rounded so that it is never understated."""
    nearest = float(value)
    return math.nextafter(nearest, math.inf) if Fraction(nearest) < value else nearest


def _cap_rho_at(cap: Budget, approx_delta: Fraction) -> float:
    """The rho ``cap`` allows when ``approx_delta`` of its delta is used by approximately zCDP mechanisms: the
    largest rho whose zCDP implies (cap.epsilon, cap.delta - approx_delta)-DP, converted as
    :meth:`Budget.from_epsilon_delta` converts it; 0 when ``approx_delta`` uses all of the cap's delta."""
    if approx_delta == 0:
        return cap.rho
    held = _round_up(approx_delta)
    if held >= cap.delta:
        return 0.0
    return Budget.from_epsilon_delta(cap.epsilon, cap.delta, approx_delta=held).rho


def _cap_of(row: Row[Any]) -> Budget | None:
    if row.cap_rho is None:
        return None
    return Budget(epsilon=row.cap_epsilon, delta=row.cap_delta, rho=row.cap_rho)


def _describe(rho: float, delta: float) -> str:
    return f"epsilon={epsilon_from_rho_delta(rho, delta):.4g} (rho={rho:.4g})"


def _refusal(name: str, dataset: str, used: Sequence[float], rho: float, cap: Budget) -> str:
    """Why a spend with no approximate delta anywhere is refused: rho over the cap's."""
    spent = math.fsum(used)
    return (
        f"Privacy spend on dataset '{name}' ({dataset}) refused: "
        f"spent or reserved so far {_describe(spent, cap.delta)}, "
        f"this request {_describe(rho, cap.delta)}, together {_describe(spent + rho, cap.delta)}, "
        f"over the cap epsilon={cap.epsilon:g} at delta={cap.delta:g} (rho={cap.rho:.4g}). "
        "Nothing was recorded or released; spend less, or raise the cap with Ledger.set_cap."
    )


def _approximate_refusal(
    name: str,
    dataset: str,
    used: Sequence[float],
    used_delta: float,
    rho: float,
    delta: float,
    allowed: float,
    cap: Budget,
) -> str:
    """Why a spend is refused when approximate deltas are involved, saying which side binds: the deltas alone
    reaching the cap's delta, or the rho that the cap's epsilon buys at the delta they leave."""
    spent = math.fsum(used)
    total_rho, total_delta = spent + rho, float(Fraction(used_delta) + Fraction(delta))
    head = (
        f"Privacy spend on dataset '{name}' ({dataset}) refused: spent or reserved so far rho={spent:.4g} and "
        f"approximate delta={used_delta:.4g}, this request rho={rho:.4g} and approximate delta={delta:.4g}, "
        f"together rho={total_rho:.4g} and approximate delta={total_delta:.4g}, over the cap "
        f"epsilon={cap.epsilon:g} at delta={cap.delta:g}. "
    )
    if total_delta >= cap.delta:
        reason = (
            f"The delta side binds: approximately zCDP mechanisms (DP key discovery) would use "
            f"delta={total_delta:.4g}, not below the cap's delta={cap.delta:g}, which leaves no delta to convert "
            "rho at. "
        )
    else:
        left = cap.delta - total_delta
        reason = (
            f"The approximate deltas leave delta={left:.4g} of the cap's to convert rho at, where "
            f"epsilon={cap.epsilon:g} buys rho={allowed:.4g}; together this is epsilon="
            f"{epsilon_from_rho_delta(total_rho, left):.4g} at delta={cap.delta:g}. "
        )
        if fits_within(used, rho, cap.rho):
            reason += f"The delta side binds: without approximate deltas the cap would allow rho={cap.rho:.4g}. "
    return (
        head
        + reason
        + "Nothing was recorded or released; spend less, declare public categories instead of discovering them, "
        "or raise the cap with Ledger.set_cap."
    )


class Ledger:
    """Where privsynth records privacy spends, per dataset fingerprint, and enforces each dataset's cap.

    ``url`` is a SQLAlchemy URL or a file path for SQLite; without one, ``$PRIVSYNTH_LEDGER`` and then
    ``~/.privsynth/ledger.sqlite`` are used. Tables are created on first use. A dataset without a cap accepts
    any spend (and still records it).
    """

    def __init__(self, url: str | os.PathLike[str] | None = None) -> None:
        self.url = resolve_url(url)
        sqlite = make_url(self.url).get_backend_name() == "sqlite"
        connect_args = {"timeout": _SQLITE_BUSY_TIMEOUT_SECONDS} if sqlite else {}
        self._engine = create_engine(self.url, connect_args=connect_args)
        # Reads (records, entries) go through a second engine that does not take SQLite's write lock, so that
        # people reading budgets never queue behind a spend; every check against the cap runs under the lock.
        self._reader = create_engine(self.url, connect_args=connect_args) if sqlite else self._engine
        if sqlite:
            _serialize_sqlite_transactions(self._engine)
        _metadata.create_all(self._engine)
        _add_missing_columns(self._engine)

    def __repr__(self) -> str:
        return f"Ledger({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()
        self._reader.dispose()

    def register(self, fingerprint: str, name: str) -> DatasetRecord:
        """Make a dataset known under its fingerprint; registering it again keeps the first name and cap."""
        if not fingerprint:
            raise ParameterError("fingerprint must be a non-empty string identifying the dataset.")
        with self._engine.begin() as connection:
            exists = connection.execute(
                select(_datasets.c.fingerprint).where(_datasets.c.fingerprint == fingerprint)
            ).first()
            if exists is None:
                connection.execute(
                    insert(_datasets).values(fingerprint=fingerprint, name=name, created_at=datetime.now(UTC))
                )
                logger.info("registered dataset %r (%s) in the privacy ledger", name, fingerprint)
            return self._record(connection, self._lock(connection, fingerprint))

    def set_cap(self, dataset: str, epsilon: float, delta: float) -> Budget:
        """Cap the total privacy cost on ``dataset`` at (epsilon, delta)-DP; returns the cap with its rho.

        A cap below what is already spent is allowed and simply refuses every further spend.
        """
        cap = Budget.from_epsilon_delta(epsilon, delta)
        with self._engine.begin() as connection:
            self._lock(connection, dataset)
            connection.execute(
                update(_datasets)
                .where(_datasets.c.fingerprint == dataset)
                .values(cap_rho=cap.rho, cap_epsilon=cap.epsilon, cap_delta=cap.delta)
            )
        logger.info("privacy cap of dataset %s set to %s", dataset, cap)
        return cap

    def spend(
        self,
        dataset: str,
        rho: float,
        *,
        mechanism: str,
        purpose: str,
        release_id: str | None = None,
        reservation: int | None = None,
        delta: float = 0.0,
    ) -> Spend:
        """Record that ``mechanism`` spends ``rho`` on ``dataset``, if the cap (or ``reservation``) allows it.

        ``delta`` is the mechanism's own delta when it is only delta-approximately rho-zCDP (DP key discovery),
        0 otherwise. Call this *before* releasing anything. Raises :class:`~privsynth.errors.BudgetExceeded`,
        writing nothing, when the spend would pass the cap (in rho, or in delta), or the rho or the delta reserved
        under ``reservation``.
        """
        rho = check_positive("rho", rho)
        delta = check_positive("delta", delta, allow_zero=True)
        with self._engine.begin() as connection:
            row = self._lock(connection, dataset)
            cap = _cap_of(row)
            if reservation is None:
                self._check_cap(connection, row, rho, delta, cap)
            else:
                held = self._reservation(connection, reservation, dataset)
                drawn = connection.execute(
                    select(_spends.c.rho, _spends.c.approx_delta).where(_spends.c.reservation_id == reservation)
                ).all()
                drawn_rho = [amount for amount, _ in drawn]
                drawn_delta = [amount for _, amount in drawn]
                refused = f"Spending rho={rho:.4g} under reservation {reservation} on dataset '{row.name}' ({dataset})"
                if not fits_within(drawn_rho, rho, held.rho):
                    raise BudgetExceeded(
                        f"{refused} refused: rho={math.fsum(drawn_rho):.4g} of the rho={held.rho:.4g} reserved "
                        "is already spent. Nothing was recorded or released; reserve more budget for the job."
                    )
                if not fits_within(drawn_delta, delta, held.approx_delta):
                    raise BudgetExceeded(
                        f"{refused} with approximate delta={delta:.4g} refused: delta="
                        f"{math.fsum(drawn_delta):.4g} of the approximate delta={held.approx_delta:.4g} reserved "
                        "is already spent. Nothing was recorded or released; reserve the delta the job's "
                        "approximate mechanisms need with Ledger.reserve(..., delta=budget.approx_delta)."
                    )
            spend = self._insert(
                connection, dataset, rho, delta, cap, mechanism, purpose, _COMMITTED, reservation, release_id
            )
        logger.info("spent rho=%.6g, delta=%.3g on dataset %s: %s (%s)", rho, delta, dataset, purpose, mechanism)
        return spend

    def reserve(
        self,
        dataset: str,
        rho: float,
        *,
        purpose: str,
        release_id: str | None = None,
        delta: float = 0.0,
        connection: Connection | None = None,
    ) -> int:
        """Hold ``rho`` (and approximate ``delta``) of the cap for a job and return the reservation id.

        Reserved budget counts against the cap until it is committed (:meth:`commit`) or cancelled
        (:meth:`cancel`). The job records each mechanism with ``spend(..., reservation=id)``, which draws on
        the reservation instead of the cap and may use up to ``rho`` and up to ``delta`` (the part of the job's
        delta set aside for approximately zCDP mechanisms, ``Budget.approx_delta``). Raises
        :class:`~privsynth.errors.BudgetExceeded` like :meth:`spend`. With ``connection`` (from :meth:`begin`)
        the reservation is part of the caller's transaction (the service inserts its job in the same one).
        """
        rho = check_positive("rho", rho)
        delta = check_positive("delta", delta, allow_zero=True)
        with self._within(connection) as connection:
            row = self._lock(connection, dataset)
            cap = _cap_of(row)
            self._check_cap(connection, row, rho, delta, cap)
            spend = self._insert(
                connection, dataset, rho, delta, cap, "reservation", purpose, _RESERVED, None, release_id
            )
        logger.info(
            "reserved rho=%.6g, delta=%.3g on dataset %s: %s (reservation %d)", rho, delta, dataset, purpose, spend.id
        )
        return spend.id

    def commit(self, reservation: int, *, release_id: str | None = None, connection: Connection | None = None) -> None:
        """Turn a reservation into a spend of the whole amount reserved, optionally naming the release.

        With ``connection`` the commit is part of the caller's transaction (the service records the release in
        the same one, so a release never exists without its spend, nor a spend twice).
        """
        with self._within(connection) as connection:
            held = self._reservation(connection, reservation, None)
            values: dict[str, Any] = {"status": _COMMITTED}
            if release_id is not None:
                values["release_id"] = release_id
            connection.execute(update(_spends).where(_spends.c.id == reservation).values(**values))
        logger.info(
            "committed reservation %d (rho=%.6g, delta=%.3g) on dataset %s",
            reservation,
            held.rho,
            held.approx_delta,
            held.dataset,
        )

    def cancel(self, reservation: int, *, connection: Connection | None = None) -> None:
        """Give a reservation back to the cap; only possible while nothing has been spent under it.

        Once a mechanism has drawn noise under the reservation its output may have been seen, so the budget is
        spent for good: :meth:`commit` it instead.
        """
        with self._within(connection) as connection:
            self._reservation(connection, reservation, None)
            if self._drawn(connection, reservation):
                raise ParameterError(
                    f"Reservation {reservation} cannot be cancelled: mechanisms have already spent under it. "
                    "Commit it instead."
                )
            connection.execute(update(_spends).where(_spends.c.id == reservation).values(status=_CANCELLED))
        logger.info("cancelled reservation %d", reservation)

    def settle(self, reservation: int, *, connection: Connection | None = None) -> str | None:
        """Close a reservation whose job ended without a release: commit it if a mechanism drew noise under it,
        cancel it otherwise. Returns ``"committed"`` or ``"cancelled"``, or ``None`` when the reservation was
        already closed (so a job's reservation is settled exactly once, whoever gets there first).
        """
        with self._within(connection) as connection:
            row = connection.execute(select(_spends.c.dataset).where(_spends.c.id == reservation)).first()
            if row is None:
                raise ParameterError(f"Reservation {reservation} does not exist.")
            self._lock(connection, row.dataset)
            status = connection.execute(select(_spends.c.status).where(_spends.c.id == reservation)).scalar_one()
            if status != _RESERVED:
                return None
            outcome = _COMMITTED if self._drawn(connection, reservation) else _CANCELLED
            connection.execute(update(_spends).where(_spends.c.id == reservation).values(status=outcome))
        logger.info("settled reservation %d: %s", reservation, outcome)
        return outcome

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction on the ledger's database that :meth:`reserve`, :meth:`commit`, :meth:`cancel` and
        :meth:`settle` can join (``connection=``), for callers keeping their own tables in the same database."""
        with self._engine.begin() as connection:
            yield connection

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (on SQLite every transaction takes the write lock at BEGIN)."""
        return self._engine

    def spent(self, dataset: str) -> float:
        """Rho committed on ``dataset`` (reservations not yet committed excluded)."""
        return self.dataset(dataset).spent_rho

    def remaining(self, dataset: str) -> float:
        """Rho still available under the cap of ``dataset``, after commitments and reservations."""
        return self.dataset(dataset).remaining_rho

    def dataset(self, fingerprint: str) -> DatasetRecord:
        """The record of one dataset; :class:`~privsynth.errors.ParameterError` if it is not registered."""
        with self._reader.connect() as connection:
            row = connection.execute(select(_datasets).where(_datasets.c.fingerprint == fingerprint)).first()
            if row is None:
                raise self._unknown(fingerprint)
            return self._record(connection, row)

    def datasets(self) -> list[DatasetRecord]:
        """Every dataset in the ledger, oldest first."""
        with self._reader.connect() as connection:
            rows = connection.execute(select(_datasets).order_by(_datasets.c.created_at)).all()
            return [self._record(connection, row) for row in rows]

    def entries(self, dataset: str | None = None) -> list[Spend]:
        """Every ledger row, or those of one dataset, in the order they were written."""
        query = select(_spends).order_by(_spends.c.id)
        if dataset is not None:
            query = query.where(_spends.c.dataset == dataset)
        with self._reader.connect() as connection:
            return [_spend_from_row(row) for row in connection.execute(query)]

    @contextmanager
    def _within(self, connection: Connection | None) -> Iterator[Connection]:
        """The caller's transaction, or a new one committed at the end of the block."""
        if connection is not None:
            yield connection
            return
        with self._engine.begin() as own:
            yield own

    @staticmethod
    def _drawn(connection: Connection, reservation: int) -> bool:
        """Whether any mechanism has spent under ``reservation``."""
        found = connection.execute(select(_spends.c.id).where(_spends.c.reservation_id == reservation).limit(1))
        return found.first() is not None

    def _lock(self, connection: Connection, fingerprint: str) -> Row[Any]:
        """The dataset row, locked for the rest of the transaction (``FOR UPDATE``; a no-op on SQLite,
        whose ``BEGIN IMMEDIATE`` already holds the database's write lock)."""
        row = connection.execute(
            select(_datasets).where(_datasets.c.fingerprint == fingerprint).with_for_update()
        ).first()
        if row is None:
            raise self._unknown(fingerprint)
        return row

    def _reservation(self, connection: Connection, reservation: int, dataset: str | None) -> Spend:
        """The open reservation ``reservation``, with its dataset row locked."""
        row = connection.execute(select(_spends).where(_spends.c.id == reservation)).first()
        if row is None or row.status != _RESERVED or row.reservation_id is not None:
            state = "does not exist" if row is None else f"is {row.status}, not an open reservation"
            raise ParameterError(f"Reservation {reservation} {state}; reserve budget with Ledger.reserve first.")
        if dataset is not None and row.dataset != dataset:
            raise ParameterError(f"Reservation {reservation} belongs to dataset {row.dataset}, not {dataset}.")
        self._lock(connection, row.dataset)
        held = _spend_from_row(connection.execute(select(_spends).where(_spends.c.id == reservation)).one())
        if held.status != _RESERVED:
            raise ParameterError(f"Reservation {reservation} is {held.status}, not an open reservation.")
        return held

    @staticmethod
    def _check_cap(connection: Connection, row: Row[Any], rho: float, delta: float, cap: Budget | None) -> None:
        """Raise :class:`~privsynth.errors.BudgetExceeded` unless spending ``rho`` and approximate ``delta`` on
        the dataset of ``row`` keeps it within ``cap``.

        Counted are committed spends and open reservations, not spends drawn on a reservation (the reservation
        counts for them) nor cancelled reservations. With R and D the rho and approximate delta counted, this
        request included, the spend fits when D < cap.delta and R fits the rho that (cap.epsilon,
        cap.delta - D) buys.
        """
        if cap is None:
            return
        counted = connection.execute(
            select(_spends.c.rho, _spends.c.approx_delta).where(
                _spends.c.dataset == row.fingerprint,
                _spends.c.reservation_id.is_(None),
                _spends.c.status.in_([_COMMITTED, _RESERVED]),
            )
        ).all()
        used_rho = [amount for amount, _ in counted]
        used_delta = sum((Fraction(amount) for _, amount in counted), Fraction(0))
        total_delta = used_delta + Fraction(delta)
        allowed = _cap_rho_at(cap, total_delta) if total_delta < cap.delta else 0.0
        if total_delta < cap.delta and fits_within(used_rho, rho, allowed):
            return
        if total_delta == 0:
            raise BudgetExceeded(_refusal(row.name, row.fingerprint, used_rho, rho, cap))
        raise BudgetExceeded(
            _approximate_refusal(row.name, row.fingerprint, used_rho, float(used_delta), rho, delta, allowed, cap)
        )

    def _record(self, connection: Connection, row: Row[Any]) -> DatasetRecord:
        rows = connection.execute(
            select(_spends.c.rho, _spends.c.approx_delta, _spends.c.status).where(
                _spends.c.dataset == row.fingerprint, _spends.c.reservation_id.is_(None)
            )
        ).all()
        return DatasetRecord(
            fingerprint=row.fingerprint,
            name=row.name,
            cap=_cap_of(row),
            spent_rho=math.fsum(rho for rho, _, status in rows if status == _COMMITTED),
            reserved_rho=math.fsum(rho for rho, _, status in rows if status == _RESERVED),
            created_at=_utc(row.created_at),
            spent_approx_delta=math.fsum(delta for _, delta, status in rows if status == _COMMITTED),
            reserved_approx_delta=math.fsum(delta for _, delta, status in rows if status == _RESERVED),
        )

    @staticmethod
    def _insert(
        connection: Connection,
        dataset: str,
        rho: float,
        approx_delta: float,
        cap: Budget | None,
        mechanism: str,
        purpose: str,
        status: str,
        reservation: int | None,
        release_id: str | None,
    ) -> Spend:
        delta = None if cap is None else cap.delta
        spend = Spend(
            id=0,
            dataset=dataset,
            rho=rho,
            epsilon=None if delta is None else epsilon_from_rho_delta(rho, delta),
            delta=delta,
            mechanism=mechanism,
            purpose=purpose,
            status=status,
            reservation_id=reservation,
            release_id=release_id,
            created_at=datetime.now(UTC),
            approx_delta=approx_delta,
        )
        values = {field: value for field, value in asdict(spend).items() if field != "id"}
        # inserted_primary_key is None only for executemany.
        key = cast(Row[Any], connection.execute(insert(_spends).values(**values)).inserted_primary_key)
        return replace(spend, id=int(key[0]))

    @staticmethod
    def _unknown(fingerprint: str) -> ParameterError:
        return ParameterError(
            f"Dataset {fingerprint!r} is not in the privacy ledger; register it with Ledger.register first."
        )
