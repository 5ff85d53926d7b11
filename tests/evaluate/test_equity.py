"""Equity reports per-subgroup utility and fidelity, and notices a group the synthetic data drops."""

from __future__ import annotations

import pandas as pd
import pytest

from privsynth.evaluate import Report, evaluate


def test_real_sample_serves_both_sexes_alike(real_sample_report: Report) -> None:
    report = real_sample_report
    groups = {g["group"]: g for g in report.details["equity"]["groups"]}
    assert set(groups) == {"f", "m"}
    for group in groups.values():
        assert group["tstr"] == pytest.approx(group["trtr"], abs=0.03)
        assert group["tvd_1way"] < 0.05
    assert report["equity.representation_tvd"] < 0.03
    assert abs(report["equity.gap_excess"] or 0.0) < 0.03
    assert report["equity.tvd_1way_worst"] < 2 * report["equity.tvd_1way_worst_baseline"] + 0.01


def test_dropping_a_group_shows_in_representation(nass: dict[str, pd.DataFrame]) -> None:
    men_only = nass["other"][nass["other"]["sex"] == "m"]
    report = evaluate(nass["real"], men_only, nass["holdout"], target="dead", sensitive="sex")
    women = float((nass["real"]["sex"] == "f").mean())
    assert report["equity.representation_tvd"] == pytest.approx(women)
    assert "absent from the synthetic data: ['f']" in report.metrics["equity.representation_tvd"].note
    groups = {g["group"]: g for g in report.details["equity"]["groups"]}
    assert groups["f"]["synthetic_rows"] == 0
    assert groups["f"]["tvd_1way"] is None


def test_equity_needs_a_sensitive_column(nass: dict[str, pd.DataFrame]) -> None:
    report = evaluate(nass["real"], nass["other"])
    assert report["equity.tstr_gap"] is None
    assert report.metrics["equity.tstr_gap"].note == "needs a sensitive column"
