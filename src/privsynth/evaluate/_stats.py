"""Small statistics every section shares: rank AUC, bootstrap intervals, total variation, nearest neighbours."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata

from privsynth.evaluate.prepared import BoolArray, FloatArray, IntArray

BOOTSTRAP = 100  # replicates for the bootstrap intervals
Interval = tuple[float, float]


def auc(positive: BoolArray, scores: FloatArray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties count half); NaN when a class is absent."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(labels: IntArray, scores: FloatArray) -> float:
    """Binary AUC for two classes; macro average of one-vs-rest AUCs (classes present in ``labels``) for more.

    ``scores`` has one column per class code; for two classes column 1 scores the second class.
    """
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if scores.shape[1] == 2:
        return auc(labels == 1, scores[:, 1])
    return float(np.mean([auc(labels == c, scores[:, c]) for c in present]))


def centred_interval(
    point: float, replicates: FloatArray, low: float = 0.0, high: float = 1.0, level: float = 0.95
) -> Interval | None:
    """The bootstrap percentile spread placed around the estimate, clipped to [low, high].

    The lower end is ``point - (median - q_low)``, the upper ``point + (q_high - median)``. Distances between
    distributions grow under resampling (replicates sit above the estimate), so the raw percentile interval can
    miss the estimate altogether; its spread around the replicates' median is the sampling error to report.
    """
    finite = replicates[np.isfinite(replicates)]
    if not np.isfinite(point) or len(finite) < 10:
        return None
    q_low, middle, q_high = np.quantile(finite, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return (float(max(low, point - (middle - q_low))), float(min(high, point + (q_high - middle))))


def bootstrap(
    statistic: Callable[[IntArray], float],
    rows: int,
    rng: np.random.Generator,
    replicates: int = BOOTSTRAP,
) -> FloatArray:
    """``statistic`` evaluated on ``replicates`` resamples (row indices drawn with replacement)."""
    return np.array([statistic(rng.integers(0, rows, rows)) for _ in range(replicates)], dtype=np.float64)


def mean_interval(values: FloatArray, low: float = 0.0, high: float = 1.0) -> Interval | None:
    """Normal-approximation 95% interval of a mean."""
    if len(values) < 2:
        return None
    mean = float(values.mean())
    half = 1.959964 * float(values.std(ddof=1)) / float(np.sqrt(len(values)))
    return (float(max(low, mean - half)), float(min(high, mean + half)))


def tvd(real_counts: FloatArray, synthetic_counts: FloatArray) -> float:
    """Total variation distance between two count vectors over the same cells."""
    p = real_counts / max(real_counts.sum(), 1e-300)
    q = synthetic_counts / max(synthetic_counts.sum(), 1e-300)
    return float(0.5 * np.abs(p - q).sum())


def squared_distances(a: FloatArray, b: FloatArray) -> FloatArray:
    """Squared Euclidean distances between the rows of ``a`` and of ``b`` (never negative)."""
    out = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.asarray(np.maximum(out, 0.0), dtype=np.float64)


def nearest(queries: FloatArray, reference: FloatArray, k: int = 1) -> FloatArray:
    """Distances from each query row to its ``k`` nearest reference rows, ascending, shape (queries, k)."""
    out = np.empty((len(queries), k), dtype=np.float64)
    step = max(1, 4_000_000 // max(len(reference), 1))
    for start in range(0, len(queries), step):
        block = squared_distances(queries[start : start + step], reference)
        if k == 1:
            out[start : start + step, 0] = block.min(axis=1)
        else:
            out[start : start + step] = np.sort(np.partition(block, k - 1, axis=1)[:, :k], axis=1)
    return np.sqrt(out)
