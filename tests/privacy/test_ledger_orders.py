"""Spends that hold in Rényi DP only over a range of orders (DP-SGD): the ledger stores the range, refuses a cap
or a spend whose conversion to (epsilon, delta) would need an order outside it, and reports the epsilon spent at
an order inside it.

Every expected number is derived here from Canonne, Kamath and Steinke 2020, Proposition 12: rho-zCDP used at
order alpha gives (epsilon, delta) with log delta = (alpha - 1)(alpha rho - epsilon) + alpha log(1 - 1/alpha)
- log(alpha - 1), whose best order solves (2 alpha - 1) rho - epsilon + log(1 - 1/alpha) = 0 (root-found with
scipy, independently of the ledger's bisection)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy import optimize

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy import Accountant, Budget, Ledger, epsilon_from_rho_delta, rho_from_epsilon_delta
from privsynth.privacy.accountant import fit_accountant


def _log_delta(alpha: float, rho: float, epsilon: float) -> float:
    return (alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha) - math.log(alpha - 1)


def _best_order(rho: float, epsilon: float) -> float:
    def slope(alpha: float) -> float:
        return (2 * alpha - 1) * rho - epsilon + math.log1p(-1 / alpha)

    return float(optimize.brentq(slope, 1.0001, 1e5, xtol=1e-14, rtol=1e-15))


CAP_ORDER = _best_order(rho_from_epsilon_delta(1.0, 1e-6), 1.0)  # 21.98: where (1, 1e-6) is converted


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "orders.sqlite")
    ledger.register("adult")
    yield ledger
    ledger.close()


def test_the_cap_order_of_epsilon_1_delta_1e6_is_22() -> None:
    assert pytest.approx(21.9845, abs=1e-4) == CAP_ORDER
    assert math.exp(_log_delta(CAP_ORDER, rho_from_epsilon_delta(1.0, 1e-6), 1.0)) == pytest.approx(1e-6, rel=1e-9)


def test_a_cap_at_a_smaller_delta_than_the_dp_sgd_spend_was_charged_for_is_refused(ledger: Ledger) -> None:
    ledger.spend("adult", 0.005, mechanism="dp-sgd", purpose="train", min_order=2, max_order=CAP_ORDER)
    (spend,) = ledger.entries("adult")
    assert (spend.min_order, spend.max_order) == (2, CAP_ORDER)
    record = ledger.dataset("adult")
    assert (record.min_order, record.max_order, record.max_order_spend) == (2, CAP_ORDER, spend.id)
    order_at_1e9 = _best_order(rho_from_epsilon_delta(1.0, 1e-9), 1.0)  # 34.87 > 21.98
    # the deltas whose best order for epsilon 1 lies in [2, 21.98]: at order a, rho = (1 - log(1 - 1/a)) / (2a - 1)
    smallest = math.exp(_log_delta(CAP_ORDER, (1 - math.log1p(-1 / CAP_ORDER)) / (2 * CAP_ORDER - 1), 1.0))
    largest = math.exp(-1 / 3 - 4 / 3 * math.log(2))  # order 2: rho = (1 + log 2) / 3
    assert (order_at_1e9, smallest, largest) == (
        pytest.approx(34.8651, abs=1e-4),
        pytest.approx(1e-6, rel=1e-9),
        pytest.approx(0.28436, abs=1e-5),
    )
    with pytest.raises(ParameterError) as refused:
        ledger.set_cap("adult", 1.0, 1e-9)
    message = str(refused.value)
    assert f"converted at Rényi order {order_at_1e9:.4g}" in message
    assert f"spend #{spend.id} holds only at Rényi orders 2 to {CAP_ORDER:.6g}" in message
    assert f"for a delta from {smallest:.3g} to {largest:.3g}" in message
    assert ledger.dataset("adult").cap is None
    assert ledger.set_cap("adult", 1.0, 1e-6) == Budget.from_epsilon_delta(1.0, 1e-6)
    assert ledger.set_cap("adult", 1.0, 1e-5).delta == 1e-5  # larger delta, order 17.8: inside


def test_a_spend_that_leaves_the_cap_unreachable_at_its_orders_is_refused(ledger: Ledger) -> None:
    cap = ledger.set_cap("adult", 1.0, 1e-6)
    with pytest.raises(BudgetExceeded) as refused:  # at order 10 rho 0.001 gives epsilon 1 only at delta 5.2e-6
        ledger.spend("adult", 0.001, mechanism="dp-sgd", purpose="train", min_order=2, max_order=10)
    needed = math.exp(_log_delta(10, 0.001, 1.0))
    assert needed == pytest.approx(5.2e-6, rel=0.01)
    assert "this spend holds only at Rényi orders 2 to 10" in str(refused.value)
    assert f"only at delta={needed:.3g}, above the delta=1e-06 the cap leaves" in str(refused.value)
    assert ledger.entries("adult") == []
    # at orders up to 15 the cap holds while rho stays below the R solving log delta(15, R, 1) = log 1e-6
    ledger.spend("adult", 0.001, mechanism="dp-sgd", purpose="train", min_order=2, max_order=15)
    limit = float(optimize.brentq(lambda rho: _log_delta(15, rho, 1.0) - math.log(1e-6), 1e-4, cap.rho, xtol=1e-15))
    assert limit == pytest.approx(0.01837, abs=1e-5) and limit < cap.rho
    assert ledger.remaining("adult") == pytest.approx(limit - 0.001, rel=1e-9)  # not cap.rho - 0.001
    with pytest.raises(BudgetExceeded, match=r"spend #1 holds only at Rényi orders 2 to 15"):
        ledger.spend("adult", limit * 1.001 - 0.001, mechanism="gaussian", purpose="one marginal too many")
    ledger.spend("adult", limit * 0.999 - 0.001, mechanism="gaussian", purpose="marginals")
    assert ledger.spent("adult") == pytest.approx(limit * 0.999, rel=1e-12)


def test_spent_epsilon_is_converted_at_the_nearest_order_the_spends_hold_at(ledger: Ledger) -> None:
    ledger.set_cap("adult", 1.0, 1e-6)
    ledger.spend("adult", 0.001, mechanism="dp-sgd", purpose="train", min_order=2, max_order=15)
    record = ledger.dataset("adult")
    free = epsilon_from_rho_delta(0.001, 1e-6)  # 0.18, best at order 97
    assert _best_order(0.001, free) == pytest.approx(97.12, abs=0.01)

    def epsilon_at(alpha: float) -> float:
        return alpha * 0.001 + (alpha * math.log1p(-1 / alpha) - math.log(alpha - 1) - math.log(1e-6)) / (alpha - 1)

    best = optimize.minimize_scalar(epsilon_at, bounds=(2, 15), method="bounded", options={"xatol": 1e-10})
    assert best.x == pytest.approx(15, abs=1e-6)
    assert record.spent_epsilon == pytest.approx(epsilon_at(15), rel=1e-12)
    assert record.spent_epsilon == pytest.approx(0.7394, abs=1e-4) and record.spent_epsilon > free
    note = record.conversion_note
    assert note is not None and "spend #1 holds only at Rényi orders 2 to 15" in note
    assert f"converts best at the cap's delta=1e-06 at Rényi order {_best_order(0.001, free):.4g}" in note
    assert "its epsilon is given at order 15" in note
    ledger.register("census")
    ledger.set_cap("census", 1.0, 1e-6)
    ledger.spend("census", 0.011, mechanism="dp-sgd", purpose="train", min_order=2, max_order=40)
    census = ledger.dataset("census")
    assert _best_order(0.011, epsilon_from_rho_delta(0.011, 1e-6)) == pytest.approx(31.69, abs=0.01)  # inside
    assert census.conversion_note is None
    assert census.spent_epsilon == epsilon_from_rho_delta(0.011, 1e-6)


def test_the_accountant_passes_the_range_on_and_refuses_one_without_its_own_order(ledger: Ledger) -> None:
    budget = Budget.from_epsilon_delta(1.0, 1e-6)
    accountant = Accountant(budget, ledger=ledger, dataset="adult")
    with pytest.raises(ParameterError, match=f"converted to epsilon at order {CAP_ORDER:.6g}"):
        accountant.spend(0.001, mechanism="dp-sgd", purpose="train", min_order=2, max_order=10)
    accountant.spend(0.001, mechanism="dp-sgd", purpose="train", min_order=2, max_order=30)
    ((charge,), (spend,)) = accountant.charges, ledger.entries("adult")
    assert (charge.min_order, charge.max_order) == (spend.min_order, spend.max_order) == (2, 30)


def test_a_dp_sgd_charge_stores_its_orders_and_a_later_cap_cannot_convert_beyond_them(ledger: Ledger) -> None:
    pytest.importorskip("opacus")
    from privsynth.privacy.dp_sgd import spend_dp_sgd

    ledger.set_cap("adult", 2.0, 1e-6)
    budget = Budget.from_epsilon_delta(1.0, 1e-6)
    with fit_accountant(budget, ledger, "adult", purpose="dp-deep fit") as (accountant, cap):
        sgd = spend_dp_sgd(accountant, budget, cap, sample_rate=0.01, steps=200, max_grad_norm=1.0, purpose="train")
    assert sgd.max_order == pytest.approx(CAP_ORDER, rel=1e-9)  # the budget's order; the cap's (2, 1e-6) is 12
    (reservation, spend) = ledger.entries("adult")
    assert (spend.min_order, spend.max_order) == (2, sgd.max_order) and spend.reservation_id == reservation.id
    assert ledger.dataset("adult").spent_epsilon == pytest.approx(1.0, rel=1e-9)
    assert ledger.dataset("adult").conversion_note is None
    with pytest.raises(ParameterError, match=rf"spend #{spend.id} holds only at Rényi orders 2 to 21.98"):
        ledger.set_cap("adult", 1.0, 1e-9)
    assert ledger.set_cap("adult", 1.0, 1e-6).epsilon == 1.0
