"""Dataset identity in the privacy ledger: budgets are kept under a dataset's declared name; a content
fingerprint is only a hint, kept as an HMAC-SHA256 under a random secret stored in the ledger's own database,
that warns when data registered under one name looks like another dataset's; renaming moves a budget to a new
name.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, exc, insert, select, update

from privsynth.errors import ParameterError
from privsynth.privacy._ledger_tables import CONTENT_KEY, CONTENTS, DATASETS, SETTINGS, SPENDS

logger = logging.getLogger("privsynth.privacy.ledger")  # the ledger's own log


def content_key(engine: Engine) -> bytes:
    """The secret that keys content hashes in this ledger, created on first open.

    When it is created, the datasets already in the ledger were registered by content fingerprint (older
    privsynth): each gets the keyed hash of its own key as content, so data coming back under a name is matched
    with them without the fingerprint ever being logged.
    """
    with engine.begin() as connection:
        found = connection.execute(select(SETTINGS.c.value).where(SETTINGS.c.key == CONTENT_KEY)).scalar()
        if found is not None:
            return bytes.fromhex(found)
        key = secrets.token_bytes(32)
        try:
            with connection.begin_nested():
                connection.execute(insert(SETTINGS).values(key=CONTENT_KEY, value=key.hex()))
        except exc.IntegrityError:  # another process created it first (PostgreSQL; SQLite holds the lock)
            return bytes.fromhex(
                connection.execute(select(SETTINGS.c.value).where(SETTINGS.c.key == CONTENT_KEY)).scalar_one()
            )
        now = datetime.now(UTC)
        for (legacy,) in connection.execute(select(DATASETS.c.fingerprint)).all():
            connection.execute(insert(CONTENTS).values(content_hmac=keyed(key, legacy), dataset=legacy, created_at=now))
    return key


def keyed(key: bytes, content: str) -> str:
    """HMAC-SHA256 of a content fingerprint under the ledger's secret, in hex: the only form the ledger keeps."""
    return hmac.new(key, content.encode(), hashlib.sha256).hexdigest()


def add_dataset(
    connection: Connection, key: bytes, name: str, *, label: str | None, content: str | None
) -> Sequence[Row[Any]]:
    """Register ``name`` (shown as ``label``, if given) unless it is known, and keep the hash of its ``content``
    hint keyed by ``key``; returns the other datasets registered with the same content."""
    lookalikes: Sequence[Any] = ()
    exists = connection.execute(select(DATASETS.c.fingerprint).where(DATASETS.c.fingerprint == name)).first()
    now = datetime.now(UTC)
    if exists is None:
        connection.execute(insert(DATASETS).values(fingerprint=name, name=label or name, created_at=now))
        logger.info("registered dataset %r in the privacy ledger", label or name)
    if content is not None:
        hint = keyed(key, content)
        lookalikes = connection.execute(
            select(DATASETS.c.fingerprint, DATASETS.c.name)
            .join(CONTENTS, CONTENTS.c.dataset == DATASETS.c.fingerprint)
            .where(CONTENTS.c.content_hmac == hint, DATASETS.c.fingerprint != name)
        ).all()
        seen = connection.execute(
            select(CONTENTS.c.dataset).where(CONTENTS.c.content_hmac == hint, CONTENTS.c.dataset == name)
        ).first()
        if seen is None:
            connection.execute(insert(CONTENTS).values(content_hmac=hint, dataset=name, created_at=now))
    return lookalikes


def warn_lookalike(ledger: str, name: str, content: str, other: Row[Any]) -> None:
    """Say that the data registered as ``name`` in ``ledger`` (its ``repr``) looks like dataset ``other``. A
    dataset an older ledger keyed by this very fingerprint is named by its label instead, so that the fingerprint
    never reaches a log."""
    if hmac.compare_digest(other.fingerprint, content):
        logger.warning(
            "this data looks like a dataset in the ledger (%s) that was registered by content fingerprint "
            "before budgets were kept by name, shown as %r by `privsynth ledger show`; give it a name with "
            "`privsynth ledger rename %s NAME` (or Ledger.rename) and pass --dataset NAME to spend from its "
            "budget",
            ledger,
            other.name,
            other.name,
        )
        return
    logger.warning(
        "this data looks like dataset %r in the ledger (%s: the same content was registered under that "
        "name); pass --dataset %s to spend from its budget instead of a new budget for %r",
        other.fingerprint,
        ledger,
        other.fingerprint,
        name,
    )


def move_dataset(connection: Connection, row: Row[Any], new: str) -> None:
    """Move the dataset of ``row`` (locked) to the name ``new``, with its cap, spends and content hints."""
    old = row.fingerprint
    taken = connection.execute(select(DATASETS.c.fingerprint).where(DATASETS.c.fingerprint == new)).first()
    if taken is not None:
        raise ParameterError(
            f"dataset {new!r} is already in the ledger; choose another name (budgets are never merged)"
        )
    connection.execute(
        insert(DATASETS).values(
            fingerprint=new,
            name=new,
            cap_rho=row.cap_rho,
            cap_epsilon=row.cap_epsilon,
            cap_delta=row.cap_delta,
            created_at=row.created_at,
        )
    )
    connection.execute(update(SPENDS).where(SPENDS.c.dataset == old).values(dataset=new))
    connection.execute(update(CONTENTS).where(CONTENTS.c.dataset == old).values(dataset=new))
    connection.execute(DATASETS.delete().where(DATASETS.c.fingerprint == old))
