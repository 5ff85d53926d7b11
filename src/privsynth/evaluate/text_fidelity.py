"""Fidelity of synthetic text: Frechet and kernel distances of embeddings, k-NN precision and recall, a detection
AUC and the word-count KS distance, each beside what the real holdout scores (see :mod:`privsynth.evaluate.text`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from privsynth.evaluate._stats import BOOTSTRAP, auc, centred_interval, nearest
from privsynth.evaluate.metric import Metric, metric
from privsynth.evaluate.text_inputs import K_NEAREST, MAX_TEXTS, NEEDS_HOLDOUT, PLOT_POINTS, Embedded, Sizes


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussian fits of two embedding sets.

    The trace of the matrix square root is taken as the sum of the square roots of the eigenvalues of the
    symmetric ``S_a^(1/2) S_b S_a^(1/2)``, which has the same eigenvalues as ``S_a S_b`` and no complex round-off.
    """
    mu = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace = float(np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sqrt(np.clip(cross, 0, None)).sum())
    return float(mu @ mu) + max(trace, 0.0)


def kernel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel ``(x.y / d + 1)^3`` (KID), times 1000.

    About 0 for two samples of one distribution (it can be slightly negative), larger the further apart. The
    kernel sums run in blocks, so memory stays small; time grows with ``len(a) * len(b)``.
    """
    n, m = len(a), len(b)
    within_a = _kernel_sum(a, a) - float(((np.einsum("ij,ij->i", a, a) / a.shape[1] + 1.0) ** 3).sum())
    within_b = _kernel_sum(b, b) - float(((np.einsum("ij,ij->i", b, b) / b.shape[1] + 1.0) ** 3).sum())
    mmd = within_a / (n * (n - 1)) + within_b / (m * (m - 1)) - 2.0 * _kernel_sum(a, b) / (n * m)
    return 1000.0 * mmd


def _kernel_sum(a: np.ndarray, b: np.ndarray) -> float:
    total, step = 0.0, max(1, 4_000_000 // max(len(b), 1))
    for start in range(0, len(a), step):
        total += float(((a[start : start + step] @ b.T / a.shape[1] + 1.0) ** 3).sum())
    return total


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = K_NEAREST) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) on k-NN manifolds.

    Each point's ball reaches its ``k``-th nearest neighbour within its own set. Precision is the share of
    synthetic points inside some real ball, recall the share of real points inside some synthetic ball.
    """
    real_radii = nearest(real, real, k + 1)[:, k]
    synthetic_radii = nearest(synthetic, synthetic, k + 1)[:, k]
    return _covered(synthetic, real, real_radii), _covered(real, synthetic, synthetic_radii)


