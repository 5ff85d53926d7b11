"""What the privacy ledger reports: a dataset's record (cap, spends, the Rényi orders they hold at) and one
spend; the range checks on Rényi orders; and the sentences that explain a refused spend.

The conversions at one Rényi order are :mod:`privsynth.privacy.budget`'s (CKS20, Proposition 12); the module
docstring of :mod:`privsynth.privacy.ledger` says why the ledger converts only at orders every spend holds at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Final

from privsynth.errors import ParameterError
from privsynth.privacy.budget import (
    Budget,
    check_positive,
    conversion_order,
    delta_at_order,
    epsilon_at_order,
    epsilon_from_rho_delta,
    fits_within,
    rho_at_order,
)

_ORDER_TOLERANCE: Final = 1e-9


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset known to the ledger, with its cap and what has been spent on it: rho, and the approximate
    delta of mechanisms that are only approximately zCDP.

    ``name`` is the key its budget is kept under. ``label`` is set only for a dataset registered by fingerprint
    in an older ledger: the name the data had then. ``min_order`` and ``max_order`` bound the Rényi orders every
    spend on it holds at (1 and infinity when all are zCDP); ``min_order_spend`` and ``max_order_spend`` are the
    ids of the spends that set those bounds.
    """

    name: str
    cap: Budget | None
    spent_rho: float
    reserved_rho: float
    created_at: datetime
    spent_approx_delta: float = 0.0
    reserved_approx_delta: float = 0.0
    label: str | None = None
    min_order: float = 1.0
    max_order: float = math.inf
    min_order_spend: int | None = None
    max_order_spend: int | None = None

    @property
    def fingerprint(self) -> str:
        """The dataset's key, :attr:`name` (the attribute's name from when budgets were kept per fingerprint)."""
        return self.name

    @property
    def remaining_rho(self) -> float:
        """Rho still available under the cap (infinite without a cap, never negative): the rho the cap's epsilon
        buys at the delta that committed and reserved approximate deltas leave, at a Rényi order every spend holds
        at, less the rho already used."""
        if self.cap is None:
            return math.inf
        held = Fraction(self.spent_approx_delta) + Fraction(self.reserved_approx_delta)
        allowed = cap_rho_at(self.cap, held)
        if allowed > 0 and (self.min_order > 1 or self.max_order < math.inf):
            order = conversion_order(allowed, self.cap.epsilon)
            if not within_orders(order, self.min_order, self.max_order):
                nearest = min(max(order, self.min_order), self.max_order)
                allowed = min(allowed, rho_at_order(self.cap.epsilon, float(Fraction(self.cap.delta) - held), nearest))
        return max(0.0, allowed - self.spent_rho - self.reserved_rho)

    @property
    def spent_epsilon(self) -> float | None:
        """Committed spends as epsilon at the cap's delta, or ``None`` without a cap.

        Rho is converted at the delta the committed approximate deltas leave (``cap.delta - spent_approx_delta``);
        infinite once they use the cap's whole delta, since no epsilon then holds at that delta. The conversion
        is made at a Rényi order every spend holds at: when the best order lies outside that range (a DP-SGD
        spend charged for another delta), at the nearest order inside it, which gives a larger, still valid
        epsilon; :attr:`conversion_note` then says so.
        """
        if self.cap is None:
            return None
        if self.spent_approx_delta >= self.cap.delta:
            return math.inf
        delta = self.cap.delta - self.spent_approx_delta
        epsilon = epsilon_from_rho_delta(self.spent_rho, delta)
        order = self._outside_order(epsilon)
        if order is None:
            return epsilon
        nearest = min(max(order, self.min_order), self.max_order)
        return epsilon_at_order(self.spent_rho, delta, nearest)

    @property
    def conversion_note(self) -> str | None:
        """Why :attr:`spent_epsilon` is converted at a Rényi order that is not the best one, naming the spend
        that limits the orders and the cap deltas at which the best order is inside its range; ``None`` when it
        is not."""
        if self.cap is None or self.spent_approx_delta >= self.cap.delta:
            return None
        delta = self.cap.delta - self.spent_approx_delta
        order = self._outside_order(epsilon_from_rho_delta(self.spent_rho, delta))
        if order is None:
            return None
        low, high = deltas_of_rho(self.spent_rho, self.min_order, self.max_order)
        held = self.spent_approx_delta
        nearest = min(max(order, self.min_order), self.max_order)
        return (
            f"dataset '{self.name}': the rho spent (rho={self.spent_rho:.4g}) converts best at the cap's "
            f"delta={self.cap.delta:g} at Rényi order {order:.4g}, but {binding(self, order)} (a DP-SGD charge "
            f"made for another delta), so its epsilon is given at order {nearest:.4g}. The best order is in range "
            f"for a cap delta from {held + low:.3g} to {held + high:.3g}."
        )

    def _outside_order(self, epsilon: float) -> float | None:
        """The best conversion order of the spent rho at ``epsilon`` when it lies outside the spends' range."""
        if self.spent_rho <= 0 or epsilon <= 0 or (self.min_order <= 1 and math.isinf(self.max_order)):
            return None
        order = conversion_order(self.spent_rho, epsilon)
        return None if within_orders(order, self.min_order, self.max_order) else order


