"""Receiving an uploaded dataset: the file's name, size and cells are checked before it is read, a holdout is
kept apart, and on any refusal nothing stays on disk or in the database."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Final
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from fastapi import HTTPException, Request, UploadFile

from privsynth.data.sources import load_source
from privsynth.errors import PrivsynthError
from privsynth.service.deps import Service
from privsynth.service.store import DatasetRow, User
from privsynth.synth.base import infer_schema

__all__ = ["DEFAULT_HOLDOUT", "attachment", "checked_name", "store_upload"]

DEFAULT_HOLDOUT: Final = 0.2
UPLOAD_SUFFIXES: Final = (".csv", ".parquet")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,200}$")


def attachment(filename: str) -> str:
    """A Content-Disposition header for ``filename`` (a dataset name may hold any character)."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename)}"


def _checked_upload_name(filename: str | None) -> str:
    """The suffix of an uploaded file's name, refusing names with folders (``../x.csv``) or odd characters."""
    name = filename or ""
    if not name or "/" in name or "\\" in name or ".." in name or not _SAFE_NAME.match(name):
        raise HTTPException(
            400, f"file name {name!r} is not allowed: use a plain name such as data.csv (letters, digits, . _ -)"
        )
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise HTTPException(415, f"upload a .csv or .parquet file, not {name!r}")
    return suffix


def store_upload(
    service: Service, user: User, request: Request, file: UploadFile, name: str | None, holdout: float
) -> DatasetRow:
    """Check, read and register an uploaded file; on any refusal nothing stays on disk or in the database.

    With ``holdout`` > 0 a random share of the rows (fresh randomness, not a fixed seed) is kept apart in
    ``holdout.parquet``: releases are evaluated on it (utility, membership and distance attacks) and never
    trained on it; the rest is stored as ``data.parquet``, the data the dataset's budget and fingerprint cover.
    """
    store, limit = service.store, service.config.max_upload_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + 64 * 1024:
        raise HTTPException(413, f"the upload is {declared:,} bytes; the limit is {limit:,}")
    suffix = _checked_upload_name(file.filename)
    dataset_name = checked_name(name or Path(file.filename or "data").stem)
    dataset_id = uuid.uuid4().hex
    staging = Path(tempfile.mkdtemp(prefix="upload-", dir=service.config.data_dir))
    final = service.config.data_dir / "datasets" / dataset_id
    try:
        staged = _receive(file, staging / f"data{suffix}", limit)
        _check_cells(staged, service.config.max_cells, file.filename or "")
        try:
            source = load_source(staged, name=dataset_name)
            frame = source.to_pandas()
        except PrivsynthError as exc:
            said = str(exc).replace(str(staged), file.filename or "the file")
            raise HTTPException(400, service.scrub(f"cannot read {file.filename}: {said}")) from None
        except Exception as exc:
            said = str(exc).replace(str(staged), file.filename or "the file")
            raise HTTPException(400, service.scrub(f"cannot read {file.filename} as {suffix[1:]}: {said}")) from None
        if frame.empty or frame.shape[1] == 0:
            raise HTTPException(400, f"{file.filename} has no rows or no columns")
        held = None
        if holdout > 0:
            if round(len(frame) * holdout) < 1 or round(len(frame) * (1 - holdout)) < 2:
                raise HTTPException(400, f"{len(frame)} rows are too few to hold out {holdout:g} of them")
            order = np.random.default_rng().permutation(len(frame))
            cut = round(len(frame) * holdout)
            staged.unlink()
            staged = staging / "data.parquet"
            frame.iloc[np.sort(order[cut:])].to_parquet(staged, index=False)
            frame.iloc[np.sort(order[:cut])].to_parquet(staging / "holdout.parquet", index=False)
            held = final / "holdout.parquet"
            source = load_source(staged, name=dataset_name)
            frame = source.to_pandas()
        schema = infer_schema(frame)
        fingerprint = source.fingerprint()
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)
        return store.add_dataset(
            name=dataset_name,
            kind="file",
            location=str(final / staged.name),
            table_name=None,
            fingerprint=fingerprint,
            schema=schema.to_dict(),
            owner=user,
            dataset_id=dataset_id,
            holdout=None if held is None else str(held),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if store.dataset(dataset_id) is None:
            shutil.rmtree(final, ignore_errors=True)


def _check_cells(path: Path, max_cells: int, filename: str) -> None:
    """Refuse (413) an upload of more than ``max_cells`` rows x columns before it is read: a Parquet file's
    footer says how many rows and columns (and bytes, uncompressed) it holds; a CSV file's lines are counted while
    streaming it, 1 MB at a time."""
    if path.suffix == ".parquet":
        try:
            metadata = pq.ParquetFile(path).metadata
        except Exception:
            raise HTTPException(400, f"{filename} is not a Parquet file (its footer cannot be read)") from None
        rows, columns = metadata.num_rows, metadata.num_columns
        unpacked = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        if unpacked > 4 * max_cells * 8:
            raise HTTPException(413, f"{filename} unpacks to {unpacked:,} bytes; the limit is {4 * max_cells * 8:,}")
    else:
        with path.open("rb") as data:
            header = data.readline()
            columns = max(header.count(separator) for separator in (b",", b";", b"\t", b"|")) + 1
            rows = sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1024 * 1024), b""))
    if rows * columns > max_cells:
        raise HTTPException(
            413,
            f"{filename} holds {rows:,} rows x {columns:,} columns; this service accepts up to {max_cells:,} cells "
            "(an admin sets --max-cells)",
        )


def _receive(file: UploadFile, path: Path, limit: int) -> Path:
    """Copy an upload to ``path``, refusing it (413) once it passes ``limit`` bytes."""
    copied = 0
    with path.open("wb") as out:
        while chunk := file.file.read(1024 * 1024):
            copied += len(chunk)
            if copied > limit:
                raise HTTPException(413, f"the upload is over the limit of {limit:,} bytes")
            out.write(chunk)
    return path


def checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise HTTPException(400, "a dataset name is 1 to 200 characters")
    return name
