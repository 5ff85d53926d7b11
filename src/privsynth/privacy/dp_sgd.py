"""Accounting for DP-SGD inside a zCDP budget: what ``dp-deep`` and DP LoRA charge the ledger for training, and why
it is sound; and the steps both trainings share (the noisy count that sets the sampling rate, opacus's clean-up).

DP-SGD with Poisson sampling (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) is analysed in
Rényi DP: ``steps`` rounds of the sampled Gaussian mechanism with sampling rate ``q`` and noise multiplier
``sigma`` are (alpha, eps_sgd(alpha))-RDP at every order alpha > 1 (Mironov, Talwar and Zhang, "Rényi
Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530), computed here by opacus's RDP
accountant. It is *not* rho-zCDP for any useful rho: subsampling helps at small orders only, so
eps_sgd(alpha) / alpha grows with alpha.

The rest of privsynth composes in rho (rho-zCDP is (alpha, rho alpha)-RDP at every order) and reports
(epsilon, delta) through the conversion of Canonne, Kamath and Steinke (NeurIPS 2020, Proposition 12), which
uses one order: rho-zCDP is (epsilon, delta)-DP because it is (alpha*, rho alpha*)-RDP at the order alpha*
where that conversion is tightest (:func:`conversion_order`). It is the same conversion as opacus's
``get_privacy_spent`` (Balle et al., AISTATS 2020, Theorem 21), so the two agree to rounding at equal RDP.

So training is charged ``rho_sgd = max over orders 2 <= alpha <= alpha_max of eps_sgd(alpha) / alpha``
(:func:`sgd_rho`; just alpha_max when it is below 2, which takes epsilon above about 20), with ``alpha_max`` at
least the conversion order of the fit's budget. Composition is additive in RDP at each order, so at every order
from 2 to ``alpha_max`` the whole fit (zCDP preprocessing spends plus DP-SGD) is below (rho_pre + rho_sgd)
alpha, and in particular at alpha*: if rho_pre + rho_sgd fits the budget's rho, the fit is (epsilon, delta)-DP,
exactly as the budget states. (Approximate-zCDP spends, such as DP key discovery, add their delta as they do for
every method; alpha* is then the order of the conversion at the delta they leave.) Since eps_sgd(alpha) / alpha
grows with alpha, the charge is in effect the RDP at alpha_max over alpha_max, which makes the fit's epsilon by
opacus's own conversion (optimised over all orders) a little smaller than the budget: the price of a charge that
adds up in rho with every other release.

The noise multiplier is the smallest that makes ``rho_sgd`` fit what the preprocessing left
(:func:`calibrate_sigma`). In the ledger the charge composes with other releases soundly as long as the cap's own
conversion order is between 2 and ``alpha_max``; ``dp-deep`` raises ``alpha_max`` to the cap's order when the
dataset has a cap (a larger cap at the same delta has a smaller order, so this costs nothing in the usual case).
The spend records that range of orders (from 2 to ``alpha_max``; from ``alpha_max`` to 2 when ``alpha_max`` is
below 2, where the charge is the RDP at 2 over ``alpha_max``), and the ledger converts the dataset's total rho
only at orders inside it: a cap set later at a smaller delta, whose conversion order is larger, is refused.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from privsynth.errors import ParameterError
from privsynth.privacy._seeded import described, seeded
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget, conversion_order

logger = logging.getLogger(__name__)

_MIN_ORDER = 2  # the smallest integer order opacus computes; the charge covers orders from 2 (or alpha_max) up
_SEGMENT_POINTS = 8  # orders checked between consecutive integers
_SIGMA_RANGE = (0.3, 1e4)
_CROSS_CHECK_ORDERS = 256


def sgd_rdp(q: float, sigma: float, steps: int, orders: np.ndarray) -> np.ndarray:
    """Upper bounds on eps_sgd(alpha) of ``steps`` sampled Gaussian rounds at ``orders`` (all > 1).

    Integer orders come straight from opacus's RDP accountant (a finite sum, exact). A fractional order between
    integers k and k + 1 is bounded by convexity: (alpha - 1) times the Rényi divergence is convex in alpha (van
    Erven and Harremoës, "Rényi Divergence and Kullback-Leibler Divergence", IEEE Trans. Inf. Theory 2014,
    Corollary 2), so it lies below the chord between its values at k and k + 1. An order below 2 gets the value
    at 2, the divergence being non-decreasing in alpha (ibid., Theorem 3). (Opacus's own series for fractional
    orders takes seconds to converge at some noise levels.)
    """
    from opacus.accountants.analysis.rdp import compute_rdp  # type: ignore[import-untyped]

    alpha = np.maximum(np.asarray(orders, dtype=float), _MIN_ORDER)
    integers = np.arange(_MIN_ORDER, max(math.ceil(alpha.max()), _MIN_ORDER + 1) + 1)
    eps = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=[float(k) for k in integers]))
    convex = (integers - 1) * eps
    segment = np.clip(np.floor(alpha).astype(np.int64) - _MIN_ORDER, 0, len(integers) - 2)
    t = alpha - integers[segment]
    return np.asarray(((1 - t) * convex[segment] + t * convex[segment + 1]) / (alpha - 1))


def charge_orders(max_order: float) -> np.ndarray:
    """The orders the training charge is checked at: from 2 to ``max_order``, several per unit, and
    ``max_order`` itself."""
    if max_order <= _MIN_ORDER:
        return np.array([max_order])
    grid = np.linspace(_MIN_ORDER, max_order, math.ceil((max_order - _MIN_ORDER) * _SEGMENT_POINTS) + 1)
    return np.asarray(np.union1d(np.union1d(grid, np.arange(_MIN_ORDER, math.floor(max_order) + 1)), [max_order]))


def sgd_rho(q: float, sigma: float, steps: int, max_order: float) -> float:
    """The rho charged for DP-SGD: the largest eps_sgd(alpha) / alpha over :func:`charge_orders`."""
    orders = charge_orders(max_order)
    return float(np.max(sgd_rdp(q, sigma, steps, orders) / orders))


def calibrate_sigma(q: float, steps: int, rho: float, max_order: float) -> float:
    """The smallest noise multiplier (to 1e-4 relative) whose :func:`sgd_rho` is at most ``rho``.

    The ratio eps_sgd(alpha) / alpha grows with alpha for the sampled Gaussian, so the search looks at
    ``max_order`` alone; the answer is then checked on the whole grid of orders, and searched on it if that
    check fails.
    """
    if sgd_rho(q, _SIGMA_RANGE[1], steps, max_order) > rho:
        raise ParameterError(
            f"no noise level makes {steps} DP-SGD steps at sampling rate {q:.3g} fit rho={rho:.3g}; "
            "train for fewer epochs or give a larger epsilon"
        )
    top = np.array([max_order])
    sigma = _smallest_sigma(lambda s: float(sgd_rdp(q, s, steps, top)[0] / top[0]) <= rho)
    if sgd_rho(q, sigma, steps, max_order) > rho:
        sigma = _smallest_sigma(lambda s: sgd_rho(q, s, steps, max_order) <= rho)
    return sigma


def _smallest_sigma(fits: Callable[[float], bool]) -> float:
    """Bisection (geometric, to 1e-4 relative) for the smallest sigma in range that ``fits``; the upper end fits."""
    low, high = _SIGMA_RANGE
    if fits(low):
        return low
    while high / low > 1 + 1e-4:
        mid = math.sqrt(low * high)
        if fits(mid):
            high = mid
        else:
            low = mid
    return high


def opacus_epsilon(q: float, sigma: float, steps: int, delta: float, rho_before: float = 0.0) -> float:
    """Epsilon from opacus's own accountant and conversion for DP-SGD plus ``rho_before`` of zCDP, optimised
    over the integer orders 2 to 256: a cross-check of the accounting, reported next to the budget."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = np.arange(_MIN_ORDER, _CROSS_CHECK_ORDERS + 1, dtype=float)
    rdp = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(orders))) + rho_before * orders
    with warnings.catch_warnings():  # opacus warns when the best order is at the end of the grid
        warnings.simplefilter("ignore", UserWarning)
        epsilon, _ = get_privacy_spent(orders=list(orders), rdp=list(rdp), delta=delta)
    return float(epsilon)