@dataclass(frozen=True)
class Spend:
    """One ledger row: a mechanism's spend, or a reservation of budget for a job.

    ``status`` is ``committed``, ``reserved`` or ``cancelled``. A spend made under a reservation names it in
    ``reservation_id``; it draws on the reservation and does not count against the cap a second time.
    ``epsilon`` is this spend's rho alone, at ``delta`` (the cap's), for display: spends add up in rho, not
    epsilon. ``approx_delta`` is the delta of an approximately zCDP mechanism (0 for the others; for a
    reservation, the approximate delta it holds), which adds up across spends like rho.
    """

    id: int
    dataset: str
    rho: float
    epsilon: float | None
    delta: float | None
    mechanism: str
    purpose: str
    status: str
    reservation_id: int | None
    release_id: str | None
    created_at: datetime
    approx_delta: float = 0.0
    min_order: float | None = None
    max_order: float | None = None


def round_up(value: Fraction) -> float:
    """The smallest float not below ``value``: an amount spent, rounded so that it is never understated."""
    nearest = float(value)
    return math.nextafter(nearest, math.inf) if Fraction(nearest) < value else nearest


def cap_rho_at(cap: Budget, approx_delta: Fraction) -> float:
    """The rho ``cap`` allows when ``approx_delta`` of its delta is used by approximately zCDP mechanisms: the
    largest rho whose zCDP implies (cap.epsilon, cap.delta - approx_delta)-DP, converted as
    :meth:`Budget.from_epsilon_delta` converts it; 0 when ``approx_delta`` uses all of the cap's delta."""
    if approx_delta == 0:
        return cap.rho
    held = round_up(approx_delta)
    if held >= cap.delta:
        return 0.0
    return Budget.from_epsilon_delta(cap.epsilon, cap.delta, approx_delta=held).rho


def within_orders(order: float, low: float, high: float) -> bool:
    return low * (1 - _ORDER_TOLERANCE) <= order <= high * (1 + _ORDER_TOLERANCE)


def deltas_of_rho(rho: float, low: float, high: float) -> tuple[float, float]:
    """The deltas at which ``rho`` is converted at an order between ``low`` and ``high``: at its optimal order
    alpha, epsilon is ``(2 alpha - 1) rho + log(1 - 1/alpha)``, and delta falls as alpha grows."""

    def at(alpha: float) -> float:
        if alpha <= 1:
            return 1.0
        epsilon = (2 * alpha - 1) * rho + math.log1p(-1 / alpha)
        return 1.0 if epsilon <= 0 else delta_at_order(rho, epsilon, alpha)

    return (0.0 if math.isinf(high) else at(high)), at(low)


def deltas_of_epsilon(epsilon: float, low: float, high: float) -> tuple[float, float]:
    """The deltas at which a cap of ``epsilon`` is converted at an order between ``low`` and ``high``: at its
    optimal order alpha, rho is ``(epsilon - log(1 - 1/alpha)) / (2 alpha - 1)``, and delta falls as alpha grows."""

    def at(alpha: float) -> float:
        if alpha <= 1:
            return 1.0
        return delta_at_order((epsilon - math.log1p(-1 / alpha)) / (2 * alpha - 1), epsilon, alpha)

    return (0.0 if math.isinf(high) else at(high)), at(low)


