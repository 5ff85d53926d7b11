"""Privacy checks pass a fresh real sample and flag a generator that copies its training rows."""

from __future__ import annotations

import pandas as pd
import pytest

from privsynth.evaluate import Report, evaluate


def test_real_sample_sits_no_closer_to_train_than_to_holdout(real_sample_report: Report) -> None:
    report = real_sample_report
    assert report["privacy.exact_copy_rate"] == report["privacy.exact_copy_rate_baseline"] == 0.0
    assert report["privacy.dcr_train_share"] == pytest.approx(0.5, abs=0.04)
    assert report["privacy.mia_auc"] == pytest.approx(0.5, abs=0.04)
    assert report["privacy.nndr_mean"] == pytest.approx(report["privacy.nndr_baseline"], abs=0.05)


def test_real_sample_attack_risks_are_small(real_sample_report: Report) -> None:
    # A fresh sample leaks nothing; singling out and inference estimates are noisy (a few hundred attacks).
    assert real_sample_report["privacy.linkability_risk"] < 0.02
    assert real_sample_report["privacy.singling_out_risk"] < 0.3
    assert real_sample_report["privacy.inference_risk"] < 0.3
    low, _ = real_sample_report.metrics["privacy.inference_risk"].interval or (1.0, 1.0)
    assert low < 0.05  # the worst of 14 columns, with family-wise intervals, is compatible with no risk


def test_copy_of_train_is_flagged_by_every_check(copy_report: Report) -> None:
    report = copy_report
    assert report["privacy.exact_copy_rate"] == 1.0
    assert report["privacy.dcr_train_share"] > 0.95
    assert report["privacy.mia_auc"] > 0.9
    assert report["privacy.nndr_mean"] < 0.05
    assert report["privacy.singling_out_risk"] > 0.8
    assert report["privacy.linkability_risk"] > 0.8
    assert report["privacy.inference_risk"] > 0.8


def test_partial_copying_raises_dcr_share_and_mia(nass: dict[str, pd.DataFrame]) -> None:
    # A third of the "synthetic" rows are training rows: the distance checks move clearly off 0.5.
    third = len(nass["real"]) // 3
    leaky = pd.concat([nass["real"].iloc[:third], nass["other"].iloc[third:]], ignore_index=True)
    report = evaluate(nass["real"], leaky, nass["holdout"], seed=0)
    assert report["privacy.exact_copy_rate"] == pytest.approx(1 / 3, abs=0.01)
    assert report["privacy.dcr_train_share"] > 0.6
    assert report["privacy.mia_auc"] > 0.6


def test_privacy_without_holdout_reports_copies_and_says_what_is_missing(nass: dict[str, pd.DataFrame]) -> None:
    report = evaluate(nass["real"], nass["real"].iloc[:100], target="dead")
    assert report["privacy.exact_copy_rate"] == 1.0
    for key in ("privacy.dcr_train_share", "privacy.mia_auc", "privacy.singling_out_risk", "utility.tstr"):
        assert report[key] is None
        assert "holdout" in report.metrics[key].note
