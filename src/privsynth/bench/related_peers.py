"""Related-table peers: SDV's HMA and PAR, MOSTLY AI's TabularARGN with a context table, each in its own environment.

They run like the single-table peers (:mod:`privsynth.bench.peers`): in the peer group's virtual environment
(``privsynth bench peers setup sdv|mostlyai``), fed Parquet files in a temporary folder by
``_related_peer_runner.py``, their synthetic tables read back and made to fit privsynth's
:class:`~privsynth.relational.RelatedMetadata`, so :func:`privsynth.relational.evaluate.evaluate_related` scores
them like privsynth's own output:

- ``sdv-hma``: every table and relationship (HMA's recursive copulas; a child's number of rows per parent is
  modelled, its order is not);
- ``sdv-par``: the sequential child as one table of sequences (key = the parent key, index = ``order_by``) with
  the parent's columns, and the child's columns that never change within a parent, as PAR's context columns. The
  synthetic parent table is read off the sequences' context, one row per sequence: PAR makes no empty sequence,
  so parents without children are not modelled (as many sequences are drawn as real parents have children);
- ``mostlyai-argn`` (defaults) and ``mostlyai-argn-cpu`` (its README's time-limited setting, 2 minutes per model):
  a flat TabularARGN for the parent table and a sequential one for the children with the parent table as
  context, sampled with the synthetic parents as context (MOSTLY AI's two-table setup).

Keys come back renumbered: each synthetic parent key becomes 1..n (integer keys) or ``<table>-i`` (text keys), and
its children's foreign keys follow it; a child key naming no synthetic parent gets a key no parent has, so
referential integrity is measured, not repaired. Columns come back with the real table's dtypes.

Every peer reads what it needs from the rows (column types, ranges, categories; SDV its own ``sdtype`` detection,
recorded in ``details.sdtypes``); none is differentially private. Keys and relationships are privsynth's declared
metadata (given free, as to privsynth).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from privsynth.bench.peers import (
    MOSTLYAI_CPU_OPTIONS,
    PEER_METHODS,
    PeerError,
    _tail,
    peer_python,
    peer_status,
    peer_threads,
)
from privsynth.errors import ParameterError
from privsynth.relational.metadata import RelatedMetadata, Relationship

logger = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("_related_peer_runner.py")
PARENT_PREFIX = "parent::"  # the parent's columns in PAR's one table of sequences


@dataclass(frozen=True)
class RelatedPeerMethod:
    """A related-table peer: its environment (``group``), the runner's model, and constructor options."""

    name: str
    group: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)


RELATED_PEER_METHODS: dict[str, RelatedPeerMethod] = {
    method.name: method
    for method in (
        RelatedPeerMethod("sdv-hma", "sdv", "hma"),
        RelatedPeerMethod("sdv-par", "sdv", "par"),
        RelatedPeerMethod("mostlyai-argn", "mostlyai", "argn"),
        RelatedPeerMethod("mostlyai-argn-cpu", "mostlyai", "argn", options=MOSTLYAI_CPU_OPTIONS),
    )
}


@dataclass(frozen=True)
class RelatedPeerResult:
    """Synthetic tables (keys and dtypes as privsynth's metadata and the real tables have them) and timings.

    ``fit_*`` and ``sample_*`` are measured inside the peer around its fit and sample calls (CPU: every thread
    of its process); ``process_seconds`` and ``process_cpu_seconds`` cover the whole peer process, imports
    and data loading included (CPU from the operating system's accounting of the finished process).
    """

    tables: dict[str, pd.DataFrame]
    fit_seconds: float
    fit_cpu_seconds: float
    sample_seconds: float
    sample_cpu_seconds: float
    process_seconds: float
    process_cpu_seconds: float
    details: dict[str, Any]


def related_peer_method(method: str) -> RelatedPeerMethod:
    try:
        return RELATED_PEER_METHODS[method]
    except KeyError:
        known = ", ".join(RELATED_PEER_METHODS)
        raise ParameterError(f"unknown related-table peer '{method}'; peers: {known}") from None


