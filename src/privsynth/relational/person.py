"""Person-level privacy for a child table: keep at most k rows per person, and choose k under DP.

A DP fit protects one *privacy unit*. When a person owns many rows of a table (a patient's visits), protecting a
row protects a fortieth of a patient with 40 visits. The marginal methods protect a whole person instead when
told how many rows one person may contribute (``contribution_bound=k``, ``unit="person"``): every mechanism is
then calibrated to k rows (:meth:`privsynth.privacy.Accountant.sensitivity`). That guarantee needs the table to
hold at most k rows per person, which :func:`bound_contributions` enforces, before the fit, by a rule fixed
before the data is read. ``k`` is a parameter: either chosen from public knowledge (a protocol's number of
visits) or under DP by :func:`choose_contribution_bound`, paid from the person-level budget.

Neighbouring datasets differ by one person: their parent row and all their child rows. After bounding, that is
one parent row and at most k child rows, so a child-table fit calibrated to k rows and a parent-table fit
calibrated to one row are each rho-zCDP for that change, and the two compose by adding their rhos (Bun and
Steinke, TCC 2016). Wilson et al., "Differentially Private SQL with Bounded User Contribution", PoPETs 2020,
bound contributions the same way; Amin et al., "Bounding User Contributions: A Bias-Variance Trade-off in
Differential Privacy", ICML 2019, study the choice of k, which trades the rows dropped against noise times k.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant, check_contribution_bound
from privsynth.privacy.budget import check_positive

__all__ = ["MAX_BOUND", "bound_contributions", "choose_contribution_bound"]

logger = logging.getLogger(__name__)

MAX_BOUND = 64
"""The largest contribution bound :func:`choose_contribution_bound` considers by default: its histogram has
one cell per count from 1 to this, the last holding every person with more rows."""


def bound_contributions(
    frame: pd.DataFrame, unit_column: str, k: int, order_column: str | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """At most ``k`` rows of each unit (the value of ``unit_column``, a person's id): the first ``k`` by
    ``order_column`` (ties and missing order values last, in the frame's order), or without one ``k`` drawn at
    random with ``seed``. Rows keep their order and index; rows without a unit are dropped (no bound can hold
    for rows nobody owns).

    Privacy: each unit's kept rows depend only on that unit's own rows (and, when drawn, on ``seed`` and the
    unit's id, not on other units' rows), so adding or removing one unit changes the output by at most its
    ``k`` kept rows and leaves the other units' kept rows as they were. A mechanism calibrated to ``k`` rows on
    the output is therefore DP for one unit of the input. The rule (first ``k`` by the order column, or a seeded
    draw) is fixed before the data is read; this function runs on the custodian's side and releases nothing.
    """
    k = check_contribution_bound(k, "k")
    for name, column in (("unit_column", unit_column), ("order_column", order_column)):
        if column is not None and column not in frame.columns:
            raise ParameterError(f"{name} '{column}' is not a column of the table; columns: {list(frame.columns)}")
    positional = frame.reset_index(drop=True)  # positions, so a frame with a repeated index is bounded right
    owned = positional[positional[unit_column].notna()]
    if order_column is not None:
        ranked = owned.sort_values(order_column, kind="stable", na_position="last")
        rank = ranked.groupby(unit_column, sort=False).cumcount()
    else:
        # A draw per unit that depends on its id, its rows' ordinal within it and the seed only: keep the k
        # rows with the smallest keyed hash.
        ordinal = owned.groupby(unit_column, sort=False).cumcount()
        keys = pd.DataFrame({"unit": owned[unit_column].astype(str), "ordinal": ordinal})
        draw = pd.util.hash_pandas_object(keys, index=False, hash_key=_hash_key(seed))
        ranked = owned.assign(_draw=draw.to_numpy()).sort_values("_draw", kind="stable")
        rank = ranked.groupby(unit_column, sort=False).cumcount()
    keep = np.zeros(len(frame), dtype=bool)
    keep[rank.index[rank.to_numpy() < k]] = True
    return frame[keep]


def _hash_key(seed: int) -> str:
    """The 16-character key pandas' hashing takes, from the seed."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ParameterError(f"seed must be an int, got {seed!r}")
    return f"{int(seed) % 10**16:016d}"


def choose_contribution_bound(
    frame: pd.DataFrame,
    unit_column: str,
    *,
    accountant: Accountant,
    rho: float,
    quantile: float = 0.9,
    max_bound: int = MAX_BOUND,
) -> int:
    """A contribution bound k under DP: the noisy ``quantile`` of the number of rows per unit in ``frame``, the
    smallest k that keeps every row of about that share of the units (at most ``max_bound``, a public cap).

    Measures: the histogram of rows per unit, one cell per count from 1 to ``max_bound`` (units with more rows
    in the last cell), with the Gaussian mechanism. Sensitivity: one unit added or removed changes one cell by
    one (the cell of its own row count), L2 sensitivity 1 per unit: charge it to an accountant whose unit is one
    person with ``contribution_bound=1`` (each person is one record of this histogram). Cost: ``rho``, spent
    through ``accountant`` and recorded in its ledger; it composes with the fit that then uses k (zCDP: the
    rhos add), so take ``rho`` as a stated share of the person-level budget (a few percent is enough: the
    quantile needs only the rough shape). The quantile is read from the running maximum of the cumulative sums
    of the noisy counts: post-processing. A histogram with no noisy mass gives 1.

    Choosing k trades rows dropped (a smaller k keeps fewer visits of the busiest persons) against noise (every
    measurement's noise grows k times): ``quantile=0.9`` keeps every row of about 90% of the persons.
    """
    from privsynth.privacy.mechanisms import gaussian_mechanism

    if unit_column not in frame.columns:
        raise ParameterError(
            f"unit_column '{unit_column}' is not a column of the table; columns: {list(frame.columns)}"
        )
    q = check_positive("quantile", quantile)
    if q > 1:
        raise ParameterError(f"quantile must lie in (0, 1], a share of the units, got {quantile!r}")
    top = check_contribution_bound(max_bound, "max_bound")
    if accountant.contribution_bound != 1:
        raise ParameterError(
            "choose_contribution_bound measures one count per person: give it an accountant with "
            f"contribution_bound=1 (unit='person'), not one calibrated to {accountant.unit_label}"
        )
    per_unit = frame.groupby(unit_column, sort=False).size().to_numpy()
    histogram = np.bincount(np.minimum(per_unit, top), minlength=top + 1)[1:].astype(np.int64)
    noisy = gaussian_mechanism(
        histogram,
        sensitivity=1.0,
        rho=rho,
        accountant=accountant,
        purpose=f"contribution bound: noisy {quantile:g} quantile of rows per {accountant.unit} (1 to {top})",
    )
    # Raw noisy counts sum without bias (clipping them at 0 would pile the empty cells' noise into the tail):
    # their running maximum is a non-decreasing cumulative count.
    cumulative = np.maximum.accumulate(np.cumsum(np.asarray(noisy, dtype=float)))
    if cumulative[-1] <= 0:
        return 1
    return int(np.searchsorted(cumulative, q * cumulative[-1], side="left")) + 1
