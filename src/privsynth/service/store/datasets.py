"""Datasets and grants: what is registered, who may see it in which role, and its budget in the ledger."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from sqlalchemy import insert, select, update

from privsynth.errors import ParameterError
from privsynth.privacy.ledger import DatasetRecord
from privsynth.service.security import without_password
from privsynth.service.store.parts import StoreParts
from privsynth.service.store.records import DatasetRow, User, dataset_row, utc_now
from privsynth.service.store.tables import GRANT_ROLES, datasets_table, grants_table, users_table

logger = logging.getLogger(__name__)


class DatasetTables(StoreParts):
    """Datasets, grants and each dataset's budget."""

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
                insert(datasets_table).values(
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
                    created_at=utc_now(),
                )
            )
            connection.execute(insert(grants_table).values(dataset_id=dataset_id, user_id=owner.id, role="custodian"))
        found = self.dataset(dataset_id)
        assert found is not None
        self.ledger.register(found.ledger_key, content=fingerprint)
        return found

    def dataset(self, dataset_id: str, *, include_deleted: bool = False) -> DatasetRow | None:
        query = select(datasets_table).where(datasets_table.c.id == dataset_id)
        if not include_deleted:
            query = query.where(datasets_table.c.deleted_at.is_(None))
        with self._read.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else dataset_row(row, self.credentials)

    def datasets(self, user: User) -> list[DatasetRow]:
        """The datasets ``user`` may see: all for an admin, those granted otherwise."""
        query = (
            select(datasets_table).where(datasets_table.c.deleted_at.is_(None)).order_by(datasets_table.c.created_at)
        )
        if user.role != "admin":
            granted = select(grants_table.c.dataset_id).where(grants_table.c.user_id == user.id)
            query = query.where(datasets_table.c.id.in_(granted))
        with self._read.connect() as connection:
            return [dataset_row(row, self.credentials) for row in connection.execute(query)]

    def access(self, user: User, dataset_id: str) -> str | None:
        """``user``'s role on the dataset: ``admin``, ``custodian``, ``analyst``, or None (no access)."""
        if user.role == "admin":
            return "admin"
        with self._read.connect() as connection:
            role = connection.execute(
                select(grants_table.c.role).where(
                    grants_table.c.dataset_id == dataset_id, grants_table.c.user_id == user.id
                )
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
            connection.execute(
                grants_table.delete().where(grants_table.c.dataset_id == dataset_id, grants_table.c.user_id == user.id)
            )
            connection.execute(
                insert(grants_table).values(dataset_id=dataset_id, user_id=user.id, role=role, share=share)
            )

    def grant_share(self, dataset_id: str, user: User) -> float | None:
        """The share of the cap ``user``'s grant on the dataset carries (None: the role's default)."""
        with self._read.connect() as connection:
            share = connection.execute(
                select(grants_table.c.share).where(
                    grants_table.c.dataset_id == dataset_id, grants_table.c.user_id == user.id
                )
            ).scalar()
        return None if share is None else float(share)

    def revoke(self, dataset_id: str, user: User) -> bool:
        with self.ledger.begin() as connection:
            result = connection.execute(
                grants_table.delete().where(grants_table.c.dataset_id == dataset_id, grants_table.c.user_id == user.id)
            )
        return bool(result.rowcount)

    def grants(self, dataset_id: str) -> list[dict[str, Any]]:
        query = (
            select(users_table.c.name, users_table.c.role.label("user_role"), grants_table.c.role, grants_table.c.share)
            .join(users_table, users_table.c.id == grants_table.c.user_id)
            .where(grants_table.c.dataset_id == dataset_id)
            .order_by(users_table.c.name)
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
            connection.execute(update(datasets_table).where(datasets_table.c.id == dataset_id).values(**values))

    def delete_dataset(self, dataset_id: str) -> None:
        """Mark the dataset deleted (its ledger rows and releases stay: the budget was spent)."""
        with self.ledger.begin() as connection:
            connection.execute(
                update(datasets_table).where(datasets_table.c.id == dataset_id).values(deleted_at=utc_now())
            )

    def budget(self, dataset: DatasetRow) -> DatasetRecord:
        return self.ledger.dataset(dataset.ledger_key)
