"""Privacy budgets in zero-concentrated DP, spoken to users in (epsilon, delta).

Conversions follow Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS
2020, arXiv:2004.00010, Proposition 12 / Corollary 13), as implemented by ``cdp_delta``, ``cdp_rho`` and
``cdp_eps`` in Private-PGM's ``mechanisms/cdp2adp.py``, the accounting behind AIM and MST; results agree with
that code to the last bit. zCDP and its additive composition are from Bun and Steinke, "Concentrated
Differential Privacy" (TCC 2016, arXiv:1605.02065).

Users give (epsilon, delta); privsynth composes in rho, where composition is a sum, and converts back
exactly. A few mechanisms (DP key discovery by a noisy threshold) also fail with a small probability of their
own: they are delta-approximately rho-zCDP (Bun and Steinke 2016, Section 8), and approximate zCDP composes by
adding the rhos and adding the deltas. A :class:`Budget` sets ``approx_delta`` of its delta aside for them and
converts rho at the rest: a run that is ``approx_delta``-approximately rho-zCDP is then (epsilon, delta)-DP with
epsilon from rho at ``delta - approx_delta``.

Every comparison of spends with a budget goes through :func:`fits_within`, in exact rational arithmetic with
one relative slack, :data:`RELATIVE_TOLERANCE`, so a budget is never refused for floating-point error.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from privsynth.errors import ParameterError

__all__ = [
    "RELATIVE_TOLERANCE",
    "Budget",
    "check_delta",
    "check_positive",
    "conversion_order",
    "delta_at_order",
    "epsilon_at_order",
    "epsilon_from_rho_delta",
    "fits_within",
    "gaussian_rho",
    "gaussian_sigma",
    "rho_at_order",
    "rho_from_epsilon_delta",
    "split_exactly",
]

RELATIVE_TOLERANCE = Fraction(1, 10**9)
"""Slack allowed when spends are compared with a cap: a total up to ``cap * (1 + 1e-9)`` fits.

Totals are summed exactly (``Fraction``), so the slack only absorbs rounding in how a caller computed its
shares (``rho / 3`` three times, say); it moves a reported epsilon by about one part in a billion.
"""

_ALPHA_MIN = 1.01
"""Smallest Rényi order searched, as in the reference code: the optimum is above (1 + epsilon/rho)/2, so this
only binds when epsilon <= rho, a regime whose delta is large anyway."""

_MAX_EXPONENT = 700.0
"""Above this the bound's exponential overflows a float; delta is then far above 1."""


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or a :class:`~privsynth.errors.ParameterError` naming ``name`` unless it is a
    finite number > 0 (>= 0 with ``allow_zero``); used for every epsilon, delta, rho and sensitivity."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"{name} must be a finite number {bound}, got {value!r}.")
    return number


def _check_delta_range(delta: float) -> float:
    delta = check_positive("delta", delta)
    if delta >= 1:
        raise ParameterError(
            f"delta must lie strictly between 0 and 1, got {delta!r}; it is the probability that the epsilon "
            "guarantee fails, so pick something tiny such as 1e-6."
        )
    return delta


def _delta(rho: float, epsilon: float) -> float:
    """The smallest delta such that rho-zCDP implies (epsilon, delta)-DP (CKS20, Corollary 13), at most 1.

    delta = min over alpha > 1 of exp((alpha-1)(alpha*rho - epsilon) + alpha*log(1 - 1/alpha)) / (alpha - 1).
    The minimising alpha is found by bisection on the sign of the derivative of the exponent; any alpha gives
    a valid bound, so an imperfect search can only overstate delta.
    """
    if rho == 0:
        return 0.0
    alpha = _optimal_order(rho, epsilon, _ALPHA_MIN)
    exponent = (alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha)
    if exponent > _MAX_EXPONENT:
        return 1.0
    return min(math.exp(exponent) / (alpha - 1), 1.0)


