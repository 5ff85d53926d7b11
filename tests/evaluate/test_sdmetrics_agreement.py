"""Per-column scores agree with sdmetrics' QualityReport column shapes on the bundled datasets.

sdmetrics pins pandas < 3 and cannot be installed beside privsynth; ``benchmarks/evaluate_sdmetrics.py`` runs it
in an environment of its own and commits its scores. This test recomputes ours for the pairs that do not depend
on any generator (train vs holdout, train vs independently shuffled columns) and compares.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privsynth.data.datasets import load_dataset
from privsynth.evaluate.fidelity import column_shapes
from privsynth.evaluate.prepared import prepare

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "evaluate_sdmetrics.json"


def _shuffled(frame: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({c: frame[c].to_numpy()[rng.permutation(len(frame))] for c in frame.columns})


@pytest.mark.parametrize("dataset", ["nassCDS", "covid_testing", "nafld1"])
@pytest.mark.parametrize("pair", ["holdout", "shuffled"])
def test_column_scores_match_sdmetrics(dataset: str, pair: str) -> None:
    expected = json.loads(RESULTS.read_text())["datasets"][dataset][pair]["sdmetrics"]
    train = load_dataset(dataset)
    synthetic = load_dataset(dataset, "holdout") if pair == "holdout" else _shuffled(train)
    ours = {c["name"]: c["score"] for c in column_shapes(prepare(train, synthetic, None, None, None, None))}
    assert set(ours) == set(expected)
    for column, score in expected.items():
        assert ours[column] == pytest.approx(score, abs=1e-6), column
