"""Peer synthesizers (SDV, smartnoise-synth, OpenDP, dpmm, MOSTLY AI) run as adapters in environments of their own.

Their pins conflict with privsynth's and with each other's (smartnoise-synth needs opacus 0.14, SDV and OpenDP's
``mbi`` extra pin other versions), so each group lives in its own environment under ``$PRIVSYNTH_PEERS_DIR`` (default
``~/.cache/privsynth/peers/<group>``), made by :func:`setup_peer` with pinned requirements from PyPI. A run writes
the training rows (Parquet) and a JSON spec into a temporary folder, runs ``_peer_runner.py`` with the peer's
Python, and reads the synthetic rows back, restored to the schema's dtypes so :func:`privsynth.evaluate.evaluate`
treats them like privsynth's own output.

smartnoise-synth and OpenDP are handed every column's categories and numeric bounds (from the schema) as public
knowledge and spend no budget on them (smartnoise-synth: ``BinTransformer(lower, upper)`` with
``preprocessor_eps=0``; OpenDP: ``keys`` and ``cuts``). That is more than privsynth's DP methods get, which spend
budget to learn any domain the schema does not declare public: on the same epsilon these peers are favoured. dpmm
and MOSTLY AI's engine run at their defaults and read from the rows what they read (dpmm: categories, which columns
have missing values; the engine without DP: value ranges and categories); their rows say so in
``details.domains_from_data``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.schema import Column, Kind, Schema
from privsynth.errors import ParameterError, PrivsynthError
from privsynth.privacy.budget import rho_from_epsilon_delta
from privsynth.progress import report as progress
from privsynth.synth.restore import restore_dtype

logger = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("_peer_runner.py")
_MARKER = "privsynth-peer.json"
_STDERR_TAIL_LINES = 25


@dataclass(frozen=True)
class PeerGroup:
    """One virtual environment: pip install steps run in order (torch first, so no CUDA build is pulled).

    ``remove`` lists packages uninstalled after the steps: dependencies a peer declares but never imports, whose
    PyPI wheels are built for another torch and break the imports of packages that probe for them.
    """

    name: str
    steps: tuple[tuple[str, ...], ...]
    licence: str
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerMethod:
    """A peer synthesizer: which environment runs it, which library model, and whether it is DP."""

    name: str
    group: str
    model: str
    differentially_private: bool
    options: dict[str, Any] = field(default_factory=dict)


PEER_GROUPS: dict[str, PeerGroup] = {
    group.name: group
    for group in (
        PeerGroup(
            "sdv",
            (("torch==2.13.0",), ("sdv==2.0.0", "pyarrow==26.0.1")),
            licence="SDV is under the Business Source License 1.1 (free for non-production use)",
        ),
        PeerGroup(
            "smartnoise",
            (("torch==2.13.0",), ("smartnoise-synth==1.0.8", "pyarrow==26.0.1")),
            licence="smartnoise-synth is MIT licensed",
        ),
        PeerGroup(
            "opendp", (("opendp[mbi]==0.16.0", "pandas==2.3.3", "pyarrow==26.0.1"),), licence="OpenDP is MIT licensed"
        ),
        PeerGroup("dpmm", (("dpmm==0.1.9", "pyarrow==21.0.0"),), licence="dpmm is Apache-2.0 licensed"),
        PeerGroup(
            "mostlyai",
            (("torch==2.13.0",), ("mostlyai-engine==2.7.3", "pyarrow==26.0.1")),
            licence="mostlyai-engine is Apache-2.0 licensed",
            # torchvision 0.28 and torchaudio 2.11 from PyPI fail to load next to the CPU torch 2.13 ("operator
            # torchvision::nms does not exist"), and transformers, which the engine imports, probes for them.
            remove=("torchvision", "torchaudio"),
        ),
    )
}

# The time-limited setting of the engine's README (its sequential example: ``max_training_time=2``, in minutes);
# the default is 14,400 minutes and 100 epochs with early stopping.
MOSTLYAI_CPU_OPTIONS: dict[str, Any] = {"max_training_time": 2}

PEER_METHODS: dict[str, PeerMethod] = {
    method.name: method
    for method in (
        PeerMethod("sdv-copula", "sdv", "copula", differentially_private=False),
        PeerMethod("sdv-ctgan", "sdv", "ctgan", differentially_private=False),
        PeerMethod("sdv-tvae", "sdv", "tvae", differentially_private=False),
        PeerMethod("smartnoise-mst", "smartnoise", "mst", differentially_private=True),
        PeerMethod("smartnoise-aim", "smartnoise", "aim", differentially_private=True),
        PeerMethod("opendp-mst", "opendp", "mst", differentially_private=True),
        PeerMethod("opendp-aim", "opendp", "aim", differentially_private=True),
        PeerMethod("dpmm-privbayes", "dpmm", "privbayes", differentially_private=True),
        PeerMethod("dpmm-mst", "dpmm", "mst", differentially_private=True),
        PeerMethod("dpmm-aim", "dpmm", "aim", differentially_private=True),
        PeerMethod("mostlyai-argn", "mostlyai", "argn", differentially_private=False),
        PeerMethod("mostlyai-argn-cpu", "mostlyai", "argn", differentially_private=False, options=MOSTLYAI_CPU_OPTIONS),
        PeerMethod("mostlyai-argn-dp", "mostlyai", "argn-dp", differentially_private=True),
    )
}


class PeerError(PrivsynthError):
    """A peer could not run: its environment is missing or broken, or the peer itself failed."""


@dataclass(frozen=True)
class PeerResult:
    """Synthetic rows from a peer (schema dtypes restored) and how long fitting and sampling took inside it."""

    data: pd.DataFrame
    fit_seconds: float
    sample_seconds: float
    details: dict[str, Any]


def peers_dir() -> Path:
    """Where peer environments live: ``$PRIVSYNTH_PEERS_DIR`` or ``~/.cache/privsynth/peers``."""
    configured = os.environ.get("PRIVSYNTH_PEERS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "privsynth" / "peers"


def peer_threads() -> int:
    """Threads a peer may use: ``$PRIVSYNTH_PEER_THREADS``, default 1.

    One, because torch's and OpenMP's worker threads spin while they wait: on two cores shared with other work,
    SDV's TVAE with two threads ran for 25 minutes without finishing 60 epochs on nassCDS.
    """
    text = os.environ.get("PRIVSYNTH_PEER_THREADS", "1")
    if not text.isdigit() or int(text) < 1:
        raise ParameterError(f"PRIVSYNTH_PEER_THREADS must be a positive whole number, not {text!r}")
    return int(text)


def peer_method(method: str) -> PeerMethod:
    try:
        return PEER_METHODS[method]
    except KeyError:
        raise ParameterError(f"unknown peer method '{method}'; peers: {', '.join(PEER_METHODS)}") from None


def peer_group(group: str) -> PeerGroup:
    try:
        return PEER_GROUPS[group]
    except KeyError:
        raise ParameterError(f"unknown peer group '{group}'; groups: {', '.join(PEER_GROUPS)}") from None


def is_peer(method: str) -> bool:
    return method in PEER_METHODS


def peer_python(group: str) -> Path:
    return peers_dir() / peer_group(group).name / "bin" / "python"


def peer_status(method: str) -> str | None:
    """None when the method's environment is ready; otherwise a sentence saying how to set it up."""
    group = peer_group(peer_method(method).group)
    python = peer_python(group.name)
    setup = f"`privsynth bench peers setup {group.name}`"
    if not python.exists():
        return f"the '{group.name}' peer environment for {method} is not set up ({python.parent.parent}); run {setup}"
    marker = python.parent.parent / _MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return f"the '{group.name}' peer environment is incomplete (no {_MARKER}); run {setup} again"
    if recorded.get("steps") != [list(step) for step in group.steps] or recorded.get("removed", []) != list(
        group.remove
    ):
        return f"the '{group.name}' peer environment has other pins than this privsynth expects; run {setup} again"
    return None


