"""Noise mechanisms: the noise has the claimed scale, and nothing is released without a prior debit."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy import Accountant, Budget, Ledger, gaussian_sigma
from privsynth.privacy.mechanisms import exponential_mechanism, gaussian_mechanism, laplace_mechanism

DRAWS = 20_000
SIGMA = 1000.0  # large enough that the discrete Gaussian and Laplace are indistinguishable from continuous ones


@pytest.fixture
def accountant() -> Accountant:
    return Accountant(Budget.from_rho(1000.0, 1e-6))


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_gaussian_noise_has_the_claimed_scale(accountant: Accountant, dtype: type) -> None:
    rho = 1 / (2 * SIGMA**2)
    assert gaussian_sigma(rho, 1.0) == pytest.approx(SIGMA)
    noise = gaussian_mechanism(
        np.zeros(DRAWS, dtype=dtype), sensitivity=1.0, rho=rho, accountant=accountant, purpose="scale check"
    )
    assert noise.dtype == dtype
    assert np.std(noise) == pytest.approx(SIGMA, rel=0.03)
    assert abs(np.mean(noise)) < 5 * SIGMA / math.sqrt(DRAWS)
    assert stats.kstest(noise, stats.norm(scale=SIGMA).cdf).pvalue > 1e-6


def test_gaussian_noise_scales_with_sensitivity(accountant: Accountant) -> None:
    rho = 1 / (2 * SIGMA**2)
    noise = gaussian_mechanism(
        np.zeros(DRAWS, dtype=np.int64), sensitivity=2.0, rho=rho, accountant=accountant, purpose="sensitivity 2"
    )
    assert np.std(noise) == pytest.approx(2 * SIGMA, rel=0.03)


def test_gaussian_keeps_shape_dtype_and_centre(accountant: Accountant) -> None:
    counts = np.arange(60, dtype=np.int32).reshape(3, 4, 5) * 1000
    noisy = gaussian_mechanism(counts, sensitivity=1, rho=0.5, accountant=accountant, purpose="3-way marginal")
    assert noisy.shape == (3, 4, 5)
    assert noisy.dtype == np.int64
    assert np.max(np.abs(noisy - counts)) < 10  # sigma = 1


def test_laplace_noise_has_the_claimed_scale(accountant: Accountant) -> None:
    scale = SIGMA
    rho = (1 / scale) ** 2 / 2  # epsilon = sensitivity / scale, rho = epsilon² / 2
    noise = laplace_mechanism(
        np.zeros(DRAWS, dtype=np.int64), sensitivity=1.0, rho=rho, accountant=accountant, purpose="scale check"
    )
    assert np.mean(np.abs(noise)) == pytest.approx(scale, rel=0.03)  # E|X| = scale; 4 standard errors
    assert np.std(noise) == pytest.approx(math.sqrt(2) * scale, rel=0.05)  # heavy tails: std varies more
    assert stats.kstest(noise, stats.laplace(scale=scale).cdf).pvalue > 1e-6


@pytest.mark.parametrize(
    ("monotonic", "temperature"),
    [(False, 2.0), (True, 1.0)],
    ids=["general", "monotonic"],
)
def test_exponential_mechanism_selects_with_exponential_weights(
    accountant: Accountant, monotonic: bool, temperature: float
) -> None:
    # rho = 1/8 is epsilon = 1: weights exp(score / 2) in general, exp(score) for monotonic scores.
    scores = np.array([0.0, 1.0, 2.0, 0.5])
    draws = 4000
    chosen = [
        exponential_mechanism(
            scores, sensitivity=1.0, rho=0.125, accountant=accountant, purpose="select", monotonic=monotonic
        )
        for _ in range(draws)
    ]
    expected = np.exp(scores / temperature) / np.exp(scores / temperature).sum()
    observed = np.bincount(chosen, minlength=len(scores))
    assert stats.chisquare(observed, expected * draws).pvalue > 1e-6
    assert observed / draws == pytest.approx(expected, abs=0.04)


def test_exponential_mechanism_rejects_bad_scores(accountant: Accountant) -> None:
    for scores in ([], [[1.0, 2.0]], [1.0, math.nan]):
        with pytest.raises(ParameterError, match="scores must"):
            exponential_mechanism(scores, sensitivity=1.0, rho=0.1, accountant=accountant, purpose="x")
    assert accountant.spent == 0.0


@pytest.mark.parametrize("mechanism", [gaussian_mechanism, laplace_mechanism], ids=lambda m: m.__name__)
def test_noise_mechanisms_reject_bad_input_before_charging(
    accountant: Accountant, mechanism: Callable[..., Any]
) -> None:
    with pytest.raises(ParameterError, match=r"(counts|values) must be finite"):
        mechanism([1.0, math.inf], sensitivity=1.0, rho=0.1, accountant=accountant, purpose="x")
    with pytest.raises(ParameterError, match="must hold integers or floats"):
        mechanism(["a", "b"], sensitivity=1.0, rho=0.1, accountant=accountant, purpose="x")
    with pytest.raises(ParameterError, match="sensitivity must be a finite number > 0"):
        mechanism([1, 2], sensitivity=0.0, rho=0.1, accountant=accountant, purpose="x")
    assert accountant.spent == 0.0


MECHANISMS: list[Callable[..., Any]] = [gaussian_mechanism, laplace_mechanism, exponential_mechanism]


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=lambda mechanism: mechanism.__name__)
def test_mechanism_debits_the_ledger_before_it_releases(tmp_path: Path, mechanism: Callable[..., Any]) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.register("fp")
    ledger.set_cap("fp", 1.0, 1e-6)
    accountant = Accountant(Budget.from_epsilon_delta(1.0, 1e-6), ledger=ledger, dataset="fp", release_id="r1")
    mechanism([3, 1, 4], sensitivity=1.0, rho=0.01, accountant=accountant, purpose="MST 1-way marginal (age)")
    [entry] = ledger.entries("fp")
    assert (entry.rho, entry.purpose, entry.release_id) == (0.01, "MST 1-way marginal (age)", "r1")
    assert entry.mechanism.startswith(mechanism.__name__.removesuffix("_mechanism") + "(")
    assert accountant.charges[0].mechanism == entry.mechanism
    assert accountant.spent == 0.01
    ledger.close()


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=lambda mechanism: mechanism.__name__)
def test_mechanism_refuses_over_budget_and_releases_nothing(tmp_path: Path, mechanism: Callable[..., Any]) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.register("fp")
    ledger.set_cap("fp", 0.5, 1e-6)
    budget = Budget.from_epsilon_delta(1.0, 1e-6)
    within_cap = Accountant(budget, ledger=ledger, dataset="fp")
    with pytest.raises(BudgetExceeded, match=r"cap epsilon=0\.5"):
        mechanism([3, 1, 4], sensitivity=1.0, rho=budget.rho, accountant=within_cap, purpose="over the cap")
    small = Accountant(Budget.from_epsilon_delta(0.1, 1e-6), ledger=ledger, dataset="fp")
    with pytest.raises(BudgetExceeded, match="Nothing was released"):
        mechanism([3, 1, 4], sensitivity=1.0, rho=0.01, accountant=small, purpose="over the budget")
    assert ledger.entries("fp") == []
    assert within_cap.spent == small.spent == 0.0
    ledger.close()


@settings(max_examples=40, deadline=None)
@given(
    rho=st.floats(min_value=1e-6, max_value=5.0),
    parts=st.integers(min_value=1, max_value=7),
    sensitivity=st.sampled_from([1.0, math.sqrt(2), 0.37, 3.0]),
)
def test_mechanisms_spend_every_share_of_a_split_budget(rho: float, parts: int, sensitivity: float) -> None:
    # OpenDP rounds its privacy maps up, so a naive sigma for rho costs slightly more than rho about half the
    # time; this is how OpenDP's own MST failed at its own budget. Every share must still be spendable.
    budget = Budget.from_rho(rho, 1e-6)
    accountant = Accountant(budget)
    for index, share in enumerate(budget.split([1 / parts] * parts)):
        mechanism = MECHANISMS[index % len(MECHANISMS)]
        mechanism([5, 0, 2], sensitivity=sensitivity, rho=share.rho, accountant=accountant, purpose="share")
    assert accountant.spent == pytest.approx(rho, rel=1e-12)


def test_opendp_map_of_calibrated_gaussian_is_within_the_rho_charged() -> None:
    import opendp.prelude as dp

    from privsynth.privacy.mechanisms import _calibrate

    domain, metric = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T=float)
    overshoots = 0
    for rho in np.geomspace(1e-5, 2.0, 200):
        naive = gaussian_sigma(float(rho), 1.0)
        overshoots += dp.m.make_gaussian(domain, metric, scale=naive).map(1.0) > rho
        measurement, sigma = _calibrate(
            lambda scale: dp.m.make_gaussian(domain, metric, scale=scale), naive, 1.0, float(rho), Fraction
        )
        assert measurement.map(1.0) <= rho
        assert sigma == pytest.approx(naive, rel=1e-10)
    assert overshoots > 0
