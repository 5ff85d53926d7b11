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

Budgets are kept per dataset *name*, declared by the user (``--dataset NAME``, :meth:`Ledger.register`) or by
the service: the same rows as CSV, Parquet or a DataFrame are one dataset because the user says so, not because
their bytes hash alike. A content fingerprint of the data may be given as a hint; the ledger keeps only an
HMAC-SHA256 of it, keyed by a random secret stored in the ledger's own database, and warns when data registered
under one name looks like another dataset's. Ledgers written before names were the key keep their datasets under
the fingerprint they were registered with (:meth:`Ledger.rename` gives such a dataset a name).

Some spends hold in Rényi DP only over a range of orders (DP-SGD, see :mod:`privsynth.privacy.dp_sgd`): the
ledger stores that range with the spend and converts a dataset's total rho to (epsilon, delta) (Canonne, Kamath
and Steinke 2020, Proposition 12) only at orders every spend holds at. A cap whose conversion order lies outside
that range is refused, and so is a spend that would leave the cap unreachable at those orders; the epsilon spent
is reported at the nearest order inside the range when the best one lies outside it.

The ledger is a SQLite file by default (``~/.privsynth/ledger.sqlite``, or ``$PRIVSYNTH_LEDGER``); any
SQLAlchemy URL works. The check against the cap and the insert run in one transaction that holds a write lock
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on the dataset row elsewhere), so two processes
spending at once cannot both pass the cap.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Never, cast

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
    exc,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.budget import (
    RELATIVE_TOLERANCE,
    Budget,
    check_positive,
    epsilon_from_rho_delta,
    fits_within,
)

__all__ = [
    "DEFAULT_LEDGER_PATH",
    "LEDGER_ENV_VAR",
    "DatasetRecord",
    "Ledger",
    "Spend",
    "conversion_order",
    "resolve_url",
]

logger = logging.getLogger(__name__)

LEDGER_ENV_VAR: Final = "PRIVSYNTH_LEDGER"
DEFAULT_LEDGER_PATH: Final = Path("~/.privsynth/ledger.sqlite")

_COMMITTED: Final = "committed"
_RESERVED: Final = "reserved"
_CANCELLED: Final = "cancelled"
_SQLITE_BUSY_TIMEOUT_SECONDS: Final = 60.0

_metadata = MetaData()

# The key column keeps its old name, ``fingerprint``, so ledgers written before budgets were kept by name open
# unchanged: it now holds the dataset's name. ``name`` is the label shown beside it (the same as the key, except
# for datasets registered by fingerprint, where it is the name the data had then).
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
    Column("min_order", Double, nullable=True),
    Column("max_order", Double, nullable=True),
)

