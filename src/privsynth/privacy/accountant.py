"""The accountant: one budget, spent on one dataset, one mechanism at a time.

Spends compose additively in rho (zero-concentrated DP, Bun and Steinke, "Concentrated Differential Privacy",
TCC 2016, Lemma 2.3). A mechanism that is delta-approximately rho-zCDP (DP key discovery) also spends delta,
from the part of the budget's delta set aside for that (``Budget.approx_delta``); approximate zCDP composes by
adding rhos and adding deltas (ibid., Section 8). After spending rho and delta in all, a run is (epsilon,
``budget.delta``)-DP with epsilon converted from rho at ``budget.delta`` less the delta spent.

Every mechanism in :mod:`privsynth.privacy.mechanisms` calls :meth:`Accountant.spend` before it draws noise, so
a refused spend releases nothing. With a ledger, each spend's rho and delta are recorded there too, and the
ledger adds them up across runs against the dataset's cap.

The privacy unit: by default one record (a row) is what neighbouring datasets differ by. With a
``contribution_bound`` k > 1 and a ``unit`` such as ``"person"``, neighbours differ by one unit, that is by up
to k records of the table being fitted (the caller keeps at most k per unit, see
:func:`privsynth.relational.person.bound_contributions`). The accountant carries k, and the mechanisms of
:mod:`privsynth.privacy.mechanisms` calibrate to it: each takes the sensitivity to one record, and
:meth:`Accountant.sensitivity` multiplies it by k, since k records change any query by at most k times what one
changes it by (the triangle inequality, in every norm). A spend made by anything else (DP-SGD's per-record
clipping) is refused when k > 1, so nothing is ever charged at the wrong unit.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.budget import Budget, check_positive, conversion_order, epsilon_from_rho_delta, fits_within
from privsynth.privacy.ledger import Ledger

__all__ = [
    "Accountant",
    "Charge",
    "check_contribution_bound",
    "check_unit",
    "fit_accountant",
    "open_ledger",
    "unit_label",
]

logger = logging.getLogger(__name__)


def check_contribution_bound(value: object, name: str = "contribution_bound") -> int:
    """``value`` as the contribution bound k, or a :class:`~privsynth.errors.ParameterError` naming ``name``
    unless it is a whole number >= 1 (an int: 2.0 is refused, as a bound computed from floats may be off)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ParameterError(
            f"{name} must be a whole number (an int) >= 1: the most rows one privacy unit (a person, say) "
            f"contributes to the table, chosen before the data is read; got {value!r}"
        )
    return int(value)


def check_unit(unit: object, contribution_bound: object) -> tuple[str, int]:
    """The privacy unit's name and contribution bound k, or a :class:`~privsynth.errors.ParameterError` that says
    what to pass: k a whole number >= 1, the user's choice (never read from the data); the unit a non-empty
    name, not ``"row"`` when k > 1 (a row contributes one row)."""
    k = check_contribution_bound(contribution_bound)
    if not isinstance(unit, str) or not unit.strip():
        raise ParameterError(f"unit must be a non-empty name for the privacy unit, such as 'person', got {unit!r}")
    unit = unit.strip()
    if unit == "row" and k > 1:
        raise ParameterError(
            f"contribution_bound={k} needs a privacy unit other than 'row' (one row contributes one row): pass "
            "unit='person' (or the name of whoever owns the rows)"
        )
    return unit, k


def unit_label(unit: str, contribution_bound: int) -> str:
    """The privacy unit in words for a ledger row or a card: ``row``, or ``person (at most 4 rows each)``."""
    if unit == "row" and contribution_bound == 1:
        return "row"
    rows = "row" if contribution_bound == 1 else "rows"
    return f"{unit} (at most {contribution_bound} {rows} each)"


@dataclass(frozen=True)
class Charge:
    """One spend made through an accountant: what it cost (rho, and delta for approximate mechanisms),
    which mechanism, and why; ``min_order`` and ``max_order`` bound the Rényi orders at which it is
    (alpha, rho alpha)-RDP when that is not every order (DP-SGD), ``None`` for an open side."""

    rho: float
    mechanism: str
    purpose: str
    delta: float = 0.0
    min_order: float | None = None
    max_order: float | None = None


