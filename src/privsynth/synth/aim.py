"""AIM: adaptively measure the workload marginals the current model answers worst, until the budget is spent.

McKenna, Mullins, Sheldon and Miklau, "AIM: An Adaptive and Iterative Mechanism for Differentially Private
Synthetic Data", PVLDB 15(11), 2022, with the budget split of the reference code (``aim.py`` in the ``mbi``
repository's examples).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from privsynth.data.schema import Schema
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
    floor_float,
    measure,
    whole_number,
)
from privsynth.synth.mst import _select_tree

__all__ = ["AIM", "default_rounds"]

logger = logging.getLogger(__name__)


_ROUND_TOL = 1e-4
"""AIM's estimate in a round stops once 100 mirror-descent steps improve the loss by less than this share of it:
warm-started from the last round's model it usually gets there in a few hundred steps, not ``iters``. The
final estimate runs all its steps. Measured on six nassCDS columns at epsilon 1 (96 rounds, two fits each on a
busy machine): 3-way TVD 0.027 and 0.027 with it, 0.029 and 0.028 with every round running ``iters`` steps."""

_clock = time.perf_counter  # AIM's ``max_minutes`` clock (a test replaces it)

_MAX_DEFAULT_WORKLOAD = 1000
"""AIM's default workload holds every 3-way marginal up to this many (19 columns); wider tables get every
2-way marginal and this many 3-way ones drawn with a fixed seed (the choice does not look at the data)."""

_MAX_DEFAULT_ROUNDS = 256
"""The default number of rounds is the paper's 16 d up to this many (16 columns); wider tables get fewer, this
many times 16 / d, but at least :data:`_WIDE_ROUNDS` d (see :func:`default_rounds`). With 16 d, a round's budget,
and with it the selection's and every 1-way and tree edge's, shrinks as 1/d: on 55 columns at epsilon 1 a
selection was close to a uniform draw among 2,500 candidates and the 1-way marginals' noise (0.9 of a round each)
was larger than most of their cells."""

_WIDE_ROUNDS = 2.5
"""Rounds per column of a wide table (see :data:`_MAX_DEFAULT_ROUNDS`): the 1-way marginals (0.9 d rounds' budget)
and the spanning tree (d - 1) take three quarters of the budget, the adaptive rounds the rest. loans (55 columns,
epsilon 1, preprocessing share 0.2): 3-way TVD 0.321 with 2.3 d rounds, 0.349 with 256 (4.7 d)."""

_TREE_MIN_ROUNDS = 2.5
"""By default AIM starts from MST's tree when its rounds number at least this many per column (see ``tree``);
the tree needs 1.9 d + 1 rounds' budget at the least (:func:`_tree_rounds`)."""

_TREE_SELECT = 0.1
"""Share of the tree's budget that selects its edges."""

_ANNEAL = 4
"""Factor on the round budget when a measurement barely moved the model (the paper's: sigma halves)."""

_LARGE_MB = 1.0
"""A model above this many MB is large: AIM's rounds go in batches of :data:`_BATCH` and estimate with fewer steps."""

_BATCH = 8
"""Rounds per estimate once the model is large (see ``AIM``)."""

_LARGE_STEPS = 4
"""Once the model is large, a batch's warm-started estimate runs ``iters`` / this many steps."""

_MAX_CANDIDATES = 500
"""Candidates scored per round: all of them up to this many (every 2- and 3-way marginal of 14 columns is
469), else this many drawn afresh each round (see :func:`_round_candidates`)."""


@register
class AIM(MarginalMethod):
    """AIM: adaptively measure the workload marginals the current model answers worst, until the budget is spent.

    Each round spends 1/rounds of the budget, rho_t (rounds: :func:`default_rounds`), a tenth on selecting a
    candidate (any marginal inside a workload marginal, weighted by its overlap with the workload: the
    exponential mechanism, sensitivity the largest weight scored, rho_t / 10) and nine tenths on measuring it
    (the Gaussian mechanism, sensitivity 1, 0.9 rho_t; both sensitivities k times that with
    ``contribution_bound=k``, a person's up to k rows); the 1-way marginals are measured first at 0.9 rho_t
    each. With ``tree`` (default: on when the rounds number at least 2.5 per column, which the default rounds
    always do from 3 columns up, and every pair is a candidate), MST's spanning tree comes next, as d - 1 rounds'
    budget: a tenth selects its d - 1 edges (one exponential-mechanism draw each, score the L1 distance between
    the pair's exact 2-way marginal and the 1-way model's answer, sensitivity 1, the tenth split evenly), nine
    tenths measure them (the Gaussian mechanism, sensitivity 1, split evenly); the rounds then start from a model
    that already links every column (on 55 columns the rounds alone measured ~20 marginals before the budget ran
    out, leaving most columns independent). When a measurement barely moves the model, the round budget is
    quadrupled (sigma halves); when less than two rounds' worth is left, one last round spends the rest, so the
    spends add up to the budget exactly (zCDP composition). Once the model is over :data:`_LARGE_MB`, rounds go in
    batches of :data:`_BATCH`: each round of a batch still selects (against the batch's model, its own picks left
    out) and measures with its own budget, as above, and the model is estimated once a batch with a quarter of the
    steps; an estimate then costs seconds, and this is what bounds AIM's time at 10M rows. The model may grow to
    ``max_model_size`` MB in proportion to the budget used (default 16; it was 80, and the estimate's working
    memory is a multiple of the model's: #19's 10M-row fit reached 1.34 GB resident); candidates that would make
    it larger are left out of that round, and a warning says so when the full cap still kept candidates out at the
    end.
    ``preprocessing_share`` is MST's default: on wide tables each column's share of the domain budget is what
    locates its bounds and categories, and the 1-way error it leaves carries into every marginal (loans, 55
    columns, epsilon 1: 3-way TVD 0.40 with 0.1, 0.35 with 0.2; ``benchmarks/results/aim_wide.json``), so it
    grows with the number of columns to learn beyond 16
    (:func:`~privsynth.synth.marginal_method.default_preprocessing_share`).
    ``compress`` (default on): as in MST, values whose 1-way measurement is below 3 sigma merge into one cell
    before the rounds start (post-processing). Not in the AIM paper: on small tables the first rounds' noise
    spreads spurious mass over rare values' cells and models trained on the rows learn it (covid_testing at
    epsilon 1: train-synthetic-test-real AUC 0.83 -> see ``benchmarks/results/bench_issue5``).
    ``workload``: column tuples to be accurate on, or a mapping from column tuples to weights (default: every
    2- and 3-way marginal, see :data:`_MAX_DEFAULT_WORKLOAD`). ``target``: a column that models trained on
    the synthetic rows will predict (default: the schema's ``target``); the default workload's marginals
    holding it get ``target_weight`` (default: as much weight in total as all the others together; 1 weighs
    every marginal alike), the AIM paper's weighted workload, so the rounds go to how the target relates to
    the other columns. Which column is the target is public (it is a choice, not a fact about the rows) and
    costs nothing. ``iters``: mirror-descent steps per round
    (warm-started); the final estimate takes 2.5 times as many. ``round_tol``: a round's estimate stops early
    once two blocks of 50 steps in a row improve the loss by less than this share of it (post-processing of
    the noisy measurements: it changes time and accuracy, not privacy).
    ``max_candidates``: candidates scored per round (default :data:`_MAX_CANDIDATES`); with more candidates
    than that, each round scores that many drawn uniformly at random, a draw that does not look at the data,
    so the exponential mechanism's guarantee holds over the drawn set as over the whole; the work per round
    stays the same on wide tables. The default ``rounds``: :func:`default_rounds` (16 d up to 16 columns, fewer
    per column beyond: :data:`_MAX_DEFAULT_ROUNDS`).
    ``max_minutes`` (default: none), as MOSTLY AI's ``max_training_time``: once the time spent plus the
    expected time of the final estimate reaches it, the rounds stop and the budget left measures every marginal
    measured so far once more (no selection, no new clique). The total spent is the same; only how it is split
    changes, and that split is chosen from the clock and the model's released structure, not from the rows (the clock
    itself is a timing channel, which DP accounting here as in every DP library leaves out). On a large table
    a round's estimate runs all its steps and their cost grows with the model (10M rows of nassCDS: 27 s a
    round at round 20 of 224, and rising), so this is how AIM finishes there in a set time.
    """

    name = "aim"

    rounds_: int
    size_capped_: int
    time_limited_: bool
    target_: str | None

    def __init__(
        self,
        *,
        rounds: int | None = None,
        max_model_size: float = 16.0,
        workload: Sequence[Sequence[str]] | Mapping[Sequence[str], float] | None = None,
        target: str | None = None,
        target_weight: float | None = None,
        compress: bool = True,
        preprocessing_share: float | None = None,
        bins: int = DEFAULT_BINS,
        numeric_bins: str = "quantile",
        iters: int = 1000,
        round_tol: float = _ROUND_TOL,
        max_minutes: float | None = None,
        max_candidates: int = _MAX_CANDIDATES,
        tree: bool | None = None,
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
        self.round_tol = check_positive("round_tol", round_tol)
        self.max_minutes = None if max_minutes is None else check_positive("max_minutes", max_minutes)
        self.rounds = None if rounds is None else whole_number("rounds", rounds, minimum=1)
        self.max_candidates = whole_number("max_candidates", max_candidates, minimum=1)
        self.max_model_size = check_positive("max_model_size", max_model_size)
        self.tree = None if tree is None else bool(tree)
        if workload is None:
            self.workload: dict[Clique, float] | None = None
        else:
            pairs = workload.items() if isinstance(workload, Mapping) else ((clique, 1.0) for clique in workload)
            self.workload = {
                tuple(str(c) for c in clique): check_positive(f"weight of workload marginal {tuple(clique)}", w)
                for clique, w in pairs
            }
        if (target is not None or target_weight is not None) and workload is not None:
            raise ParameterError(
                "give either workload (with your own weights) or target/target_weight (which weight the default "
                "workload), not both"
            )
        self.target = target
        self.compress = bool(compress)
        self.target_weight = None if target_weight is None else check_positive("target_weight", target_weight)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if self.workload is not None:  # plain data for the card: a list of {columns, weight}
            params["workload"] = [{"columns": list(c), "weight": w} for c, w in self.workload.items()]
        return params

    def _check(self, schema: Schema) -> None:
        columns = schema.names
        self.target_ = self.target if self.target is not None or self.workload is not None else schema.target
        if self.rounds is not None and self.rounds < len(columns):
            raise ParameterError(
                f"rounds={self.rounds} is below the number of columns ({len(columns)}): AIM measures every 1-way "
                f"marginal at the first round's noise, so it needs at least {len(columns)} rounds"
            )
        rounds = self.rounds or default_rounds(len(columns))
        if self.tree and len(columns) >= 3 and rounds < _tree_rounds(len(columns)):
            raise ParameterError(
                f"tree=True needs at least {math.ceil(_tree_rounds(len(columns)))} rounds on {len(columns)} columns "
                f"(the 1-way marginals and the spanning tree's {len(columns) - 1} edges take 1.9 rounds' budget a "
                f"column, and two rounds must be left), got rounds={rounds}: raise rounds or leave tree unset"
            )
        self._workload(columns)

    def _run(
        self, counts: Counts, accountant: Accountant, budget: Budget
    ) -> tuple[_pgm.Model, list[NoisyMarginal], dict[str, np.ndarray]]:
        columns = counts.columns
        d = len(columns)
        rounds = self.rounds or default_rounds(d)
        workload = self._workload(columns)
        candidates = _candidates(workload, columns)
        maximal = _maximal(list(workload))
        report("aim", 0, rounds, f"counting the {len(maximal)} workload marginals")
        counts.prefetch(maximal)
        # The max_minutes clock starts after counting: the time counting takes grows with the private row
        # count, and the number of rounds (on the card) must not depend on it.
        start = _clock()
        rho = Fraction(budget.rho)
        round_rho = rho / rounds
        # Every 1-way marginal first, each at the first rounds' sigma (0.9 of a round's rho).
        first = Budget.from_rho(floor_float(round_rho), budget.delta).split([0.1, 0.9])[1].rho
        measurements = measure([(c,) for c in columns], counts, Budget.from_rho(first * d, budget.delta), accountant)
        used = sum((Fraction(c.rho) for c in accountant.charges[-d:]), Fraction(0))
        compression: dict[str, np.ndarray] = {}
        if self.compress:
            compression, measurements = compress(measurements, counts.sizes)
        domain, compressed = compressed_counts(counts, compression)
        answered: dict[Clique, np.ndarray] = {}

        def answer(clique: Clique) -> np.ndarray:
            # Each round scores hundreds of candidates; re-counting them on the compressed domain every round
            # took more time than scoring them.
            if clique not in answered:
                answered[clique] = compressed(clique)
            return answered[clique]

        draw = np.random.default_rng(0)  # which candidates a round scores: public randomness, not the data's
        if self._tree_start(candidates, columns, rounds):
            mark = len(accountant.charges)
            start_budget = Budget.from_rho(floor_float(round_rho * (d - 1)), budget.delta)
            measurements += _tree(columns, domain, measurements, answer, start_budget, accountant)
            used += sum((Fraction(c.rho) for c in accountant.charges[mark:]), Fraction(0))
        model = _pgm.estimate(domain, measurements, _pgm.total_from(measurements), iters=self.iters)
        t, final, excluded, self.time_limited_ = 0, False, 0, False
        while not final:
            if self._out_of_time(start, model) and rho - used >= 2 * round_rho:
                self.time_limited_ = True
                break
            # A batch of rounds selects and measures against the same model, then estimates once: one round a
            # batch while the model is small (an estimate costs little), _BATCH once it is not.
            large = model.size_mb > _LARGE_MB
            picked: list[tuple[Clique, np.ndarray, float]] = []
            project = _Projections(model)  # a candidate's model answer, computed once a batch

            while len(picked) < (_BATCH if large else 1) and not final:
                left = rho - used
                final = left < 2 * round_rho
                t += 1
                to_select, to_measure = Budget.from_rho(floor_float(left if final else round_rho), budget.delta).split(
                    [0.1, 0.9]
                )
                used += Fraction(to_select.rho) + Fraction(to_measure.rho)
                report("aim", t, rounds, f"rho left {float(rho - used):.4f}")
                limit = self.max_model_size * float(used / rho)
                taken = [p[0] for p in picked]
                allowed, excluded = _round_candidates(candidates, model, limit, self.max_candidates, draw, taken)
                if excluded:
                    logger.debug("AIM round %d: model-size limit %.3g MB leaves out %d candidates", t, limit, excluded)
                sigma = gaussian_sigma(to_measure.rho, accountant.sensitivity(1.0))
                clique = _worst_approximated(allowed, answer, project, sigma, to_select, accountant, t)
                measurements += measure([clique], answer, to_measure, accountant)
                picked.append((clique, project(clique), sigma))
            model = _pgm.estimate(
                domain,
                measurements,
                _pgm.total_from(measurements),
                iters=self.iters // _LARGE_STEPS if large else self.iters,
                warm_start=model,
                tol=self.round_tol,
            )
            still = [c for c, before, sigma in picked if _barely_moved(model, c, before, sigma)]
            if still and not final:
                round_rho *= _ANNEAL
                logger.debug("AIM round %d: %s barely moved the model; round budget x%d", t, still, _ANNEAL)
        if self.time_limited_:
            measurements += self._remeasure(
                measurements, answer, Budget.from_rho(floor_float(rho - used), budget.delta), accountant, t
            )
        report("aim", t, t, "estimating the final model")
        model = _pgm.estimate(
            domain,
            measurements,
            _pgm.total_from(measurements),
            iters=self.iters if model.size_mb > _LARGE_MB else self.iters * 5 // 2,
            warm_start=model,
        )
        if excluded:
            logger.warning(
                "AIM's model-size cap of %g MB bound: %d of %d candidate marginals would have made the model "
                "larger and were left out of the last round; raise max_model_size to allow them",
                self.max_model_size,
                excluded,
                len(candidates),
            )
        self.size_capped_ = excluded
        self.rounds_ = t
        return model, measurements, compression

    def _remeasure(
        self,
        measurements: list[NoisyMarginal],
        answer: Callable[[Clique], np.ndarray],
        rest: Budget,
        accountant: Accountant,
        rounds: int,
    ) -> list[NoisyMarginal]:
        """Out of time: the budget left measures every marginal measured so far once more, split evenly (sensitivity
        1 each, zCDP composition: ``rest.rho`` in all). Which marginals were measured is already released, so
        nothing is selected; the model keeps its structure (no new clique to compile or to grow it), and each
        marginal's measurements pool by inverse variance."""
        cliques = list(dict.fromkeys(m.clique for m in measurements))
        logger.info(
            "AIM ran out of time (max_minutes=%g) after %d rounds: the budget left (rho %.4g) measures its %d "
            "marginals again",
            self.max_minutes,
            rounds,
            rest.rho,
            len(cliques),
        )
        report("aim", rounds, rounds, f"out of time: measuring {len(cliques)} marginals again with the budget left")
        return measure(cliques, answer, rest, accountant)

    def _tree_start(self, candidates: Mapping[Clique, float], columns: list[str], rounds: int) -> bool:
        """Whether the rounds start from MST's spanning tree: when asked (``tree``), or by default when the
        table has more than two columns, every pair is a candidate and the rounds leave room for it."""
        d = len(columns)
        if d < 3 or any(pair not in candidates for pair in itertools.combinations(columns, 2)):
            return False
        if self.tree is not None:
            return self.tree
        return rounds >= _TREE_MIN_ROUNDS * d and rounds >= _tree_rounds(d)

    def _out_of_time(self, start: float, model: _pgm.Model) -> bool:
        """Whether a round now would end past ``max_minutes`` with the final estimate: that estimate runs
        2.5 times a round's steps at the latest round's cost per step."""
        if self.max_minutes is None:
            return False
        final_estimate = self.iters * 5 // 2 * model.seconds_per_step
        return _clock() - start + final_estimate >= 60 * self.max_minutes

    def _workload(self, columns: list[str]) -> dict[Clique, float]:
        """The workload as cliques in column order with their weights: the user's, or every 2- and 3-way
        marginal (those holding the target weighted by ``target_weight``)."""
        if self.workload is not None:
            cliques: dict[Clique, float] = {}
            for item, weight in self.workload.items():
                unknown = [c for c in item if c not in columns]
                if unknown or not item or len(set(item)) != len(item):
                    problem = f"unknown column(s) {unknown}" if unknown else "it is empty or repeats a column"
                    raise ParameterError(f"workload marginal {item} cannot be used: {problem}; columns are {columns}")
                clique = tuple(c for c in columns if c in item)
                cliques[clique] = cliques.get(clique, 0.0) + weight
            return cliques
        if self.target_ is not None and self.target_ not in columns:
            raise ParameterError(
                f"target column '{self.target_}' is not among the synthesized columns {columns}; name one of them"
            )
        if len(columns) < 3:
            return {tuple(columns): 1.0}
        if self.target_ is not None:
            # Every triple holding the target is kept; the others are drawn (with a fixed seed) when too many.
            rest = [c for c in columns if c != self.target_]
            pairs = [tuple(c for c in columns if c in (self.target_, a)) for a in rest]
            pairs += list(itertools.combinations(rest, 2))
            triples = [tuple(c for c in columns if c in (self.target_, *ab)) for ab in itertools.combinations(rest, 2)]
            triples += _drawn(list(itertools.combinations(rest, 3)), _MAX_DEFAULT_WORKLOAD - len(triples))
        else:
            pairs = list(itertools.combinations(columns, 2))
            triples = _drawn(list(itertools.combinations(columns, 3)), _MAX_DEFAULT_WORKLOAD)
        cliques = dict.fromkeys(pairs + triples, 1.0)
        if self.target_ is not None:
            holding = [c for c in cliques if self.target_ in c]
            weight = self.target_weight or max(1.0, (len(cliques) - len(holding)) / len(holding))
            cliques.update(dict.fromkeys(holding, weight))
        return cliques


def _drawn(cliques: list[Clique], limit: int) -> list[Clique]:
    """At most ``limit`` of ``cliques``, drawn with a fixed seed (the choice does not look at the data)."""
    if len(cliques) <= limit:
        return cliques
    picked = np.random.default_rng(0).choice(len(cliques), max(limit, 0), replace=False)
    return [cliques[i] for i in sorted(picked)]


def _maximal(cliques: Sequence[Clique]) -> list[Clique]:
    """The cliques not inside another one."""
    return [c for c in cliques if not any(set(c) < set(other) for other in cliques)]


def _candidates(workload: Mapping[Clique, float], columns: list[str]) -> dict[Clique, float]:
    """AIM's candidates: every marginal inside a workload marginal, weighted by its weighted overlap with the
    workload (the paper's sum over workload marginals r of w_r |r & c|)."""
    found: set[Clique] = set()
    for clique in workload:
        for size in range(1, len(clique) + 1):
            found.update(itertools.combinations(clique, size))
    ordered = sorted(found, key=lambda c: (len(c), [columns.index(a) for a in c]))
    # sum_r w_r |r & c| = sum over a in c of the weight of the workload marginals holding a: linear in the
    # candidates rather than candidates x workload (2,500 x 2,900 set intersections on 55 columns)
    holding = dict.fromkeys(columns, 0.0)
    for w, weight in workload.items():
        for a in w:
            holding[a] += weight
    return {c: sum(holding[a] for a in c) for c in ordered}


def default_rounds(columns: int) -> int:
    """AIM's default number of rounds for a table of ``columns`` columns: 16 per column (the paper's) up to
    16 columns (:data:`_MAX_DEFAULT_ROUNDS`); beyond, 256 x 16 / d, at least :data:`_WIDE_ROUNDS` per column."""
    if 16 * columns <= _MAX_DEFAULT_ROUNDS:
        return 16 * columns
    return max(math.ceil(_WIDE_ROUNDS * columns), _MAX_DEFAULT_ROUNDS * 16 // columns)


def _tree_rounds(columns: int) -> float:
    """Rounds' budget the start needs with the tree: the 1-ways (0.9 each), the d - 1 edges and two rounds."""
    return 0.9 * columns + (columns - 1) + 2


def _round_candidates(
    candidates: Mapping[Clique, float],
    model: _pgm.Model,
    limit: float,
    most: int,
    draw: np.random.Generator,
    taken: Sequence[Clique] = (),
) -> tuple[dict[Clique, float], int]:
    """The candidates a round scores, and how many were left out for size.

    A candidate is allowed when the model can take it within ``limit`` MB, or when it lies inside the model's
    cliques (free to re-measure). Up to ``most`` candidates, all are checked; beyond, they are checked in an
    order drawn from ``draw`` (independent of the data) until ``most`` are allowed, so a round's work does
    not grow with the number of candidates.
    """
    cliques = [*model.potentials, *taken]
    keys = [c for c in candidates if c not in taken]
    order = range(len(keys)) if len(keys) <= most else draw.permutation(len(keys))
    allowed: dict[Clique, float] = {}
    excluded = 0
    for i in order:
        clique = keys[i]
        inside = any(set(clique) <= set(c) for c in cliques)
        if inside or (
            math.prod(model.domain[a] for a in clique) * 8 / 2**20 <= limit
            and _pgm.model_size_mb(model.domain, [*cliques, clique]) <= limit
        ):
            allowed[clique] = candidates[clique]
            if len(allowed) == most:
                break
        else:
            excluded += 1
    return allowed, excluded


class _Projections:
    """A model's marginals, each computed once: a batch's rounds score the same candidates against one model."""

    def __init__(self, model: _pgm.Model) -> None:
        self.model = model
        self.cache: dict[Clique, np.ndarray] = {}

    def __call__(self, clique: Clique) -> np.ndarray:
        if clique not in self.cache:
            self.cache[clique] = self.model.project(clique)
        return self.cache[clique]


def _barely_moved(model: _pgm.Model, clique: Clique, before: np.ndarray, sigma: float) -> bool:
    """The paper's annealing test: measuring ``clique`` moved the model's answer by no more (L1) than the
    expected L1 size of its noise, sqrt(2 / pi) sigma per cell (post-processing of noisy answers)."""
    return float(np.abs(model.project(clique) - before).sum()) <= sigma * math.sqrt(2 / math.pi) * before.size


def _tree(
    columns: list[str],
    domain: Mapping[str, int],
    ones: list[NoisyMarginal],
    answer: Callable[[Clique], np.ndarray],
    budget: Budget,
    accountant: Accountant,
) -> list[NoisyMarginal]:
    """MST's maximum spanning tree of 2-way marginals, selected and measured within ``budget``: a tenth selects
    the d - 1 edges (one exponential-mechanism draw each, sensitivity 1, :func:`privsynth.synth.mst._select_tree`)
    and nine tenths measure them (the Gaussian mechanism, sensitivity 1, split evenly), as d - 1 AIM rounds
    would split it. Scores compare with the model of the noisy 1-way marginals only."""
    to_select, to_measure = budget.split([_TREE_SELECT, 1 - _TREE_SELECT])
    first = _pgm.independent(domain, [m for m in ones if len(m.clique) == 1], _pgm.total_from(ones))
    tree = _select_tree(columns, answer, first, to_select, accountant)
    return measure(tree, answer, to_measure, accountant)


def _worst_approximated(
    candidates: Mapping[Clique, float],
    answer: Callable[[Clique], np.ndarray],
    project: Callable[[Clique], np.ndarray],
    sigma: float,
    budget: Budget,
    accountant: Accountant,
    round_number: int,
) -> Clique:
    """AIM's selection: the exponential mechanism on weight x (L1 error - expected noise error).

    The L1 error changes by at most one when a record is added or removed, so a score's sensitivity is its
    weight and the mechanism's is the largest weight.
    """
    keys = list(candidates)
    scores = []
    for clique in keys:
        exact = answer(clique)
        bias = math.sqrt(2 / math.pi) * sigma * exact.size
        scores.append(candidates[clique] * (float(np.abs(exact - project(clique)).sum()) - bias))
    pick = exponential_mechanism(
        np.array(scores),
        sensitivity=float(max(candidates.values())),
        rho=budget.rho,
        accountant=accountant,
        purpose=f"select round {round_number}",
    )
    return keys[pick]
