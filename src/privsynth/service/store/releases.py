"""Releases: the finished output of a job, and whether a non-DP one is published to analysts."""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from privsynth.service.store.parts import StoreParts
from privsynth.service.store.records import ReleaseRow, release_row
from privsynth.service.store.tables import releases_table

logger = logging.getLogger(__name__)


class ReleaseTables(StoreParts):
    """Releases."""

    def release(self, release_id: str) -> ReleaseRow | None:
        with self._read.connect() as connection:
            row = connection.execute(select(releases_table).where(releases_table.c.id == release_id)).first()
        return None if row is None else release_row(row)

    def set_published(self, release_id: str, published: bool) -> None:
        """Share (or stop sharing) a non-DP release with the dataset's analysts."""
        with self.ledger.begin() as connection:
            connection.execute(
                update(releases_table).where(releases_table.c.id == release_id).values(published=published)
            )

    def releases(self, dataset_ids: list[str]) -> list[ReleaseRow]:
        query = (
            select(releases_table)
            .where(releases_table.c.dataset_id.in_(dataset_ids))
            .order_by(releases_table.c.created_at.desc())
        )
        with self._read.connect() as connection:
            return [release_row(row) for row in connection.execute(query)]