def _covered(queries: np.ndarray, reference: np.ndarray, radii: np.ndarray) -> float:
    inside = np.zeros(len(queries), dtype=bool)
    step = max(1, 4_000_000 // max(len(reference), 1))
    squared_radii = radii**2
    for start in range(0, len(queries), step):
        block = queries[start : start + step]
        d2 = (block * block).sum(1)[:, None] + (reference * reference).sum(1)[None, :] - 2.0 * block @ reference.T
        inside[start : start + step] = (d2 <= squared_radii[None, :] + 1e-9).any(axis=1)
    return float(inside.mean())


def fidelity(
    emb: Embedded,
    real_texts: Sequence[str],
    synthetic_texts: Sequence[str],
    holdout_texts: Sequence[str] | None,
    sizes: Sizes,
    rng: np.random.Generator,
    seed: int,
) -> tuple[list[Metric], dict[str, Any]]:
    n = min(len(emb.synthetic), len(emb.real), len(emb.synthetic if emb.holdout is None else emb.holdout))
    synthetic = emb.synthetic[rng.choice(len(emb.synthetic), n, replace=False)]
    holdout = None if emb.holdout is None else emb.holdout[rng.choice(len(emb.holdout), n, replace=False)]
    reference = emb.real[rng.choice(len(emb.real), n, replace=False)]
    note = f"{n:,} texts per set" + (f"; {sizes.note()}" if sizes.note() else "")
    fd = frechet_distance(emb.real, synthetic)
    fd_holdout = None if holdout is None else frechet_distance(emb.real, holdout)
    kernel_reference = emb.real[rng.choice(len(emb.real), min(len(emb.real), MAX_TEXTS), replace=False)]
    kid = kernel_distance(kernel_reference, synthetic)
    kid_holdout = None if holdout is None else kernel_distance(kernel_reference, holdout)
    precision, recall = precision_recall(reference, synthetic) if n > K_NEAREST + 1 else (math.nan, math.nan)
    floor = precision_recall(reference, holdout) if holdout is not None and n > K_NEAREST + 1 else (math.nan, math.nan)
    detection, interval = _detection(reference, synthetic, rng, seed)
    few = f"needs more than {K_NEAREST + 1} texts per set; {n} here" if n <= K_NEAREST + 1 else ""
    real_words = _word_counts(real_texts)
    synthetic_words = _word_counts(synthetic_texts)
    holdout_words = None if holdout_texts is None else _word_counts(holdout_texts)
    length_ks = float(ks_2samp(real_words, synthetic_words).statistic)
    length_floor = None if holdout_words is None else float(ks_2samp(real_words, holdout_words).statistic)
    floor_note = "" if length_floor is None else f"holdout texts: {length_floor:.3f}"
    metrics = [
        metric(
            "fidelity.frechet_distance",
            fd,
            "Frechet distance between Gaussian fits of the private and the synthetic text embeddings",
            "lower",
            note=note,
        ),
        metric(
            "fidelity.frechet_distance_holdout",
            fd_holdout,
            "Frechet distance of as many holdout texts to the private texts: the noise floor",
            "lower",
            note=note if holdout is not None else NEEDS_HOLDOUT,
        ),
        metric(
            "fidelity.kernel_distance",
            kid,
            "Kernel (KID) distance x1000 between the private and the synthetic text embeddings: unbiased squared "
            "MMD, about 0 for samples of one distribution",
            "lower",
            note=note,
        ),
        metric(
            "fidelity.kernel_distance_holdout",
            kid_holdout,
            "Kernel distance x1000 of as many holdout texts to the private texts: the noise floor",
            "lower",
            note=note if holdout is not None else NEEDS_HOLDOUT,
        ),
        metric(
            "fidelity.embedding_precision",
            precision,
            f"Share of synthetic texts inside the k-NN manifold (k={K_NEAREST}) of as many private texts' embeddings",
            "higher",
            note=few or note,
        ),
        metric(
            "fidelity.embedding_recall",
            recall,
            f"Share of private texts inside the k-NN manifold (k={K_NEAREST}) of the synthetic texts' embeddings",
            "higher",
            note=few or note,
        ),
        metric(
            "fidelity.embedding_precision_holdout",
            floor[0],
            "Embedding precision of as many holdout texts: what fresh real texts score",
            "higher",
            note="" if holdout is not None else NEEDS_HOLDOUT,
        ),
        metric(
            "fidelity.embedding_recall_holdout",
            floor[1],
            "Embedding recall of as many holdout texts: what fresh real texts score",
            "higher",
            note="" if holdout is not None else NEEDS_HOLDOUT,
        ),
        metric(
            "fidelity.detection_auc",
            detection,
            "Out-of-fold AUC of logistic regression on embeddings telling synthetic from private texts (0.5: "
            "indistinguishable)",
            "half",
            interval,
            note=f"{n:,} texts per side, 3 folds" if n >= 6 else f"needs at least 6 texts per side; {n} here",
        ),
        metric(
            "fidelity.length_ks",
            length_ks,
            "Kolmogorov-Smirnov distance between the word counts of private and synthetic texts",
            "lower",
            note=floor_note,
        ),
    ]
    details = {
        "texts_per_set": n,
        "projection": _projection(emb, rng),
        "lengths": _length_histogram(real_words, synthetic_words, holdout_words),
    }
    return metrics, details


def _detection(
    real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator, seed: int
) -> tuple[float, tuple[float, float] | None]:
    """Mean over 3 stratified folds of each fold's AUC, and its bootstrap interval (resampling within folds).

    The AUC is taken per fold, not over the pooled out-of-fold scores: on 300 + 300 tweets of one distribution
    the pooled AUC averaged 0.484 over 10 draws (each fold's model scores on its own scale, and the folds'
    class means are anti-correlated), the per-fold mean 0.507.
    """
    rows = min(len(real), len(synthetic))
    if rows < 6:
        return math.nan, None
    X = np.vstack([real[:rows], synthetic[:rows]])
    y = np.r_[np.zeros(rows, dtype=np.int64), np.ones(rows, dtype=np.int64)]
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=seed).split(X, y):
        model = LogisticRegression(max_iter=1000).fit(X[train], y[train])
        folds.append((y[test] == 1, model.decision_function(X[test])))
    point = float(np.mean([auc(positive, scores) for positive, scores in folds]))
    draws = np.empty(BOOTSTRAP)
    for r in range(BOOTSTRAP):
        values = []
        for positive, scores in folds:
            idx = rng.integers(0, len(scores), len(scores))
            values.append(auc(positive[idx], scores[idx]))
        draws[r] = np.mean(values)
    return point, centred_interval(point, draws)


def _word_counts(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(t.split()) for t in texts], dtype=np.float64)


def _length_histogram(real: np.ndarray, synthetic: np.ndarray, holdout: np.ndarray | None) -> dict[str, Any]:
    top = max(float(np.quantile(np.r_[real, synthetic], 0.99)), 1.0)
    edges = np.linspace(0, math.ceil(top) + 1, min(int(top) + 2, 40) + 1)
    series = {"private": real, "synthetic": synthetic} | ({"holdout": holdout} if holdout is not None else {})
    shares = {
        name: (np.histogram(np.clip(v, 0, edges[-1]), edges)[0] / max(len(v), 1)).tolist() for name, v in series.items()
    }
    return {"edges": edges.tolist(), "series": shares}


def _projection(emb: Embedded, rng: np.random.Generator) -> dict[str, Any]:
    """The first two principal components of the private embeddings, with up to 400 points of each set."""
    centre = emb.real.mean(axis=0)
    _, _, axes = np.linalg.svd(emb.real[rng.choice(len(emb.real), min(len(emb.real), 2000), replace=False)] - centre)
    basis = axes[:2].T
    out: dict[str, Any] = {}
    sets = {"private": emb.real, "synthetic": emb.synthetic, "holdout": emb.holdout}
    for name, vectors in sets.items():
        if vectors is None:
            continue
        chosen = rng.choice(len(vectors), min(len(vectors), PLOT_POINTS), replace=False)
        out[name] = np.round((vectors[chosen] - centre) @ basis, 4).tolist()
    return out
