"""PrivBayes: a Bayesian network learned under DP, its noisy conditionals, rows drawn from it.

Zhang, Cormode, Procopiuc, Srivastava and Xiao, "PrivBayes: Private Data Release via Bayesian Networks",
ACM Transactions on Database Systems 42(4), 2017.

The paper's three steps on the marginal methods' base (:class:`~privsynth.synth.marginal_method.MarginalMethod`):
*select* the network greedily, each next attribute and its parent set drawn by the exponential mechanism;
*measure* each (attribute, parents) marginal, whose normalised table is the attribute's conditional distribution;
*sample* rows from the network. Measuring and sampling use what MST and AIM use: the Gaussian mechanism under
zCDP (:func:`~privsynth.synth.marginal_method.measure`) and the graphical model of :mod:`privsynth.synth._pgm`,
whose cliques are the network's (attribute, parents) sets. The model is the non-negative, normalised distribution
closest to the noisy marginals (the paper's post-processing, done jointly so that a column's 1-way marginal agrees
across the conditionals that hold it), and sampling it is exact, also under conditions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget, check_positive, gaussian_sigma
from privsynth.privacy.mechanisms import exponential_mechanism
from privsynth.progress import report
from privsynth.synth import _pgm
from privsynth.synth._pgm import Clique, NoisyMarginal
from privsynth.synth.base import register
from privsynth.synth.domain import DEFAULT_BINS
from privsynth.synth.marginal_method import (
    Counts,
    MarginalMethod,
    compress,
    compressed_counts,
    measure,
    whole_number,
)

__all__ = ["SCORE_SENSITIVITY", "PrivBayes"]

SCORE_SENSITIVITY = 2.0
"""Sensitivity of the selection score (see :func:`dependence`) when one record is added or removed."""

_ONES_SHARE = 0.1
"""The share of the (post-preprocessing) budget that measures every 1-way marginal. Not in the paper: the noisy
1-way marginals give the score its reference distribution, the usefulness rule its row count, and MST's merge of
rare values (3 sigma) its input."""


@register
class PrivBayes(MarginalMethod):
    """PrivBayes: a Bayesian network of bounded degree chosen under DP, its conditionals measured with noise.

    Budget (rho, after ``preprocessing_share`` learns the domains the schema does not declare public, as MST):
    a tenth measures every 1-way marginal (Gaussian, sensitivity 1), ``selection_share`` (the paper's beta, 0.3)
    selects the network, the rest measures its d - 1 (attribute, parents) marginals (Gaussian, sensitivity 1,
    split evenly). Together the spends are the budget exactly (zCDP composition). Every sensitivity here is per
    row; with ``contribution_bound=k`` (a person's up to k rows) each is k times that (the score's 2 becomes 2k).

    Selection: the first attribute is drawn uniformly with a fixed seed (the paper's random first attribute; the
    draw does not look at the data). Each next attribute X and its parents P are then drawn together by the
    exponential mechanism (rho split evenly over the d - 1 draws) among the attributes not yet in the network,
    each paired with its candidate parent sets: the largest sets of at most ``degree`` attributes already in the
    network whose marginal with X passes the paper's theta-usefulness rule, its average cell count at least
    ``theta`` times the measurement noise (row count and noise from the noisy 1-way marginals and the planned
    sigma, so the rule is post-processing). An attribute with no useful parent set is a candidate with none.
    ``theta`` is 1 (the paper's 4 is in units of the Laplace scale): at 4, a column of 32 bins could take no
    parent with more than a few cells, so on nafld1's numeric columns the network was a star around ``male``
    (``benchmarks/results/privbayes.json``, ``theta_sweep``).
    Up to ``max_candidates`` pairs are scored per draw, more drawn uniformly with a fixed seed.
    The score is the paper's R score in counts with the noisy 1-way marginal of X as reference, less its value
    without parents (:func:`dependence`): sensitivity 2 (:data:`SCORE_SENSITIVITY`), whatever the row count,
    where the paper's mutual information and R score need the exact row count to state theirs.
    With two columns the second takes the first as parent when that is useful (no draw: the selection's share
    goes to the two 1-way marginals and the one conditional, half each); with one, its 1-way marginal gets it all.
    ``iters``: mirror-descent steps of the model estimate.
    """

    name = "privbayes"

    network_: list[tuple[str, tuple[str, ...]]]
    sigma_: float

    def __init__(
        self,
        *,
        degree: int = 3,
        theta: float = 1.0,
        selection_share: float = 0.3,
        max_candidates: int = 500,
        preprocessing_share: float = 0.2,
        bins: int = DEFAULT_BINS,
        numeric_bins: str = "quantile",
        iters: int = 2000,
        contribution_bound: int = 1,
        unit: str = "row",
    ) -> None:
        super().__init__(
            preprocessing_share=preprocessing_share,
            bins=bins,
            numeric_bins=numeric_bins,
            iters=iters,
            contribution_bound=contribution_bound,
            unit=unit,
        )
        self.degree = whole_number("degree", degree, minimum=1)
        self.theta = check_positive("theta", theta)
        self.selection_share = check_positive("selection_share", selection_share)
        if self.selection_share >= 1 - _ONES_SHARE:
            raise ParameterError(
                f"selection_share must be below {1 - _ONES_SHARE:g} (the 1-way marginals take {_ONES_SHARE:g} and "
                f"the conditionals need the rest), got {selection_share!r}"
            )
        self.max_candidates = whole_number("max_candidates", max_candidates, minimum=1)

    def _run(
        self, counts: Counts, accountant: Accountant, budget: Budget
    ) -> tuple[_pgm.Model, list[NoisyMarginal], dict[str, np.ndarray]]:
        columns = counts.columns
        d = len(columns)
        steps = 2 * d + 1
        report("privbayes", 0, steps, "measuring 1-way marginals")
        if d > 2:
            ones_share, select_share, measure_share = budget.split(
                [_ONES_SHARE, self.selection_share, 1 - _ONES_SHARE - self.selection_share]
            )
        elif d == 2:
            ones_share, measure_share = budget.split([0.5, 0.5])
        else:
            ones_share = budget
        ones = measure([(c,) for c in columns], counts, ones_share, accountant)
        total = _pgm.total_from(ones)
        compression, ones = compress(ones, counts.sizes)
        domain, compressed = compressed_counts(counts, compression)
        reference = {m.clique[0]: _distribution(m) for m in ones}
        draw = np.random.default_rng(0)  # the first attribute and the candidates scored: public, not the data's
        first = columns[int(draw.integers(d))]
        network: list[tuple[str, tuple[str, ...]]] = [(first, ())]
        measurements = list(ones)
        self.sigma_ = 0.0
        if d >= 2:
            self.sigma_ = gaussian_sigma(measure_share.rho / (d - 1), accountant.sensitivity(1.0))
            limit = total / (self.theta * self.sigma_)
            report("privbayes", d, steps, "selecting the network")
            if d > 2:
                shares = select_share.split([1 / (d - 1)] * (d - 1))
                for step, share in enumerate(shares, start=1):
                    candidates = self._candidates(network, columns, domain, limit, draw)
                    scores = [
                        dependence(compressed(_ordered(x, p, columns)), x, p, columns, reference[x])
                        for x, p in candidates
                    ]
                    pick = exponential_mechanism(
                        np.array(scores),
                        sensitivity=SCORE_SENSITIVITY,
                        rho=share.rho,
                        accountant=accountant,
                        purpose=f"select attribute {step + 1} of {d} and its parents",
                    )
                    network.append(candidates[pick])
                    report("privbayes", d + step, steps, "selecting the network")
            else:
                (x,) = [c for c in columns if c != first]
                parents = (first,) if domain[x] * domain[first] <= limit else ()
                network.append((x, parents))
            cliques = [_ordered(x, p, columns) for x, p in network if p]
            report("privbayes", 2 * d - 1, steps, "measuring the conditionals")
            # With no useful parent set anywhere, the share measures the 1-way marginals again (pooled by the model).
            measurements += measure(cliques or [(c,) for c in columns], compressed, measure_share, accountant)
        self.network_ = network
        report("privbayes", 2 * d, steps, "estimating the model")
        model = _pgm.estimate(domain, measurements, total, iters=self.iters)
        report("privbayes", steps, steps, "done")
        return model, measurements, compression

    def _record_fit(self, budget: Budget, accountant: Accountant, released: Mapping[str, Any]) -> None:
        """The network goes on the card with the noisy row count: it was chosen by the exponential mechanism."""
        network = [{"attribute": x, "parents": list(parents)} for x, parents in self.network_]
        super()._record_fit(budget, accountant, {**released, "network": network})

    def _candidates(
        self,
        network: Sequence[tuple[str, tuple[str, ...]]],
        columns: Sequence[str],
        domain: Mapping[str, int],
        limit: float,
        draw: np.random.Generator,
    ) -> list[tuple[str, tuple[str, ...]]]:
        """(attribute, parents) pairs for the next draw: each attribute outside the network with its largest
        useful parent sets (see the class docstring), or with none when no set is useful; at most
        ``max_candidates``, drawn from ``draw`` when there are more. Depends on released values only."""
        placed = [x for x, _ in network]
        out: list[tuple[str, tuple[str, ...]]] = []
        for x in columns:
            if x in placed:
                continue
            kept: list[tuple[str, ...]] = []
            for size in range(min(self.degree, len(placed)), 0, -1):
                for parents in itertools.combinations(placed, size):
                    if domain[x] * math.prod(domain[p] for p in parents) <= limit and not any(
                        set(parents) < set(k) for k in kept
                    ):
                        kept.append(parents)
            out += [(x, p) for p in kept] or [(x, ())]
        if len(out) > self.max_candidates:
            out = [out[i] for i in sorted(draw.choice(len(out), self.max_candidates, replace=False))]
        return out


def dependence(
    table: np.ndarray, x: str, parents: tuple[str, ...], columns: Sequence[str], reference: np.ndarray
) -> float:
    """How much the parents tell about X: R(X, P) - R(X, none), with R(X, P) = 1/2 sum over p of
    ||N(X, p) - q N(p)||_1, N the exact counts, q the noisy (released) distribution of X; ``table`` is the
    marginal of X and its parents in column order.

    Sensitivity 2 for adding or removing a record: it changes one cell of N(X, p) and N(p) by one, so R(X, P)
    moves by at most (1 + ||q||_1) / 2 = 1, and R(X, none) likewise. The difference is at least 0 (the triangle
    inequality over the parent cells) and near 0 when X is independent of its parents, whatever q's noise.
    """
    clique = _ordered(x, parents, columns)
    n = np.moveaxis(table, clique.index(x), 0).reshape(table.shape[clique.index(x)], -1).astype(np.float64)
    by_parent = n.sum(axis=0)
    with_parents = 0.5 * float(np.abs(n - np.outer(reference, by_parent)).sum())
    without = 0.5 * float(np.abs(n.sum(axis=1) - reference * by_parent.sum()).sum())
    return with_parents - without


def _ordered(x: str, parents: tuple[str, ...], columns: Sequence[str]) -> Clique:
    """The clique of X and its parents in column order (one cache entry per set of columns)."""
    members = {x, *parents}
    return tuple(c for c in columns if c in members)


def _distribution(m: NoisyMarginal) -> np.ndarray:
    """A noisy 1-way marginal as a distribution (negative counts to 0, normalised; uniform if nothing is left).
    A merged cell's measurement is its count over sqrt(k) (see ``compress``), so it is scaled back first."""
    values = m.values / m.weights if m.weights is not None else m.values
    clipped = np.clip(values, 0.0, None)
    return clipped / clipped.sum() if clipped.sum() > 0 else np.full(len(values), 1 / len(values))
