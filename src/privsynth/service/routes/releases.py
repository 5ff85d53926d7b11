"""``/api/releases``: reading releases and their files as the role may (an analyst gets the analyst's card, and
reports only where the custodian shared them), and publishing a non-DP release to analysts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response, StreamingResponse

from privsynth.provenance.card import render_card_html
from privsynth.service.config import RELEASE_FILES
from privsynth.service.deps import Authed, ServiceDep
from privsynth.service.exports import safe_csv
from privsynth.service.models import PublishRequest
from privsynth.service.security import analyst_card
from privsynth.service.uploads import attachment
from privsynth.service.views import release_view, release_visible

router = APIRouter()


@router.get("/api/releases", tags=["releases"])
def list_releases(user: Authed, service: ServiceDep, dataset: str | None = None) -> list[dict[str, Any]]:
    datasets = {d.id: d for d in service.store.datasets(user) if dataset is None or d.id == dataset}
    out = []
    roles = {i: service.store.access(user, i) or "analyst" for i in datasets}
    for release in service.store.releases(list(datasets)):
        owner, role = datasets[release.dataset_id], roles[release.dataset_id]
        if release_visible(release, role):
            out.append(release_view(release, owner, role))
    return out


@router.put("/api/releases/{release_id}/published", tags=["releases"])
def publish_release(release_id: str, body: PublishRequest, user: Authed, service: ServiceDep) -> dict[str, Any]:
    """Share a non-DP release with the dataset's analysts (or stop sharing it). A DP release is theirs
    already; a non-DP one was fitted without a privacy guarantee, so only a custodian may decide to share it."""
    release, dataset, role = service.release_for(user, release_id)
    if role not in ("admin", "custodian"):
        service.store.audit(user, "publish release", f"release:{release.id}", "denied", f"role {role}")
        raise HTTPException(403, f"only the custodians of dataset '{dataset.name}' can publish a release")
    service.store.set_published(release.id, body.published)
    service.store.audit(user, "publish release", f"release:{release.id}", detail=f"published {body.published}")
    updated, _, _ = service.release_for(user, release.id)
    return release_view(updated, dataset, role)


@router.get("/api/releases/{release_id}", tags=["releases"])
def get_release(release_id: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    release, dataset, role = service.release_for(user, release_id)
    return release_view(release, dataset, role)


@router.get("/api/releases/{release_id}/{item}", tags=["releases"], response_model=None)
def release_file(release_id: str, item: str, user: Authed, service: ServiceDep) -> Response:
    release, dataset, role = service.release_for(user, release_id)
    if item not in RELEASE_FILES:
        raise HTTPException(404, f"a release has {', '.join(RELEASE_FILES)}, not {item!r}")
    if item.startswith("report") and role == "analyst" and not dataset.reports_visible:
        service.store.audit(user, "read report", f"release:{release.id}", "denied", "reports not shared")
        raise HTTPException(403, "the custodian has not shared this dataset's evaluation reports")
    name, media = RELEASE_FILES[item]
    path = Path(release.directory) / name
    if not path.is_file():
        raise HTTPException(404, f"the release's {item} is missing on the server")
    service.store.audit(user, f"download {item}", f"release:{release.id}")
    if item in ("card", "card.html") and role == "analyst":
        card = analyst_card(json.loads((Path(release.directory) / RELEASE_FILES["card"][0]).read_text("utf-8")))
        body = render_card_html(card) if item == "card.html" else json.dumps(card, indent=2)
        return Response(body, media_type=media)
    if item == "data":  # cells a spreadsheet would run as formulas are neutralised (the file stays as it is)
        filename = f"{dataset.name}-{release.id[:8]}-{name}"
        return StreamingResponse(
            safe_csv(path), media_type=media, headers={"content-disposition": attachment(filename)}
        )
    return FileResponse(path, media_type=media)
