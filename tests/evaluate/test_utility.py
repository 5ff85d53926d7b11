"""Utility compares models trained on synthetic and on real rows, for binary, multiclass and numeric targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privsynth.data.datasets import load_dataset
from privsynth.evaluate import Report, evaluate


def test_real_sample_trains_as_well_as_real_data(real_sample_report: Report) -> None:
    report = real_sample_report
    assert report["utility.trtr"] > 0.95  # dead is well predicted by injury severity
    assert report["utility.tstr"] == pytest.approx(report["utility.trtr"], abs=0.02)
    assert report["utility.tstr_accuracy"] == pytest.approx(report["utility.trtr_accuracy"], abs=0.01)
    assert report["utility.importance_agreement"] > 0.2
    assert "AUC" in report.metrics["utility.tstr"].note


def test_copy_of_train_has_identical_utility(copy_report: Report) -> None:
    assert copy_report["utility.tstr"] == copy_report["utility.trtr"]
    assert copy_report["utility.importance_agreement"] == pytest.approx(1.0)


def test_independent_columns_lose_all_utility(nass: dict[str, pd.DataFrame]) -> None:
    rng = np.random.default_rng(0)
    real = nass["real"]
    shuffled = pd.DataFrame({c: real[c].to_numpy()[rng.permutation(len(real))] for c in real.columns})
    report = evaluate(real, shuffled, nass["holdout"], target="dead")
    assert report["utility.trtr"] > 0.95
    assert report["utility.tstr"] < 0.6


def test_multiclass_target_is_scored_by_macro_auc() -> None:
    train = load_dataset("covid_testing").sample(2000, random_state=0)
    holdout = load_dataset("covid_testing", "holdout").sample(1500, random_state=0)
    other = load_dataset("covid_testing").drop(train.index).sample(2000, random_state=1)
    report = evaluate(train, other, holdout, target="result", sensitive="gender")
    assert report.details["utility"]["task"] == "classification"
    assert report["utility.tstr"] == pytest.approx(report["utility.trtr"], abs=0.08)
    assert 0.55 < report["utility.trtr"] <= 1.0
    assert report["utility.tstr_accuracy"] > 0.9  # most tests are negative


def test_numeric_target_is_scored_by_r2() -> None:
    data = load_dataset("nafld1")
    train = data.sample(2000, random_state=0)
    other = data.drop(train.index).sample(2000, random_state=1)
    holdout = load_dataset("nafld1", "holdout").sample(1500, random_state=0)
    report = evaluate(train, other, holdout, target="bmi")
    assert report.details["utility"]["task"] == "regression"
    # bmi is a function of weight and height: a model trained on real rows predicts it almost exactly.
    assert report["utility.trtr"] > 0.9
    assert report["utility.tstr"] == pytest.approx(report["utility.trtr"], abs=0.05)
    assert report["utility.tstr_accuracy"] is None
    assert report.metrics["utility.tstr_accuracy"].note == "regression target: no accuracy"


def test_single_class_synthetic_data_cannot_train(nass: dict[str, pd.DataFrame]) -> None:
    alive = nass["other"][nass["other"]["dead"] == "alive"]
    report = evaluate(nass["real"], alive, nass["holdout"], target="dead")
    assert report["utility.tstr"] is None
    assert "single class" in report.metrics["utility.tstr"].note
    assert report["utility.trtr"] is not None