@dataclass(frozen=True)
class SGDCharge:
    """What one DP-SGD training run was charged: its noise multiplier, sampling rate, steps and rho."""

    sample_rate: float
    steps: int
    sigma: float
    rho: float
    max_order: float
    max_grad_norm: float


def spend_dp_sgd(
    accountant: Accountant,
    budget: Budget,
    cap: Budget | None,
    *,
    sample_rate: float,
    steps: int,
    max_grad_norm: float,
    purpose: str,
) -> SGDCharge:
    """Charge ``accountant`` for DP-SGD with what its budget has left and return the calibrated run.

    The RDP orders the charge covers reach the conversion order of the fit's budget and of the dataset's
    ``cap`` (see the module docstring); the noise multiplier is the smallest whose charge fits what is left.
    """
    max_order = conversion_order(budget.rho, budget.epsilon)
    if cap is not None:
        max_order = max(max_order, conversion_order(_cap_rho(accountant, cap), cap.epsilon))
    sigma = calibrate_sigma(sample_rate, steps, accountant.remaining, max_order)
    charge = sgd_rho(sample_rate, sigma, steps, max_order)
    low, high = min(_MIN_ORDER, max_order), max(_MIN_ORDER, max_order)
    accountant.spend(
        charge,
        mechanism=described(
            f"dp-sgd(noise_multiplier={sigma:.6g}, sample_rate={sample_rate:.6g}, steps={steps}, "
            f"max_grad_norm={max_grad_norm:g}, rdp_orders={low:.4g}..{high:.4g})"
        ),
        purpose=purpose,
        min_order=low,
        max_order=high,
    )
    return SGDCharge(sample_rate, steps, sigma, charge, max_order, max_grad_norm)


