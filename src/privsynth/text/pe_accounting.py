"""The accounting of Private Evolution as Aug-PE does it: Gaussian differential privacy (Dong, Roth and Su,
"Gaussian Differential Privacy", JRSS-B 2022).

A vote histogram with Gaussian noise of standard deviation sigma (sensitivity 1) is 1/sigma-GDP; T of them compose
to sqrt(T)/sigma-GDP, which converts exactly to (epsilon, delta)-DP. The ledger charges the same noise in zCDP
(:func:`privsynth.text.private_evolution.measure`); these conversions give the slightly smaller epsilon Aug-PE
reports, so a fit can show both and the paper's published noise multipliers can be reproduced.
"""

from __future__ import annotations

import math

from scipy.special import log_ndtr, ndtr

from privsynth.errors import ParameterError
from privsynth.privacy.budget import check_positive

__all__ = ["check_iterations", "gdp_delta", "gdp_epsilon", "pe_epsilon", "pe_noise_multiplier"]

_BISECTION_STEPS = 200


def gdp_delta(epsilon: float, mu: float) -> float:
    """The delta at which mu-GDP is (epsilon, delta)-DP: Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2)
    (Dong, Roth and Su 2022, Corollary 2.13); exact, and the same formula as Aug-PE's ``delta_Gaussian``."""
    epsilon = check_positive("epsilon", epsilon, allow_zero=True)
    mu = check_positive("mu", mu)
    first = float(ndtr(-epsilon / mu + mu / 2))
    second = math.exp(epsilon + float(log_ndtr(-epsilon / mu - mu / 2)))
    return max(first - second, 0.0)


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon at which mu-GDP is (epsilon, delta)-DP, by bisection on :func:`gdp_delta`."""
    mu = check_positive("mu", mu)
    delta = check_positive("delta", delta)
    low, high = 0.0, 1.0
    while gdp_delta(high, mu) > delta:
        high *= 2
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if gdp_delta(middle, mu) > delta:
            low = middle
        else:
            high = middle
    return high


def pe_epsilon(sigma: float, delta: float, iterations: int) -> float:
    """Epsilon of ``iterations`` Gaussian vote histograms with noise ``sigma`` (sensitivity 1), by GDP:
    T mechanisms of 1/sigma-GDP compose to sqrt(T)/sigma-GDP (Dong, Roth and Su 2022, Corollary 3.3)."""
    sigma = check_positive("sigma", sigma)
    return gdp_epsilon(math.sqrt(check_iterations(iterations)) / sigma, delta)


def pe_noise_multiplier(epsilon: float, delta: float, iterations: int) -> float:
    """The noise standard deviation (sensitivity 1, so the noise multiplier) that makes ``iterations`` vote
    histograms (epsilon, delta)-DP under GDP accounting, as Aug-PE computes it.

    Solves gdp_delta(epsilon, sqrt(T)/sigma) = delta for sigma by bisection on mu (delta grows with mu).
    Aug-PE's published values (T = 10, delta = 1/(N log N)): Yelp (N = 1,939,290) 15.34, 8.03, 4.24 at epsilon 1,
    2, 4; OpenReview (N = 8,396) 11.60, 6.22, 3.38; PubMed (N = 75,316) 13.26, 7.01, 3.75.
    """
    epsilon = check_positive("epsilon", epsilon)
    delta = check_positive("delta", delta)
    iterations = check_iterations(iterations)
    low, high = 0.0, 1.0
    while gdp_delta(epsilon, high) < delta:
        high *= 2
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if gdp_delta(epsilon, middle) < delta:
            low = middle
        else:
            high = middle
    return math.sqrt(iterations) / low


def check_iterations(iterations: object) -> int:
    """``iterations`` (T, the number of vote histograms), refused unless a positive whole number."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ParameterError(f"iterations must be a positive integer, got {iterations!r}")
    return iterations
