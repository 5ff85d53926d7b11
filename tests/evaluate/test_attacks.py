"""The Anonymeter risk arithmetic reproduces the numbers anonymeter's own tests publish; the singling-out size
correction predicts what a larger control set shows."""

from __future__ import annotations

import numpy as np
import pytest

from privsynth.data.datasets import load_dataset
from privsynth.evaluate.attacks import Rate, evaluation, residual_risk, singling_out, success_rate
from privsynth.evaluate.prepared import prepare


@pytest.mark.parametrize(
    ("n_success", "rate", "error"),
    [(850, 0.849, 0.022), (0, 0.002, 0.002), (1000, 0.998, 0.002)],
)
def test_wilson_success_rate_matches_anonymeter(n_success: int, rate: float, error: float) -> None:
    estimate = success_rate(1000, n_success, 0.95)
    assert round(estimate.value, 3) == rate
    assert round(estimate.error, 3) == error


def test_wilson_rate_matches_anonymeter_to_all_digits() -> None:
    assert success_rate(100, 100) == pytest.approx(Rate(0.9815032508965071, 0.01849674910349284))
    assert success_rate(100, 23) == pytest.approx(Rate(0.23998824451588613, 0.08155558571285167))
    assert success_rate(100, 11) == pytest.approx(Rate(0.1244274643007244, 0.06188550073007873))


def test_residual_risk_matches_anonymeter() -> None:
    value, interval = residual_risk(Rate(0.9, 0.0), Rate(0.8, 0.0))
    assert value == pytest.approx(0.5)
    assert interval == pytest.approx((0.5, 0.5))
    value, interval = residual_risk(Rate(0.9, 0.02), Rate(0.85, 0.02))
    assert round(value, 3) == 0.333
    assert interval[1] - value == pytest.approx(0.16, abs=5e-4)  # propagated error 0.16


def test_risk_is_bounded_to_unit_interval() -> None:
    value, interval = residual_risk(Rate(0.1, 0.3), None)
    assert (value, *interval) == pytest.approx((0.1, 0.0, 0.4))
    value, interval = residual_risk(Rate(0.5, 0.1), Rate(0.7, 0.05))
    assert value == 0.0
    assert interval[0] == 0.0


def test_attack_no_better_than_guessing_says_so() -> None:
    result = evaluation("inference", 500, 100, 120, 100)
    assert result.risk == 0.0
    assert "no better than random guessing" in result.note


def test_singling_out_control_rescaled_to_training_size_matches_a_control_that_large() -> None:
    """The control count from 1,500 fresh rows, rescaled to 5,000, is about what 5,000 fresh rows show.

    A fit stuck where the curve falls as 1 / (n + 1) (anonymeter's curve_fit start; anonymeter 1.1 always) scales
    it by about 1,500 / 5,000 instead: a ratio near 0.3.
    """
    train = load_dataset("nafld1")
    order = np.random.default_rng(0).permutation(len(train))
    members, fresh_large, fresh_small = (
        train.iloc[order[start:stop]].reset_index(drop=True)
        for start, stop in ((0, 5000), (5000, 10000), (10000, 11500))
    )
    large = prepare(members, members.copy(), fresh_large, None, None, None)
    small = prepare(members, members.copy(), fresh_small, None, None, None)
    rescaled, measured = 0.0, 0.0
    for seed in range(4):  # the same queries for both control sets: the rng is used alike until the correction
        at_size = singling_out(large, large.real, large.holdout, np.random.default_rng(seed), 200)
        corrected = singling_out(small, small.real, small.holdout, np.random.default_rng(seed), 200)
        assert at_size is not None and corrected is not None
        assert at_size.n_success == corrected.n_success == 200  # memorised: every query singles out its row
        measured += at_size.n_control or 0.0
        rescaled += corrected.n_control or 0.0
    assert measured == pytest.approx(176, abs=1)  # 5,000 fresh rows: no rescaling beyond a deduplicated row or two
    assert 0.6 < rescaled / measured < 1.4