def _cap_rho(accountant: Accountant, cap: Budget) -> float:
    """The rho the dataset's cap allows at the delta its approximate spends (DP key discovery, this fit's
    reservation included) leave: the rho whose conversion order the ledger checks the charge's range against."""
    if accountant.ledger is None or accountant.dataset is None:
        return cap.rho
    record = accountant.ledger.dataset(accountant.dataset)
    held = record.spent_approx_delta + record.reserved_approx_delta
    if held <= 0 or held >= cap.delta:
        return cap.rho
    return Budget.from_epsilon_delta(cap.epsilon, cap.delta, approx_delta=held).rho


def privacy_record(budget: Budget, accountant: Accountant, sgd: SGDCharge) -> dict[str, Any]:
    """The ``privacy_`` summary of a DP-SGD fit: budget, spends, and opacus's own epsilon for the same run."""
    spent = accountant.spent
    return {
        "epsilon": budget.epsilon,
        "delta": budget.delta,
        "rho": budget.rho,
        "rho_spent": spent,
        "rho_dp_sgd": sgd.rho,
        "noise_multiplier": sgd.sigma,
        "sample_rate": sgd.sample_rate,
        "steps": sgd.steps,
        "max_grad_norm": sgd.max_grad_norm,
        "max_order": sgd.max_order,
        "epsilon_opacus": opacus_epsilon(
            sgd.sample_rate, sgd.sigma, sgd.steps, budget.conversion_delta, rho_before=spent - sgd.rho
        ),
        "charges": [
            {"mechanism": c.mechanism, "purpose": c.purpose, "rho": c.rho, "delta": c.delta} for c in accountant.charges
        ],
    }


def noisy_sample_rate(
    count: int, *, batch_size: int, rho: float, budget: Budget, accountant: Accountant, records: str
) -> tuple[int, float]:
    """``(noisy count, sampling rate)``: the Poisson sampling rate ``batch_size / n`` of DP-SGD, with n the
    number of ``records`` ("row", "text") released by the Gaussian mechanism (sensitivity 1, cost ``rho``), never
    the true count; n is at least twice the batch size, so the rate is at most a half."""
    from privsynth.privacy.mechanisms import gaussian_mechanism  # needs OpenDP (the dp extra)

    noisy = gaussian_mechanism(
        np.array([count], dtype=np.int64),
        sensitivity=1.0,
        rho=rho,
        accountant=accountant,
        purpose=f"{records} count, for the DP-SGD sampling rate",
    )
    released = int(noisy[0])
    n = max(released, 2 * batch_size)
    if budget.delta * n >= 1:
        # DP log lines name no released value: the noisy count is on the card (record_), not in the log
        logger.warning("delta=%g is not below 1/n by the noisy %s count: choose a smaller delta", budget.delta, records)
    return released, batch_size / n


def secret_generator() -> Any:
    """The torch generator DP-SGD draws its Poisson samples and its noise from: seeded by the operating system, as
    a known seed would let an attacker predict both; from the test's seed inside
    :func:`~privsynth.privacy._seeded.seeded_noise` (not private)."""
    import torch

    rng = seeded()
    seed = int.from_bytes(os.urandom(8), "little") if rng is None else int(rng.integers(2**63))
    return torch.Generator().manual_seed(seed)


def release_opacus(module: Any, model: Any) -> None:
    """Remove opacus's hooks from ``module`` (its ``GradSampleModule``) and the per-sample state it leaves on the
    weights of ``model``, so the trained model is a plain torch model again."""
    module.remove_hooks()
    for parameter in model.parameters():
        for name in ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample"):
            if hasattr(parameter, name):
                delattr(parameter, name)