def related_peer_status(method: str) -> str | None:
    """None when the method's environment is ready; otherwise a sentence saying how to set it up."""
    group = related_peer_method(method).group
    sibling = next(m.name for m in PEER_METHODS.values() if m.group == group)
    problem = peer_status(sibling)
    return None if problem is None else f"{method} runs in the '{group}' peer environment: {problem}"


def sequence_relationship(metadata: RelatedMetadata) -> Relationship:
    """The one sequential relationship (``order_by`` set) whose parent has no parent of its own and whose keys are
    one column: what PAR and TabularARGN's context setup can model. Raises ParameterError otherwise."""
    candidates = [
        rel
        for rel in metadata.relationships
        if rel.order_by is not None and not metadata.parents(rel.parent) and len(rel.child_key) == 1
    ]
    if len(candidates) != 1:
        found = ", ".join(rel.describe() for rel in candidates) or "none"
        raise ParameterError(
            "sequence peers (sdv-par, mostlyai-argn) need exactly one relationship with order_by, a one-column key "
            f"and a parent that has no parent of its own; found: {found}"
        )
    return candidates[0]


def _single(key: tuple[str, ...]) -> str:
    (column,) = key
    return column


# ---- PAR: one table of sequences with the parent as context ----------------------------------------------------


def constant_columns(child: pd.DataFrame, key: str, exclude: set[str]) -> list[str]:
    """Child columns with one value (missing counts as a value) within every parent's rows: context for PAR."""
    grouped = child.groupby(key, dropna=True)
    return [
        str(column)
        for column in child.columns
        if column not in exclude and bool((grouped[column].nunique(dropna=False) <= 1).all())
    ]


def to_par_table(tables: Mapping[str, pd.DataFrame], rel: Relationship) -> tuple[pd.DataFrame, list[str]]:
    """The child's rows with their parent's columns (prefixed ``parent::``) joined on, and PAR's context columns:
    the parent's columns and the child's columns that never change within a parent. Children without a parent key
    are left out (PAR needs a sequence key); parents without children cannot be represented."""
    parent_key, child_key = _single(rel.parent_key), _single(rel.child_key)
    parent = tables[rel.parent]
    child = tables[rel.child].dropna(subset=[child_key])
    attributes = parent.drop(columns=[parent_key]).add_prefix(PARENT_PREFIX)
    attributes.index = parent[parent_key].to_numpy()
    joined = child.join(attributes, on=child_key, how="inner").reset_index(drop=True)
    context = [*attributes.columns, *constant_columns(child, child_key, {child_key, rel.order_by or ""})]
    return joined, context


def from_par_table(
    sequences: pd.DataFrame, rel: Relationship, parent_columns: list[str], child_columns: list[str]
) -> dict[str, pd.DataFrame]:
    """Split PAR's sequences back into a parent table (one row per sequence, read off the ``parent::`` context
    columns, keyed by the sequence key) and the child table (its own columns, in the real order)."""
    parent_key, child_key = _single(rel.parent_key), _single(rel.child_key)
    first = sequences.drop_duplicates(subset=[child_key], keep="first")
    parent = pd.DataFrame({parent_key: first[child_key].to_numpy()})
    for column in parent_columns:
        if column != parent_key:
            parent[column] = first[PARENT_PREFIX + column].to_numpy()
    return {rel.parent: parent[parent_columns], rel.child: sequences[child_columns].reset_index(drop=True)}


# ---- back to privsynth's metadata --------------------------------------------------------------------------------


