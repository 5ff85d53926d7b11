"""``/api/users`` and ``/api/audit``: an admin adds, disables and re-keys users and reads the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from privsynth.service.deps import Authed, ServiceDep, admin_only
from privsynth.service.models import UserRequest, UserSettings
from privsynth.service.store import ROLES

router = APIRouter()


@router.get("/api/users", tags=["users"])
def list_users(user: Authed, service: ServiceDep) -> list[dict[str, Any]]:
    admin_only(service, user, "list users")
    disabled = service.store.disabled()
    return [{"id": u.id, "name": u.name, "role": u.role, "disabled": u.name in disabled} for u in service.store.users()]


@router.post("/api/users", tags=["users"], status_code=201)
def add_user(body: UserRequest, user: Authed, service: ServiceDep) -> dict[str, Any]:
    admin_only(service, user, "add user")
    if body.role not in ROLES:
        raise HTTPException(400, f"role must be one of {', '.join(ROLES)}, not {body.role!r}")
    added, token = service.store.add_user(body.name, body.role)
    service.store.audit(user, "add user", f"user:{added.name}", detail=f"role {added.role}")
    return {"id": added.id, "name": added.name, "role": added.role, "token": token}


@router.post("/api/users/{name}/token", tags=["users"])
def rotate_token(name: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    """A new token for ``name``: the old one and the user's web sessions stop working at once."""
    admin_only(service, user, "rotate token")
    token = service.store.rotate_token(name)
    service.store.audit(user, "rotate token", f"user:{name}")
    return {"name": name, "token": token}


@router.patch("/api/users/{name}", tags=["users"])
def update_user(name: str, body: UserSettings, user: Authed, service: ServiceDep) -> dict[str, Any]:
    """Disable a user (their token and sessions stop working; grants and history stay) or enable them."""
    admin_only(service, user, "update user")
    if name == user.name and body.disabled:
        raise HTTPException(400, "you cannot disable yourself; another admin can")
    changed = service.store.set_disabled(name, body.disabled)
    service.store.audit(user, "disable user" if body.disabled else "enable user", f"user:{name}")
    return {"id": changed.id, "name": changed.name, "role": changed.role, "disabled": body.disabled}


@router.get("/api/audit", tags=["users"])
def audit(user: Authed, service: ServiceDep, limit: int = 500) -> list[dict[str, Any]]:
    admin_only(service, user, "read audit log")
    return service.store.audit_log(min(max(limit, 1), 5000))