def setup_peer(group: str) -> Path:
    """Create (or update) a peer group's virtual environment with its pinned requirements; return its Python.

    Uses the running interpreter's ``venv`` and ``pip`` with the configured package index (PyPI). Safe to run
    again: pip skips what is installed.
    """
    spec = peer_group(group)
    folder = peers_dir() / spec.name
    python = folder / "bin" / "python"
    total = len(spec.steps) + 1
    progress(f"setup {spec.name}", 0, total, "virtual environment")
    if not python.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        _run_checked([sys.executable, "-m", "venv", "--clear", str(folder)], f"creating the {spec.name} environment")
    for done, step in enumerate(spec.steps, start=1):
        progress(f"setup {spec.name}", done, total, " ".join(step))
        _run_checked(
            [str(python), "-m", "pip", "install", "--quiet", *step], f"installing {' '.join(step)} for {spec.name}"
        )
    if spec.remove:
        _run_checked(
            [str(python), "-m", "pip", "uninstall", "--yes", "--quiet", *spec.remove],
            f"removing {' '.join(spec.remove)} from {spec.name}",
        )
    recorded = {"group": spec.name, "steps": [list(s) for s in spec.steps], "removed": list(spec.remove)}
    (folder / _MARKER).write_text(json.dumps(recorded))
    progress(f"setup {spec.name}", total, total, "ready")
    logger.info("peer environment '%s' is ready at %s (%s)", spec.name, folder, spec.licence)
    return python


