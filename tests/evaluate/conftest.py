"""Shared data and reports for the evaluation tests: nassCDS samples small enough to keep the folder fast.

nassCDS rows are ordered by accident year, so every sample here is drawn at random (seeded), never by slicing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privsynth.data.datasets import load_dataset
from privsynth.evaluate import Report, evaluate

ROWS = 3000


@pytest.fixture(scope="session")
def nass() -> dict[str, pd.DataFrame]:
    """Three disjoint random samples of real nassCDS rows: ``real`` and ``other`` from train, and ``holdout``."""
    train = load_dataset("nassCDS")
    order = np.random.default_rng(0).permutation(len(train))
    return {
        "train": train,
        "real": train.iloc[order[:ROWS]].reset_index(drop=True),
        "other": train.iloc[order[ROWS : 2 * ROWS]].reset_index(drop=True),
        "holdout": load_dataset("nassCDS", "holdout").sample(ROWS, random_state=0).reset_index(drop=True),
    }


@pytest.fixture(scope="session")
def real_sample_report(nass: dict[str, pd.DataFrame]) -> Report:
    """Another sample of real rows scored as if synthetic: what a perfect, non-copying generator looks like."""
    return evaluate(nass["real"], nass["other"], nass["holdout"], target="dead", sensitive="sex", seed=0)


@pytest.fixture(scope="session")
def copy_report(nass: dict[str, pd.DataFrame]) -> Report:
    """The training rows themselves scored as synthetic: a generator that memorised everything."""
    return evaluate(nass["real"], nass["real"].copy(), nass["holdout"], target="dead", sensitive="sex", seed=0)