class Accountant:
    """Spends ``budget`` on ``dataset``, recording every spend in ``ledger`` before any noise is drawn.

    A spend is refused (:class:`~privsynth.errors.BudgetExceeded`, nothing recorded) when it would pass this
    budget, or the dataset's cap in the ledger. With ``reservation`` (from :meth:`Ledger.reserve`) the spends
    draw on that reservation instead of the cap. Without a ledger the accountant only enforces its own budget,
    which suits experiments on public data; it is safe to share between threads.
    ``unit`` and ``contribution_bound`` (k) name the privacy unit the budget protects (see the module's
    docstring): mechanisms calibrate to k records through :meth:`sensitivity`.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        ledger: Ledger | None = None,
        dataset: str | None = None,
        reservation: int | None = None,
        release_id: str | None = None,
        contribution_bound: int = 1,
        unit: str = "row",
    ) -> None:
        if ledger is not None and not dataset:
            raise ParameterError("An accountant with a ledger needs the name of the dataset to charge.")
        if ledger is None and (dataset is not None or reservation is not None):
            raise ParameterError("dataset and reservation only make sense with a ledger; pass ledger=Ledger().")
        self.budget = budget
        self.ledger = ledger
        self.dataset = dataset
        self.reservation = reservation
        self.release_id = release_id
        self.unit, self.contribution_bound = check_unit(unit, contribution_bound)
        self._charges: list[Charge] = []
        self._spent = Fraction(0)
        self._spent_delta = Fraction(0)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        delta = f", delta={self.spent_delta:.3g}" if self.budget.approx_delta else ""
        return f"Accountant(spent rho={self.spent:.6g}{delta} of {self.budget}, dataset={self.dataset!r})"

    def sensitivity(self, per_record: float) -> float:
        """A query's sensitivity to one privacy unit, from its sensitivity ``per_record`` (one record added or
        removed): times the contribution bound k, as a unit's k records move the query by at most k times one
        record's change (triangle inequality). The one place the factor k is applied: every mechanism, and every
        noise scale computed after a measurement (``gaussian_sigma(rho, accountant.sensitivity(1.0))``), goes
        through it."""
        return per_record * self.contribution_bound

    @property
    def unit_label(self) -> str:
        """The privacy unit in words: ``row``, or ``person (at most 4 rows each)``."""
        return unit_label(self.unit, self.contribution_bound)

    @property
    def spent(self) -> float:
        """Rho spent so far through this accountant."""
        return float(self._spent)

    @property
    def remaining(self) -> float:
        """Rho left in this accountant's budget (the ledger's cap may leave less)."""
        return max(0.0, float(Fraction(self.budget.rho) - self._spent))

    @property
    def spent_delta(self) -> float:
        """Delta spent so far by approximate mechanisms, out of ``budget.approx_delta``."""
        return float(self._spent_delta)

    @property
    def remaining_delta(self) -> float:
        """Delta still available to approximate mechanisms (``budget.approx_delta`` less what they spent)."""
        return max(0.0, float(Fraction(self.budget.approx_delta) - self._spent_delta))

    @property
    def spent_epsilon(self) -> float:
        """Epsilon spent so far at the budget's delta: rho converted at the delta approximate spends left."""
        return epsilon_from_rho_delta(self.spent, float(Fraction(self.budget.delta) - self._spent_delta))

    @property
    def charges(self) -> tuple[Charge, ...]:
        """Every spend made through this accountant, in order, for a release's data card."""
        return tuple(self._charges)

    def spend(
        self,
        rho: float,
        *,
        mechanism: str,
        purpose: str,
        delta: float = 0.0,
        min_order: float | None = None,
        max_order: float | None = None,
        per_unit: bool = False,
    ) -> None:
        """Charge ``rho`` (and ``delta``, for an approximate mechanism) for ``mechanism``; call it before
        releasing the mechanism's output.

        ``per_unit``: the mechanism was calibrated to the privacy unit through :meth:`sensitivity` (the
        mechanisms of :mod:`privsynth.privacy.mechanisms` are). Without it a charge is refused when the
        contribution bound is above 1, so a mechanism calibrated to one record is never charged for a person.
        Other than the row, the unit is written into the mechanism's description in the ledger and the card.

        ``min_order`` and ``max_order`` bound the Rényi orders at which the charge holds, for a mechanism that is
        (alpha, rho alpha)-RDP only there (DP-SGD); the range must contain the order at which this budget is
        converted to (epsilon, delta), and the ledger stores it with the spend. Raises
        :class:`~privsynth.errors.BudgetExceeded`, recording nothing, when the charge would pass this
        accountant's budget, the delta its budget sets aside (``approx_delta``), or the ledger's cap (or
        reservation), which it checks in rho, in delta and in the Rényi orders of its conversion.
        """
        rho = check_positive("rho", rho)
        delta = check_positive("delta", delta, allow_zero=True)
        if self.contribution_bound > 1 and not per_unit:
            raise ParameterError(
                f"{mechanism} for {purpose!r} is calibrated to one record, but this fit protects one "
                f"{self.unit_label}; nothing was spent. Fit with contribution_bound=1 (one row per {self.unit}), or "
                "use a method whose mechanisms are calibrated to the unit (the marginal methods: mst, aim, privbayes)"
            )
        if self.unit_label != "row":
            mechanism = f"{mechanism} per {self.unit_label}"
        if min_order is not None or max_order is not None:
            order = conversion_order(self.budget.rho, self.budget.epsilon)
            if not (min_order or 1) * (1 - 1e-9) <= order <= (max_order or math.inf) * (1 + 1e-9):
                raise ParameterError(
                    f"{mechanism} for {purpose!r} holds at Rényi orders {min_order} to {max_order}, but the budget "
                    f"{self.budget} is converted to epsilon at order {order:.6g}; charge it for a range that "
                    "contains that order."
                )
        with self._lock:
            if delta > 0 and not fits_within([self._spent_delta], delta, self.budget.approx_delta):
                raise BudgetExceeded(
                    f"{mechanism} for {purpose!r} needs delta={delta:.4g} but only delta={self.remaining_delta:.4g} "
                    f"of the budget {self.budget} is set aside for mechanisms with a delta cost. Nothing was "
                    "released; build the budget with Budget.from_epsilon_delta(..., approx_delta=...)."
                )
            if not fits_within([self._spent], rho, self.budget.rho):
                raise BudgetExceeded(
                    f"{mechanism} for {purpose!r} needs rho={rho:.4g} "
                    f"(epsilon={epsilon_from_rho_delta(rho, self.budget.delta):.4g}) but only "
                    f"rho={self.remaining:.4g} of the budget {self.budget} is left. Nothing was released; "
                    "give the method a larger budget or spend it on fewer measurements."
                )
            if self.ledger is not None and self.dataset is not None:
                self.ledger.spend(
                    self.dataset,
                    rho,
                    mechanism=mechanism,
                    purpose=purpose,
                    release_id=self.release_id,
                    reservation=self.reservation,
                    delta=delta,
                    min_order=min_order,
                    max_order=max_order,
                )
            self._charges.append(
                Charge(
                    rho=rho,
                    mechanism=mechanism,
                    purpose=purpose,
                    delta=delta,
                    min_order=min_order,
                    max_order=max_order,
                )
            )
            self._spent += Fraction(rho)
            self._spent_delta += Fraction(delta)
        logger.debug("accountant charged rho=%.6g, delta=%.3g for %s (%s)", rho, delta, purpose, mechanism)


