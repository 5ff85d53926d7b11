"""The service's tables (SQLAlchemy Core), in the same database as the privacy ledger, and the values their
columns hold."""

from __future__ import annotations

from typing import Final, Literal

from sqlalchemy import Boolean, Column, DateTime, Double, ForeignKey, Integer, MetaData, String, Table, Text

ROLES: Final = ("admin", "custodian", "analyst")
GRANT_ROLES: Final = ("custodian", "analyst")
Role = Literal["admin", "custodian", "analyst"]
JOB_STATES: Final = ("queued", "running", "done", "failed", "cancelled")
TOKEN_PREFIX: Final = "pst_"
SESSION_HOURS: Final = 12

metadata = MetaData()

users_table = Table(
    "service_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

sessions_table = Table(
    "service_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the id the signed cookie holds
    Column("user_id", Integer, ForeignKey("service_users.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

datasets_table = Table(
    "service_datasets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("kind", String(8), nullable=False),  # file | sql
    Column("location", Text, nullable=False),  # the stored file, or the SQLAlchemy URL (without its password)
    Column("table_name", String(256), nullable=True),
    Column("holdout", Text, nullable=True),  # held-out real rows (evaluation only), for an uploaded file
    Column("fingerprint", String(256), nullable=False),
    Column("schema", Text, nullable=False),  # JSON of Schema.to_dict()
    Column("target", String(256), nullable=True),
    Column("sensitive", String(256), nullable=True),
    Column("reports_visible", Boolean, nullable=False, default=True),
    Column("created_by", Integer, ForeignKey("service_users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)

grants_table = Table(
    "service_grants",
    metadata,
    Column("dataset_id", String(32), ForeignKey("service_datasets.id"), primary_key=True),
    Column("user_id", Integer, ForeignKey("service_users.id"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("share", Double, nullable=True),  # share of the cap (rho) the grantee's jobs may use; None: role default
)

jobs_table = Table(
    "service_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dataset_id", String(32), ForeignKey("service_datasets.id"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("service_users.id"), nullable=False),
    Column("method", String(64), nullable=False),
    Column("epsilon", Double, nullable=True),
    Column("delta", Double, nullable=True),
    Column("rows", Integer, nullable=False),
    Column("seed", Integer, nullable=True),
    Column("conditions", Text, nullable=False, default="{}"),
    Column("params", Text, nullable=False, default="{}"),
    Column("status", String(16), nullable=False, index=True),
    Column("progress", Text, nullable=False, default="{}"),
    Column("reservation_id", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("worker", String(128), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("release_id", String(64), nullable=True),
)

releases_table = Table(
    "service_releases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(32), ForeignKey("service_jobs.id"), nullable=False, unique=True),
    Column("dataset_id", String(32), ForeignKey("service_datasets.id"), nullable=False, index=True),
    Column("directory", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("method", String(64), nullable=False),
    Column("epsilon", Double, nullable=True),
    Column("delta", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published", Boolean, nullable=False, default=False),  # a non-DP release a custodian shared
)

audit_table = Table(
    "service_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user_id", Integer, nullable=True),
    Column("user_name", String(128), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=True),
    Column("outcome", String(16), nullable=False),  # ok | denied | refused | error
    Column("detail", Text, nullable=True),
)

settings_table = Table(
    "service_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