def rho_from_epsilon_delta(epsilon: float, delta: float) -> float:
    """The largest rho such that rho-zCDP implies (epsilon, delta)-DP (``cdp_rho`` in Private-PGM).

    This is how much zCDP budget a user's (epsilon, delta) buys: epsilon=1, delta=1e-6 gives rho ~ 0.02436.
    Found by bisection on rho in [0, epsilon + 1] down to adjacent floating-point numbers.
    """
    epsilon = check_positive("epsilon", epsilon)
    delta = _check_delta_range(delta)
    low, _, _ = _bisect(lambda rho: not _delta(rho, epsilon) <= delta, 0.0, epsilon + 1)
    return low


def epsilon_from_rho_delta(rho: float, delta: float) -> float:
    """The smallest epsilon such that rho-zCDP implies (epsilon, delta)-DP (``cdp_eps`` in Private-PGM).

    This is how spent rho is reported to users; ``rho = 0`` costs ``epsilon = 0``. The search starts from
    the classic bound epsilon = rho + 2 sqrt(rho log(1/delta)) (Bun and Steinke 2016), which it improves on.
    """
    rho = check_positive("rho", rho, allow_zero=True)
    delta = _check_delta_range(delta)
    if rho == 0:
        return 0.0
    _, high, _ = _bisect(
        lambda epsilon: _delta(rho, epsilon) <= delta, 0.0, rho + 2 * math.sqrt(rho * math.log(1 / delta))
    )
    return high


def _bisect(is_high: Callable[[float], bool], low: float, high: float) -> tuple[float, float, float]:
    """Bisection down to adjacent floating-point numbers for where ``is_high`` turns from false (at ``low``) to
    true (at ``high``): the two ends and the last midpoint (equal to one of them)."""
    middle = (low + high) / 2
    while middle not in (low, high):
        if is_high(middle):
            high = middle
        else:
            low = middle
        middle = (low + high) / 2
    return low, high, middle


def _optimal_order(rho: float, epsilon: float, low: float) -> float:
    """The Rényi order above ``low`` that minimises the delta bound of CKS20 (Proposition 12) for rho-zCDP at
    ``epsilon``: the log of the bound, ``(alpha - 1)(alpha rho - epsilon) + alpha log(1 - 1/alpha) - log(alpha - 1)``,
    is convex in alpha, so bisection on the sign of its derivative, ``(2 alpha - 1) rho - epsilon +
    log(1 - 1/alpha)``, down to adjacent floating-point numbers."""
    _, _, alpha = _bisect(
        lambda alpha: not (2 * alpha - 1) * rho - epsilon + math.log1p(-1 / alpha) < 0,
        low,
        (epsilon + 1) / (2 * rho) + 2,
    )
    return alpha


def conversion_order(rho: float, epsilon: float) -> float:
    """The Rényi order at which rho-zCDP converts to ``epsilon`` most tightly (CKS20, Proposition 12).

    The minimiser over alpha of ``(alpha - 1)(alpha rho - epsilon) + alpha log(1 - 1/alpha) - log(alpha - 1)``,
    the log of the delta bound; a spend that holds in Rényi DP only over a range of orders (DP-SGD) composes
    with zCDP spends at this order when it is inside the range (:mod:`privsynth.privacy.dp_sgd`).
    """
    if not rho > 0 or not epsilon > 0:
        raise ParameterError(f"rho and epsilon must be > 0, got rho={rho!r}, epsilon={epsilon!r}")
    return _optimal_order(rho, epsilon, _ALPHA_MIN)


def delta_at_order(rho: float, epsilon: float, alpha: float) -> float:
    """The delta that rho-zCDP, used at the one Rényi order ``alpha``, gives for ``epsilon`` (CKS20,
    Proposition 12), at most 1."""
    exponent = (alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha) - math.log(alpha - 1)
    return 1.0 if exponent >= 0 else math.exp(exponent)


def rho_at_order(epsilon: float, delta: float, alpha: float) -> float:
    """The largest rho whose zCDP, used at the one Rényi order ``alpha``, gives (epsilon, delta) (CKS20,
    Proposition 12 solved for rho), at least 0."""
    log_terms = math.log(delta) - alpha * math.log1p(-1 / alpha) + math.log(alpha - 1)
    return max(0.0, (epsilon + log_terms / (alpha - 1)) / alpha)


