"""Users, their API tokens and their web sessions."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from sqlalchemy import delete, insert, select, update

from privsynth.errors import ParameterError
from privsynth.privacy.database import utc
from privsynth.service.store.parts import StoreParts
from privsynth.service.store.records import User, hash_token, utc_now
from privsynth.service.store.tables import ROLES, SESSION_HOURS, TOKEN_PREFIX, sessions_table, users_table

logger = logging.getLogger(__name__)


class UserTables(StoreParts):
    """Users (a role and a hashed token each) and web sessions (a row per session, so signing out ends it)."""

    def add_user(self, name: str, role: str) -> tuple[User, str]:
        """Create a user; returns it with its API token (shown once: only its hash is stored)."""
        name = name.strip()
        if not name or len(name) > 128 or any(ch.isspace() for ch in name):
            raise ParameterError(f"a user name is 1 to 128 characters without spaces, not {name!r}")
        if role not in ROLES:
            raise ParameterError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.ledger.begin() as connection:
            if connection.execute(select(users_table.c.id).where(users_table.c.name == name)).first() is not None:
                raise ParameterError(f"a user named {name!r} already exists; choose another name")
            result = connection.execute(
                insert(users_table).values(name=name, role=role, token_hash=hash_token(token), created_at=utc_now())
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
                select(users_table.c.id, users_table.c.name, users_table.c.role).where(
                    users_table.c.token_hash == hash_token(token), users_table.c.disabled_at.is_(None)
                )
            ).first()
        return None if row is None else User(id=row.id, name=row.name, role=row.role)

    def rotate_token(self, name: str) -> str:
        """A new token for user ``name`` (the old one stops working, and their web sessions end)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.ledger.begin() as connection:
            user_id = connection.execute(select(users_table.c.id).where(users_table.c.name == name)).scalar()
            if user_id is None:
                raise ParameterError(f"no user named {name!r}")
            connection.execute(
                update(users_table).where(users_table.c.id == user_id).values(token_hash=hash_token(token))
            )
            connection.execute(delete(sessions_table).where(sessions_table.c.user_id == user_id))
        logger.info("rotated the token of user %s", name)
        return token

    def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable user ``name`` (their token and web sessions stop working at once; grants and history stay) or
        enable them again."""
        with self.ledger.begin() as connection:
            row = connection.execute(
                select(users_table.c.id, users_table.c.role).where(users_table.c.name == name)
            ).first()
            if row is None:
                raise ParameterError(f"no user named {name!r}")
            connection.execute(
                update(users_table)
                .where(users_table.c.id == row.id)
                .values(disabled_at=utc_now() if disabled else None)
            )
            if disabled:
                connection.execute(delete(sessions_table).where(sessions_table.c.user_id == row.id))
        logger.info("%s user %s", "disabled" if disabled else "enabled", name)
        return User(id=row.id, name=name, role=row.role)

    def disabled(self) -> set[str]:
        """Names of the disabled users."""
        with self._read.connect() as connection:
            return set(
                connection.execute(select(users_table.c.name).where(users_table.c.disabled_at.is_not(None))).scalars()
            )

    # ---- web sessions ----------------------------------------------------------------------------------------

    def start_session(self, user: User) -> str:
        """A new web session for ``user``; returns its id (for the signed cookie; only its hash is stored)."""
        session_id = secrets.token_urlsafe(32)
        now = utc_now()
        with self.ledger.begin() as connection:
            connection.execute(delete(sessions_table).where(sessions_table.c.expires_at < now))
            connection.execute(
                insert(sessions_table).values(
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
            select(users_table.c.id, users_table.c.name, users_table.c.role, sessions_table.c.expires_at)
            .join(users_table, users_table.c.id == sessions_table.c.user_id)
            .where(sessions_table.c.id_hash == hash_token(session_id), users_table.c.disabled_at.is_(None))
        )
        with self._read.connect() as connection:
            row = connection.execute(query).first()
        if row is None or (utc(row.expires_at) or utc_now()) <= utc_now():
            return None
        return User(id=row.id, name=row.name, role=row.role)

    def end_session(self, session_id: str) -> None:
        with self.ledger.begin() as connection:
            connection.execute(delete(sessions_table).where(sessions_table.c.id_hash == hash_token(session_id)))

    def user(self, user_id: int | None = None, *, name: str | None = None) -> User | None:
        query = select(users_table.c.id, users_table.c.name, users_table.c.role)
        query = query.where(users_table.c.id == user_id) if name is None else query.where(users_table.c.name == name)
        with self._read.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else User(id=row.id, name=row.name, role=row.role)

    def users(self) -> list[User]:
        with self._read.connect() as connection:
            rows = connection.execute(
                select(users_table.c.id, users_table.c.name, users_table.c.role).order_by(users_table.c.id)
            ).all()
        return [User(id=row.id, name=row.name, role=row.role) for row in rows]

    def has_users(self) -> bool:
        with self._read.connect() as connection:
            return connection.execute(select(users_table.c.id).limit(1)).first() is not None
