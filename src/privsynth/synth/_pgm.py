"""Private-PGM estimation through ``mbi``, and the fitted graphical model in plain numpy.

``mbi`` 2 (McKenna, Sheldon and Miklau, "Graphical-model based estimation and inference for differential
privacy", ICML 2019) finds the graphical model whose marginals best fit a set of noisy marginals, by mirror
descent compiled with JAX (small models: the same descent in numpy here, with nothing to compile). Everything
after that step runs in numpy on the model's junction tree (:class:`Model`, in :mod:`._pgm_model`): marginals of any
attribute set (AIM scores hundreds of candidates a round, and mbi compiles one JAX program per out-of-model
marginal), conditioning on evidence, and sampling from a seeded generator. A fitted :class:`Model` holds numpy
arrays only, so it pickles, and sampling needs neither JAX nor the data.

Importing this module switches JAX to 64-bit floats and off its persistent compilation cache, for the whole
process, as mbi asks: in 32 bits its estimates stall on tables of more than about 100,000 rows.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
# mbi compiles many small programs, which a persistent compilation cache only slows down (mbi warns otherwise).
jax.config.update("jax_enable_compilation_cache", False)  # type: ignore[no-untyped-call]

import mbi  # type: ignore[import-untyped]  # noqa: E402  (after the float64 switch: mbi warns on import otherwise)
from mbi import estimation, marginal_loss  # noqa: E402

from privsynth.synth._pgm_model import Clique, Model, _expand, _mbi_domain, _shared  # noqa: E402

__all__ = ["Clique", "Model", "NoisyMarginal", "estimate", "independent", "model_size_mb", "total_from"]

logger = logging.getLogger(__name__)


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
    # One compilation per estimate, with XLA's compiler options (see _COMPILER_OPTIONS); mbi's jitted function
    # would compile the same program with the defaults.
    steps = _ESTIMATOR._multi_step.lower(_ESTIMATOR, state, loss, float(total)).compile(dict(_COMPILER_OPTIONS))
    previous, stalls, blocks = math.inf, 0, 0
    for _ in range(math.ceil(iters / estimation.CALLBACK_EVERY)):
        state = steps(state, loss, float(total))
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
    _release_heap()
    return potentials, blocks, float(state.loss)


def _load_trim() -> Callable[[int], int] | None:
    try:
        return cast("Callable[[int], int]", ctypes.CDLL("libc.so.6").malloc_trim)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _load_trim()


def _release_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    XLA compiles and runs each estimate on its own threads, and glibc keeps what they freed in per-thread arenas.
    AIM on 1M rows in DuckDB (``benchmarks/results/aim_memory_1m.json``): 1,105 MiB resident at its last round
    without the trim, 728 MiB with it (the peak, the compilation of the 13 MB model's steps, is what
    :data:`_COMPILER_OPTIONS` lowers). Trimming after each compiled estimate costs milliseconds."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _maximal(cliques: Sequence[Clique]) -> list[Clique]:
    """The cliques not inside another one (the first of equal ones), in order: the model's potentials."""
    found: list[Clique] = []
    for clique in cliques:
        if not any(set(clique) <= set(other) for other in found):
            found = [other for other in found if not set(other) < set(clique)] + [clique]
    return found


_COMPILER_OPTIONS: Mapping[str, bool] = {"xla_cpu_use_fusion_emitters": False}
"""XLA options for a compiled estimate: XLA's newer CPU fusion emitters took 420 MB of memory to compile the
steps of AIM's 13 MB model (1M rows of nassCDS), the older ones 136 MB, and their programs run as fast; the
compilation was the peak of AIM's memory at 10M rows (``benchmarks/results/aim_memory_1m.json``)."""

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
