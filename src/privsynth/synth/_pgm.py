"""Private-PGM estimation through ``mbi``, and the fitted graphical model in plain numpy.

``mbi`` 2 (McKenna, Sheldon and Miklau, "Graphical-model based estimation and inference for differential
privacy", ICML 2019) finds the graphical model whose marginals best fit a set of noisy marginals, by mirror
descent compiled with JAX. Everything after that step runs here, in numpy, on the model's junction tree:
marginals of any attribute set (AIM scores hundreds of candidates a round, and mbi compiles one JAX program per
out-of-model marginal), conditioning on evidence, and sampling from a seeded generator. A fitted :class:`Model`
holds numpy arrays only, so it pickles, and sampling needs neither JAX nor the data.

Importing this module switches JAX to 64-bit floats and off its persistent compilation cache, for the whole
process, as mbi asks: in 32 bits its estimates stall on tables of more than about 100,000 rows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import numpy as np
import opt_einsum  # type: ignore[import-untyped]

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
# mbi compiles many small programs, which a persistent compilation cache only slows down (mbi warns otherwise).
jax.config.update("jax_enable_compilation_cache", False)  # type: ignore[no-untyped-call]

import mbi  # type: ignore[import-untyped]  # noqa: E402  (after the float64 switch: mbi warns on import otherwise)
from mbi import estimation, junction_tree, marginal_loss  # noqa: E402

__all__ = ["Clique", "Model", "NoisyMarginal", "estimate", "independent", "model_size_mb", "total_from"]

logger = logging.getLogger(__name__)

Clique = tuple[str, ...]
Factor = tuple[Clique, np.ndarray]


@dataclass(frozen=True)
class NoisyMarginal:
    """A marginal released with Gaussian noise of standard deviation ``sigma``, flattened in ``clique`` order.

    ``weights`` scale the model's cells before they are compared with ``values`` (MST measures a merged cell
    of k rare values as its count over sqrt(k)); ``None`` is a plain marginal.
    """

    clique: Clique
    values: np.ndarray
    sigma: float
    weights: np.ndarray | None = None


def total_from(measurements: Sequence[NoisyMarginal]) -> float:
    """The number of records, estimated from noisy marginals as their inverse-variance weighted total.

    Only plain marginals count (a weighted one does not sum to the total); post-processing, so free.
    """
    plain = [m for m in measurements if m.weights is None]
    if not plain:
        return 1.0
    sums = np.array([float(np.sum(m.values)) for m in plain])
    variances = np.array([m.sigma**2 * m.values.size for m in plain])
    return max(1.0, float(np.average(sums, weights=1.0 / variances)))


def model_size_mb(domain: Mapping[str, int], cliques: Sequence[Clique]) -> float:
    """Memory of the junction tree a model over ``cliques`` needs, in MB (8 bytes a cell), as AIM counts it.

    The same number as mbi's ``junction_tree.hypothetical_model_size`` (a test checks it), computed on the
    clique graph directly: that function depends on the graph only, and AIM asks it for every candidate in
    every round, where mbi's networkx version took most of a round's time.
    """
    attrs = list(domain)
    neighbours: dict[str, set[str]] = {a: set() for a in attrs}
    for clique in cliques:
        for a in clique:
            neighbours[a].update(b for b in clique if b != a)
    edges = sum(len(n) for n in neighbours.values()) // 2
    if edges and edges == len(attrs) - 1 and _connected(neighbours):
        # A tree: mbi eliminates leaves first, so its maximal cliques are the edges.
        cells = sum(domain[a] * domain[b] for a in attrs for b in neighbours[a] if attrs.index(a) < attrs.index(b))
        return cells * 8 / 2**20
    found: list[frozenset[str]] = []
    left = list(attrs)
    graph = {a: set(n) for a, n in neighbours.items()}
    while left:
        # mbi's greedy order: the attribute whose neighbourhood has the fewest cells, first in domain order on ties
        chosen = min(left, key=lambda a: math.prod(domain[b] for b in graph[a] | {a}))
        group = graph[chosen] | {chosen}
        found.append(frozenset(group))
        for a in graph[chosen]:
            graph[a] |= graph[chosen] - {a}
            graph[a].discard(chosen)
        del graph[chosen]
        left.remove(chosen)
    maximal = {c for c in found if not any(c < other for other in found)}
    return sum(math.prod(domain[a] for a in c) for c in maximal) * 8 / 2**20


def _connected(neighbours: Mapping[str, set[str]]) -> bool:
    start = next(iter(neighbours))
    seen, queue = {start}, [start]
    for node in queue:
        for other in neighbours[node] - seen:
            seen.add(other)
            queue.append(other)
    return len(seen) == len(neighbours)


def estimate(
    domain: Mapping[str, int],
    measurements: Sequence[NoisyMarginal],
    total: float,
    *,
    iters: int,
    warm_start: Model | None = None,
    tol: float | None = None,
) -> Model:
    """The model whose marginals best fit ``measurements`` in inverse-variance weighted least squares.

    Runs mbi's mirror descent (Armijo step sizes) for ``iters`` steps (rounded up to mbi's blocks of 50), from
    ``warm_start``'s potentials when given (their cliques must be covered by the measurements'), with the
    record count fixed to ``total``; with ``tol``, it stops early once two blocks of 50 steps in a row improve
    the loss by at most ``tol`` of it (mbi's own ``tol`` rule), which a warm start often meets within a few
    blocks. Small models (up to :data:`NUMPY_MAX_MB`) descend in numpy (:func:`_descend`), larger ones by mbi's
    compiled steps (:func:`_descend_jax`), driven here rather than through mbi's ``estimate`` loop, whose
    initialisation and final marginals compile dozens of small XLA programs for every new model structure.
    Repeated measurements of one marginal enter as their inverse-variance weighted mean, which changes the loss
    by a constant only. Post-processing of the noisy measurements: no privacy cost.
    """
    pooled = _pooled(measurements)
    cliques = _maximal([m.clique for m in pooled])
    shapes = {cl: tuple(domain[a] for a in cl) for cl in cliques}
    tables = {cl: np.zeros(shape) for cl, shape in shapes.items()}
    if warm_start is not None:
        for clique, values in warm_start.potentials.items():
            home = min((c for c in tables if set(clique) <= set(c)), key=lambda c: math.prod(shapes[c]))
            tables[home] = tables[home] + _expand((clique, values), home)
    start = time.perf_counter()
    size = model_size_mb(domain, cliques)
    if size <= NUMPY_MAX_MB:
        potentials, blocks, loss = _descend(domain, pooled, total, tables, iters=iters, tol=tol)
    else:
        potentials, blocks, loss = _descend_jax(domain, pooled, total, tables, iters=iters, tol=tol)
    logger.debug(
        "estimate (%s): %d cliques, %d cells, %d blocks of %d steps, loss %.6g, %.1f s",
        "numpy" if size <= NUMPY_MAX_MB else "jax",
        len(shapes),
        sum(math.prod(s) for s in shapes.values()),
        blocks,
        estimation.CALLBACK_EVERY,
        loss,
        time.perf_counter() - start,
    )
    model = Model(dict(domain), potentials, float(total))
    model.seconds_per_step = (time.perf_counter() - start) / (blocks * estimation.CALLBACK_EVERY)
    return model


NUMPY_MAX_MB = 1.0
"""Models whose junction tree holds up to this many MB are estimated in numpy, larger ones by mbi's compiled JAX
steps. AIM meets a new model structure every round, and compiling one costs seconds (90% of an AIM fit on nassCDS
was compilation), while a numpy step on a small model costs a millisecond or two. AIM's rounds on nassCDS,
replayed (1,000 steps, CPU seconds, numpy vs compiled): 0.63 vs 5.4 at 0.02 MB, 2.6 vs 8.9 at 0.43 MB; on a
1.5 MB model of three 64,000-cell cliques a numpy step cost 42 ms against a compiled step's 3 ms, so from about
a megabyte a compilation pays for itself within a round (``benchmarks/results/aim_speed.json``)."""


def _descend(
    domain: Mapping[str, int],
    measurements: Sequence[NoisyMarginal],
    total: float,
    tables: Mapping[Clique, np.ndarray],
    *,
    iters: int,
    tol: float | None,
) -> tuple[dict[Clique, np.ndarray], int, float]:
    """mbi's mirror descent with Armijo step sizes (``MirrorDescent._step``), in numpy on the junction tree.

    The same iteration as the compiled one: marginals from the potentials (message passing), the loss
    sum 0.5 ((w x - y) / sigma)^2 and its gradient in the marginals, a step of size alpha on the potentials,
    kept (and alpha x 1.01) when the loss falls by at least half the linear prediction, else dropped (alpha / 2);
    alpha starts at 2 / (L total) with mbi's Lipschitz bound L. The accepted step's marginals are kept, so a step
    costs one calibration where the compiled one runs two. Returns the potentials, the blocks of 50 steps run
    and the last loss.
    """
    cliques = list(tables)
    shapes = {c: tables[c].shape for c in cliques}
    routed = []
    blocks_l: dict[Clique, float] = {}
    for m in measurements:
        home = min((c for c in cliques if set(m.clique) <= set(c)), key=lambda c: math.prod(shapes[c]))
        shape = tuple(domain[a] for a in m.clique)
        weights = None if m.weights is None else np.asarray(m.weights, dtype=np.float64).reshape(shape)
        values = np.asarray(m.values, dtype=np.float64).reshape(shape)
        down, back = _Reshape(home, m.clique, domain), _Reshape(m.clique, home, domain)
        routed.append((home, down, back, values, weights, m.sigma))
        norm = 1.0 if weights is None else float(np.max(weights**2))
        blocks_l[home] = blocks_l.get(home, 0.0) + norm / m.sigma**2 * math.prod(shapes[home]) / math.prod(shape)
    alpha = 2.0 / (max(blocks_l.values()) * total)
    calibrate = _Calibration(Model(domain, tables, total), cliques)

    def marginals(theta: dict[Clique, np.ndarray]) -> dict[Clique, np.ndarray]:
        return {c: total * p for c, p in calibrate(theta).items()}

    def loss_and_gradient(mu: dict[Clique, np.ndarray]) -> tuple[float, dict[Clique, np.ndarray]]:
        loss = 0.0
        gradient = {c: np.zeros(shapes[c]) for c in cliques}
        for home, down, back, values, weights, sigma in routed:
            fitted = down.sum(mu[home])
            residual = ((fitted if weights is None else weights * fitted) - values) / sigma
            loss += 0.5 * float(np.vdot(residual, residual))
            slope = residual / sigma if weights is None else weights * residual / sigma
            gradient[home] = gradient[home] + back.expand(slope)
        return loss, gradient

    theta = dict(tables)
    mu = marginals(theta)
    loss, gradient = loss_and_gradient(mu)
    previous, stalls, blocks = math.inf, 0, 0
    for _ in range(math.ceil(iters / estimation.CALLBACK_EVERY)):
        for _ in range(estimation.CALLBACK_EVERY):
            trial = {c: theta[c] - alpha * gradient[c] for c in cliques}
            trial_mu = marginals(trial)
            trial_loss, trial_gradient = loss_and_gradient(trial_mu)
            predicted = sum(float(np.vdot(gradient[c], mu[c] - trial_mu[c])) for c in cliques)
            if loss - trial_loss >= 0.5 * alpha * predicted:
                theta, mu, loss, gradient = trial, trial_mu, trial_loss, trial_gradient
                alpha *= 1.01
            else:
                alpha *= 0.5
        blocks += 1
        if tol is not None:
            stalls = stalls + 1 if previous - loss <= tol * max(abs(loss), 1.0) else 0
            previous = loss
            if stalls >= _PATIENCE:
                break
    return theta, blocks, loss


class _Reshape:
    """A table over ``source`` summed onto ``target``'s attributes (in ``target``'s order), or, for a
    ``source`` inside ``target``, laid out to broadcast against a table over ``target``: the axes worked out
    once, since a descent applies the same reshapes thousands of times."""

    def __init__(self, source: Clique, target: Clique, domain: Mapping[str, int]) -> None:
        self.axes = tuple(i for i, a in enumerate(source) if a not in target)
        kept = [a for a in source if a in target]
        inside = [a for a in target if a in source]
        self.order = tuple(kept.index(a) for a in inside)
        self.identity = self.order == tuple(range(len(self.order)))
        self.shape = tuple(domain[a] if a in source else 1 for a in target)
        self.reduced = tuple(domain[a] for a in kept)

    def sum(self, values: np.ndarray) -> np.ndarray:
        out = values.sum(axis=self.axes) if self.axes else values
        return out if self.identity else np.transpose(out, self.order)

    def logsumexp(self, values: np.ndarray) -> np.ndarray:
        """log(sum(exp(values))) onto the target, for finite ``values`` (a descent's potentials are)."""
        if not self.axes:
            out = values
        else:
            peak = values.max(axis=self.axes, keepdims=True)
            out = (np.log(np.exp(values - peak).sum(axis=self.axes, keepdims=True)) + peak).reshape(self.reduced)
        return out if self.identity else np.transpose(out, self.order)

    def expand(self, values: np.ndarray) -> np.ndarray:
        return (values if self.identity else np.transpose(values, self.order)).reshape(self.shape)


class _Calibration:
    """:meth:`Model._calibrate` (no evidence) for one junction tree, with every reshape worked out once: the
    probability tables of ``cliques`` for any log-potentials over the tree's potentials' cliques."""

    def __init__(self, tree: Model, cliques: Sequence[Clique]) -> None:
        self.nodes = tree.cliques
        self.shapes = {n: tuple(tree.domain[a] for a in n) for n in self.nodes}
        homes = {c: min((n for n in self.nodes if set(c) <= set(n)), key=tree._size) for c in tree.potentials}
        self.adds = [(c, homes[c], _Reshape(c, homes[c], tree.domain)) for c in tree.potentials]
        self.order = tree._order
        self.children: dict[Clique, list[Clique]] = {n: [] for n in self.nodes}
        for node, parent in self.order:
            if parent is not None:
                self.children[parent].append(node)
        d = tree.domain
        # message node -> parent: reduce node onto the separator (node's order), then lay out in the parent
        self.up = {
            n: (_Reshape(n, _shared(n, p), d), _Reshape(_shared(n, p), p, d)) for n, p in self.order if p is not None
        }
        # message parent -> node: reduce parent onto the separator (parent's order), then lay out in the node
        self.down = {
            n: (_Reshape(p, _shared(p, n), d), _Reshape(_shared(p, n), n, d)) for n, p in self.order if p is not None
        }
        self.out = [(c, min((n for n in self.nodes if set(c) <= set(n)), key=tree._size)) for c in cliques]
        self.reduce = {c: _Reshape(n, c, d) for c, n in self.out}

    def __call__(self, potentials: Mapping[Clique, np.ndarray]) -> dict[Clique, np.ndarray]:
        log = {n: np.zeros(shape) for n, shape in self.shapes.items()}
        for clique, home, reshape in self.adds:
            log[home] = log[home] + reshape.expand(potentials[clique])
        up: dict[Clique, np.ndarray] = {}
        for node, parent in reversed(self.order):
            if parent is not None:
                belief = log[node]
                for child in self.children[node]:
                    belief = belief + up[child]
                reduce, lay = self.up[node]
                up[node] = lay.expand(reduce.logsumexp(belief))
        marginals: dict[Clique, np.ndarray] = {}
        down: dict[Clique, np.ndarray] = {}
        for node, parent in self.order:
            belief = log[node] if parent is None else log[node] + down[node]
            for child in self.children[node]:
                belief = belief + up[child]
            for child in self.children[node]:
                reduce, lay = self.down[child]
                down[child] = lay.expand(reduce.logsumexp(belief - up[child]))
            peak = belief.max()
            probabilities = np.exp(belief - peak)
            marginals[node] = probabilities / probabilities.sum()
        return {c: self.reduce[c].sum(marginals[n]) for c, n in self.out}


def _descend_jax(
    domain: Mapping[str, int],
    measurements: Sequence[NoisyMarginal],
    total: float,
    tables: Mapping[Clique, np.ndarray],
    *,
    iters: int,
    tol: float | None,
) -> tuple[dict[Clique, np.ndarray], int, float]:
    """The same descent by mbi's compiled ``MirrorDescent`` steps (one XLA program per model structure)."""
    space = _mbi_domain(domain)
    linear = [
        mbi.LinearMeasurement(
            np.asarray(m.values, dtype=np.float64),
            m.clique,
            float(m.sigma),
            query=mbi.WeightedQuery(np.asarray(m.weights)) if m.weights is not None else mbi.DatavectorQuery(),
        )
        for m in measurements
    ]
    loss = marginal_loss.from_linear_measurements(linear, space)
    shapes = {cl: tuple(domain[a] for a in cl) for cl in loss.cliques}
    state = estimation.MirrorDescentState(
        mu=_clique_vector(space, {cl: np.zeros(shape) for cl, shape in shapes.items()}),
        potentials=_clique_vector(space, {cl: tables[tuple(cl)] for cl in shapes}),
        alpha=2.0 / (loss.lipschitz * total),
        loss=np.float64(0.0),
    )
    previous, stalls, blocks = math.inf, 0, 0
    for _ in range(math.ceil(iters / estimation.CALLBACK_EVERY)):
        state = _ESTIMATOR._multi_step(state, loss, float(total))
        blocks += 1
        if tol is not None:
            current = float(state.loss)
            stalls = stalls + 1 if previous - current <= tol * max(abs(current), 1.0) else 0
            previous = current
            if stalls >= _PATIENCE:
                break
    fitted = state.potentials
    potentials = {tuple(cl): np.asarray(fitted[cl].values, dtype=np.float64) for cl in fitted.cliques}
    # Every new model structure compiles new XLA programs, and each keeps memory mappings until its cache entry
    # goes: about 2,500 per AIM fit on nafld1, so that a long AIM run or a worker fitting job after job reached
    # the kernel's 65,530 mappings and died with "LLVM compilation error: Cannot allocate memory". A structure
    # is not met again after its estimate (the next one adds a clique), so dropping the caches costs nothing.
    jax.clear_caches()  # type: ignore[no-untyped-call]
    return potentials, blocks, float(state.loss)


def _maximal(cliques: Sequence[Clique]) -> list[Clique]:
    """The cliques not inside another one (the first of equal ones), in order: the model's potentials."""
    found: list[Clique] = []
    for clique in cliques:
        if not any(set(clique) <= set(other) for other in found):
            found = [other for other in found if not set(other) < set(clique)] + [clique]
    return found


_ESTIMATOR = estimation.MirrorDescent()
_PATIENCE = 2  # blocks in a row without progress before ``tol`` stops the descent (mbi's default patience)


def _clique_vector(space: mbi.Domain, tables: Mapping[Clique, np.ndarray]) -> mbi.CliqueVector:
    factors = {cl: mbi.Factor(space.project(cl), np.asarray(values, dtype=np.float64)) for cl, values in tables.items()}
    return mbi.CliqueVector(space, list(factors), factors)


def independent(domain: Mapping[str, int], measurements: Sequence[NoisyMarginal], total: float) -> Model:
    """The model that :func:`estimate` converges to from 1-way measurements alone, solved directly.

    With only 1-way marginals the least-squares problem separates by column: each estimate is the (weighted)
    projection of its noisy marginal onto the non-negative vectors summing to ``total``, and the model is
    their product. Solving it in numpy spares MST's selection step an XLA compilation.
    """
    potentials: dict[Clique, np.ndarray] = {}
    for m in _pooled(measurements):
        if len(m.clique) != 1:
            raise ValueError(f"independent() takes 1-way measurements only, got {m.clique}")
        weights = np.ones(m.values.size) if m.weights is None else np.asarray(m.weights, dtype=np.float64)
        fitted = _simplex_projection(m.values / weights, weights**2, total)
        potentials[m.clique] = np.log(np.maximum(fitted / total, 1e-300))
    for attr in domain:
        potentials.setdefault((attr,), np.zeros(domain[attr]))
    return Model(dict(domain), potentials, float(total))


def _simplex_projection(target: np.ndarray, weights: np.ndarray, total: float) -> np.ndarray:
    """argmin sum w (x - target)^2 over x >= 0 with sum x = total: x = max(0, target - t / w) for the t that
    makes it sum to ``total`` (found by bisection; the sum decreases in t)."""
    low = float(np.min(weights * (target - total)))
    high = float(np.max(weights * target))
    for _ in range(200):
        middle = (low + high) / 2
        if np.maximum(target - middle / weights, 0.0).sum() > total:
            low = middle
        else:
            high = middle
    fitted = np.maximum(target - high / weights, 0.0)
    return fitted * (total / fitted.sum()) if fitted.sum() > 0 else np.full(target.size, total / target.size)


def _pooled(measurements: Sequence[NoisyMarginal]) -> list[NoisyMarginal]:
    """One measurement per marginal: repeats replaced by their inverse-variance weighted mean."""
    groups: dict[tuple[Clique, bool], list[NoisyMarginal]] = {}
    for m in measurements:
        groups.setdefault((m.clique, m.weights is None), []).append(m)
    pooled = []
    for group in groups.values():
        if len(group) == 1 or group[0].weights is not None:
            pooled += group
            continue
        precision = np.array([1 / m.sigma**2 for m in group])
        values = sum(p * m.values for p, m in zip(precision, group, strict=True)) / precision.sum()
        pooled.append(NoisyMarginal(group[0].clique, np.asarray(values), float(precision.sum() ** -0.5)))
    return pooled


def _mbi_domain(domain: Mapping[str, int]) -> mbi.Domain:
    return mbi.Domain(tuple(domain), tuple(int(n) for n in domain.values()))


class Model:
    """A graphical model: log-potentials over cliques, calibrated on its junction tree.

    ``potentials`` are mbi's (log-space tables over the estimated cliques, axes in clique order); ``total`` is
    the (noisy) number of records the marginals sum to. Marginals, conditionals and samples are exact for the
    distribution the potentials define.
    """

    seconds_per_step = 0.0
    """Wall time of one mirror-descent step when :func:`estimate` made the model (0 for others)."""

    def __init__(self, domain: Mapping[str, int], potentials: Mapping[Clique, np.ndarray], total: float) -> None:
        self.domain = dict(domain)
        self.potentials = dict(potentials)
        self.total = total
        tree, _ = junction_tree.make_junction_tree(_mbi_domain(self.domain), list(self.potentials))
        self.cliques: list[Clique] = [tuple(c) for c in tree.nodes]
        self.edges: list[tuple[Clique, Clique]] = [(tuple(a), tuple(b)) for a, b in tree.edges]
        self._order = _rooted(self.cliques, self.edges)
        self.marginals = self._calibrate({})

    @property
    def size_mb(self) -> float:
        """Memory of the junction tree's tables, in MB."""
        return sum(self._size(c) for c in self.cliques) * 8 / 2**20

    def _size(self, clique: Clique) -> int:
        return math.prod(self.domain[a] for a in clique)

    def project(self, attrs: Sequence[str]) -> np.ndarray:
        """The marginal over ``attrs`` (axes in that order), scaled to sum to the total."""
        attrs = tuple(attrs)
        return self.total * _transpose(self._probabilities(attrs), attrs)[1]

    def sample(
        self, n: int, rng: np.random.Generator, evidence: Mapping[str, Sequence[int]] | None = None
    ) -> np.ndarray:
        """``n`` records as cell indices, shape (n, attributes in domain order), drawn given ``evidence``.

        ``evidence`` restricts attributes to some of their cells (one cell fixes the attribute); every
        attribute is drawn from the model's distribution conditioned on it (the junction tree is recalibrated
        with the evidence, then sampled root to leaves).
        """
        marginals = self.marginals if not evidence else self._calibrate(evidence)
        drawn: dict[str, np.ndarray] = {}
        for node, parent in self._order:
            table = marginals[node]
            known = tuple(a for a in node if a in drawn) if parent is not None else ()
            fresh = tuple(a for a in node if a not in known)
            if not fresh:
                continue
            table = _transpose((node, table), known + fresh)[1]
            rows = math.prod(self.domain[a] for a in known)
            table = table.reshape(rows, -1)
            parents = (
                np.ravel_multi_index(tuple(drawn[a] for a in known), tuple(self.domain[a] for a in known))
                if known
                else np.zeros(n, dtype=np.int64)
            )
            picks = _draw_rows(table, parents, rng)
            for attr, values in zip(fresh, np.unravel_index(picks, tuple(self.domain[a] for a in fresh)), strict=True):
                drawn[attr] = values.astype(np.int64)
        return np.column_stack([drawn[a] for a in self.domain])

    def _calibrate(self, evidence: Mapping[str, Sequence[int]]) -> dict[Clique, np.ndarray]:
        """Probability tables of the maximal cliques (Shafer-Shenoy message passing in log space)."""
        log = {c: np.zeros(tuple(self.domain[a] for a in c)) for c in self.cliques}
        homes: dict[Clique, Clique] = self.__dict__.setdefault("_homes", {})
        for clique, values in self.potentials.items():
            if clique not in homes:
                homes[clique] = min((c for c in self.cliques if set(clique) <= set(c)), key=self._size)
            log[homes[clique]] = log[homes[clique]] + _expand((clique, values), homes[clique])
        for attr, cells in evidence.items():
            home = next(c for c in self.cliques if attr in c)
            mask = np.full(self.domain[attr], -np.inf)
            mask[np.asarray(cells, dtype=np.int64)] = 0.0
            log[home] = log[home] + _expand(((attr,), mask), home)
        children: dict[Clique, list[Clique]] = {c: [] for c in self.cliques}
        for node, parent in self._order:
            if parent is not None:
                children[parent].append(node)
        up: dict[Clique, Factor] = {}
        for node, parent in reversed(self._order):
            if parent is not None:
                belief = _sum_log([log[node], *(_expand(up[c], node) for c in children[node])])
                up[node] = _logsumexp_to((node, belief), _shared(node, parent))
        down: dict[Clique, Factor] = {}
        marginals: dict[Clique, np.ndarray] = {}
        for node, parent in self._order:
            incoming = [_expand(down[node], node)] if parent is not None else []
            for child in children[node]:
                others = [_expand(up[c], node) for c in children[node] if c != child]
                down[child] = _logsumexp_to((node, _sum_log([log[node], *incoming, *others])), _shared(node, child))
            belief = _sum_log([log[node], *incoming, *(_expand(up[c], node) for c in children[node])])
            norm = _logsumexp(belief, tuple(range(belief.ndim)))
            if not np.isfinite(norm):
                raise ValueError("the evidence has probability zero under the model")
            marginals[node] = np.exp(belief - norm)
        return marginals

    def _probabilities(self, attrs: Clique) -> Factor:
        """The distribution of ``attrs``, summed from one clique or carried along the tree between cliques."""
        covering = [c for c in self.cliques if set(attrs) <= set(c)]
        if covering:
            home = min(covering, key=self._size)
            return _sum_to((home, self.marginals[home]), attrs)
        components = self._components()
        result: Factor = ((), np.ones(()))
        for members in components:
            inside = tuple(a for a in attrs if any(a in c for c in members))
            if inside:
                part = self._within_component(inside, members)
                result = (result[0] + part[0], np.multiply.outer(result[1], part[1]))
        return result

    def _within_component(self, attrs: Clique, members: list[Clique]) -> Factor:
        """Exact marginal of ``attrs`` inside one tree: the joint of the smallest subtree holding them, as P(root)
        times P(node | separator) down the subtree, contracted onto ``attrs`` by opt_einsum in the order it finds
        cheapest. (Summing node by node from the leaves built tables over every wanted attribute and separator at
        once: 85% of AIM's time on a 10M-row table, where the model's cliques reach 6 attributes.)"""
        chosen: list[Clique] = []
        left = set(attrs)
        while left:
            best = max(members, key=lambda c: (len(left & set(c)), -self._size(c)))
            chosen.append(best)
            left -= set(best)
        neighbours: dict[Clique, list[Clique]] = {c: [] for c in members}
        for a, b in self.edges:
            if a in neighbours:
                neighbours[a].append(b)
                neighbours[b].append(a)
        root = chosen[0]
        parent_of: dict[Clique, Clique | None] = {root: None}
        queue = [root]
        for node in queue:
            for other in neighbours[node]:
                if other not in parent_of:
                    parent_of[other] = node
                    queue.append(other)
        keep: set[Clique] = set()
        for target in chosen:
            step: Clique | None = target
            while step is not None and step not in keep:
                keep.add(step)
                step = parent_of[step]
        factors: list[Factor] = []
        for node in (c for c in queue if c in keep):
            parent = parent_of[node]
            factors.append((node, self.marginals[node] if parent is None else self._conditional(node, parent)))
        return attrs, _contract(factors, attrs)

    def _conditional(self, node: Clique, parent: Clique) -> np.ndarray:
        """P(node | its separator with ``parent``), cached per edge direction.

        Divided in one step: a cell's probability is at most its separator's, so the ratio stays in [0, 1] where
        1 / P(separator) alone overflows for near-impossible cells."""
        cache: dict[tuple[Clique, Clique], np.ndarray] = self.__dict__.setdefault("_conditionals", {})
        if (node, parent) in cache:
            return cache[node, parent]
        table = self.marginals[node]
        below = _expand(_sum_to((node, table), _shared(node, parent)), node)
        cache[node, parent] = np.asarray(np.divide(table, below, out=np.zeros_like(table), where=below > 0))
        return cache[node, parent]

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the caches of conditionals and of potentials' homes (rebuilt on use)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_conditionals", "_homes")}

    def _components(self) -> list[list[Clique]]:
        """The junction forest's trees, as lists of cliques."""
        found: list[list[Clique]] = []
        owner: dict[Clique, int] = {}
        for node, parent in self._order:
            if parent is None:
                owner[node] = len(found)
                found.append([node])
            else:
                owner[node] = owner[parent]
                found[owner[node]].append(node)
        return found


def _rooted(nodes: list[Clique], edges: list[tuple[Clique, Clique]]) -> list[tuple[Clique, Clique | None]]:
    """Breadth-first (node, parent) pairs over every tree of the forest, roots first with parent None."""
    neighbours: dict[Clique, list[Clique]] = {c: [] for c in nodes}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    order: list[tuple[Clique, Clique | None]] = []
    seen: set[Clique] = set()
    for root in nodes:
        if root in seen:
            continue
        seen.add(root)
        queue: list[tuple[Clique, Clique | None]] = [(root, None)]
        for node, parent in queue:
            order.append((node, parent))
            for other in neighbours[node]:
                if other not in seen:
                    seen.add(other)
                    queue.append((other, node))
    return order


def _shared(a: Clique, b: Clique) -> Clique:
    return tuple(x for x in a if x in b)


def _transpose(factor: Factor, attrs: Clique) -> Factor:
    """The factor with its axes in the order of ``attrs`` (the same attributes)."""
    names, values = factor
    return attrs, np.transpose(values, tuple(names.index(a) for a in attrs))


def _expand(factor: Factor, target: Clique) -> np.ndarray:
    """The factor's table broadcastable against a table over ``target`` (a superset of its attributes)."""
    names, values = factor
    ordered = tuple(a for a in target if a in names)
    values = _transpose(factor, ordered)[1]
    shape = tuple(values.shape[ordered.index(a)] if a in names else 1 for a in target)
    return values.reshape(shape)


def _sum_log(tables: list[np.ndarray]) -> np.ndarray:
    total = tables[0]
    for table in tables[1:]:
        total = total + table
    return total


def _logsumexp(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """log(sum(exp(values))) over ``axes``; -inf where every term is -inf (an impossible configuration)."""
    if not axes:
        return values
    peak = np.max(values, axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(values - peak), axis=axes, keepdims=True)) + peak
    return np.asarray(np.squeeze(out, axis=axes))


def _logsumexp_to(factor: Factor, keep: Clique) -> Factor:
    names, values = factor
    axes = tuple(i for i, a in enumerate(names) if a not in keep)
    return tuple(a for a in names if a in keep), _logsumexp(values, axes)


def _sum_to(factor: Factor, keep: Clique) -> Factor:
    names, values = factor
    axes = tuple(i for i, a in enumerate(names) if a not in keep)
    return tuple(a for a in names if a in keep), values.sum(axis=axes) if axes else values


def _contract(factors: list[Factor], keep: Clique) -> np.ndarray:
    """The product of ``factors`` summed onto ``keep`` (axes in that order), without building the product."""
    index = {a: i for i, a in enumerate(dict.fromkeys(a for names, _ in factors for a in names))}
    operands: list[object] = []
    for names, values in factors:
        operands += [values, [index[a] for a in names]]
    return np.asarray(opt_einsum.contract(*operands, [index[a] for a in keep], optimize="auto"))


def _draw_rows(table: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each entry of ``rows``, a column of ``table`` drawn with probability proportional to that row.

    Rows with no mass are uniform. One searchsorted over the rows' CDFs laid end to end (row r spans [r, r+1])
    draws every record at once, whatever the number of rows.
    """
    width = table.shape[1]
    mass = table.sum(axis=1, keepdims=True)
    probabilities = np.where(mass > 0, table / np.where(mass > 0, mass, 1.0), 1.0 / width)
    cdf = np.cumsum(probabilities, axis=1)
    cdf[:, -1] = 1.0
    laid = (np.arange(table.shape[0])[:, None] + cdf).ravel()
    position = np.searchsorted(laid, rows + rng.random(len(rows)), side="right")
    return np.asarray(np.clip(position - rows * width, 0, width - 1))
