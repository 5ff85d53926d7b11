"""``/api/datasets``: custodians register datasets (an upload or a SQL table), edit their schema, cap their
budget and grant access; everyone with a grant reads the dataset, its budget and its ledger as their role may."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile

from privsynth.data.schema import Schema
from privsynth.data.sources import load_source
from privsynth.errors import PrivsynthError
from privsynth.pipeline import check_schema
from privsynth.service.deps import Authed, ServiceDep, custodian_or_admin
from privsynth.service.jobs import open_dataset
from privsynth.service.limits import default_share
from privsynth.service.models import CapRequest, DatasetSettings, GrantRequest, SQLDatasetRequest
from privsynth.service.security import Credentials, connect_options
from privsynth.service.uploads import DEFAULT_HOLDOUT, checked_name, store_upload
from privsynth.synth.base import infer_schema

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/api/datasets", tags=["datasets"], status_code=201)
def upload_dataset(
    request: Request,
    user: Authed,
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="A CSV or Parquet file")],
    name: Annotated[str | None, Form()] = None,
    holdout: Annotated[
        float, Form(ge=0, le=0.5, description="Share of rows held out of synthesis to evaluate releases on")
    ] = DEFAULT_HOLDOUT,
) -> dict[str, Any]:
    custodian_or_admin(service, user, "register dataset")
    try:
        dataset = store_upload(service, user, request, file, name, holdout)
    except HTTPException as exc:
        service.store.audit(user, "register dataset", None, "refused", str(exc.detail))
        raise
    service.store.audit(user, "register dataset", f"dataset:{dataset.id}", detail=f"{dataset.name} (upload)")
    return service.dataset_view(dataset, "custodian")


@router.post("/api/datasets/sql", tags=["datasets"], status_code=201)
def register_sql(body: SQLDatasetRequest, user: Authed, service: ServiceDep) -> dict[str, Any]:
    custodian_or_admin(service, user, "register dataset")
    dataset_name = checked_name(body.name)
    try:
        url, shown = service.sql_allow.check(body.url, body.table, body.user, body.password)
    except PrivsynthError as exc:
        service.store.audit(user, "register dataset", None, "refused", str(exc))
        raise HTTPException(403, str(exc)) from None
    try:
        source = load_source(connect_options(url).render_as_string(hide_password=False), table=body.table)
        schema = infer_schema(source)
    except Exception as exc:
        logger.info("registering %s table %s failed: %s", shown, body.table, type(exc).__name__)
        service.store.audit(user, "register dataset", None, "refused", f"cannot connect to {shown} ({body.table})")
        raise HTTPException(
            400,
            f"cannot connect to {shown}, or it has no table {body.table!r} this user may read: check the "
            "server, database, user, password and table name",
        ) from None
    dataset = service.store.add_dataset(
        name=dataset_name,
        kind="sql",
        location=url.render_as_string(hide_password=False),
        table_name=body.table,
        fingerprint=source.fingerprint(),
        schema=schema.to_dict(),
        owner=user,
    )
    service.store.audit(user, "register dataset", f"dataset:{dataset.id}", detail=f"{dataset.name} (SQL table)")
    return service.dataset_view(dataset, "custodian")


@router.get("/api/datasets", tags=["datasets"])
def list_datasets(user: Authed, service: ServiceDep) -> list[dict[str, Any]]:
    out = []
    for dataset in service.store.datasets(user):
        role = service.store.access(user, dataset.id) or "analyst"
        out.append({"id": dataset.id, "name": dataset.name, "your_role": role, **service.budget_view(dataset)})
    return out


@router.get("/api/datasets/{dataset_id}", tags=["datasets"])
def get_dataset(dataset_id: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, role = service.dataset_for(user, dataset_id)
    return service.dataset_view(dataset, role)


@router.patch("/api/datasets/{dataset_id}", tags=["datasets"])
def update_dataset(dataset_id: str, body: DatasetSettings, user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, role = service.dataset_for(user, dataset_id, need="custodian")
    values = body.model_dump(exclude_unset=True)
    schema = Schema.from_dict(dataset.schema)
    for key in ("target", "sensitive"):
        if values.get(key) is not None and values[key] not in schema:
            raise HTTPException(400, f"{key} {values[key]!r} is not a column; columns are {schema.names}")
    if "name" in values:
        values["name"] = checked_name(values["name"] or "")
    service.store.update_dataset(dataset.id, **values)
    service.store.audit(user, "update dataset", f"dataset:{dataset.id}", detail=json.dumps(values))
    return service.dataset_view(service.store.dataset(dataset.id) or dataset, role)


@router.get("/api/datasets/{dataset_id}/schema", tags=["datasets"])
def get_schema(dataset_id: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, role = service.dataset_for(user, dataset_id)
    return service.schema_view(dataset, role)


@router.put("/api/datasets/{dataset_id}/schema", tags=["datasets"])
def put_schema(dataset_id: str, body: dict[str, Any], user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
    schema = Schema.from_dict(body)
    check_schema(schema, open_dataset(dataset))
    service.store.update_dataset(dataset.id, schema=schema.to_dict())
    service.store.audit(user, "edit schema", f"dataset:{dataset.id}")
    return schema.to_dict()


@router.put("/api/datasets/{dataset_id}/cap", tags=["datasets"])
def set_cap(dataset_id: str, body: CapRequest, user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
    service.store.ledger.set_cap(dataset.ledger_key, body.epsilon, body.delta)
    service.store.audit(
        user, "set cap", f"dataset:{dataset.id}", detail=f"epsilon {body.epsilon:g}, delta {body.delta:g}"
    )
    return service.budget_view(dataset)


@router.post("/api/datasets/{dataset_id}/grants", tags=["datasets"], status_code=201)
def grant(dataset_id: str, body: GrantRequest, user: Authed, service: ServiceDep) -> list[dict[str, Any]]:
    dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
    grantee = service.store.user(name=body.user)
    if grantee is None:
        raise HTTPException(400, f"no user named {body.user!r}")
    service.store.grant(dataset.id, grantee, body.role, body.share)
    share = default_share(body.role) if body.share is None else body.share
    service.store.audit(
        user, "grant", f"dataset:{dataset.id}", detail=f"{grantee.name} as {body.role}, share {share:g}"
    )
    return service.store.grants(dataset.id)


@router.delete("/api/datasets/{dataset_id}/grants/{name}", tags=["datasets"])
def revoke(dataset_id: str, name: str, user: Authed, service: ServiceDep) -> list[dict[str, Any]]:
    dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
    grantee = service.store.user(name=name)
    if grantee is None or not service.store.revoke(dataset.id, grantee):
        raise HTTPException(404, f"{name!r} has no grant on this dataset")
    service.store.audit(user, "revoke", f"dataset:{dataset.id}", detail=name)
    return service.store.grants(dataset.id)


@router.delete("/api/datasets/{dataset_id}", tags=["datasets"])
def delete_dataset(dataset_id: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, _ = service.dataset_for(user, dataset_id, need="custodian")
    service.store.delete_dataset(dataset.id)
    if dataset.kind == "file":
        shutil.rmtree(Path(dataset.location).parent, ignore_errors=True)
    else:
        Credentials(service.config.data_dir).delete(dataset.id)
    service.store.audit(user, "delete dataset", f"dataset:{dataset.id}", detail=dataset.name)
    return {"deleted": dataset.id}


@router.get("/api/datasets/{dataset_id}/ledger", tags=["datasets"])
def ledger(dataset_id: str, user: Authed, service: ServiceDep) -> dict[str, Any]:
    dataset, _ = service.dataset_for(user, dataset_id)
    entries = [
        {
            "id": spend.id,
            "mechanism": spend.mechanism,
            "purpose": spend.purpose,
            "rho": spend.rho,
            "epsilon": spend.epsilon,
            "status": spend.status,
            "reservation_id": spend.reservation_id,
            "release_id": spend.release_id,
            "created_at": spend.created_at.isoformat(),
        }
        for spend in service.store.ledger.entries(dataset.ledger_key)
    ]
    return {"budget": service.budget_view(dataset), "entries": entries}