_settings = Table(
    "privsynth_settings",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

_contents = Table(
    "privsynth_dataset_contents",
    _metadata,
    Column("content_hmac", String(64), primary_key=True),
    Column("dataset", String(256), ForeignKey("privsynth_datasets.fingerprint"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

_CONTENT_KEY: Final = "content_hmac_key"
_MISSING_COLUMNS: Final = (("approx_delta", "NOT NULL DEFAULT 0"), ("min_order", ""), ("max_order", ""))
_ORDER_TOLERANCE: Final = 1e-9


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset known to the ledger, with its cap and what has been spent on it: rho, and the approximate
    delta of mechanisms that are only approximately zCDP.

    ``name`` is the key its budget is kept under. ``label`` is set only for a dataset registered by fingerprint
    in an older ledger: the name the data had then. ``min_order`` and ``max_order`` bound the Rényi orders every
    spend on it holds at (1 and infinity when all are zCDP); ``min_order_spend`` and ``max_order_spend`` are the
    ids of the spends that set those bounds.
    """

    name: str
    cap: Budget | None
    spent_rho: float
    reserved_rho: float
    created_at: datetime
    spent_approx_delta: float = 0.0
    reserved_approx_delta: float = 0.0
    label: str | None = None
    min_order: float = 1.0
    max_order: float = math.inf
    min_order_spend: int | None = None
    max_order_spend: int | None = None

    @property
    def fingerprint(self) -> str:
        """The dataset's key, :attr:`name` (the attribute's name from when budgets were kept per fingerprint)."""
        return self.name

    @property
    def remaining_rho(self) -> float:
        """Rho still available under the cap (infinite without a cap, never negative): the rho the cap's epsilon
        buys at the delta that committed and reserved approximate deltas leave, at a Rényi order every spend holds
        at, less the rho already used."""
        if self.cap is None:
            return math.inf
        held = Fraction(self.spent_approx_delta) + Fraction(self.reserved_approx_delta)
        allowed = _cap_rho_at(self.cap, held)
        if allowed > 0 and (self.min_order > 1 or self.max_order < math.inf):
            order = conversion_order(allowed, self.cap.epsilon)
            if not _within_orders(order, self.min_order, self.max_order):
                nearest = min(max(order, self.min_order), self.max_order)
                allowed = min(allowed, _rho_at(self.cap.epsilon, float(Fraction(self.cap.delta) - held), nearest))
        return max(0.0, allowed - self.spent_rho - self.reserved_rho)

    @property
    def spent_epsilon(self) -> float | None:
        """Committed spends as epsilon at the cap's delta, or ``None`` without a cap.

        Rho is converted at the delta the committed approximate deltas leave (``cap.delta - spent_approx_delta``);
        infinite once they use the cap's whole delta, since no epsilon then holds at that delta. The conversion
        is made at a Rényi order every spend holds at: when the best order lies outside that range (a DP-SGD
        spend charged for another delta), at the nearest order inside it, which gives a larger, still valid
        epsilon; :attr:`conversion_note` then says so.
        """
        if self.cap is None:
            return None
        if self.spent_approx_delta >= self.cap.delta:
            return math.inf
        delta = self.cap.delta - self.spent_approx_delta
        epsilon = epsilon_from_rho_delta(self.spent_rho, delta)
        order = self._outside_order(epsilon)
        if order is None:
            return epsilon
        nearest = min(max(order, self.min_order), self.max_order)
        return _epsilon_at(self.spent_rho, delta, nearest)

    @property
    def conversion_note(self) -> str | None:
        """Why :attr:`spent_epsilon` is converted at a Rényi order that is not the best one, naming the spend
        that limits the orders and the cap deltas at which the best order is inside its range; ``None`` when it
        is not."""
        if self.cap is None or self.spent_approx_delta >= self.cap.delta:
            return None
        delta = self.cap.delta - self.spent_approx_delta
        order = self._outside_order(epsilon_from_rho_delta(self.spent_rho, delta))
        if order is None:
            return None
        low, high = _deltas_of_rho(self.spent_rho, self.min_order, self.max_order)
        held = self.spent_approx_delta
        nearest = min(max(order, self.min_order), self.max_order)
        return (
            f"dataset '{self.name}': the rho spent (rho={self.spent_rho:.4g}) converts best at the cap's "
            f"delta={self.cap.delta:g} at Rényi order {order:.4g}, but {_binding(self, order)} (a DP-SGD charge "
            f"made for another delta), so its epsilon is given at order {nearest:.4g}. The best order is in range "
            f"for a cap delta from {held + low:.3g} to {held + high:.3g}."
        )

    def _outside_order(self, epsilon: float) -> float | None:
        """The best conversion order of the spent rho at ``epsilon`` when it lies outside the spends' range."""
        if self.spent_rho <= 0 or epsilon <= 0 or (self.min_order <= 1 and math.isinf(self.max_order)):
            return None
        order = conversion_order(self.spent_rho, epsilon)
        return None if _within_orders(order, self.min_order, self.max_order) else order


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
    min_order: float | None = None
    max_order: float | None = None


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
        min_order=row.min_order,
        max_order=row.max_order,
    )


def _create_tables(engine: Engine) -> None:
    """Create the tables a ledger lacks, in one write transaction (on SQLite ``BEGIN IMMEDIATE`` serialises
    processes opening the same file at once); elsewhere a process that loses the race to create a table finds
    it made on its second look."""
    for attempt in range(2):
        try:
            with engine.begin() as connection:
                _metadata.create_all(connection)
            return
        except (exc.ProgrammingError, exc.IntegrityError, exc.OperationalError):
            if attempt:
                raise


def _add_missing_columns(engine: Engine) -> None:
    """Bring a ledger created by an older privsynth up to the current schema: add the spend columns it lacks,
    ``approx_delta`` (0 for every existing row, which is what those rows spent approximately) and the Rényi order
    range ``min_order`` / ``max_order`` (empty: those spends were charged without one).

    Each column is added inside a write transaction after checking again, so two processes opening the same old
    file at once add it once (SQLite's ``BEGIN IMMEDIATE``; PostgreSQL's ``ADD COLUMN IF NOT EXISTS``).
    """
    for name, clause in _MISSING_COLUMNS:
        if name in {column["name"] for column in inspect(engine).get_columns(_spends.name)}:
            continue
        with engine.begin() as connection:
            if name in {column["name"] for column in inspect(connection).get_columns(_spends.name)}:
                continue
            guard = " IF NOT EXISTS" if connection.dialect.name == "postgresql" else ""
            column_type = Double().compile(dialect=connection.dialect)
            connection.exec_driver_sql(
                f"ALTER TABLE {_spends.name} ADD COLUMN{guard} {name} {column_type} {clause}".rstrip()
            )
        logger.info("added column %s to %s in the privacy ledger", name, _spends.name)


def _content_key(engine: Engine) -> bytes:
    """The secret that keys content hashes in this ledger, created on first open.

    When it is created, the datasets already in the ledger were registered by content fingerprint (older
    privsynth): each gets the keyed hash of its own key as content, so data coming back under a name is matched
    with them without the fingerprint ever being logged.
    """
    with engine.begin() as connection:
        found = connection.execute(select(_settings.c.value).where(_settings.c.key == _CONTENT_KEY)).scalar()
        if found is not None:
            return bytes.fromhex(found)
        key = secrets.token_bytes(32)
        try:
            with connection.begin_nested():
                connection.execute(insert(_settings).values(key=_CONTENT_KEY, value=key.hex()))
        except exc.IntegrityError:  # another process created it first (PostgreSQL; SQLite holds the lock)
            return bytes.fromhex(
                connection.execute(select(_settings.c.value).where(_settings.c.key == _CONTENT_KEY)).scalar_one()
            )
        now = datetime.now(UTC)
        for (legacy,) in connection.execute(select(_datasets.c.fingerprint)).all():
            connection.execute(
                insert(_contents).values(content_hmac=_keyed(key, legacy), dataset=legacy, created_at=now)
            )
    return key


def _keyed(key: bytes, content: str) -> str:
    """HMAC-SHA256 of a content fingerprint under the ledger's secret, in hex: the only form the ledger keeps."""
    return hmac.new(key, content.encode(), hashlib.sha256).hexdigest()


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


def conversion_order(rho: float, epsilon: float) -> float:
    """The Rényi order at which rho-zCDP converts to ``epsilon`` most tightly (CKS20, Proposition 12).

    The minimiser over alpha of ``(alpha - 1)(alpha rho - epsilon) + alpha log(1 - 1/alpha) - log(alpha - 1)``,
    the log of the delta bound, which is convex in alpha: bisection on the sign of its derivative,
    ``(2 alpha - 1) rho - epsilon + log(1 - 1/alpha)``, as in :mod:`privsynth.privacy.budget`.
    """
    if not rho > 0 or not epsilon > 0:
        raise ParameterError(f"rho and epsilon must be > 0, got rho={rho!r}, epsilon={epsilon!r}")
    low, high = 1.01, (epsilon + 1) / (2 * rho) + 2
    alpha = (low + high) / 2
    while alpha not in (low, high):
        if (2 * alpha - 1) * rho - epsilon + math.log1p(-1 / alpha) < 0:
            low = alpha
        else:
            high = alpha
        alpha = (low + high) / 2
    return alpha


def _delta_at(rho: float, epsilon: float, alpha: float) -> float:
    """The delta that rho-zCDP, used at the one Rényi order ``alpha``, gives for ``epsilon`` (CKS20,
    Proposition 12), at most 1."""
    exponent = (alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha) - math.log(alpha - 1)
    return 1.0 if exponent >= 0 else math.exp(exponent)


def _rho_at(epsilon: float, delta: float, alpha: float) -> float:
    """The largest rho whose zCDP, used at the one Rényi order ``alpha``, gives (epsilon, delta) (CKS20,
    Proposition 12 solved for rho), at least 0."""
    log_terms = math.log(delta) - alpha * math.log1p(-1 / alpha) + math.log(alpha - 1)
    return max(0.0, (epsilon + log_terms / (alpha - 1)) / alpha)


def _within_orders(order: float, low: float, high: float) -> bool:
    return low * (1 - _ORDER_TOLERANCE) <= order <= high * (1 + _ORDER_TOLERANCE)


def _deltas_of_rho(rho: float, low: float, high: float) -> tuple[float, float]:
    """The deltas at which ``rho`` is converted at an order between ``low`` and ``high``: at its optimal order
    alpha, epsilon is ``(2 alpha - 1) rho + log(1 - 1/alpha)``, and delta falls as alpha grows."""

    def at(alpha: float) -> float:
        if alpha <= 1:
            return 1.0
        epsilon = (2 * alpha - 1) * rho + math.log1p(-1 / alpha)
        return 1.0 if epsilon <= 0 else _delta_at(rho, epsilon, alpha)

    return (0.0 if math.isinf(high) else at(high)), at(low)


def _deltas_of_epsilon(epsilon: float, low: float, high: float) -> tuple[float, float]:
    """The deltas at which a cap of ``epsilon`` is converted at an order between ``low`` and ``high``: at its
    optimal order alpha, rho is ``(epsilon - log(1 - 1/alpha)) / (2 alpha - 1)``, and delta falls as alpha grows."""

    def at(alpha: float) -> float:
        if alpha <= 1:
            return 1.0
        return _delta_at((epsilon - math.log1p(-1 / alpha)) / (2 * alpha - 1), epsilon, alpha)

    return (0.0 if math.isinf(high) else at(high)), at(low)


def _orders_text(low: float, high: float) -> str:
    return f"Rényi orders {low:.6g} to {high:.6g}" if math.isfinite(high) else f"Rényi orders from {low:.6g}"


def _binding(record: DatasetRecord, order: float) -> str:
    """Which spend keeps ``order`` out of the dataset's range."""
    spend = record.max_order_spend if order > record.max_order else record.min_order_spend
    return f"spend #{spend} holds only at {_orders_text(record.min_order, record.max_order)}"


def _epsilon_at(rho: float, delta: float, alpha: float) -> float:
    """The epsilon that rho-zCDP, used at the one Rényi order ``alpha``, gives at ``delta`` (CKS20,
    Proposition 12 solved for epsilon), at least 0."""
    log_terms = alpha * math.log1p(-1 / alpha) - math.log(alpha - 1) - math.log(delta)
    return max(0.0, alpha * rho + log_terms / (alpha - 1))


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


def _check_orders(min_order: float | None, max_order: float | None) -> tuple[float | None, float | None]:
    """The Rényi order range of a spend, checked: orders above 1, the lower bound not above the upper."""
    low = None if min_order is None else check_positive("min_order", min_order)
    high = None if max_order is None else check_positive("max_order", max_order)
    if (low is not None and low <= 1) or (high is not None and high <= 1):
        raise ParameterError(f"Rényi orders must be above 1, got min_order={min_order!r}, max_order={max_order!r}.")
    if low is not None and high is not None and low > high:
        raise ParameterError(f"min_order={min_order!r} is above max_order={max_order!r}; give the range in order.")
    return low, high


def _window(connection: Connection, dataset: str) -> tuple[float, int | None, float, int | None]:
    """The Rényi orders every spend on ``dataset`` holds at, [low, high], with the ids of the spends that set
    each bound (1 and infinity, without ids, when no spend is limited). Every spend that may have drawn noise
    counts, drawn under a reservation or not; cancelled reservations drew nothing."""
    rows = connection.execute(
        select(_spends.c.id, _spends.c.min_order, _spends.c.max_order).where(
            _spends.c.dataset == dataset,
            _spends.c.status != _CANCELLED,
            (_spends.c.min_order.is_not(None)) | (_spends.c.max_order.is_not(None)),
        )
    ).all()
    low, low_id, high, high_id = 1.0, None, math.inf, None
    for spend, min_order, max_order in rows:
        if min_order is not None and min_order > low:
            low, low_id = min_order, spend
        if max_order is not None and max_order < high:
            high, high_id = max_order, spend
    return low, low_id, high, high_id


class Ledger:
    """Where privsynth records privacy spends, per dataset name, and enforces each dataset's cap.

    ``url`` is a SQLAlchemy URL or a file path for SQLite; without one, ``$PRIVSYNTH_LEDGER`` and then
    ``~/.privsynth/ledger.sqlite`` are used. Tables (and the secret that keys content hashes) are created on
    first use. A dataset without a cap accepts any spend (and still records it).
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
        _create_tables(self._engine)
        _add_missing_columns(self._engine)
        self._content_key = _content_key(self._engine)

    def __repr__(self) -> str:
        return f"Ledger({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()
        self._reader.dispose()

    def register(
        self, name: str, *_removed: Never, content: str | None = None, label: str | None = None
    ) -> DatasetRecord:
        """Make a dataset known under ``name``, the key its budget is kept under; registering it again keeps
        its cap and spends.

        ``content`` is an optional fingerprint of the data (:meth:`Source.fingerprint`). The ledger keeps only
        its HMAC under the ledger's secret, and logs a warning when another dataset was registered with the same
        content: a hint that the data may already have a budget under another name, never the key. ``label`` is
        for callers that still use a fingerprint as the key: the name shown beside it.
        """
        if _removed:
            raise ParameterError(
                "Ledger.register takes the dataset's name only (budgets are kept per name, not per fingerprint): "
                "call Ledger.register(name), and pass a content fingerprint, if any, as content=..."
            )
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise ParameterError(
                f"the dataset name must be a non-empty string of at most 256 characters, got {name!r}; name the "
                "dataset the way you will name it again (--dataset NAME)"
            )
        lookalikes: Sequence[Any] = ()
        with self._engine.begin() as connection:
            exists = connection.execute(select(_datasets.c.fingerprint).where(_datasets.c.fingerprint == name)).first()
            now = datetime.now(UTC)
            if exists is None:
                connection.execute(insert(_datasets).values(fingerprint=name, name=label or name, created_at=now))
                logger.info("registered dataset %r in the privacy ledger", label or name)
            if content is not None:
                keyed = _keyed(self._content_key, content)
                lookalikes = connection.execute(
                    select(_datasets.c.fingerprint, _datasets.c.name)
                    .join(_contents, _contents.c.dataset == _datasets.c.fingerprint)
                    .where(_contents.c.content_hmac == keyed, _datasets.c.fingerprint != name)
                ).all()
                seen = connection.execute(
                    select(_contents.c.dataset).where(_contents.c.content_hmac == keyed, _contents.c.dataset == name)
                ).first()
                if seen is None:
                    connection.execute(insert(_contents).values(content_hmac=keyed, dataset=name, created_at=now))
            record = self._record(connection, self._lock(connection, name))
        for other in lookalikes:
            self._warn_lookalike(name, cast(str, content), other)
        return record

    def _warn_lookalike(self, name: str, content: str, other: Row[Any]) -> None:
        """Say that the data registered as ``name`` looks like dataset ``other``. A dataset an older ledger keyed
        by this very fingerprint is named by its label instead, so that the fingerprint never reaches a log."""
        if hmac.compare_digest(other.fingerprint, content):
            logger.warning(
                "this data looks like a dataset in the ledger (%s) that was registered by content fingerprint "
                "before budgets were kept by name, shown as %r by `privsynth ledger show`; give it a name with "
                "`privsynth ledger rename %s NAME` (or Ledger.rename) and pass --dataset NAME to spend from its "
                "budget",
                repr(self),
                other.name,
                other.name,
            )
            return
        logger.warning(
            "this data looks like dataset %r in the ledger (%s: the same content was registered under that "
            "name); pass --dataset %s to spend from its budget instead of a new budget for %r",
            other.fingerprint,
            repr(self),
            other.fingerprint,
            name,
        )

    def rename(self, old: str, new: str) -> DatasetRecord:
        """Keep the budget of dataset ``old`` under the name ``new`` from now on: its cap, spends and content
        hints move with it. This is how a dataset that an older ledger keyed by fingerprint gets a name."""
        if not isinstance(new, str) or not new.strip() or len(new) > 256:
            raise ParameterError(f"the new name must be a non-empty string of at most 256 characters, got {new!r}")
        with self._engine.begin() as connection:
            row = self._lock(connection, old)
            taken = connection.execute(select(_datasets.c.fingerprint).where(_datasets.c.fingerprint == new)).first()
            if taken is not None:
                raise ParameterError(
                    f"dataset {new!r} is already in the ledger; choose another name (budgets are never merged)"
                )
            connection.execute(
                insert(_datasets).values(
                    fingerprint=new,
                    name=new,
                    cap_rho=row.cap_rho,
                    cap_epsilon=row.cap_epsilon,
                    cap_delta=row.cap_delta,
                    created_at=row.created_at,
                )
            )
            connection.execute(update(_spends).where(_spends.c.dataset == old).values(dataset=new))
            connection.execute(update(_contents).where(_contents.c.dataset == old).values(dataset=new))
            connection.execute(_datasets.delete().where(_datasets.c.fingerprint == old))
            record = self._record(connection, self._lock(connection, new))
        logger.info("renamed dataset %r to %r in the privacy ledger", row.name, new)
        return record

    def set_cap(self, dataset: str, epsilon: float, delta: float) -> Budget:
        """Cap the total privacy cost on ``dataset`` at (epsilon, delta)-DP; returns the cap with its rho.

        A cap below what is already spent is allowed and simply refuses every further spend. A cap whose
        conversion (at the delta approximate spends leave) needs a Rényi order outside the range some spend
        holds at is refused with a :class:`~privsynth.errors.ParameterError` that names the spend and the
        deltas that would do.
        """
        cap = Budget.from_epsilon_delta(epsilon, delta)
        with self._engine.begin() as connection:
            row = self._lock(connection, dataset)
            record = self._record(connection, row)
            held = Fraction(record.spent_approx_delta) + Fraction(record.reserved_approx_delta)
            if record.min_order > 1 or record.max_order < math.inf:
                allowed = _cap_rho_at(cap, held)
                order = conversion_order(allowed, cap.epsilon) if allowed > 0 else math.inf
                if not _within_orders(order, record.min_order, record.max_order):
                    low, high = _deltas_of_epsilon(cap.epsilon, record.min_order, record.max_order)
                    raise ParameterError(
                        f"A cap of epsilon={cap.epsilon:g} at delta={cap.delta:g} on dataset '{record.name}' is "
                        f"converted at Rényi order {order:.4g}, and {_binding(record, order)} (a DP-SGD charge "
                        f"made for another delta). At epsilon={cap.epsilon:g} the cap converts at those orders for "
                        f"a delta from {float(held) + low:.3g} to {float(held) + high:.3g}; set it at such a delta."
                    )
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
        min_order: float | None = None,
        max_order: float | None = None,
    ) -> Spend:
        """Record that ``mechanism`` spends ``rho`` on ``dataset``, if the cap (or ``reservation``) allows it.

        ``delta`` is the mechanism's own delta when it is only delta-approximately rho-zCDP (DP key discovery),
        0 otherwise. ``min_order`` and ``max_order`` bound the Rényi orders at which the spend is
        (alpha, rho alpha)-RDP, for a mechanism that is not rho-zCDP at every order (DP-SGD); ``None`` leaves that
        side open. Call this *before* releasing anything. Raises :class:`~privsynth.errors.BudgetExceeded`,
        writing nothing, when the spend would pass the cap (in rho, or in delta), the rho or the delta reserved
        under ``reservation``, or would leave the cap's conversion at a Rényi order some spend does not hold at.
        """
        rho = check_positive("rho", rho)
        delta = check_positive("delta", delta, allow_zero=True)
        orders = _check_orders(min_order, max_order)
        with self._engine.begin() as connection:
            row = self._lock(connection, dataset)
            cap = _cap_of(row)
            if reservation is None:
                self._check_cap(connection, row, rho, delta, cap, orders)
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
                self._check_conversion(connection, row, 0.0, 0.0, cap, orders)
            spend = self._insert(
                connection, dataset, rho, delta, cap, mechanism, purpose, _COMMITTED, reservation, release_id, orders
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
            self._check_cap(connection, row, rho, delta, cap, (None, None))
            spend = self._insert(
                connection, dataset, rho, delta, cap, "reservation", purpose, _RESERVED, None, release_id, (None, None)
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

    @classmethod
    def _check_cap(
        cls,
        connection: Connection,
        row: Row[Any],
        rho: float,
        delta: float,
        cap: Budget | None,
        orders: tuple[float | None, float | None],
    ) -> None:
        """Raise :class:`~privsynth.errors.BudgetExceeded` unless spending ``rho`` and approximate ``delta`` on
        the dataset of ``row`` keeps it within ``cap``.

        Counted are committed spends and open reservations, not spends drawn on a reservation (the reservation
        counts for them) nor cancelled reservations. With R and D the rho and approximate delta counted, this
        request included, the spend fits when D < cap.delta and R fits the rho that (cap.epsilon,
        cap.delta - D) buys, at a Rényi order every spend holds at (:meth:`_check_conversion`).
        """
        if cap is None:
            return
        used_rho, used_delta = cls._counted(connection, row.fingerprint)
        total_delta = used_delta + Fraction(delta)
        allowed = _cap_rho_at(cap, total_delta) if total_delta < cap.delta else 0.0
        if total_delta < cap.delta and fits_within(used_rho, rho, allowed):
            cls._check_conversion(connection, row, rho, delta, cap, orders)
            return
        if total_delta == 0:
            raise BudgetExceeded(_refusal(row.name, row.fingerprint, used_rho, rho, cap))
        raise BudgetExceeded(
            _approximate_refusal(row.name, row.fingerprint, used_rho, float(used_delta), rho, delta, allowed, cap)
        )

    @staticmethod
    def _counted(connection: Connection, dataset: str) -> tuple[list[float], Fraction]:
        """The rhos and the exact sum of approximate deltas that count against the cap of ``dataset``."""
        counted = connection.execute(
            select(_spends.c.rho, _spends.c.approx_delta).where(
                _spends.c.dataset == dataset,
                _spends.c.reservation_id.is_(None),
                _spends.c.status.in_([_COMMITTED, _RESERVED]),
            )
        ).all()
        return [amount for amount, _ in counted], sum((Fraction(amount) for _, amount in counted), Fraction(0))

    @classmethod
    def _check_conversion(
        cls,
        connection: Connection,
        row: Row[Any],
        rho: float,
        delta: float,
        cap: Budget | None,
        orders: tuple[float | None, float | None],
    ) -> None:
        """Raise :class:`~privsynth.errors.BudgetExceeded` unless, with this request (``rho``, ``delta`` and the
        Rényi ``orders`` it holds at) added, the dataset's total rho R still implies the cap at some order that
        every spend holds at.

        The log of the delta bound is convex in the order, so its minimum over the orders [low, high] that all
        spends share is at the unconstrained optimum clipped to them. When the cap's own conversion order lies
        in [low, high], R below the cap's rho is enough (the bound at that order grows with R).
        """
        if cap is None:
            return
        low, low_id, high, high_id = _window(connection, row.fingerprint)
        new_low, new_high = orders
        if new_low is not None and new_low > low:
            low, low_id = new_low, None
        if new_high is not None and new_high < high:
            high, high_id = new_high, None
        if low <= 1 and math.isinf(high):
            return
        used_rho, used_delta = cls._counted(connection, row.fingerprint)
        total_delta = used_delta + Fraction(delta)
        if total_delta >= cap.delta:
            return  # refused on the delta side already
        allowed = _cap_rho_at(cap, total_delta)
        if allowed > 0 and _within_orders(conversion_order(allowed, cap.epsilon), low, high):
            return
        total = math.fsum([*used_rho, rho])
        left = float(Fraction(cap.delta) - total_delta)
        best = min(max(conversion_order(total, cap.epsilon), low), high) if total > 0 else high
        needed = _delta_at(total, cap.epsilon, best) if total > 0 else 0.0
        if needed <= left * (1 + float(RELATIVE_TOLERANCE)):
            return
        binding = low_id if best == low else high_id
        spend = "this spend" if binding is None else f"spend #{binding}"
        raise BudgetExceeded(
            f"Privacy spend on dataset '{row.name}' refused: {spend} holds only at {_orders_text(low, high)} (DP-SGD "
            f"is charged for one range of orders), and at those orders the dataset's rho={total:.4g} in all gives "
            f"epsilon={cap.epsilon:g} only at delta={needed:.3g}, above the delta={left:.3g} the cap leaves. Nothing "
            "was recorded or released; spend less, or set the cap (Ledger.set_cap) at a delta those orders reach."
        )

    def _record(self, connection: Connection, row: Row[Any]) -> DatasetRecord:
        rows = connection.execute(
            select(_spends.c.rho, _spends.c.approx_delta, _spends.c.status).where(
                _spends.c.dataset == row.fingerprint, _spends.c.reservation_id.is_(None)
            )
        ).all()
        low, low_id, high, high_id = _window(connection, row.fingerprint)
        return DatasetRecord(
            name=row.fingerprint,
            label=None if row.name == row.fingerprint else row.name,
            min_order=low,
            max_order=high,
            min_order_spend=low_id,
            max_order_spend=high_id,
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
        orders: tuple[float | None, float | None],
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
            min_order=orders[0],
            max_order=orders[1],
        )
        values = {field: value for field, value in asdict(spend).items() if field != "id"}
        # inserted_primary_key is None only for executemany.
        key = cast(Row[Any], connection.execute(insert(_spends).values(**values)).inserted_primary_key)
        return replace(spend, id=int(key[0]))

    @staticmethod
    def _unknown(name: str) -> ParameterError:
        return ParameterError(
            f"Dataset {name!r} is not in the privacy ledger; register it with Ledger.register({name!r}) first (or "
            "`privsynth ledger cap NAME`; `privsynth ledger show` lists the datasets)."
        )