def open_ledger(ledger: Ledger | str | os.PathLike[str] | None) -> Ledger | None:
    """``ledger`` as a :class:`Ledger` (or None): a Ledger, a SQLAlchemy URL or a file path."""
    if ledger is None or isinstance(ledger, Ledger):
        return ledger
    if isinstance(ledger, str | os.PathLike):
        return Ledger(ledger)
    raise ParameterError(f"ledger must be a Ledger, a SQLAlchemy URL or a file path, not {type(ledger).__name__}")


_warned_uncapped: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_uncapped(ledger: Ledger, dataset: str, shown: str) -> None:
    """Warn, once per process for each ledger and dataset, that a DP fit spends on a dataset without a cap."""
    with _warned_lock:
        if (ledger.url, dataset) in _warned_uncapped:
            return
        _warned_uncapped.add((ledger.url, dataset))
    logger.warning(
        "dataset %r has no privacy cap in %r: its spends are recorded and add up, but nothing bounds them; set a "
        "cap with `privsynth ledger cap %s --epsilon E [--delta D]` or Ledger.set_cap(%r, epsilon, delta)",
        shown,
        ledger,
        shown,
        shown,
    )


@contextmanager
def fit_accountant(
    budget: Budget,
    ledger: Ledger | None,
    dataset: str,
    name: str | None = None,
    purpose: str | None = None,
    *,
    content: str | None = None,
    contribution_bound: int = 1,
    unit: str = "row",
) -> Iterator[tuple[Accountant, Budget | None]]:
    """An accountant for one fit on ``dataset`` (the name its budget is kept under) and the dataset's cap (None
    without a ledger or a cap).

    ``name`` is only for callers that still key the ledger by a fingerprint: the label shown beside it.
    ``content`` is an optional content fingerprint of the data, which the ledger keeps only as a keyed hash, to
    warn when the same data is registered under another name. A dataset without a cap gets a warning (once per
    process) saying how to set one.

    With a ledger the whole budget, its rho and the delta it sets aside for approximately zCDP mechanisms
    (``approx_delta``), is reserved first (a spent cap fails before anything is read) and committed
    at the end; if the fit fails after a mechanism ran, the reservation is committed anyway: noise was drawn.
    Without a charge, it is cancelled. ``purpose`` names the fit in the ledger's reservation row; with a privacy
    unit other than the row (``unit``, ``contribution_bound``, see :class:`Accountant`) it says that unit too.
    """
    if not purpose:
        raise ParameterError("fit_accountant needs the purpose of the fit, for the ledger's reservation row.")
    unit, contribution_bound = check_unit(unit, contribution_bound)
    if ledger is None:
        yield Accountant(budget, contribution_bound=contribution_bound, unit=unit), None
        return
    label = unit_label(unit, contribution_bound)
    if label != "row":
        purpose = f"{purpose}, privacy unit: one {label}"
    record = ledger.register(dataset, content=content, label=name if name and name != dataset else None)
    if record.cap is None:
        _warn_uncapped(ledger, record.name, record.label or record.name)
    reservation = ledger.reserve(dataset, budget.rho, delta=budget.approx_delta, purpose=purpose)
    accountant = Accountant(
        budget,
        ledger=ledger,
        dataset=dataset,
        reservation=reservation,
        contribution_bound=contribution_bound,
        unit=unit,
    )
    try:
        yield accountant, ledger.dataset(dataset).cap
    except BaseException:
        if accountant.charges:
            ledger.commit(reservation)
        else:
            ledger.cancel(reservation)
        raise
    ledger.commit(reservation)
