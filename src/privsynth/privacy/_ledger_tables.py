"""The privacy ledger's tables, their migrations from older privsynth, and the queries on them that the ledger
and its records share (a spend from its row, a dataset's cap, the Rényi orders its spends hold at, what counts
against its cap).

The tables live in privsynth's own database (:mod:`privsynth.privacy.database`), beside the release registry's
and the service's. A dataset's content fingerprint is never stored: only its HMAC-SHA256 under a random secret
kept in the settings table (:mod:`privsynth.privacy._ledger_identity`).
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import Any, Final

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
    exc,
    inspect,
    select,
    text,
)

from privsynth.privacy._ledger_records import Spend
from privsynth.privacy.budget import Budget
from privsynth.privacy.database import utc

logger = logging.getLogger("privsynth.privacy.ledger")  # the ledger's own log

COMMITTED: Final = "committed"
RESERVED: Final = "reserved"
CANCELLED: Final = "cancelled"
CONTENT_KEY: Final = "content_hmac_key"
MISSING_COLUMNS: Final = (("approx_delta", "NOT NULL DEFAULT 0"), ("min_order", ""), ("max_order", ""))

metadata = MetaData()

# The key column keeps its old name, ``fingerprint``, so ledgers written before budgets were kept by name open
# unchanged: it now holds the dataset's name. ``name`` is the label shown beside it (the same as the key, except
# for datasets registered by fingerprint, where it is the name the data had then).
DATASETS = Table(
    "privsynth_datasets",
    metadata,
    Column("fingerprint", String(256), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("cap_rho", Double, nullable=True),
    Column("cap_epsilon", Double, nullable=True),
    Column("cap_delta", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

SPENDS = Table(
    "privsynth_spends",
    metadata,
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

SETTINGS = Table(
    "privsynth_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

CONTENTS = Table(
    "privsynth_dataset_contents",
    metadata,
    Column("content_hmac", String(64), primary_key=True),
    Column("dataset", String(256), ForeignKey("privsynth_datasets.fingerprint"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def create_tables(engine: Engine) -> None:
    """Create the tables a ledger lacks, in one write transaction (on SQLite ``BEGIN IMMEDIATE`` serialises
    processes opening the same file at once); elsewhere a process that loses the race to create a table finds
    it made on its second look."""
    for attempt in range(2):
        try:
            with engine.begin() as connection:
                metadata.create_all(connection)
            return
        except (exc.ProgrammingError, exc.IntegrityError, exc.OperationalError):
            if attempt:
                raise


def add_missing_columns(engine: Engine) -> None:
    """Bring a ledger created by an older privsynth up to the current schema: add the spend columns it lacks,
    ``approx_delta`` (0 for every existing row, which is what those rows spent approximately) and the Rényi order
    range ``min_order`` / ``max_order`` (empty: those spends were charged without one).

    Each column is added inside a write transaction after checking again, so two processes opening the same old
    file at once add it once (SQLite's ``BEGIN IMMEDIATE``; PostgreSQL's ``ADD COLUMN IF NOT EXISTS``).
    """
    for name, clause in MISSING_COLUMNS:
        if name in {column["name"] for column in inspect(engine).get_columns(SPENDS.name)}:
            continue
        with engine.begin() as connection:
            if name in {column["name"] for column in inspect(connection).get_columns(SPENDS.name)}:
                continue
            guard = " IF NOT EXISTS" if connection.dialect.name == "postgresql" else ""
            column_type = Double().compile(dialect=connection.dialect)
            connection.exec_driver_sql(
                f"ALTER TABLE {SPENDS.name} ADD COLUMN{guard} {name} {column_type} {clause}".rstrip()
            )
        logger.info("added column %s to %s in the privacy ledger", name, SPENDS.name)


def spend_from_row(row: Row[Any]) -> Spend:
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
        created_at=utc(row.created_at),
        approx_delta=row.approx_delta,
        min_order=row.min_order,
        max_order=row.max_order,
    )


def cap_of(row: Row[Any]) -> Budget | None:
    if row.cap_rho is None:
        return None
    return Budget(epsilon=row.cap_epsilon, delta=row.cap_delta, rho=row.cap_rho)


def window(connection: Connection, dataset: str) -> tuple[float, int | None, float, int | None]:
    """The Rényi orders every spend on ``dataset`` holds at, [low, high], with the ids of the spends that set
    each bound (1 and infinity, without ids, when no spend is limited). Every spend that may have drawn noise
    counts, drawn under a reservation or not; cancelled reservations drew nothing."""
    rows = connection.execute(
        select(SPENDS.c.id, SPENDS.c.min_order, SPENDS.c.max_order).where(
            SPENDS.c.dataset == dataset,
            SPENDS.c.status != CANCELLED,
            (SPENDS.c.min_order.is_not(None)) | (SPENDS.c.max_order.is_not(None)),
        )
    ).all()
    low, low_id, high, high_id = 1.0, None, math.inf, None
    for spend, min_order, max_order in rows:
        if min_order is not None and min_order > low:
            low, low_id = min_order, spend
        if max_order is not None and max_order < high:
            high, high_id = max_order, spend
    return low, low_id, high, high_id


def counted(connection: Connection, dataset: str) -> tuple[list[float], Fraction]:
    """The rhos and the exact sum of approximate deltas that count against the cap of ``dataset``."""
    rows = connection.execute(
        select(SPENDS.c.rho, SPENDS.c.approx_delta).where(
            SPENDS.c.dataset == dataset,
            SPENDS.c.reservation_id.is_(None),
            SPENDS.c.status.in_([COMMITTED, RESERVED]),
        )
    ).all()
    return [amount for amount, _ in rows], sum((Fraction(amount) for _, amount in rows), Fraction(0))
