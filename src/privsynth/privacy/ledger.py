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

This module is the :class:`Ledger` (register, caps, spend, reserve, commit, cancel, settle, the checks against
the cap). Beside it: the tables and their migrations (``_ledger_tables``), dataset identity (``_ledger_identity``:
names, keyed content hints, rename), what the ledger reports (``_ledger_records``: :class:`DatasetRecord`,
:class:`Spend`, Rényi order ranges, refusals) and the database set-up shared with the registry and the service
(:mod:`privsynth.privacy.database`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Never, cast

from sqlalchemy import Connection, Engine, Row, insert, select, update

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy._ledger_identity import add_dataset, content_key, move_dataset, warn_lookalike
from privsynth.privacy._ledger_records import (
    DatasetRecord,
    Spend,
    approximate_refusal,
    binding,
    cap_rho_at,
    check_orders,
    deltas_of_epsilon,
    orders_text,
    refusal,
    within_orders,
)
from privsynth.privacy._ledger_tables import (
    CANCELLED,
    COMMITTED,
    DATASETS,
    RESERVED,
    SPENDS,
    add_missing_columns,
    cap_of,
    counted,
    create_tables,
    spend_from_row,
    window,
)
from privsynth.privacy.budget import (
    RELATIVE_TOLERANCE,
    Budget,
    check_positive,
    conversion_order,
    delta_at_order,
    epsilon_from_rho_delta,
    fits_within,
)
from privsynth.privacy.database import (
    DEFAULT_LEDGER_PATH,
    LEDGER_ENV_VAR,
    display_url,
    open_engine,
    open_reader,
    resolve_url,
    utc,
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


class Ledger:
    """Where privsynth records privacy spends, per dataset name, and enforces each dataset's cap.

    ``url`` is a SQLAlchemy URL or a file path for SQLite; without one, ``$PRIVSYNTH_LEDGER`` and then
    ``~/.privsynth/ledger.sqlite`` are used. Tables (and the secret that keys content hashes) are created on
    first use. A dataset without a cap accepts any spend (and still records it).
    """

    def __init__(self, url: str | os.PathLike[str] | None = None) -> None:
        self.url = resolve_url(url)
        self._engine = open_engine(self.url, serialized=True)
        # Reads (records, entries) go through a second engine that does not take SQLite's write lock, so that
        # people reading budgets never queue behind a spend; every check against the cap runs under the lock.
        self._reader = open_reader(self.url, self._engine)
        create_tables(self._engine)
        add_missing_columns(self._engine)
        self._content_key = content_key(self._engine)

    def __repr__(self) -> str:
        return f"Ledger({display_url(self.url)!r})"

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
        with self._engine.begin() as connection:
            lookalikes = add_dataset(connection, self._content_key, name, label=label, content=content)
            record = self._record(connection, self._lock(connection, name))
        for other in lookalikes:
            warn_lookalike(repr(self), name, cast(str, content), other)
        return record

    def rename(self, old: str, new: str) -> DatasetRecord:
        """Keep the budget of dataset ``old`` under the name ``new`` from now on: its cap, spends and content
        hints move with it. This is how a dataset that an older ledger keyed by fingerprint gets a name."""
        if not isinstance(new, str) or not new.strip() or len(new) > 256:
            raise ParameterError(f"the new name must be a non-empty string of at most 256 characters, got {new!r}")
        with self._engine.begin() as connection:
            row = self._lock(connection, old)
            move_dataset(connection, row, new)
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
                allowed = cap_rho_at(cap, held)
                order = conversion_order(allowed, cap.epsilon) if allowed > 0 else math.inf
                if not within_orders(order, record.min_order, record.max_order):
                    low, high = deltas_of_epsilon(cap.epsilon, record.min_order, record.max_order)
                    raise ParameterError(
                        f"A cap of epsilon={cap.epsilon:g} at delta={cap.delta:g} on dataset '{record.name}' is "
                        f"converted at Rényi order {order:.4g}, and {binding(record, order)} (a DP-SGD charge "
                        f"made for another delta). At epsilon={cap.epsilon:g} the cap converts at those orders for "
                        f"a delta from {float(held) + low:.3g} to {float(held) + high:.3g}; set it at such a delta."
                    )
            connection.execute(
                update(DATASETS)
                .where(DATASETS.c.fingerprint == dataset)
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
        orders = check_orders(min_order, max_order)
        with self._engine.begin() as connection:
            row = self._lock(connection, dataset)
            cap = cap_of(row)
            if reservation is None:
                self._check_cap(connection, row, rho, delta, cap, orders)
            else:
                held = self._reservation(connection, reservation, dataset)
                drawn = connection.execute(
                    select(SPENDS.c.rho, SPENDS.c.approx_delta).where(SPENDS.c.reservation_id == reservation)
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
                connection, dataset, rho, delta, cap, mechanism, purpose, COMMITTED, reservation, release_id, orders
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
            cap = cap_of(row)
            self._check_cap(connection, row, rho, delta, cap, (None, None))
            spend = self._insert(
                connection, dataset, rho, delta, cap, "reservation", purpose, RESERVED, None, release_id, (None, None)
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
            values: dict[str, Any] = {"status": COMMITTED}
            if release_id is not None:
                values["release_id"] = release_id
            connection.execute(update(SPENDS).where(SPENDS.c.id == reservation).values(**values))
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
            connection.execute(update(SPENDS).where(SPENDS.c.id == reservation).values(status=CANCELLED))
        logger.info("cancelled reservation %d", reservation)

    def settle(self, reservation: int, *, connection: Connection | None = None) -> str | None:
        """Close a reservation whose job ended without a release: commit it if a mechanism drew noise under it,
        cancel it otherwise. Returns ``"committed"`` or ``"cancelled"``, or ``None`` when the reservation was
        already closed (so a job's reservation is settled exactly once, whoever gets there first).
        """
        with self._within(connection) as connection:
            row = connection.execute(select(SPENDS.c.dataset).where(SPENDS.c.id == reservation)).first()
            if row is None:
                raise ParameterError(f"Reservation {reservation} does not exist.")
            self._lock(connection, row.dataset)
            status = connection.execute(select(SPENDS.c.status).where(SPENDS.c.id == reservation)).scalar_one()
            if status != RESERVED:
                return None
            outcome = COMMITTED if self._drawn(connection, reservation) else CANCELLED
            connection.execute(update(SPENDS).where(SPENDS.c.id == reservation).values(status=outcome))
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
            row = connection.execute(select(DATASETS).where(DATASETS.c.fingerprint == fingerprint)).first()
            if row is None:
                raise self._unknown(fingerprint)
            return self._record(connection, row)

    def datasets(self) -> list[DatasetRecord]:
        """Every dataset in the ledger, oldest first."""
        with self._reader.connect() as connection:
            rows = connection.execute(select(DATASETS).order_by(DATASETS.c.created_at)).all()
            return [self._record(connection, row) for row in rows]

    def entries(self, dataset: str | None = None) -> list[Spend]:
        """Every ledger row, or those of one dataset, in the order they were written."""
        query = select(SPENDS).order_by(SPENDS.c.id)
        if dataset is not None:
            query = query.where(SPENDS.c.dataset == dataset)
        with self._reader.connect() as connection:
            return [spend_from_row(row) for row in connection.execute(query)]

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
        found = connection.execute(select(SPENDS.c.id).where(SPENDS.c.reservation_id == reservation).limit(1))
        return found.first() is not None

    def _lock(self, connection: Connection, fingerprint: str) -> Row[Any]:
        """The dataset row, locked for the rest of the transaction (``FOR UPDATE``; a no-op on SQLite,
        whose ``BEGIN IMMEDIATE`` already holds the database's write lock)."""
        row = connection.execute(
            select(DATASETS).where(DATASETS.c.fingerprint == fingerprint).with_for_update()
        ).first()
        if row is None:
            raise self._unknown(fingerprint)
        return row

    def _reservation(self, connection: Connection, reservation: int, dataset: str | None) -> Spend:
        """The open reservation ``reservation``, with its dataset row locked."""
        row = connection.execute(select(SPENDS).where(SPENDS.c.id == reservation)).first()
        if row is None or row.status != RESERVED or row.reservation_id is not None:
            state = "does not exist" if row is None else f"is {row.status}, not an open reservation"
            raise ParameterError(f"Reservation {reservation} {state}; reserve budget with Ledger.reserve first.")
        if dataset is not None and row.dataset != dataset:
            raise ParameterError(f"Reservation {reservation} belongs to dataset {row.dataset}, not {dataset}.")
        self._lock(connection, row.dataset)
        held = spend_from_row(connection.execute(select(SPENDS).where(SPENDS.c.id == reservation)).one())
        if held.status != RESERVED:
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
        used_rho, used_delta = counted(connection, row.fingerprint)
        total_delta = used_delta + Fraction(delta)
        allowed = cap_rho_at(cap, total_delta) if total_delta < cap.delta else 0.0
        if total_delta < cap.delta and fits_within(used_rho, rho, allowed):
            cls._check_conversion(connection, row, rho, delta, cap, orders)
            return
        if total_delta == 0:
            raise BudgetExceeded(refusal(row.name, row.fingerprint, used_rho, rho, cap))
        raise BudgetExceeded(
            approximate_refusal(row.name, row.fingerprint, used_rho, float(used_delta), rho, delta, allowed, cap)
        )

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
        low, low_id, high, high_id = window(connection, row.fingerprint)
        new_low, new_high = orders
        if new_low is not None and new_low > low:
            low, low_id = new_low, None
        if new_high is not None and new_high < high:
            high, high_id = new_high, None
        if low <= 1 and math.isinf(high):
            return
        used_rho, used_delta = counted(connection, row.fingerprint)
        total_delta = used_delta + Fraction(delta)
        if total_delta >= cap.delta:
            return  # refused on the delta side already
        allowed = cap_rho_at(cap, total_delta)
        if allowed > 0 and within_orders(conversion_order(allowed, cap.epsilon), low, high):
            return
        total = math.fsum([*used_rho, rho])
        left = float(Fraction(cap.delta) - total_delta)
        best = min(max(conversion_order(total, cap.epsilon), low), high) if total > 0 else high
        needed = delta_at_order(total, cap.epsilon, best) if total > 0 else 0.0
        if needed <= left * (1 + float(RELATIVE_TOLERANCE)):
            return
        binding = low_id if best == low else high_id
        spend = "this spend" if binding is None else f"spend #{binding}"
        raise BudgetExceeded(
            f"Privacy spend on dataset '{row.name}' refused: {spend} holds only at {orders_text(low, high)} (DP-SGD "
            f"is charged for one range of orders), and at those orders the dataset's rho={total:.4g} in all gives "
            f"epsilon={cap.epsilon:g} only at delta={needed:.3g}, above the delta={left:.3g} the cap leaves. Nothing "
            "was recorded or released; spend less, or set the cap (Ledger.set_cap) at a delta those orders reach."
        )

    def _record(self, connection: Connection, row: Row[Any]) -> DatasetRecord:
        rows = connection.execute(
            select(SPENDS.c.rho, SPENDS.c.approx_delta, SPENDS.c.status).where(
                SPENDS.c.dataset == row.fingerprint, SPENDS.c.reservation_id.is_(None)
            )
        ).all()
        low, low_id, high, high_id = window(connection, row.fingerprint)
        return DatasetRecord(
            name=row.fingerprint,
            label=None if row.name == row.fingerprint else row.name,
            min_order=low,
            max_order=high,
            min_order_spend=low_id,
            max_order_spend=high_id,
            cap=cap_of(row),
            spent_rho=math.fsum(rho for rho, _, status in rows if status == COMMITTED),
            reserved_rho=math.fsum(rho for rho, _, status in rows if status == RESERVED),
            created_at=utc(row.created_at),
            spent_approx_delta=math.fsum(delta for _, delta, status in rows if status == COMMITTED),
            reserved_approx_delta=math.fsum(delta for _, delta, status in rows if status == RESERVED),
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
        key = cast(Row[Any], connection.execute(insert(SPENDS).values(**values)).inserted_primary_key)
        return replace(spend, id=int(key[0]))

    @staticmethod
    def _unknown(name: str) -> ParameterError:
        return ParameterError(
            f"Dataset {name!r} is not in the privacy ledger; register it with Ledger.register({name!r}) first (or "
            "`privsynth ledger cap NAME`; `privsynth ledger show` lists the datasets)."
        )
