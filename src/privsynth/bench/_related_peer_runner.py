"""Fit one related-table peer (SDV HMA or PAR, MOSTLY AI's TabularARGN with a context table) and sample from it,
inside the peer's own virtual environment.

Run as a script by the peer environment's Python (``python _related_peer_runner.py FOLDER``); it must not import
privsynth. ``FOLDER`` holds ``spec.json`` and one Parquet file per table, written by
:func:`privsynth.bench.related_peers.run_related_peer`; the script writes ``synthetic/<table>.parquet`` and
``result.json`` (wall and CPU seconds of fitting and sampling, library versions, the settings used).

``spec.json``: ``library`` (sdv, mostlyai), ``model`` (hma, par, argn), ``seed``, ``options``, ``tables``
(name -> ``{file, primary_key}``), ``relationships`` (``{parent, child, child_key, parent_key, order_by}``, keys as
lists) and, for the sequential models, ``sequence``: PAR gets one table with ``sequence_key``, ``sequence_index``,
``context_columns`` and ``sequences`` (how many to sample); TabularARGN gets ``parent`` (the context table),
``child`` (the target sequences), ``parent_key``, ``child_key`` and ``parents`` (how many context rows to sample).
Each peer reads column types, ranges and categories from the rows itself: ``details`` says what.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

Timed = dict[str, float]


def main(folder: Path) -> None:
    spec = json.loads((folder / "spec.json").read_text())
    tables = {name: pd.read_parquet(folder / table["file"]) for name, table in spec["tables"].items()}
    _seed_everything(int(spec["seed"]))
    runners: dict[
        str, Callable[[dict[str, Any], dict[str, pd.DataFrame]], tuple[dict[str, pd.DataFrame], Timed, dict[str, Any]]]
    ] = {
        "hma": _run_hma,
        "par": _run_par,
        "argn": _run_argn,
    }
    synthetic, timings, details = runners[spec["model"]](spec, tables)
    out = folder / "synthetic"
    out.mkdir(exist_ok=True)
    for name, frame in synthetic.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    (folder / "result.json").write_text(json.dumps({**timings, "details": details}))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the peers draw from numpy's global state)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


class _Clock:
    """Wall and CPU seconds (every thread of this process) of one step."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _timings(fit: _Clock, sample: _Clock) -> Timed:
    return {
        "fit_seconds": fit.wall,
        "fit_cpu_seconds": fit.cpu,
        "sample_seconds": sample.wall,
        "sample_cpu_seconds": sample.cpu,
    }


# ---- SDV ------------------------------------------------------------------------------------------------------


def _sdv_metadata(tables: dict[str, pd.DataFrame], spec: dict[str, Any]) -> Any:
    """SDV's own detection of column types (what an SDV user gets), with privsynth's declared keys instead of
    SDV's guessed ones: key columns become ``id`` columns, primary keys and relationships as declared."""
    from sdv.metadata import Metadata  # type: ignore[import-not-found]

    metadata = Metadata.detect_from_dataframes(tables, infer_keys=None)
    for name, table in spec["tables"].items():
        keys = set(table["primary_key"])
        for rel in spec["relationships"]:
            if rel["child"] == name:
                keys |= set(rel["child_key"])
        for column in sorted(keys):
            metadata.update_column(column, name, sdtype="id")
        if table["primary_key"]:
            key = table["primary_key"]
            metadata.set_primary_key(key[0] if len(key) == 1 else key, name)
    for rel in spec["relationships"]:
        parent_key = rel["parent_key"][0] if len(rel["parent_key"]) == 1 else rel["parent_key"]
        child_key = rel["child_key"][0] if len(rel["child_key"]) == 1 else rel["child_key"]
        metadata.add_relationship(rel["parent"], rel["child"], parent_key, child_key)
    return metadata


def _sdtypes(metadata: Any) -> dict[str, dict[str, str]]:
    described = metadata.to_dict()["tables"]
    return {name: {c: v["sdtype"] for c, v in t["columns"].items()} for name, t in described.items()}


def _run_hma(
    spec: dict[str, Any], tables: dict[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], Timed, dict[str, Any]]:
    """HMA at its defaults: ``fit`` on every table, ``sample_scale(1.0)`` (as many rows per table as the real)."""
    from sdv.multi_table import HMASynthesizer  # type: ignore[import-not-found]

    metadata = _sdv_metadata(tables, spec)
    options = dict(spec.get("options") or {})
    synthesizer = HMASynthesizer(metadata, verbose=False, **options)
    with _Clock() as fit:
        synthesizer.fit(tables)
    with _Clock() as sample:
        synthetic = synthesizer.sample_scale(scale=float(spec.get("scale", 1.0)))
    details = {
        "library": "sdv",
        "version": _version("sdv"),
        "model": type(synthesizer).__name__,
        "options": options,
        "sdtypes": _sdtypes(metadata),
    }
    return dict(synthetic), _timings(fit, sample), details


