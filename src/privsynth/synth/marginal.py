"""MST and AIM: differentially private synthetic data from noisy marginals and a graphical model.

MST: McKenna, Miklau and Sheldon, "Winning the NIST Contest: A scalable and general approach to differentially
private synthetic data", Journal of Privacy and Confidentiality 11(3), 2021. AIM: McKenna, Mullins, Sheldon and
Miklau, "AIM: An Adaptive and Iterative Mechanism for Differentially Private Synthetic Data", PVLDB 15(11), 2022.
Both *select* marginals with the exponential mechanism, *measure* them with Gaussian noise and *estimate* a
graphical model from the noisy answers with Private-PGM (:mod:`privsynth.synth._pgm`), with the budget splits of
the reference code (``mst.py`` and ``aim.py`` in the ``mbi`` repository's examples); synthetic rows are drawn
from the model, which is post-processing.

Around the papers, privsynth adds:

- Data are read only through ``Source.counts`` (one GROUP BY per marginal, run by DuckDB or the database), so
  the same fit works on a frame, a Parquet file larger than memory or a database table. The row count is
  private: it is estimated from the noisy 1-way marginals.
- Column domains are public in the schema (free) or learned under DP from a share of the budget
  (:func:`privsynth.synth.domain.learn_domains`); decoding draws numbers inside their bin, never a midpoint.
- The whole budget is reserved in the ledger before any noise is drawn, so a spent cap fails up front and two
  jobs cannot both overdraw it; every measurement and selection is one ledger row under that reservation.
- ``sample(n, conditions=...)`` is exact: the junction tree is conditioned on the evidence, then sampled.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from privsynth.data.binning import Categories
from privsynth.data.schema import Schema
from privsynth.data.sources import Source
from privsynth.errors import DataError, ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget, check_positive, gaussian_sigma
from privsynth.privacy.mechanisms import exponential_mechanism, gaussian_mechanism
from privsynth.progress import report
from privsynth.synth import _pgm
from privsynth.synth._pgm import Clique, NoisyMarginal
from privsynth.synth.base import Conditions, Synthesizer, register
from privsynth.synth.domain import (
    DEFAULT_BINS,
    NUMERIC_BINS,
    ColumnDomain,
    cells_to_frame,
    domain_column,
    learn_domains,
    needs_budget,
)
from privsynth.synth.dp import FitRecord, open_fit, resolve_budget

__all__ = ["AIM", "MST"]

logger = logging.getLogger(__name__)


_SUPPORT_SIGMAS = 3.0
"""MST merges the values of a column whose noisy count is below this many standard deviations (paper, §4)."""

_ROUND_TOL = 1e-4
"""AIM's estimate in a round stops once 100 mirror-descent steps improve the loss by less than this share of it:
warm-started from the last round's model it usually gets there in a few hundred steps, not ``iters``. The
final estimate runs all its steps. Measured on six nassCDS columns at epsilon 1 (96 rounds, two fits each on a
busy machine): 3-way TVD 0.027 and 0.027 with it, 0.029 and 0.028 with every round running ``iters`` steps."""

_clock = time.perf_counter  # AIM's ``max_minutes`` clock (a test replaces it)

_MAX_DEFAULT_WORKLOAD = 1000
"""AIM's default workload holds every 3-way marginal up to this many (19 columns); wider tables get every
2-way marginal and this many 3-way ones drawn with a fixed seed (the choice does not look at the data)."""


class _MarginalMethod(Synthesizer):
    """What MST and AIM share: the budget, the ledger, the domains, the model and sampling from it.

    ``fit(source, schema, epsilon=..., delta=1e-6, ledger=None)``: ``epsilon`` is required; ``delta`` at most
    :data:`~privsynth.synth.dp.MAX_DELTA`; ``ledger`` a :class:`~privsynth.privacy.Ledger`, a URL, a SQLite path,
    None (the default ledger) or False (none).
    ``preprocessing_share`` of rho learns the domains the schema does not declare public (only spent when
    there are any), ``bins`` cells per numeric column, ``numeric_bins`` ``"quantile"`` (DP quantiles, also
    inside public bounds) or ``"uniform"`` (equal width inside public bounds, free). After fitting:
    ``spends_`` (each charge: mechanism, purpose, rho, delta), ``epsilon_``, ``delta_``, ``rho_``,
    ``rows_estimate_`` (the noisy row count), ``domains_``, ``measurements_`` and ``model_``.
    """

    differentially_private = True

    model_: _pgm.Model
    domains_: dict[str, ColumnDomain]
    compression_: dict[str, np.ndarray]
    measurements_: list[NoisyMarginal]
    spends_: list[dict[str, Any]]
    epsilon_: float
    delta_: float
    rho_: float
    rows_estimate_: float

    def __init__(self, *, preprocessing_share: float, bins: int, numeric_bins: str, iters: int) -> None:
        share = check_positive("preprocessing_share", preprocessing_share)
        if share >= 1:
            raise ParameterError(f"preprocessing_share must be below 1 (a share of the budget), got {share!r}")
        if numeric_bins not in NUMERIC_BINS:
            raise ParameterError(f"numeric_bins must be one of {', '.join(NUMERIC_BINS)}, got {numeric_bins!r}")
        self.preprocessing_share = share
        self.bins = _whole("bins", bins, minimum=2)
        self.numeric_bins = numeric_bins
        self.iters = _whole("iters", iters, minimum=1)

    def _fit(self, source: Source, schema: Schema, *, epsilon: float | None, delta: float | None, ledger: Any) -> None:
        budget = resolve_budget(self.name, epsilon, delta, schema)
        self._check(schema)
        purpose = f"{self.name} fit at epsilon={budget.epsilon:g}, delta={budget.delta:g}"
        with open_fit(budget, ledger, self.dataset_, purpose, content=_content(source, ledger)) as (accountant, _):
            source, schema = self._declare_structure(source, schema, accountant)
            preprocessing = 0.0
            if needs_budget(schema, self.bins, numeric_bins=self.numeric_bins):
                preprocessing = budget.split([self.preprocessing_share, 1 - self.preprocessing_share])[0].rho
            domains = learn_domains(
                source, schema, accountant, rho=preprocessing, bins=self.bins, numeric_bins=self.numeric_bins
            )
            left = _floor(Fraction(budget.rho) - sum((Fraction(c.rho) for c in accountant.charges), Fraction(0)))
            counts = _Counts(source, domains)
            model, measurements, compression = self._run(counts, accountant, Budget.from_rho(left, budget.delta))
        self.model_ = model
        self.domains_ = domains
        self.compression_ = compression
        self.measurements_ = measurements
        self.spends_ = [
            {"mechanism": c.mechanism, "purpose": c.purpose, "rho": c.rho, "delta": c.delta} for c in accountant.charges
        ]
        self.epsilon_, self.delta_, self.rho_ = budget.epsilon, budget.delta, budget.rho
        self.rows_estimate_ = model.total
        self.record_ = FitRecord.of(
            self.name,
            self.get_params(),
            budget=budget,
            accountant=accountant,
            dataset=self.dataset_,
            released={"rows_estimate": round(float(model.total))},
            assumptions=self.assumptions_,
        )
        if budget.delta * model.total >= 1:
            logger.warning(
                "delta=%g is not below 1/n for this table (about %d rows by the noisy count): choose delta below "
                "%.0e for a meaningful guarantee",
                budget.delta,
                model.total,
                10 ** math.floor(math.log10(0.1 / model.total)),
            )

    def _check(self, schema: Schema) -> None:
        """Refuse settings that do not fit these columns, before anything is reserved or spent."""

    def _released_schema(self) -> Schema:
        """The structure plus the domains the fit released (DP outputs or public): what conditions check."""
        return Schema([domain_column(self.domains_[c.name]) for c in self.schema_], target=self.schema_.target)

    @abstractmethod
    def _run(
        self, counts: _Counts, accountant: Accountant, budget: Budget
    ) -> tuple[_pgm.Model, list[NoisyMarginal], dict[str, np.ndarray]]:
        """Spend ``budget`` on selections and measurements; return the model, what was measured (on the
        model's domain) and each compressed column's map from original cell to model cell."""

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        return self._draw(n, {}, rng)

    def _sample_conditional(self, n: int, conditions: Conditions, rng: np.random.Generator) -> pd.DataFrame:
        """Exact conditional sampling: the model conditioned on the condition cells, and the exact values."""
        return self._draw(n, conditions, rng)

    def _draw(self, n: int, conditions: Conditions, rng: np.random.Generator) -> pd.DataFrame:
        columns = list(self.domains_)
        fixed = {c: self.domains_[c].cell_of(v) for c, v in conditions.items()}
        evidence: dict[str, list[int]] = {}
        for column in columns:
            mapping = self.compression_.get(column, np.arange(self.domains_[column].size))
            if column in fixed:
                evidence[column] = [int(mapping[fixed[column]])]
            elif (blank := _blank_cell(self.domains_[column])) is not None:
                # Never draw a cell that decodes to no value (see _blank_cell), unless nothing else is left.
                allowed = sorted(set(mapping[np.arange(len(mapping)) != blank].tolist()))
                if allowed and len(allowed) < int(mapping.max()) + 1:
                    evidence[column] = allowed
        try:
            cells = self.model_.sample(n, rng, evidence)
        except ValueError:
            raise DataError(f"the model gives the conditions {dict(conditions)} probability zero") from None
        for j, column in enumerate(columns):
            if column in fixed:
                cells[:, j] = fixed[column]
            elif column in self.compression_:
                cells[:, j] = _decompress(
                    cells[:, j], self.compression_[column], rng, _blank_cell(self.domains_[column])
                )
        frame = cells_to_frame(self.domains_, cells, rng, columns)
        for column, value in conditions.items():
            frame[column] = _exact(frame[column], value, column, n)
        return frame


@register
class MST(_MarginalMethod):
    """MST: all 1-way marginals, a maximum spanning tree of 2-way marginals, a tree-shaped graphical model.

    A third of the budget measures every 1-way marginal; values measured below 3 sigma are merged into one
    cell; a third selects the tree's d - 1 edges, one exponential-mechanism draw each, scored by how badly the
    1-way model misses each 2-way marginal (L1, sensitivity 1); a third measures the selected 2-way marginals.
    ``iters``: mirror-descent steps of the final estimate (the reference code's 5000 would triple the time
    for no visible change on the bundled tables). With two columns the tree is forced and its budget is
    shared by the two measurements; with one, the 1-way marginal gets it all.
    """

    name = "mst"

    def __init__(
        self,
        *,
        preprocessing_share: float = 0.1,
        bins: int = DEFAULT_BINS,
        numeric_bins: str = "quantile",
        iters: int = 2000,
    ) -> None:
        super().__init__(preprocessing_share=preprocessing_share, bins=bins, numeric_bins=numeric_bins, iters=iters)

    def _run(
        self, counts: _Counts, accountant: Accountant, budget: Budget
    ) -> tuple[_pgm.Model, list[NoisyMarginal], dict[str, np.ndarray]]:
        columns = counts.columns
        d = len(columns)
        steps = 2 * d + 1
        report("mst", 0, steps, "measuring 1-way marginals")
        shares = budget.split([1 / 3, 1 / 3, 1 / 3]) if d > 2 else budget.split([1 / d] * d)
        ones = _measure([(c,) for c in columns], counts, shares[0], accountant)
        total = _pgm.total_from(ones)
        compression, ones = _compress(ones, counts.sizes)
        domain, compressed = _compressed_counts(counts, compression)

        report("mst", d, steps, "selecting the spanning tree")
        if d > 2:
            first = _pgm.independent(domain, ones, total)
            tree = _select_tree(columns, compressed, first, shares[1], accountant)
        else:
            tree = [tuple(columns)] if d == 2 else []
        report("mst", 2 * d - 1, steps, "measuring the tree's 2-way marginals")
        twos = _measure(tree, compressed, shares[-1], accountant) if tree else []
        report("mst", 2 * d, steps, "estimating the model")
        model = _pgm.estimate(domain, ones + twos, total, iters=self.iters)
        report("mst", steps, steps, "done")
        return model, ones + twos, compression


@register
class AIM(_MarginalMethod):
    """AIM: adaptively measure the workload marginals the current model answers worst, until the budget is spent.

    Each round spends 1/rounds of the budget (rounds = 16 d by default), a tenth on selecting a candidate
    (any marginal inside a workload marginal, weighted by its overlap with the workload) and nine tenths on
    measuring it. When a measurement barely moves the model, the round budget is quadrupled (sigma halves);
    when less than two rounds' worth is left, one last round spends the rest. The model may grow to
    ``max_model_size`` MB in proportion to the budget used; candidates that would make it larger are left out
    of that round, and a warning says so when the full cap still kept candidates out at the end.
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
        max_model_size: float = 80.0,
        workload: Sequence[Sequence[str]] | Mapping[Sequence[str], float] | None = None,
        target: str | None = None,
        target_weight: float | None = None,
        compress: bool = True,
        preprocessing_share: float = 0.1,
        bins: int = DEFAULT_BINS,
        numeric_bins: str = "quantile",
        iters: int = 1000,
        round_tol: float = _ROUND_TOL,
        max_minutes: float | None = None,
    ) -> None:
        super().__init__(preprocessing_share=preprocessing_share, bins=bins, numeric_bins=numeric_bins, iters=iters)
        self.round_tol = check_positive("round_tol", round_tol)
        self.max_minutes = None if max_minutes is None else check_positive("max_minutes", max_minutes)
        self.rounds = None if rounds is None else _whole("rounds", rounds, minimum=1)
        self.max_model_size = check_positive("max_model_size", max_model_size)
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
        self._workload(columns)

    def _run(
        self, counts: _Counts, accountant: Accountant, budget: Budget
    ) -> tuple[_pgm.Model, list[NoisyMarginal], dict[str, np.ndarray]]:
        columns = counts.columns
        d = len(columns)
        rounds = self.rounds or 16 * d
        workload = self._workload(columns)
        candidates = _candidates(workload, columns)
        maximal = _maximal(list(workload))
        for done, clique in enumerate(maximal):
            report("aim", 0, rounds, f"counting workload marginal {done + 1} of {len(maximal)}")
            counts(clique)
        # The max_minutes clock starts after counting: the time counting takes grows with the private row
        # count, and the number of rounds (on the card) must not depend on it.
        start = _clock()
        rho = Fraction(budget.rho)
        round_rho = rho / rounds
        # Every 1-way marginal first, each at the first rounds' sigma (0.9 of a round's rho).
        first = Budget.from_rho(_floor(round_rho), budget.delta).split([0.1, 0.9])[1].rho
        measurements = _measure([(c,) for c in columns], counts, Budget.from_rho(first * d, budget.delta), accountant)
        used = sum((Fraction(c.rho) for c in accountant.charges[-d:]), Fraction(0))
        compression: dict[str, np.ndarray] = {}
        if self.compress:
            compression, measurements = _compress(measurements, counts.sizes)
        domain, answer = _compressed_counts(counts, compression)
        model = _pgm.estimate(domain, measurements, _pgm.total_from(measurements), iters=self.iters)
        t, final, excluded, self.time_limited_ = 0, False, 0, False
        while not final:
            left = rho - used
            final = left < 2 * round_rho
            if not final and self._out_of_time(start, model):
                self.time_limited_ = True
                break
            t += 1
            select, measure = Budget.from_rho(_floor(left if final else round_rho), budget.delta).split([0.1, 0.9])
            used += Fraction(select.rho) + Fraction(measure.rho)
            report("aim", t, rounds, f"rho left {float(rho - used):.4f}")
            limit = self.max_model_size * float(used / rho)
            allowed = _within_size(candidates, model, limit)
            excluded = len(candidates) - len(allowed)
            if excluded:
                logger.debug("AIM round %d: model-size limit %.3g MB leaves out %d candidates", t, limit, excluded)
            sigma = gaussian_sigma(measure.rho, 1.0)
            clique = _worst_approximated(allowed, answer, model, sigma, select, accountant, t)
            measurements += _measure([clique], answer, measure, accountant)
            before = model.project(clique)
            model = _pgm.estimate(
                domain,
                measurements,
                _pgm.total_from(measurements),
                iters=self.iters,
                warm_start=model,
                tol=self.round_tol,
            )
            moved = float(np.abs(model.project(clique) - before).sum())
            if not final and moved <= sigma * math.sqrt(2 / math.pi) * before.size:
                round_rho *= 4
                logger.debug("AIM round %d: %s barely moved the model; round budget x4", t, clique)
        if self.time_limited_:
            measurements += self._remeasure(
                measurements, answer, Budget.from_rho(_floor(rho - used), budget.delta), accountant, t
            )
        report("aim", t, t, "estimating the final model")
        model = _pgm.estimate(
            domain, measurements, _pgm.total_from(measurements), iters=self.iters * 5 // 2, warm_start=model
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
        return _measure(cliques, answer, rest, accountant)

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


class _Counts:
    """Exact marginals of the private data, cached for one fit and never released: each goes through a mechanism.

    A marginal inside one already counted is summed from it rather than queried again.
    """

    def __init__(self, source: Source, domains: Mapping[str, ColumnDomain]) -> None:
        self._source = source
        self._domains = domains
        self.columns = list(domains)
        self.sizes = {c: d.size for c, d in domains.items()}
        self._cache: dict[Clique, np.ndarray] = {}

    def __call__(self, clique: Clique) -> np.ndarray:
        if clique in self._cache:
            return self._cache[clique]
        held = [c for c in self._cache if set(clique) <= set(c)]
        if held:
            home = min(held, key=len)
            axes = tuple(i for i, a in enumerate(home) if a not in clique)
            summed = self._cache[home].sum(axis=axes)
            kept = [a for a in home if a in clique]
            table = np.transpose(summed, [kept.index(a) for a in clique])
        else:
            table = self._source.counts(list(clique), [self._domains[c].binning for c in clique], outside="drop")
        self._cache[clique] = table
        return table


def _measure(
    cliques: Sequence[Clique], answer: Callable[[Clique], np.ndarray], budget: Budget, accountant: Accountant
) -> list[NoisyMarginal]:
    """The Gaussian mechanism on each marginal, ``budget`` split evenly between them.

    Sensitivity 1 per marginal: adding or removing a record changes one cell by one. Each costs its share of
    rho, so together they cost ``budget.rho`` (zCDP composition).
    """
    shares = budget.split([1 / len(cliques)] * len(cliques)) if len(cliques) > 1 else (budget,)
    out = []
    for clique, share in zip(cliques, shares, strict=True):
        noisy = gaussian_mechanism(
            answer(clique), sensitivity=1.0, rho=share.rho, accountant=accountant, purpose=_purpose(clique)
        )
        out.append(NoisyMarginal(clique, noisy.ravel().astype(np.float64), gaussian_sigma(share.rho, 1.0)))
    return out


def _purpose(clique: Clique) -> str:
    return f"{len(clique)}-way marginal of {' x '.join(repr(c) for c in clique)}"


def _compress(ones: list[NoisyMarginal], sizes: Mapping[str, int]) -> tuple[dict[str, np.ndarray], list[NoisyMarginal]]:
    """MST's domain compression: values measured below 3 sigma merge into one cell (post-processing).

    The merged cell's measurement is the sum of its noisy counts over sqrt(k), compared with the model's count
    over sqrt(k), so its noise keeps standard deviation sigma.
    """
    compression: dict[str, np.ndarray] = {}
    out = []
    for m in ones:
        (column,) = m.clique
        rare = m.values < _SUPPORT_SIGMAS * m.sigma
        k = int(rare.sum())
        if k < 2:
            out.append(m)
            continue
        kept = int((~rare).sum())
        mapping = np.full(sizes[column], kept, dtype=np.int64)
        mapping[~rare] = np.arange(kept)
        compression[column] = mapping
        scale = 1 / math.sqrt(k)
        values = np.append(m.values[~rare], m.values[rare].sum() * scale)
        weights = np.append(np.ones(kept), scale)
        out.append(NoisyMarginal(m.clique, values, m.sigma, weights))
    return compression, out


def _compressed_counts(
    counts: _Counts, compression: Mapping[str, np.ndarray]
) -> tuple[dict[str, int], Callable[[Clique], np.ndarray]]:
    """The compressed domain sizes, and exact marginals counted on it."""
    domain = {c: int(compression[c].max()) + 1 if c in compression else counts.sizes[c] for c in counts.columns}

    def compressed(clique: Clique) -> np.ndarray:
        return _compress_table(counts(clique), clique, compression, domain)

    return domain, compressed


def _compress_table(
    table: np.ndarray, clique: Clique, compression: Mapping[str, np.ndarray], domain: Mapping[str, int]
) -> np.ndarray:
    """An exact marginal re-counted on the compressed domain (merged cells summed)."""
    if not any(c in compression for c in clique):
        return table
    out = np.zeros(tuple(domain[c] for c in clique), dtype=table.dtype)
    index = [compression[c] if c in compression else np.arange(table.shape[i]) for i, c in enumerate(clique)]
    np.add.at(out, np.ix_(*index), table)
    return out


def _blank_cell(domain: ColumnDomain) -> int | None:
    """The ``other`` cell of a column whose other values were never released: it decodes to no value (a
    missing one), so sampling leaves it out whenever the column has another cell to draw."""
    binning = domain.binning
    if isinstance(binning, Categories) and binning.other_index is not None and not domain.other_values:
        return binning.other_index
    return None


def _decompress(cells: np.ndarray, mapping: np.ndarray, rng: np.random.Generator, blank: int | None) -> np.ndarray:
    """Original cells for model cells: a kept value is itself, the merged cell one of its values uniformly
    (not the ``blank`` cell, which decodes to no value, unless it is the only one)."""
    merged = int(mapping.max())
    members = np.flatnonzero(mapping == merged)
    if blank is not None and len(members) > 1:
        members = members[members != blank]
    kept = np.flatnonzero(mapping != merged)
    out = np.empty_like(cells)
    rare = cells == merged
    out[~rare] = kept[cells[~rare]] if len(kept) else 0
    out[rare] = members[rng.integers(0, len(members), int(rare.sum()))]
    return out


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
    return {c: sum(weight * len(set(c) & set(w)) for w, weight in workload.items()) for c in ordered}


def _within_size(candidates: Mapping[Clique, float], model: _pgm.Model, limit: float) -> dict[Clique, float]:
    """Candidates the model can take within ``limit`` MB, and those inside its cliques (free to re-measure)."""
    cliques = list(model.potentials)
    allowed = {}
    for clique, weight in candidates.items():
        inside = any(set(clique) <= set(c) for c in cliques)
        if inside or (
            math.prod(model.domain[a] for a in clique) * 8 / 2**20 <= limit
            and _pgm.model_size_mb(model.domain, [*cliques, clique]) <= limit
        ):
            allowed[clique] = weight
    return allowed


def _worst_approximated(
    candidates: Mapping[Clique, float],
    answer: Callable[[Clique], np.ndarray],
    model: _pgm.Model,
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
        scores.append(candidates[clique] * (float(np.abs(exact - model.project(clique)).sum()) - bias))
    pick = exponential_mechanism(
        np.array(scores),
        sensitivity=float(max(candidates.values())),
        rho=budget.rho,
        accountant=accountant,
        purpose=f"select round {round_number}",
    )
    return keys[pick]


# ---- budget and ledger -----------------------------------------------------------------------------------------


def _content(source: Source, ledger: Any) -> str | None:
    """The source's content fingerprint for the ledger's "looks like dataset X" hint (the ledger keeps only a
    keyed hash of it); not computed without a ledger."""
    return None if ledger is False else source.fingerprint()


def _floor(value: Fraction) -> float:
    """The largest float not above ``value``, so a share computed from exact arithmetic never overdraws."""
    nearest = float(value)
    return math.nextafter(nearest, 0.0) if Fraction(nearest) > value else nearest


def _whole(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ParameterError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _exact(decoded: pd.Series, value: Any, column: str, n: int) -> pd.Series:
    """The condition value itself for every row, in the decoded column's dtype."""
    try:
        return pd.Series([value] * n, dtype=decoded.dtype)
    except (TypeError, ValueError):
        raise ParameterError(f"the condition {value!r} cannot be stored in '{column}' ({decoded.dtype})") from None