def _run_checked(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PeerError(f"{what} failed (exit {done.returncode}): {_tail(done.stderr or done.stdout)}")


def run_peer(
    method: str,
    train: pd.DataFrame,
    schema: Schema,
    rows: int,
    *,
    seed: int,
    epsilon: float | None,
    delta: float | None,
    timeout: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> PeerResult:
    """Fit ``method`` on ``train`` in its own environment and sample ``rows`` rows from it.

    DP peers need ``epsilon`` (and ``delta``: smartnoise-synth uses it; OpenDP gets the equivalent zCDP rho);
    non-DP peers take neither. The columns the schema synthesizes are sent with their categories and bounds,
    which the DP peers use as public knowledge (see the module docstring). ``options`` are keyword arguments
    for the peer's constructor (``{"epochs": 100}`` for SDV's CTGAN), over the adapter's defaults. Raises
    :class:`PeerError` with the tail of the peer's error output when it fails or exceeds ``timeout`` seconds.
    """
    peer = peer_method(method)
    if rows < 1:
        raise ParameterError(f"rows must be a positive whole number, not {rows!r}")
    if peer.differentially_private:
        if epsilon is None or epsilon <= 0:
            raise ParameterError(f"{method} is differentially private and needs a positive epsilon")
        if delta is None or not 0 < delta < 1:
            raise ParameterError(f"{method} needs a delta between 0 and 1 (for example 1e-6), not {delta!r}")
    elif epsilon is not None or delta is not None:
        raise ParameterError(f"{method} is not differentially private and takes no epsilon or delta")
    problem = peer_status(method)
    if problem is not None:
        raise PeerError(problem)
    modelled = schema.synthesized()
    frame, columns = _encode(train, modelled)
    spec = {
        "library": peer.group,
        "model": peer.model,
        "rows": int(rows),
        "seed": int(seed),
        "epsilon": epsilon,
        "delta": delta,
        "rho": rho_from_epsilon_delta(epsilon, delta) if epsilon is not None and delta is not None else None,
        "options": {**peer.options, **(options or {})},
        "columns": columns,
    }
    with tempfile.TemporaryDirectory(prefix=f"privsynth-{method}-") as name:
        folder = Path(name)
        frame.to_parquet(folder / "train.parquet", index=False)
        (folder / "spec.json").write_text(json.dumps(spec))
        started = time.perf_counter()
        _run_runner(method, folder, timeout)
        wall = time.perf_counter() - started
        result = json.loads((folder / "result.json").read_text())
        synthetic = pd.read_parquet(folder / "synthetic.parquet")
    details = {
        "domains_given_free": True,
        "domains_from_data": False,
        **result.get("details", {}),
        "process_seconds": round(wall, 3),
        "threads": peer_threads(),
    }
    return PeerResult(
        data=_decode(synthetic, modelled, rows),
        fit_seconds=float(result["fit_seconds"]),
        sample_seconds=float(result["sample_seconds"]),
        details=details,
    )


def _run_runner(method: str, folder: Path, timeout: float | None) -> None:
    python = peer_python(peer_method(method).group)
    stderr_path = folder / "stderr.txt"
    threads = peer_threads()
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }
    with stderr_path.open("w") as stderr:
        try:
            done = subprocess.run(
                [str(python), str(RUNNER), str(folder)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=timeout,
                check=False,
                env=environment,
            )
        except subprocess.TimeoutExpired:
            raise PeerError(
                f"{method} did not finish within {timeout:g} s; {_tail(stderr_path.read_text())}".rstrip("; ")
            ) from None
    if done.returncode != 0:
        tail = _tail(stderr_path.read_text())
        raise PeerError(f"{method} failed in its environment (exit {done.returncode}): {tail}")


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-_STDERR_TAIL_LINES:]) if lines else "no error output"


