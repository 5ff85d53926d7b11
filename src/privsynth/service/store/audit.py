"""The audit log: every change and every refusal, with who asked."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import insert, select

from privsynth.privacy.database import utc
from privsynth.service.store.parts import StoreParts
from privsynth.service.store.records import User, utc_now
from privsynth.service.store.tables import audit_table

logger = logging.getLogger(__name__)


class AuditTables(StoreParts):
    """The audit log."""

    def audit(
        self, user: User | None, action: str, target: str | None, outcome: str = "ok", detail: str | None = None
    ) -> None:
        """Append one line to the audit log."""
        with self.ledger.begin() as connection:
            connection.execute(
                insert(audit_table).values(
                    at=utc_now(),
                    user_id=None if user is None else user.id,
                    user_name=None if user is None else user.name,
                    action=action,
                    target=target,
                    outcome=outcome,
                    detail=None if detail is None else detail[:2000],
                )
            )

    def audit_log(self, limit: int = 500, dataset_id: str | None = None) -> list[dict[str, Any]]:
        query = select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
        if dataset_id is not None:
            query = query.where(audit_table.c.target.like(f"%{dataset_id}%"))
        with self._read.connect() as connection:
            rows = connection.execute(query).all()
        return [{**row._asdict(), "at": utc(row.at).isoformat()} for row in rows]