def orders_text(low: float, high: float) -> str:
    return f"Rényi orders {low:.6g} to {high:.6g}" if math.isfinite(high) else f"Rényi orders from {low:.6g}"


def binding(record: DatasetRecord, order: float) -> str:
    """Which spend keeps ``order`` out of the dataset's range."""
    spend = record.max_order_spend if order > record.max_order else record.min_order_spend
    return f"spend #{spend} holds only at {orders_text(record.min_order, record.max_order)}"


def describe(rho: float, delta: float) -> str:
    return f"epsilon={epsilon_from_rho_delta(rho, delta):.4g} (rho={rho:.4g})"


def refusal(name: str, dataset: str, used: Sequence[float], rho: float, cap: Budget) -> str:
    """Why a spend with no approximate delta anywhere is refused: rho over the cap's."""
    spent = math.fsum(used)
    return (
        f"Privacy spend on dataset '{name}' ({dataset}) refused: "
        f"spent or reserved so far {describe(spent, cap.delta)}, "
        f"this request {describe(rho, cap.delta)}, together {describe(spent + rho, cap.delta)}, "
        f"over the cap epsilon={cap.epsilon:g} at delta={cap.delta:g} (rho={cap.rho:.4g}). "
        "Nothing was recorded or released; spend less, or raise the cap with Ledger.set_cap."
    )


def approximate_refusal(
    name: str,
    dataset: str,
    used: Sequence[float],
    used_delta: float,
    rho: float,
    delta: float,
    allowed: float,
    cap: Budget,
) -> str:
    """Why a spend is refused when approximate deltas are involved, saying which side binds: the deltas alone
    reaching the cap's delta, or the rho that the cap's epsilon buys at the delta they leave."""
    spent = math.fsum(used)
    total_rho, total_delta = spent + rho, float(Fraction(used_delta) + Fraction(delta))
    head = (
        f"Privacy spend on dataset '{name}' ({dataset}) refused: spent or reserved so far rho={spent:.4g} and "
        f"approximate delta={used_delta:.4g}, this request rho={rho:.4g} and approximate delta={delta:.4g}, "
        f"together rho={total_rho:.4g} and approximate delta={total_delta:.4g}, over the cap "
        f"epsilon={cap.epsilon:g} at delta={cap.delta:g}. "
    )
    if total_delta >= cap.delta:
        reason = (
            f"The delta side binds: approximately zCDP mechanisms (DP key discovery) would use "
            f"delta={total_delta:.4g}, not below the cap's delta={cap.delta:g}, which leaves no delta to convert "
            "rho at. "
        )
    else:
        left = cap.delta - total_delta
        reason = (
            f"The approximate deltas leave delta={left:.4g} of the cap's to convert rho at, where "
            f"epsilon={cap.epsilon:g} buys rho={allowed:.4g}; together this is epsilon="
            f"{epsilon_from_rho_delta(total_rho, left):.4g} at delta={cap.delta:g}. "
        )
        if fits_within(used, rho, cap.rho):
            reason += f"The delta side binds: without approximate deltas the cap would allow rho={cap.rho:.4g}. "
    return (
        head
        + reason
        + "Nothing was recorded or released; spend less, declare public categories instead of discovering them, "
        "or raise the cap with Ledger.set_cap."
    )


def check_orders(min_order: float | None, max_order: float | None) -> tuple[float | None, float | None]:
    """The Rényi order range of a spend, checked: orders above 1, the lower bound not above the upper."""
    low = None if min_order is None else check_positive("min_order", min_order)
    high = None if max_order is None else check_positive("max_order", max_order)
    if (low is not None and low <= 1) or (high is not None and high <= 1):
        raise ParameterError(f"Rényi orders must be above 1, got min_order={min_order!r}, max_order={max_order!r}.")
    if low is not None and high is not None and low > high:
        raise ParameterError(f"min_order={min_order!r} is above max_order={max_order!r}; give the range in order.")
    return low, high
