"""What every part of the store works through: the ledger and the database engines (set by :class:`Store`)."""

from __future__ import annotations

from sqlalchemy import Engine

from privsynth.privacy.ledger import Ledger
from privsynth.service.security import Credentials


class StoreParts:
    """The connections shared by the store's parts (users, audit, datasets, jobs, releases): writes run on the
    ledger's engine (so a reservation and a job change commit together), reads on ``_read``."""

    ledger: Ledger
    url: str
    sqlite: bool
    credentials: Credentials | None
    _write: Engine
    _read: Engine
