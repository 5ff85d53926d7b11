"""Accounting in zCDP: conversions against published numbers, validation, and budgets that split exactly."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy import Accountant, Budget
from privsynth.privacy.budget import (
    check_delta,
    epsilon_from_rho_delta,
    fits_within,
    gaussian_rho,
    gaussian_sigma,
    rho_from_epsilon_delta,
)

# cdp_rho(epsilon, delta) from Private-PGM's mechanisms/cdp2adp.py, the accounting of AIM and MST.
REFERENCE_RHO = [
    (1.0, 1e-9, 0.014973057673588523, "0.01497"),
    (1.0, 1e-5, 0.03055659519763956, "0.03056"),
    (1.0, 1e-6, 0.024355970359538372, "0.02436"),
    (3.0, 1e-6, 0.18506984065340149, "0.1851"),
]


@pytest.mark.parametrize(("epsilon", "delta", "reference", "four_digits"), REFERENCE_RHO)
def test_rho_from_epsilon_delta_matches_aim_mst_reference(
    epsilon: float, delta: float, reference: float, four_digits: str
) -> None:
    rho = rho_from_epsilon_delta(epsilon, delta)
    assert f"{rho:.4g}" == four_digits
    assert rho == pytest.approx(reference, rel=1e-14)


@pytest.mark.parametrize(("epsilon", "delta", "reference", "four_digits"), REFERENCE_RHO)
def test_epsilon_from_rho_delta_round_trips(epsilon: float, delta: float, reference: float, four_digits: str) -> None:
    assert epsilon_from_rho_delta(rho_from_epsilon_delta(epsilon, delta), delta) == pytest.approx(epsilon, rel=1e-12)
    assert rho_from_epsilon_delta(epsilon_from_rho_delta(reference, delta), delta) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize(("rho", "delta"), [(0.02436, 1e-6), (0.5, 1e-9), (0.001, 1e-5)])
def test_epsilon_from_rho_delta_agrees_with_opendp_conversion(rho: float, delta: float) -> None:
    dp = pytest.importorskip("opendp.prelude")
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T=float)
    measurement = dp.m.make_gaussian(*space, scale=gaussian_sigma(rho, 1.0))
    profile = dp.c.make_zCDP_to_approxDP(measurement).map(1.0)
    assert epsilon_from_rho_delta(rho, delta) == pytest.approx(profile.epsilon(delta), rel=1e-6)


@pytest.mark.parametrize("rho", [1e-4, 0.02436, 1.0, 10.0])
def test_conversion_improves_on_the_classic_bound(rho: float) -> None:
    classic = rho + 2 * math.sqrt(rho * math.log(1 / 1e-6))
    assert epsilon_from_rho_delta(rho, 1e-6) < classic


def test_zero_rho_costs_zero_epsilon() -> None:
    assert epsilon_from_rho_delta(0.0, 1e-6) == 0.0


@pytest.mark.parametrize(
    ("epsilon", "delta", "message"),
    [
        (0.0, 1e-6, "epsilon must be a finite number > 0"),
        (-1.0, 1e-6, "epsilon must be a finite number > 0"),
        (math.nan, 1e-6, "epsilon must be a finite number > 0"),
        (math.inf, 1e-6, "epsilon must be a finite number > 0"),
        (1.0, 0.0, "delta must be a finite number > 0"),
        (1.0, 1.0, "delta must lie strictly between 0 and 1"),
        (1.0, 1.5, "delta must lie strictly between 0 and 1"),
        (1.0, math.nan, "delta must be a finite number > 0"),
    ],
)
def test_invalid_privacy_parameters_raise_parameter_error(epsilon: float, delta: float, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        rho_from_epsilon_delta(epsilon, delta)
    with pytest.raises(ParameterError, match=message):
        Budget.from_epsilon_delta(epsilon, delta)


def test_gaussian_sigma_and_rho_are_inverse() -> None:
    assert gaussian_sigma(0.5, 1.0) == 1.0
    assert gaussian_sigma(0.125, 2.0) == 4.0
    assert gaussian_rho(4.0, 2.0) == 0.125
    assert gaussian_rho(gaussian_sigma(0.0123, math.sqrt(2)), math.sqrt(2)) == pytest.approx(0.0123, rel=1e-15)


def test_check_delta_refuses_delta_at_or_above_one_over_n() -> None:
    check_delta(1e-4, 1000)
    with pytest.raises(ParameterError, match=r"delta=0\.001 is not below 1/n = 1/1000"):
        check_delta(1e-3, 1000)
    with pytest.raises(ParameterError, match="well below"):
        check_delta(0.01, 1_000_000)
    with pytest.raises(ParameterError, match="n_rows must be a positive integer"):
        check_delta(1e-6, 0)


def test_budget_from_epsilon_delta_keeps_what_the_user_gave() -> None:
    budget = Budget.from_epsilon_delta(1.0, 1e-6)
    assert (budget.epsilon, budget.delta) == (1.0, 1e-6)
    assert budget.rho == pytest.approx(0.02436, abs=5e-6)
    assert Budget.from_rho(budget.rho, 1e-6).epsilon == pytest.approx(1.0, rel=1e-12)


def test_budget_rejects_a_rho_its_epsilon_does_not_cover() -> None:
    with pytest.raises(ParameterError, match="does not imply"):
        Budget(epsilon=1.0, delta=1e-6, rho=0.5)


def test_budget_split_into_tenths_adds_up_to_at_most_the_whole() -> None:
    budget = Budget.from_epsilon_delta(1.0, 1e-6)
    shares = budget.split([0.1] * 10)
    assert len(shares) == 10
    assert all(share.delta == 1e-6 for share in shares)
    assert sum(Fraction(share.rho) for share in shares) <= Fraction(budget.rho)
    assert math.fsum(share.rho for share in shares) == pytest.approx(budget.rho, rel=1e-15)
    assert shares[0].rho == pytest.approx(budget.rho / 10, rel=1e-15)


@pytest.mark.parametrize("fractions", [[], [0.5, 0.4], [0.7, 0.7], [1.0, 0.0], [1.5, -0.5]])
def test_budget_split_rejects_fractions_that_are_not_a_partition(fractions: list[float]) -> None:
    with pytest.raises(ParameterError, match="fraction"):
        Budget.from_epsilon_delta(1.0, 1e-6).split(fractions)


@settings(max_examples=60, deadline=None)
@given(
    rho=st.floats(min_value=1e-6, max_value=10.0),
    weights=st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=1, max_size=12),
)
def test_spending_every_share_of_a_split_never_fails(rho: float, weights: list[float]) -> None:
    budget = Budget.from_rho(rho, 1e-6)
    total = math.fsum(weights)
    shares = budget.split([weight / total for weight in weights])
    accountant = Accountant(budget)
    for index, share in enumerate(shares):
        accountant.spend(share.rho, mechanism="test", purpose=f"share {index}")
    assert sum(Fraction(share.rho) for share in shares) <= Fraction(rho)
    assert accountant.spent == pytest.approx(rho, rel=1e-12)
    with pytest.raises(BudgetExceeded):
        accountant.spend(rho * 1e-6, mechanism="test", purpose="one too many")


def test_opendp_reported_failure_amount_fits_its_own_budget() -> None:
    # OpenDP's MST failed with "insufficient budget for query: 0.00153 > 0.0015299999".
    budget = Budget.from_rho(0.00153, 1e-6)
    accountant = Accountant(budget)
    for share in budget.split([1 / 3, 1 / 3, 1 / 3]):
        accountant.spend(share.rho, mechanism="test", purpose="third")
    assert accountant.remaining == pytest.approx(0.0, abs=1e-18)


def test_fits_within_absorbs_rounding_but_not_overspending() -> None:
    cap = 0.1
    assert Fraction(0.1) * 10 > 1  # ten spends of 0.1 exceed 1 in exact arithmetic
    assert fits_within([0.1] * 9, 0.1, 1.0)
    assert fits_within([cap / 3, cap / 3], cap / 3, cap)
    assert not fits_within([], cap * (1 + 1e-6), cap)
    assert not fits_within([cap], 1e-9, cap)
