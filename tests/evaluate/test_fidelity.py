"""Fidelity metrics tell a faithful sample from a broken one, and match their textbook definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from privsynth.data.datasets import load_dataset
from privsynth.evaluate import Report, evaluate
from privsynth.synth import create


def test_real_sample_has_near_perfect_fidelity(real_sample_report: Report) -> None:
    report = real_sample_report
    # Two independent samples of 3000 real rows: only sampling noise separates them.
    assert report["fidelity.column_score"] > 0.97
    assert report["fidelity.tvd_1way"] < 0.03
    assert report["fidelity.tvd_2way"] < 0.06
    assert report["fidelity.tvd_3way"] < 0.12
    assert report["fidelity.correlation_diff"] < 0.03
    assert report["fidelity.detection_auc"] == pytest.approx(0.5, abs=0.04)


def test_copy_of_train_has_zero_marginal_distance(copy_report: Report) -> None:
    for key in ("fidelity.tvd_1way", "fidelity.tvd_2way", "fidelity.tvd_3way", "fidelity.correlation_diff"):
        assert copy_report[key] == 0.0
    assert copy_report["fidelity.column_score"] == 1.0


def test_intervals_bracket_the_estimate(real_sample_report: Report) -> None:
    for key in ("fidelity.tvd_1way", "fidelity.tvd_2way", "fidelity.tvd_3way", "fidelity.detection_auc"):
        metric = real_sample_report.metrics[key]
        assert metric.interval is not None
        low, high = metric.interval
        assert low <= metric.value <= high
        assert high - low < 0.05


def test_independent_columns_have_worse_2way_tvd_than_the_copula() -> None:
    train = load_dataset("nassCDS")
    rng = np.random.default_rng(0)
    shuffled = pd.DataFrame({c: train[c].to_numpy()[rng.permutation(len(train))] for c in train.columns})
    copula = create("copula").fit(train).sample(len(train), seed=0)
    shuffled_report = evaluate(train, shuffled)
    copula_report = evaluate(train, copula)
    # Shuffling keeps every column's distribution exactly and destroys every dependence.
    assert shuffled_report["fidelity.tvd_1way"] == 0.0
    assert shuffled_report["fidelity.tvd_2way"] > 1.2 * copula_report["fidelity.tvd_2way"]
    assert shuffled_report["fidelity.tvd_3way"] > 1.2 * copula_report["fidelity.tvd_3way"]
    assert shuffled_report["fidelity.correlation_diff"] > copula_report["fidelity.correlation_diff"]
    assert shuffled_report["fidelity.detection_auc"] > 0.9
    # nassCDS, 21k rows: copula about 0.05, shuffled columns about 0.07 (two real halves: about 0.02).
    assert 0.03 < copula_report["fidelity.tvd_2way"] < 0.065


def test_3way_definition_says_triples_are_sampled(real_sample_report: Report) -> None:
    # 14 columns have 364 triples, more than the 300 scored.
    assert "sample of 300 of the 364 triples" in real_sample_report.metrics["fidelity.tvd_3way"].definition


def test_column_distances_are_ks_and_tvd(nass: dict[str, pd.DataFrame], real_sample_report: Report) -> None:
    columns = {c["name"]: c for c in real_sample_report.details["fidelity"]["columns"]}
    real, other = nass["real"], nass["other"]
    weight = ks_2samp(real["weight"].dropna(), other["weight"].dropna()).statistic
    assert columns["weight"]["statistic"] == "KS"
    assert columns["weight"]["distance"] == pytest.approx(weight, abs=1e-12)
    shares = pd.concat(
        [real["dvcat"].value_counts(normalize=True), other["dvcat"].value_counts(normalize=True)], axis=1
    ).fillna(0)
    assert columns["dvcat"]["statistic"] == "TVD"
    assert columns["dvcat"]["distance"] == pytest.approx(0.5 * shares.diff(axis=1).iloc[:, 1].abs().sum())
    assert columns["dvcat"]["score"] == pytest.approx(1 - columns["dvcat"]["distance"])


def test_a_numeric_column_stored_as_text_still_matches(nass: dict[str, pd.DataFrame]) -> None:
    # Synthetic data read back from CSV may carry 0/1 categories as strings and integers as floats.
    other = nass["other"].astype({"frontal": str, "ageOFocc": float})
    report = evaluate(nass["real"], other)
    baseline = evaluate(nass["real"], nass["other"])
    assert report["fidelity.tvd_2way"] == pytest.approx(baseline["fidelity.tvd_2way"])


def test_empty_synthetic_column_is_reported_not_scored() -> None:
    data = load_dataset("nafld1")
    real = data.sample(1500, random_state=0)
    synthetic = data.drop(real.index).sample(1500, random_state=1).assign(weight=np.nan)
    holdout = load_dataset("nafld1", "holdout").sample(1000, random_state=0)
    report = evaluate(real, synthetic, holdout, target="status")
    assert "not scored, no values in real or synthetic: ['weight']" in report.metrics["fidelity.column_score"].note
    assert "no synthetic values in ['weight']" in report.metrics["diversity.quantile_error"].note
    columns = {c["name"]: c for c in report.details["fidelity"]["columns"]}
    assert columns["weight"]["missing_synthetic"] == 1.0
    # The binned marginals count missing as a bin: weight alone adds about 0.97/7 to the 1-way TVD.
    assert report["fidelity.tvd_1way"] > 0.12
    assert report["utility.tstr"] is not None


def test_datetime_columns_are_compared_as_instants() -> None:
    data = load_dataset("nafld1")
    data = data.assign(seen=pd.Timestamp("1990-01-01") + pd.to_timedelta(data["futime"], unit="D"))
    real = data.sample(1500, random_state=0)
    other = data.drop(real.index).sample(1500, random_state=1)
    report = evaluate(real, other.assign(seen=other["seen"].dt.strftime("%Y-%m-%d")))
    columns = {c["name"]: c for c in report.details["fidelity"]["columns"]}
    assert columns["seen"]["kind"] == "datetime"
    assert columns["seen"]["distance"] == pytest.approx(columns["futime"]["distance"])
