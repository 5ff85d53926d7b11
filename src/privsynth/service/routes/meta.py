"""``/api/health``, ``/api/me`` and ``/api/methods``: what the service is and what it offers the signed-in user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from privsynth._version import __version__
from privsynth.service.deps import Authed
from privsynth.service.limits import ANALYST_PARAMS
from privsynth.synth import available

router = APIRouter()


@router.get("/api/health", tags=["service"])
def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/api/me", tags=["service"])
def me(user: Authed) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "role": user.role}


@router.get("/api/methods", tags=["service"])
def methods(user: Authed) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "differentially_private": cls.differentially_private,
            "description": (cls.__doc__ or "").strip().splitlines()[0],
            "allowed": cls.differentially_private or user.role != "analyst",
            "analyst_params": {key: bound.describe() for key, bound in ANALYST_PARAMS.get(name, {}).items()},
        }
        for name, cls in available().items()
    ]