def _encode(train: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The schema's columns as strings (categorical) or floats (numeric, datetimes as seconds), and their spec."""
    missing = [c for c in schema.names if c not in train.columns]
    if missing:
        raise ParameterError(f"the training data lacks the schema's column(s) {missing}")
    frame: dict[str, pd.Series] = {}
    columns: list[dict[str, Any]] = []
    for column in schema:
        values = train[column.name]
        if column.kind is Kind.CATEGORICAL:
            categories = column.categories if column.categories is not None else values.dropna().unique().tolist()
            frame[column.name] = values.map(lambda v: None if _is_missing(v) else str(v)).astype(object)
            spec: dict[str, Any] = {"kind": "categorical", "categories": [str(c) for c in categories], "bounds": None}
        else:
            numbers = _as_seconds(values) if column.kind is Kind.DATETIME else pd.to_numeric(values).astype(float)
            frame[column.name] = numbers
            spec = {"kind": "integer" if column.kind is Kind.INTEGER else "float", "categories": None}
            spec["bounds"] = _numeric_bounds(column, numbers)
        columns.append({"name": column.name, "nullable": bool(values.isna().any() or column.nullable), **spec})
    return pd.DataFrame(frame), columns


def _numeric_bounds(column: Column, numbers: pd.Series) -> list[float]:
    """The schema's bounds (seconds for datetimes); the rows' range when the schema has none."""
    if column.bounds is not None:
        if column.kind is Kind.DATETIME:
            return [float(pd.Timestamp(b).timestamp()) for b in column.bounds]
        return [float(b) for b in column.bounds]
    present = numbers.dropna()
    if present.empty:
        raise ParameterError(f"column '{column.name}' has no bounds in the schema and no values to take them from")
    logger.info("column '%s' has no bounds in the schema; the peer gets the rows' range", column.name)
    return [float(present.min()), float(present.max())]


def _as_seconds(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values, utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return pd.Series(seconds.to_numpy(dtype=float), index=values.index)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _decode(synthetic: pd.DataFrame, schema: Schema, rows: int) -> pd.DataFrame:
    """Peer output back in the schema's values and dtypes (category labels, rounding, bounds, datetimes)."""
    if len(synthetic) != rows:
        logger.info("peer returned %d rows instead of %d", len(synthetic), rows)
    out: dict[str, pd.Series] = {}
    for column in schema:
        values = synthetic[column.name]
        if column.kind is Kind.CATEGORICAL:
            labels = {str(c): c for c in (column.categories or [])}
            decoded = values.map(lambda v, labels=labels: None if _is_missing(v) else labels.get(str(v), str(v)))
            out[column.name] = restore_dtype(decoded.astype(object), column)
            continue
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        if column.kind is Kind.DATETIME:
            stamps = pd.to_datetime(numbers, unit="s", utc=True).dt.tz_localize(None)
            out[column.name] = restore_dtype(stamps, column)
            continue
        if column.kind is Kind.INTEGER:
            numbers = numbers.round()
        out[column.name] = restore_dtype(numbers, column)
    return pd.DataFrame(out).reset_index(drop=True)
