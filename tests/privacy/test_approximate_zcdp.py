"""Approximate zCDP: the delta a budget sets aside, the accountant that spends it, and the threshold mechanism."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from scipy import stats

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy import Accountant, Budget, Ledger, epsilon_from_rho_delta, gaussian_sigma, rho_from_epsilon_delta
from privsynth.privacy.budget import split_exactly
from privsynth.privacy.mechanisms import gaussian_threshold_mechanism


def test_budget_sets_delta_aside_and_converts_rho_at_the_rest() -> None:
    budget = Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=1e-7)
    assert budget.conversion_delta == pytest.approx(9e-7, rel=1e-12)
    assert budget.rho == rho_from_epsilon_delta(1.0, 1e-6 - 1e-7)
    assert f"{budget.rho:.4g}" == "0.02413"  # instead of 0.02436 with nothing set aside
    assert Budget.from_epsilon_delta(1.0, 1e-6).approx_delta == 0.0
    assert Budget.from_rho(budget.rho, 1e-6, approx_delta=1e-7).epsilon == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("approx_delta", [1e-6, 2e-6, -1e-9])
def test_budget_refuses_to_set_aside_all_of_delta_or_a_negative_amount(approx_delta: float) -> None:
    with pytest.raises(ParameterError, match="approx_delta"):
        Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=approx_delta)


def test_budget_refuses_a_rho_that_only_the_whole_delta_would_cover() -> None:
    rho = rho_from_epsilon_delta(1.0, 1e-6)
    with pytest.raises(ParameterError, match="is set aside"):
        Budget(epsilon=1.0, delta=1e-6, rho=rho, approx_delta=5e-7)


def test_split_divides_the_delta_set_aside_in_the_same_proportions() -> None:
    budget = Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=3e-7)
    shares = budget.split([0.25, 0.25, 0.5])
    assert sum(Fraction(s.approx_delta) for s in shares) <= Fraction(budget.approx_delta)
    assert [s.approx_delta for s in shares] == pytest.approx([7.5e-8, 7.5e-8, 1.5e-7], rel=1e-12)
    assert sum(Fraction(s.rho) for s in shares) <= Fraction(budget.rho)


def test_split_exactly_never_hands_out_more_than_the_amount() -> None:
    for amount in (0.00153, 1e-7, 0.02436):
        for parts in (3, 7, 10):
            shares = split_exactly(amount, [Fraction(1, parts)] * parts)
            assert sum(map(Fraction, shares), Fraction(0)) <= Fraction(amount)
            assert sum(shares) == pytest.approx(amount, rel=1e-12)
    with pytest.raises(ParameterError, match="summing to 1"):
        split_exactly(1.0, [0.5, 0.4])


def test_accountant_spends_delta_only_from_what_the_budget_sets_aside() -> None:
    accountant = Accountant(Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=1e-7))
    for _ in range(3):
        accountant.spend(0.001, mechanism="m", purpose="a third of the delta", delta=1e-7 / 3)
    assert accountant.spent_delta == pytest.approx(1e-7, rel=1e-12)
    with pytest.raises(BudgetExceeded, match="set aside for mechanisms with a delta cost"):
        accountant.spend(0.001, mechanism="m", purpose="one too many", delta=1e-9)
    assert len(accountant.charges) == 3
    assert accountant.charges[0].delta == pytest.approx(1e-7 / 3)
    # Epsilon is converted at the delta the approximate spends left: here exactly what the budget reserved.
    assert accountant.spent_epsilon == pytest.approx(epsilon_from_rho_delta(0.003, 9e-7), rel=1e-9)
    pure = Accountant(Budget.from_epsilon_delta(1.0, 1e-6))
    with pytest.raises(BudgetExceeded, match="approx_delta"):
        pure.spend(0.001, mechanism="m", purpose="no delta reserved", delta=1e-9)
    assert pure.charges == ()


def test_unspent_delta_lowers_the_reported_epsilon() -> None:
    accountant = Accountant(Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=5e-7))
    accountant.spend(0.01, mechanism="m", purpose="pure zCDP spend")
    assert accountant.spent_epsilon == pytest.approx(epsilon_from_rho_delta(0.01, 1e-6), rel=1e-9)
    assert accountant.remaining_delta == 5e-7


def test_threshold_mechanism_releases_frequent_keys_with_noisy_counts() -> None:
    accountant = Accountant(Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=1e-7))
    rho = 0.005  # sigma 10
    counts = {"negative": 11_482, "positive": 712, "invalid": 226, "rare": 3}
    released = gaussian_threshold_mechanism(counts, rho=rho, delta=1e-8, accountant=accountant, purpose="result")
    assert set(released) == {"negative", "positive", "invalid"}
    assert all(abs(released[key] - counts[key]) < 60 for key in released)  # 6 sigma
    [charge] = accountant.charges
    assert (charge.rho, charge.delta, charge.purpose) == (rho, 1e-8, "result")
    threshold = int(charge.mechanism.split("threshold=")[1].split(",")[0])
    # The smallest threshold with P(1 + Z >= threshold) <= delta, Z discrete Gaussian of sigma 10: about 5.6 sigma.
    assert threshold == pytest.approx(1 + gaussian_sigma(rho, 1.0) * stats.norm.isf(1e-8), abs=2)


def test_a_key_held_by_one_record_is_released_at_most_with_probability_delta() -> None:
    delta, runs = 0.05, 1000
    budget = Budget.from_epsilon_delta(1e6, 0.9, approx_delta=0.89)
    hits = 0
    for _ in range(runs):
        released = gaussian_threshold_mechanism(
            {"canary": 1, "common": 500}, rho=0.02, delta=delta, accountant=Accountant(budget), purpose="x"
        )
        hits += "canary" in released
        assert "common" in released
    # One-sided binomial bound at 1e-6: a release rate above delta would exceed it with near certainty.
    assert hits <= stats.binom.isf(1e-6, runs, delta)
    assert hits >= stats.binom.ppf(1e-6, runs, delta / 4)  # the bound is nearly tight, so the test has power


def test_threshold_mechanism_debits_the_ledger_with_its_delta_before_releasing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.register("fp")
    accountant = Accountant(Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=1e-7), ledger=ledger, dataset="fp")
    gaussian_threshold_mechanism({"a": 100}, rho=0.01, delta=1e-8, accountant=accountant, purpose="domain of 'x'")
    [entry] = ledger.entries("fp")
    assert entry.purpose == "domain of 'x'"
    assert entry.mechanism.startswith("gaussian_threshold(") and "delta=1e-08" in entry.mechanism
    with pytest.raises(BudgetExceeded):
        gaussian_threshold_mechanism({"a": 100}, rho=0.01, delta=1e-6, accountant=accountant, purpose="too much")
    assert len(ledger.entries("fp")) == 1
    ledger.close()


@pytest.mark.parametrize(
    ("counts", "message"),
    [({"a": 1.5}, "strings to integers"), ({1: 3}, "strings to integers"), ([("a", 1)], "must map")],
)
def test_threshold_mechanism_rejects_bad_input_before_charging(counts: object, message: str) -> None:
    accountant = Accountant(Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=1e-7))
    with pytest.raises(ParameterError, match=message):
        gaussian_threshold_mechanism(counts, rho=0.01, delta=1e-8, accountant=accountant, purpose="x")  # type: ignore[arg-type]
    assert accountant.charges == ()
    assert math.isclose(accountant.remaining_delta, 1e-7)