def restore_tables(
    synthetic: Mapping[str, pd.DataFrame], real: Mapping[str, pd.DataFrame], metadata: RelatedMetadata
) -> dict[str, pd.DataFrame]:
    """The peer's tables with privsynth's keys and the real tables' columns and dtypes.

    One-column primary keys are renumbered (1..n for integer keys, ``<table>-i`` for others) and every foreign key
    naming them follows; a foreign key naming no synthetic parent gets a fresh key no parent has (integrity is
    measured, not repaired); composite keys are kept as the peer made them. Other columns take the real column's
    dtype (whole numbers stay integers when none is missing; missing text is None).
    """
    out = {name: synthetic[name].reset_index(drop=True).copy() for name in metadata.tables}
    for name, table in metadata.tables.items():
        if len(table.primary_key) != 1:
            continue
        key = table.primary_key[0]
        old = out[name][key]
        textual = not pd.api.types.is_numeric_dtype(real[name][key])
        new = [f"{name}-{i}" for i in range(1, len(old) + 1)] if textual else list(range(1, len(old) + 1))
        mapping = dict(zip(old.tolist(), new, strict=True))
        if len(mapping) < len(old):
            logger.info("table '%s': the peer made %d duplicate primary keys", name, len(old) - len(mapping))
        out[name][key] = new
        for rel in metadata.children(name):
            column = _single(rel.child_key)
            values = out[rel.child][column]
            orphans = sorted({v for v in values.dropna().tolist() if v not in mapping}, key=str)
            fresh = dict(zip(orphans, _fresh_keys(len(old), len(orphans), name, textual), strict=True))
            out[rel.child][column] = values.map(
                lambda v, m=mapping, f=fresh: None if pd.isna(v) else m.get(v, f.get(v))
            )
    keys = _key_columns(metadata)
    for name, frame in out.items():
        restored = {}
        for column in real[name].columns:
            if column not in frame:
                raise PeerError(f"the peer's table '{name}' lacks column '{column}'")
            restored[column] = _restore_column(frame[column], real[name][column], keyed=column in keys[name])
        out[name] = pd.DataFrame(restored)
    return out


def _fresh_keys(start: int, count: int, table: str, textual: bool) -> list[Any]:
    numbers = range(start + 1, start + 1 + count)
    return [f"{table}-orphan-{i}" for i in numbers] if textual else list(numbers)


def _key_columns(metadata: RelatedMetadata) -> dict[str, set[str]]:
    keys = {name: set(table.primary_key) for name, table in metadata.tables.items()}
    for rel in metadata.relationships:
        keys[rel.child] |= set(rel.child_key)
    return keys


def _restore_column(values: pd.Series, real: pd.Series, *, keyed: bool) -> pd.Series:
    """``values`` in ``real``'s dtype: numbers (whole numbers rounded; integers kept when none is missing),
    datetimes, or text (missing as None)."""
    values = values.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(real):
        return values.astype(object).map(lambda v: None if pd.isna(v) else bool(v))
    if pd.api.types.is_datetime64_any_dtype(real):
        return pd.to_datetime(values, errors="coerce")
    if pd.api.types.is_numeric_dtype(real):
        if keyed and not pd.api.types.is_numeric_dtype(values) and any(isinstance(v, str) for v in values.dropna()):
            return values.astype(object)  # a composite key the peer wrote as text: left as it is
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        if pd.api.types.is_integer_dtype(real):
            numbers = numbers.round()
            if not numbers.isna().any():
                return numbers.astype(real.dtype)
        return numbers
    text = [None if pd.isna(v) else v if keyed else str(v) for v in values.tolist()]
    return pd.Series(text, dtype=real.dtype if real.dtype == object else object)


# ---- running a peer ------------------------------------------------------------------------------------------------


