"""What a benchmark number was measured with: commit, command, date, machine and package versions.

A result without these cannot be reproduced or compared (a wall time from a loaded 2-core machine is not one from
a quiet one; a fidelity number from before a fix is not one from after it). Every script under ``benchmarks/``
stores :func:`run_metadata` in its result: under a ``run`` key of a JSON result, or in a ``NAME.run.json`` file
beside a result that is not one JSON object (:func:`write_run_sidecar`); ``privsynth bench run`` keeps one entry
per invocation in ``run.json`` beside ``results.jsonl`` (:func:`record_run`).

Versions are read with :mod:`importlib.metadata`, so recording them imports nothing heavy (no torch, no JAX).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
SIDECAR_SUFFIX = ".run.json"
# The distributions whose version can move a benchmark's numbers; those not installed are left out.
PACKAGES = (
    "privsynth",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "duckdb",
    "sqlalchemy",
    "jax",
    "jaxlib",
    "mbi",
    "opendp",
    "opt_einsum",
    "torch",
    "opacus",
    "transformers",
    "peft",
    "sentence-transformers",
    "llama_cpp_python",
    "fastapi",
    "uvicorn",
    "httpx",
    "sdmetrics",
    "anonymeter",
)
_MAX_CHANGED_FILES = 50
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def run_metadata(command: Sequence[str] | None = None, *, repo: str | Path | None = None) -> dict[str, Any]:
    """The facts a reader needs to reproduce or weigh a result, as a JSON-ready dictionary.

    ``command`` defaults to this process's ``sys.argv``; ``repo`` is the folder whose git commit is recorded
    (default: where the privsynth package is, so an editable install records the code that ran). Outside a git
    work tree, or without git, ``commit`` is None and nothing is raised. ``dirty`` is true when tracked files
    differ from the commit (``changed_files`` names them): the numbers then come from code no commit holds.
    """
    return {
        "recorded": True,
        **_git_state(Path(repo) if repo is not None else _PACKAGE_DIR),
        "command": shlex.join(list(sys.argv if command is None else command)),
        "cwd": os.getcwd(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def machine() -> dict[str, Any]:
    """Platform, cores (all and usable by this process), memory and the load when the run started."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out), without importing them."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def with_run(result: dict[str, Any], command: Sequence[str] | None = None) -> dict[str, Any]:
    """``result`` with :func:`run_metadata` under ``run`` (first, so a reader sees it at the top of the file)."""
    return {"run": run_metadata(command), **{k: v for k, v in result.items() if k != "run"}}


def sidecar_path(result_path: str | Path) -> Path:
    """``results/x.txt`` -> ``results/x.txt.run.json``: where the run of a non-JSON result is described."""
    path = Path(result_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_run_sidecar(result_path: str | Path, command: Sequence[str] | None = None) -> Path:
    """Write :func:`run_metadata` beside ``result_path`` (for results that are not one JSON object)."""
    target = sidecar_path(result_path)
    target.write_text(json.dumps(run_metadata(command), indent=2) + "\n", encoding="utf-8")
    return target


def record_run(folder: str | Path, command: Sequence[str] | None = None) -> Path:
    """Append this invocation to ``folder/run.json`` (``{"runs": [...]}``, oldest first).

    A results folder is filled by several invocations (``--resume``, ``--rerun``), so each keeps its own entry;
    the rows of ``results.jsonl`` carry ``finished_at``, which places them between these entries' dates.
    """
    target = Path(folder) / RUN_JSON
    document: dict[str, Any] = {"runs": []}
    if target.exists():
        document = json.loads(target.read_text(encoding="utf-8"))
        document.setdefault("runs", [])
    document["runs"].append(run_metadata(command))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return target


def _git_state(repo: Path) -> dict[str, Any]:
    state: dict[str, Any] = {"commit": None, "dirty": None}
    head = _git(repo, "rev-parse", "HEAD")
    # an installed copy under an ignored folder of some repository (a venv inside a clone) is not that commit's code
    if head is None or _git(repo, "check-ignore", "-q", ".") is not None:
        return state
    state["commit"] = head.strip()
    changes = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if changes is not None:
        files = [line[3:] for line in changes.splitlines() if line.strip()]
        state["dirty"] = bool(files)
        if files:
            state["changed_files"] = files[:_MAX_CHANGED_FILES]
    return state


def _git(repo: Path, *args: str) -> str | None:
    """git's output in ``repo``, or None when git or the work tree is missing (a result is still written)."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None
