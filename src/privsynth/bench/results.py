"""The bench's results: the identity of a run, the ``results.jsonl`` log, and ``results.csv``.

``results.jsonl`` is a log of one JSON line per run (a run redone supersedes its earlier lines); the CSV has
one line per run with the catalogue's leaderboard metrics first (:data:`KEY_METRICS`), then every other metric.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from privsynth.evaluate.catalogue import LEADERBOARD, shown_in

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
LEADERBOARD_HTML = "leaderboard.html"
REFERENCE_METHOD = "real-holdout"
# The metrics the CSV and the leaderboard show first (the JSONL keeps every metric of the report).
KEY_METRICS = shown_in(LEADERBOARD)


@dataclass(frozen=True)
class RunKey:
    """One cell of the grid; ``epsilon`` is None for non-DP methods and the reference row."""

    dataset: str
    method: str
    epsilon: float | None
    seed: int

    def label(self) -> str:
        budget = "" if self.epsilon is None else f" eps={self.epsilon:g}"
        return f"{self.dataset} {self.method}{budget} seed={self.seed}"


def key_id(key: RunKey, options: Mapping[str, Any]) -> str:
    """What makes a run the same run when resuming: the cell and the peer options it ran with."""
    return json.dumps([key.dataset, key.method, key.epsilon, key.seed, dict(options)], sort_keys=True)


def row_id(row: dict[str, Any]) -> str:
    epsilon = None if row.get("epsilon") is None else float(row["epsilon"])
    key = RunKey(row["dataset"], row["method"], epsilon, row["seed"])
    return key_id(key, row.get("options") or {})


def append_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, allow_nan=False) + "\n")


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``results.jsonl``, the latest for each run; the reference rows get the dataset's TRTR as their
    TSTR."""
    logged = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    # The file is a log: a run redone (after a failure, or by ``rerun``) supersedes its earlier rows.
    latest = {row_id(row): row for row in logged}
    rows = list(latest.values())
    trtr: dict[str, float] = {}
    for row in rows:
        value = row.get("metrics", {}).get("utility.trtr")
        if row["method"] != REFERENCE_METHOD and value is not None:
            trtr.setdefault(row["dataset"], value)
    for row in rows:
        if row["method"] == REFERENCE_METHOD and row["dataset"] in trtr:
            row["metrics"]["utility.tstr"] = trtr[row["dataset"]]
            row["metrics"]["utility.trtr"] = trtr[row["dataset"]]
    return rows


def results_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One line per run: identity, timing, status, the key metrics first and then every other metric."""
    metric_keys = list(KEY_METRICS) + sorted({k for r in rows for k in r.get("metrics", {})} - set(KEY_METRICS))
    identity = [
        "dataset",
        "method",
        "source",
        "dp",
        "epsilon",
        "delta",
        "seed",
        "rows",
        "train_rows",
        "status",
        "fit_seconds",
        "sample_seconds",
        "evaluate_seconds",
        "total_seconds",
        "cpu_seconds",
    ]
    records = [
        {
            **{k: row.get(k) for k in identity},
            **{k: row.get("metrics", {}).get(k) for k in metric_keys},
            "error": row.get("error"),
        }
        for row in rows
    ]
    return pd.DataFrame.from_records(records, columns=[*identity, *metric_keys, "error"])


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    target = Path(path)
    results_frame(rows).to_csv(target, index=False)
    return target
