"""MST: all 1-way marginals, a maximum spanning tree of 2-way marginals, a tree-shaped graphical model.

McKenna, Miklau and Sheldon, "Winning the NIST Contest: A scalable and general approach to differentially private
synthetic data", Journal of Privacy and Confidentiality 11(3), 2021, with the budget split of the reference code
(``mst.py`` in the ``mbi`` repository's examples).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget
from privsynth.privacy.mechanisms import exponential_mechanism
from privsynth.progress import report
from privsynth.synth import _pgm
from privsynth.synth._pgm import Clique, NoisyMarginal
from privsynth.synth.base import register
from privsynth.synth.domain import DEFAULT_BINS
from privsynth.synth.marginal_method import Counts, MarginalMethod, compress, compressed_counts, measure

__all__ = ["MST"]


@register
class MST(MarginalMethod):
    """MST: all 1-way marginals, a maximum spanning tree of 2-way marginals, a tree-shaped graphical model.

    A third of the budget measures every 1-way marginal; values measured below 3 sigma are merged into one
    cell; a third selects the tree's d - 1 edges, one exponential-mechanism draw each, scored by how badly the
    1-way model misses each 2-way marginal (L1, sensitivity 1); a third measures the selected 2-way marginals.
    Every sensitivity here is per row; with ``contribution_bound=k`` (a person's up to k rows) each is k, the
    noise k times larger (see :class:`~privsynth.synth.marginal_method.MarginalMethod`).
    ``preprocessing_share`` (default: 0.2 up to 16 columns to learn, more on wider tables, as AIM's;
    :func:`~privsynth.synth.marginal_method.default_preprocessing_share`): MST measures d + (d - 1) marginals once,
    so a larger share for the domains costs each measurement little, and at epsilon 1 0.2 lowered 3-way TVD on
    all three narrow bundled tables (``benchmarks/results/rare_categories.json``). ``iters``: mirror-descent
    steps of the final estimate (the reference code's 5000 would triple the time for no visible change on the
    bundled tables). With two columns the tree is forced and its budget is shared by the two measurements; with
    one, the 1-way marginal gets it all.
    """

    name = "mst"

    def __init__(
        self,
        *,
        preprocessing_share: float | None = None,
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

    def _run(
        self, counts: Counts, accountant: Accountant, budget: Budget
    ) -> tuple[_pgm.Model, list[NoisyMarginal], dict[str, np.ndarray]]:
        columns = counts.columns
        d = len(columns)
        steps = 2 * d + 1
        # Every 2-way marginal (the selection scores them all) in one scan per batch; the 1-ways are sums of them.
        report("mst", 0, steps, "counting the 2-way marginals")
        counts.prefetch(list(itertools.combinations(columns, 2)) or [(c,) for c in columns])
        report("mst", 0, steps, "measuring 1-way marginals")
        shares = budget.split([1 / 3, 1 / 3, 1 / 3]) if d > 2 else budget.split([1 / d] * d)
        ones = measure([(c,) for c in columns], counts, shares[0], accountant)
        total = _pgm.total_from(ones)
        compression, ones = compress(ones, counts.sizes)
        domain, compressed = compressed_counts(counts, compression)

        report("mst", d, steps, "selecting the spanning tree")
        if d > 2:
            first = _pgm.independent(domain, ones, total)
            tree = _select_tree(columns, compressed, first, shares[1], accountant)
        else:
            tree = [tuple(columns)] if d == 2 else []
        report("mst", 2 * d - 1, steps, "measuring the tree's 2-way marginals")
        twos = measure(tree, compressed, shares[-1], accountant) if tree else []
        report("mst", 2 * d, steps, "estimating the model")
        model = _pgm.estimate(domain, ones + twos, total, iters=self.iters)
        report("mst", steps, steps, "done")
        return model, ones + twos, compression


def _select_tree(
    columns: list[str],
    answer: Callable[[Clique], np.ndarray],
    model: _pgm.Model,
    budget: Budget,
    accountant: Accountant,
) -> list[Clique]:
    """MST's selection: Kruskal's algorithm with each edge drawn by the exponential mechanism.

    Score of a pair: the L1 distance between its exact 2-way marginal and the 1-way model's estimate
    (sensitivity 1: the model is built from noisy answers only). ``budget`` is split over the d - 1 draws.
    """
    pairs = list(itertools.combinations(columns, 2))
    scores = {pair: float(np.abs(answer(pair) - model.project(pair)).sum()) for pair in pairs}
    group = {c: c for c in columns}

    def find(c: str) -> str:
        while group[c] != c:
            group[c] = group[group[c]]
            c = group[c]
        return c

    steps = len(columns) - 1
    chosen: list[Clique] = []
    for step, share in enumerate(budget.split([1 / steps] * steps)):
        open_pairs = [p for p in pairs if find(p[0]) != find(p[1])]
        pick = exponential_mechanism(
            np.array([scores[p] for p in open_pairs]),
            sensitivity=1.0,
            rho=share.rho,
            accountant=accountant,
            purpose=f"select edge {step + 1} of {steps} of the spanning tree",
        )
        a, b = open_pairs[pick]
        group[find(a)] = find(b)
        chosen.append((a, b))
    return chosen
