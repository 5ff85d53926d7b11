"""The bodies of the API's requests (pydantic): each refuses unknown fields, and numbers out of bounds, before a
route runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from privsynth.service.config import MAX_ROWS
from privsynth.service.limits import MAX_SEED

__all__ = [
    "CapRequest",
    "DatasetSettings",
    "GrantRequest",
    "JobRequest",
    "PublishRequest",
    "SQLDatasetRequest",
    "UserRequest",
    "UserSettings",
]


class JobRequest(BaseModel):
    """A generation job: ``method`` (see ``/api/methods``), its budget, and how many rows. Numbers are finite
    (``NaN`` and ``Infinity``, which Python's JSON parser accepts, are refused) and a seed is 0 to 2**63 - 1, so a
    bad request is refused before any budget is reserved."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    method: str
    epsilon: float | None = Field(default=None, gt=0, le=100)
    delta: float | None = Field(default=None, gt=0, lt=1e-3)
    rows: int = Field(gt=0, le=MAX_ROWS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    conditions: dict[str, str | int | float | bool] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)


class CapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(gt=0, lt=1e-3)


class GrantRequest(BaseModel):
    """``share``: the share of the dataset's cap (0 to 1, in rho) the user's jobs may use together; by default
    the whole cap for a custodian and :data:`~privsynth.service.limits.DEFAULT_ANALYST_SHARE` for an analyst."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    user: str
    role: str
    share: float | None = Field(default=None, gt=0, le=1)


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    published: bool


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool


class SQLDatasetRequest(BaseModel):
    """A table on a database server an admin allowed, read with the credentials given here (the password is kept
    in the service's credentials folder, not in its database)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    url: str
    table: str
    user: str | None = None
    password: str | None = None


class DatasetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    target: str | None = None
    sensitive: str | None = None
    reports_visible: bool | None = None