def epsilon_at_order(rho: float, delta: float, alpha: float) -> float:
    """The epsilon that rho-zCDP, used at the one Rényi order ``alpha``, gives at ``delta`` (CKS20,
    Proposition 12 solved for epsilon), at least 0."""
    log_terms = alpha * math.log1p(-1 / alpha) - math.log(alpha - 1) - math.log(delta)
    return max(0.0, alpha * rho + log_terms / (alpha - 1))


def gaussian_sigma(rho: float, sensitivity: float) -> float:
    """Standard deviation of Gaussian noise that makes a query of L2 ``sensitivity`` rho-zCDP.

    From rho = sensitivity² / (2 sigma²) (Bun and Steinke 2016, Proposition 1.6; the same holds for the
    discrete Gaussian, CKS20 Theorem 14).
    """
    rho = check_positive("rho", rho)
    sensitivity = check_positive("sensitivity", sensitivity)
    return sensitivity / math.sqrt(2 * rho)


def gaussian_rho(sigma: float, sensitivity: float) -> float:
    """The rho that Gaussian noise of standard deviation ``sigma`` costs on a query of L2 ``sensitivity``."""
    sigma = check_positive("sigma", sigma)
    sensitivity = check_positive("sensitivity", sensitivity)
    return sensitivity**2 / (2 * sigma**2)


def fits_within(spent: Iterable[float | Fraction], rho: float, cap: float) -> bool:
    """Whether spending ``rho`` on top of the ``spent`` amounts stays within ``cap`` (all in rho).

    Sums are exact (every float is a rational), and the total may exceed ``cap`` by :data:`RELATIVE_TOLERANCE`
    of it; this is the only place privsynth compares spends with a budget.
    """
    total = sum((Fraction(amount) for amount in spent), Fraction(rho))
    return total <= Fraction(cap) * (1 + RELATIVE_TOLERANCE)


def check_delta(delta: float, n_rows: int) -> None:
    """Refuse a delta that is not below 1/n for a dataset of ``n_rows`` records.

    (epsilon, delta)-DP allows a mechanism that publishes each record in the clear with probability delta;
    at delta >= 1/n that is, in expectation, a whole record. ``n_rows`` should be public (declared, or a
    public upper bound): the check itself reveals whether the dataset has more than 1/delta rows.
    """
    delta = _check_delta_range(delta)
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ParameterError(f"n_rows must be a positive integer, got {n_rows!r}.")
    if delta >= 1 / n_rows:
        raise ParameterError(
            f"delta={delta:g} is not below 1/n = 1/{n_rows} = {1 / n_rows:.3g}: at that delta a mechanism "
            "may publish a whole record in the clear and still meet the definition. Choose delta well below "
            f"1/n, for example {10 ** math.floor(math.log10(0.1 / n_rows)):.0e}."
        )