def _run_par(
    spec: dict[str, Any], tables: dict[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], Timed, dict[str, Any]]:
    """PAR on one table of sequences: the sequence key, the order column as the sequence index, the context
    columns (one value per sequence, modelled by its Gaussian copula); ``sample_sequences(n)``."""
    from sdv.metadata import Metadata
    from sdv.sequential import PARSynthesizer  # type: ignore[import-not-found]

    sequence = spec["sequence"]
    (name,) = tables
    table = tables[name]
    metadata = Metadata.detect_from_dataframes({name: table}, infer_keys=None)
    metadata.update_column(sequence["sequence_key"], name, sdtype="id")
    metadata.set_sequence_key(sequence["sequence_key"], name)
    metadata.set_sequence_index(sequence["sequence_index"], name)
    options = dict(spec.get("options") or {})
    options.setdefault("cuda", False)
    synthesizer = PARSynthesizer(metadata, context_columns=list(sequence["context_columns"]), **options)
    with _Clock() as fit:
        synthesizer.fit({name: table})
    with _Clock() as sample:
        synthetic = synthesizer.sample_sequences(int(sequence["sequences"]))
    if isinstance(synthetic, dict):
        synthetic = synthetic[name]
    details = {
        "library": "sdv",
        "version": _version("sdv"),
        "model": type(synthesizer).__name__,
        "options": {k: v for k, v in options.items() if k != "cuda"},
        "sdtypes": _sdtypes(metadata),
        "context_columns": list(sequence["context_columns"]),
    }
    return {name: synthetic}, _timings(fit, sample), details


# ---- MOSTLY AI engine (TabularARGN) ---------------------------------------------------------------------------


def _run_argn(
    spec: dict[str, Any], tables: dict[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], Timed, dict[str, Any]]:
    """Two TabularARGN models, as MOSTLY AI's two-table setup runs them: a flat one for the context (parent) table
    and a sequential one for the children with the parent table as context; the synthetic children are sampled
    with the synthetic parents as their context, so they belong to synthetic parents by construction.

    The options (``max_training_time`` in minutes, ``max_epochs``, ...) apply to each of the two models.
    """
    import tempfile

    from mostlyai.engine import TabularARGN  # type: ignore[import-not-found]

    sequence = spec["sequence"]
    parent, child = tables[sequence["parent"]], tables[sequence["child"]]
    parent_key, child_key = sequence["parent_key"], sequence["child_key"]
    options = dict(spec.get("options") or {})
    options.setdefault("device", "cpu")
    seed = int(spec["seed"])
    with tempfile.TemporaryDirectory(prefix="mostlyai-related-") as workspace:
        flat = TabularARGN(
            tgt_primary_key=parent_key, workspace_dir=Path(workspace) / "parent", random_state=seed, **options
        )
        sequential = TabularARGN(
            tgt_context_key=child_key,
            ctx_primary_key=parent_key,
            ctx_data=parent,
            workspace_dir=Path(workspace) / "child",
            random_state=seed,
            **options,
        )
        with _Clock() as fit:
            flat.fit(parent)
            sequential.fit(child)
        with _Clock() as sample:
            synthetic_parent = flat.sample(n_samples=int(sequence["parents"]))
            synthetic_child = sequential.sample(ctx_data=synthetic_parent)
        training = {
            "parent_model": _mostlyai_training_log(Path(workspace) / "parent"),
            "child_model": _mostlyai_training_log(Path(workspace) / "child"),
        }
    details = {
        "library": "mostlyai-engine",
        "version": _version("mostlyai-engine"),
        "model": "TabularARGN (flat parent + sequential child with the parent as context)",
        "options": {k: v for k, v in options.items() if k != "device"},
        **training,
    }
    return (
        {sequence["parent"]: synthetic_parent, sequence["child"]: synthetic_child},
        _timings(fit, sample),
        details,
    )


def _mostlyai_training_log(workspace: Path) -> dict[str, Any]:
    """Epochs trained and the epoch of the kept checkpoint, from the engine's progress messages."""
    paths = list(workspace.rglob("progress-messages.csv"))
    if not paths:
        return {}
    log = pd.read_csv(paths[0])
    if log.empty or "epoch" not in log.columns:
        return {}
    kept = log[log["is_checkpoint"] > 0] if "is_checkpoint" in log.columns else log.iloc[0:0]
    last = kept.iloc[-1] if not kept.empty else log.iloc[-1]
    return {"epochs": float(log["epoch"].max()), "checkpoint_epoch": float(last["epoch"])}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