def run_related_peer(
    method: str,
    tables: Mapping[str, pd.DataFrame],
    metadata: RelatedMetadata,
    *,
    seed: int = 0,
    timeout: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> RelatedPeerResult:
    """Fit ``method`` on the related ``tables`` in its own environment and sample a set of the same size.

    ``options`` are keyword arguments for the peer's synthesizer (``{"epochs": 32}`` for PAR,
    ``{"max_training_time": 5}`` for TabularARGN), over the method's own. Raises :class:`PeerError` with the
    tail of the peer's error output when it fails or takes more than ``timeout`` seconds (the whole process
    group is stopped then).
    """
    peer = related_peer_method(method)
    problem = related_peer_status(method)
    if problem is not None:
        raise PeerError(problem)
    missing = [name for name in metadata.tables if name not in tables]
    if missing:
        raise ParameterError(f"table '{missing[0]}' of the metadata is missing from the tables given")
    real = {name: tables[name].reset_index(drop=True) for name in metadata.tables}
    spec: dict[str, Any] = {
        "library": peer.group,
        "model": peer.model,
        "seed": int(seed),
        "options": {**peer.options, **(options or {})},
        "relationships": [
            {**rel.to_dict(), "child_key": list(rel.child_key), "parent_key": list(rel.parent_key)}
            for rel in metadata.relationships
        ],
    }
    sent: dict[str, pd.DataFrame] = dict(real)
    rel = None
    if peer.model in ("par", "argn"):
        rel = sequence_relationship(metadata)
        sent = {rel.parent: real[rel.parent], rel.child: real[rel.child]}
        spec["relationships"] = [spec["relationships"][metadata.relationships.index(rel)]]
    if peer.model == "par":
        assert rel is not None
        joined, context = to_par_table(real, rel)
        sent = {rel.child: joined}
        spec["relationships"] = []
        with_children = int(joined[_single(rel.child_key)].nunique())
        spec["sequence"] = {
            "sequence_key": _single(rel.child_key),
            "sequence_index": rel.order_by,
            "context_columns": context,
            "sequences": with_children,
        }
    elif peer.model == "argn":
        assert rel is not None
        spec["sequence"] = {
            "parent": rel.parent,
            "child": rel.child,
            "parent_key": _single(rel.parent_key),
            "child_key": _single(rel.child_key),
            "parents": len(real[rel.parent]),
        }
    spec["tables"] = {
        name: {"file": f"table{i}.parquet", "primary_key": list(metadata.tables[name].primary_key)}
        if name in metadata.tables
        else {"file": f"table{i}.parquet", "primary_key": []}
        for i, name in enumerate(sent)
    }
    with tempfile.TemporaryDirectory(prefix=f"privsynth-{method}-") as name:
        folder = Path(name)
        for table, frame in sent.items():
            frame.to_parquet(folder / spec["tables"][table]["file"], index=False)
        (folder / "spec.json").write_text(json.dumps(spec))
        wall, cpu = _run_runner(method, folder, timeout)
        result = json.loads((folder / "result.json").read_text())
        synthetic = {table: pd.read_parquet(folder / "synthetic" / f"{table}.parquet") for table in sent}
    if peer.model == "par":
        assert rel is not None
        synthetic = from_par_table(
            synthetic[rel.child], rel, list(real[rel.parent].columns), list(real[rel.child].columns)
        )
    details = {
        **result.get("details", {}),
        "domains_from_data": ["column types", "categories", "value ranges"],
        "keys_given": "privsynth's declared metadata (primary keys, relationships, order)",
        "threads": peer_threads(),
    }
    if peer.model == "par":
        details["parents_without_children"] = "not modelled: PAR makes no empty sequence"
        details["sequences_sampled"] = spec["sequence"]["sequences"]
    restored = restore_tables(synthetic, {**real}, _only(metadata, list(synthetic)))
    for table in metadata.tables:
        restored.setdefault(table, real[table].iloc[0:0])
    return RelatedPeerResult(
        tables=restored,
        fit_seconds=float(result["fit_seconds"]),
        fit_cpu_seconds=float(result["fit_cpu_seconds"]),
        sample_seconds=float(result["sample_seconds"]),
        sample_cpu_seconds=float(result["sample_cpu_seconds"]),
        process_seconds=round(wall, 3),
        process_cpu_seconds=round(cpu, 3),
        details=details,
    )


def _only(metadata: RelatedMetadata, tables: list[str]) -> RelatedMetadata:
    """The metadata restricted to ``tables`` and the relationships among them."""
    kept = [rel for rel in metadata.relationships if rel.parent in tables and rel.child in tables]
    return RelatedMetadata({name: metadata.tables[name] for name in tables}, kept)


def _run_runner(method: str, folder: Path, timeout: float | None) -> tuple[float, float]:
    """Run the runner in its own process group; wall and CPU seconds (user + system of it and its children)."""
    python = peer_python(related_peer_method(method).group)
    threads = str(peer_threads())
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }
    stderr_path = folder / "stderr.txt"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [str(python), str(RUNNER), str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=environment,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            tail = _tail(stderr_path.read_text())
            raise PeerError(f"{method} did not finish within {timeout:g} s; {tail}".rstrip("; ")) from None
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        raise PeerError(f"{method} failed in its environment (exit {code}): {_tail(stderr_path.read_text())}")
    return wall, cpu