def _round_down(value: Fraction) -> float:
    """The largest float not above ``value``."""
    nearest = float(value)
    return math.nextafter(nearest, 0.0) if Fraction(nearest) > value else nearest


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A privacy budget: rho-zCDP, reported as (epsilon, delta)-DP.

    Build one with :meth:`from_epsilon_delta` (what users give) or :meth:`from_rho` (what mechanisms compose).
    The constructor checks that rho-zCDP really implies (epsilon, delta)-DP.
    """

    epsilon: float
    delta: float
    rho: float
    approx_delta: float = 0.0
    """The part of ``delta`` set aside for mechanisms with a delta cost of their own (approximate zCDP, spent
    with ``Accountant.spend(..., delta=...)``); rho is converted at the rest, ``delta - approx_delta``."""

    def __post_init__(self) -> None:
        epsilon = check_positive("epsilon", self.epsilon)
        delta = _check_delta_range(self.delta)
        rho = check_positive("rho", self.rho)
        conversion = _conversion_delta(delta, self.approx_delta)
        if _delta(rho, epsilon) > conversion * (1 + float(RELATIVE_TOLERANCE)):
            held = f" of which approx_delta={self.approx_delta!r} is set aside" if self.approx_delta else ""
            raise ParameterError(
                f"rho={rho!r} does not imply (epsilon={epsilon!r}, delta={delta!r}{held})-DP; build the budget "
                "with Budget.from_epsilon_delta or Budget.from_rho."
            )

    @property
    def conversion_delta(self) -> float:
        """The delta at which rho is converted to epsilon: ``delta`` less what ``approx_delta`` sets aside."""
        return _conversion_delta(self.delta, self.approx_delta)

    @classmethod
    def from_epsilon_delta(cls, epsilon: float, delta: float, *, approx_delta: float = 0.0) -> Budget:
        """The budget a user asks for: the largest rho that keeps (epsilon, delta)-DP.

        ``approx_delta`` (default 0) sets part of delta aside for mechanisms with a delta cost, such as DP key
        discovery (:func:`privsynth.synth.domain.discovery_delta` says how much); rho is then the largest that
        keeps (epsilon, delta - approx_delta)-DP, slightly smaller.
        """
        rho = rho_from_epsilon_delta(epsilon, _conversion_delta(delta, approx_delta))
        return cls(epsilon=epsilon, delta=delta, rho=rho, approx_delta=approx_delta)

    @classmethod
    def from_rho(cls, rho: float, delta: float, *, approx_delta: float = 0.0) -> Budget:
        """A budget of rho-zCDP (plus ``approx_delta`` for approximate mechanisms), with the epsilon it
        guarantees at ``delta``."""
        epsilon = epsilon_from_rho_delta(rho, _conversion_delta(delta, approx_delta))
        return cls(epsilon=epsilon, delta=delta, rho=rho, approx_delta=approx_delta)

    def split(self, fractions: Sequence[float]) -> tuple[Budget, ...]:
        """Divide rho into shares in the given proportions, which must sum to 1.

        Shares are computed exactly and rounded down, and the last one is what the others leave, so their
        rhos add up to at most ``self.rho`` and spending every share never exceeds this budget. Each share
        reports its own epsilon at the same delta; by composition the shares together cost this budget.
        ``approx_delta`` is divided in the same proportions, the same way.
        """
        if len(fractions) == 0:
            raise ParameterError("fractions must name at least one share, got an empty sequence.")
        exact = [Fraction(check_positive("each fraction", fraction)) for fraction in fractions]
        exact_sum = sum(exact, Fraction(0))
        if abs(exact_sum - 1) > RELATIVE_TOLERANCE:
            raise ParameterError(f"fractions must sum to 1, got {list(fractions)!r} (sum {float(exact_sum)!r}).")
        shares = split_exactly(self.rho, exact)
        if min(shares) <= 0:
            raise ParameterError(f"fractions {list(fractions)!r} leave a share of rho={self.rho!r} at zero.")
        approx = split_exactly(self.approx_delta, exact)
        return tuple(
            Budget.from_rho(share, self.delta, approx_delta=held) for share, held in zip(shares, approx, strict=True)
        )


def split_exactly(amount: float, fractions: Sequence[float | Fraction]) -> list[float]:
    """``amount`` (a rho, or a delta) in the proportions ``fractions`` (summing to 1): each share rounded down
    and the last what the others leave, so the shares never add up to more than ``amount``.

    This is :meth:`Budget.split` for a bare amount, when no (epsilon, delta) needs reporting per share.
    """
    exact = [Fraction(fraction) for fraction in fractions]
    if not exact or abs(sum(exact, Fraction(0)) - 1) > RELATIVE_TOLERANCE:
        raise ParameterError(f"fractions must be a non-empty list summing to 1, got {list(fractions)!r}.")
    total = Fraction(amount)
    shares = [_round_down(total * fraction) for fraction in exact[:-1]]
    shares.append(_round_down(total - sum(map(Fraction, shares), Fraction(0))))
    return shares


def _conversion_delta(delta: float, approx_delta: float) -> float:
    """``delta - approx_delta``, after checking that ``approx_delta`` leaves part of ``delta`` to convert at."""
    delta = _check_delta_range(delta)
    approx_delta = check_positive("approx_delta", approx_delta, allow_zero=True)
    if approx_delta >= delta:
        raise ParameterError(
            f"approx_delta={approx_delta!r} must be smaller than delta={delta!r}: it is the part of delta set "
            "aside for mechanisms with a delta cost, and the rest is needed to convert rho to epsilon."
        )
    return delta - approx_delta
