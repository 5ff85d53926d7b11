"""The accountant: one budget, spent on one dataset, one mechanism at a time.

Spends compose additively in rho (zero-concentrated DP, Bun and Steinke, "Concentrated Differential Privacy",
TCC 2016, Lemma 2.3). A mechanism that is delta-approximately rho-zCDP (DP key discovery) also spends delta,
from the part of the budget's delta set aside for that (``Budget.approx_delta``); approximate zCDP composes by
adding rhos and adding deltas (ibid., Section 8). After spending rho and delta in all, a run is (epsilon,
``budget.delta``)-DP with epsilon converted from rho at ``budget.delta`` less the delta spent.

Every mechanism in :mod:`privsynth.privacy.mechanisms` calls :meth:`Accountant.spend` before it draws noise, so
a refused spend releases nothing. With a ledger, each spend's rho and delta are recorded there too, and the
ledger adds them up across runs against the dataset's cap.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.budget import Budget, check_positive, epsilon_from_rho_delta, fits_within
from privsynth.privacy.ledger import Ledger

__all__ = ["Accountant", "Charge", "fit_accountant", "open_ledger"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Charge:
    """One spend made through an accountant: what it cost (rho, and delta for approximate mechanisms),
    which mechanism, and why."""

    rho: float
    mechanism: str
    purpose: str
    delta: float = 0.0


class Accountant:
    """Spends ``budget`` on ``dataset``, recording every spend in ``ledger`` before any noise is drawn.

    A spend is refused (:class:`~privsynth.errors.BudgetExceeded`, nothing recorded) when it would pass this
    budget, or the dataset's cap in the ledger. With ``reservation`` (from :meth:`Ledger.reserve`) the spends
    draw on that reservation instead of the cap. Without a ledger the accountant only enforces its own budget,
    which suits experiments on public data; it is safe to share between threads.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        ledger: Ledger | None = None,
        dataset: str | None = None,
        reservation: int | None = None,
        release_id: str | None = None,
    ) -> None:
        if ledger is not None and not dataset:
            raise ParameterError("An accountant with a ledger needs the dataset fingerprint to charge.")
        if ledger is None and (dataset is not None or reservation is not None):
            raise ParameterError("dataset and reservation only make sense with a ledger; pass ledger=Ledger().")
        self.budget = budget
        self.ledger = ledger
        self.dataset = dataset
        self.reservation = reservation
        self.release_id = release_id
        self._charges: list[Charge] = []
        self._spent = Fraction(0)
        self._spent_delta = Fraction(0)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        delta = f", delta={self.spent_delta:.3g}" if self.budget.approx_delta else ""
        return f"Accountant(spent rho={self.spent:.6g}{delta} of {self.budget}, dataset={self.dataset!r})"

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

    def spend(self, rho: float, *, mechanism: str, purpose: str, delta: float = 0.0) -> None:
        """Charge ``rho`` (and ``delta``, for an approximate mechanism) for ``mechanism``; call it before
        releasing the mechanism's output.

        Raises :class:`~privsynth.errors.BudgetExceeded`, recording nothing, when the charge would pass this
        accountant's budget, the delta its budget sets aside (``approx_delta``), or the ledger's cap (or
        reservation), which it checks in rho and in delta.
        """
        rho = check_positive("rho", rho)
        delta = check_positive("delta", delta, allow_zero=True)
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
                )
            self._charges.append(Charge(rho=rho, mechanism=mechanism, purpose=purpose, delta=delta))
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


@contextmanager
def fit_accountant(
    budget: Budget, ledger: Ledger | None, dataset: str, name: str, purpose: str
) -> Iterator[tuple[Accountant, Budget | None]]:
    """An accountant for one fit on ``dataset`` (fingerprint; ``name`` for people) and the dataset's cap (None
    without a ledger or a cap).

    With a ledger the whole budget, its rho and the delta it sets aside for approximately zCDP mechanisms
    (``approx_delta``), is reserved first (a spent cap fails before anything is read) and committed
    at the end; if the fit fails after a mechanism ran, the reservation is committed anyway: noise was drawn.
    Without a charge, it is cancelled. ``purpose`` names the fit in the ledger's reservation row.
    """
    if ledger is None:
        yield Accountant(budget), None
        return
    ledger.register(dataset, name)
    reservation = ledger.reserve(dataset, budget.rho, delta=budget.approx_delta, purpose=purpose)
    accountant = Accountant(budget, ledger=ledger, dataset=dataset, reservation=reservation)
    try:
        yield accountant, ledger.dataset(dataset).cap
    except BaseException:
        if accountant.charges:
            ledger.commit(reservation)
        else:
            ledger.cancel(reservation)
        raise
    ledger.commit(reservation)
