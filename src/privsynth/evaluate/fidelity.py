"""Fidelity: how close the synthetic distribution is to the real one, column by column and jointly.

Per column, the Kolmogorov-Smirnov statistic (numbers) or total variation distance (categories), as sdmetrics'
column shapes compute them; k-way marginal total variation distance on a fixed binning, the measure AIM and MST
are scored with (McKenna et al., 2022); a mixed-type association matrix; and a classifier two-sample test
(Lopez-Paz and Oquab, 2017): the cross-validated AUC of a model trained to tell real rows from synthetic ones.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold

from privsynth.evaluate._stats import BOOTSTRAP, auc, bootstrap, centred_interval, tvd
from privsynth.evaluate.metric import Metric, Section, metric
from privsynth.evaluate.prepared import (
    FloatArray,
    IntArray,
    Prepared,
    Table,
    categorical_mask,
    model_features,
    trainable,
)
from privsynth.progress import report

MAX_TRIPLES = 300  # 3-way marginals scored: all triples up to this many, else a seeded sample of this many
MAX_DETECTION_ROWS = 10_000  # rows of each of real and synthetic the detection classifier sees
_PLOT_BINS = 30
_PLOT_CATEGORIES = 20


def fidelity(data: Prepared, seed: int) -> Section:
    """Per-column shapes, 1/2/3-way marginal TVD, association difference, and the detection AUC."""
    rng = np.random.default_rng(seed)
    columns = column_shapes(data)
    scores = [c["score"] for c in columns if c["score"] is not None]
    worst = max((c for c in columns if c["distance"] is not None), key=lambda c: c["distance"], default=None)
    unscored = [c["name"] for c in columns if c["distance"] is None]
    notes = [f"worst column: {worst['name']} ({worst['distance']:.3f})"] if worst else []
    notes += [f"not scored, no values in real or synthetic: {unscored}"] if unscored else []
    metrics: list[Metric] = [
        metric(
            "fidelity.column_score",
            float(np.mean(scores)) if scores else None,
            "Mean over columns of 1 - distance, where distance is the Kolmogorov-Smirnov statistic (numeric) "
            "or the total variation distance (categorical), both on non-missing values (sdmetrics' column "
            "shapes)",
            "higher",
            note="; ".join(notes),
        )
    ]
    report("evaluate", 0, None, "fidelity: marginals")
    n = len(data.columns)
    for k, word in ((1, "1way"), (2, "2way"), (3, "3way")):
        combos = column_subsets(n, k, MAX_TRIPLES if k == 3 else None, rng)
        sampled = k == 3 and math.comb(n, 3) > MAX_TRIPLES
        value, interval = marginal_tvd(data, combos, rng, BOOTSTRAP)
        scope = {1: "all columns", 2: "all pairs of columns"}.get(
            k,
            f"a seeded random sample of {MAX_TRIPLES} of the {math.comb(n, 3)} triples"
            if sampled
            else "all triples of columns",
        )
        metrics.append(
            metric(
                f"fidelity.tvd_{word}",
                value,
                f"Mean total variation distance of the {k}-way marginals over {scope}; categories as they "
                "are, numbers in 16 quantile bins of the real data, missing as its own bin; bootstrap "
                f"interval ({BOOTSTRAP} replicates)",
                "lower",
                interval,
                note="" if combos else f"fewer than {k} columns",
            )
        )
    report("evaluate", 0, None, "fidelity: associations")
    real_assoc = associations(data, data.real)
    synthetic_assoc = associations(data, data.synthetic)
    upper = np.triu_indices(n, 1)
    difference = np.abs(real_assoc - synthetic_assoc)[upper]
    metrics.append(
        metric(
            "fidelity.correlation_diff",
            float(difference.mean()) if len(difference) else None,
            "Mean absolute difference between the real and synthetic association matrices over column pairs: "
            "Pearson correlation (numeric pairs), Cramér's V (categorical pairs), correlation ratio (mixed)",
            "lower",
        )
    )
    report("evaluate", 0, None, "fidelity: detection")
    detection_auc, detection_interval, rows = detection(data, seed, rng)
    metrics.append(
        metric(
            "fidelity.detection_auc",
            detection_auc,
            "Cross-validated (3-fold) AUC of a gradient-boosting classifier trained to tell real rows from "
            f"synthetic ones, on at most {MAX_DETECTION_ROWS} rows of each; 0.5 means indistinguishable (far below "
            "0.5 when synthetic rows duplicate real ones)",
            "half",
            detection_interval,
            note=f"{rows} rows of each",
        )
    )
    details: dict[str, Any] = {
        "columns": columns,
        "associations": {
            "names": data.names,
            "real": real_assoc.tolist(),
            "synthetic": synthetic_assoc.tolist(),
        },
    }
    return Section(metrics, details)


def column_shapes(data: Prepared) -> list[dict[str, Any]]:
    """Per column: kind, statistic, distance, score (1 - distance), missing shares and the plot data."""
    out = []
    for j, col in enumerate(data.columns):
        real, synthetic = data.real.values[:, j], data.synthetic.values[:, j]
        real_present, synthetic_present = real[~np.isnan(real)], synthetic[~np.isnan(synthetic)]
        distance: float | None = None
        if len(real_present) and len(synthetic_present):
            if col.numeric:
                distance = float(ks_2samp(real_present, synthetic_present).statistic)
            else:
                size = len(col.categories)
                distance = tvd(
                    np.bincount(real_present.astype(np.int64), minlength=size).astype(np.float64),
                    np.bincount(synthetic_present.astype(np.int64), minlength=size).astype(np.float64),
                )
        out.append(
            {
                "name": col.name,
                "kind": col.kind.value,
                "statistic": "KS" if col.numeric else "TVD",
                "distance": distance,
                "score": None if distance is None else 1.0 - distance,
                "missing_real": float(np.isnan(real).mean()),
                "missing_synthetic": float(np.isnan(synthetic).mean()),
                "plot": _numeric_plot(real, synthetic) if col.numeric else _category_plot(col.categories, j, data),
            }
        )
    return out


def marginal_tvd(
    data: Prepared, combos: list[tuple[int, ...]], rng: np.random.Generator, replicates: int
) -> tuple[float | None, tuple[float, float] | None]:
    """Mean TVD over the marginals ``combos`` of the fixed binning, with a bootstrap interval.

    Every row falls in one cell of each marginal; stacking the marginals' cells side by side makes one sparse
    row-by-cell matrix, so a bootstrap replicate's counts for all marginals are one product with its row
    weights (how often each row was drawn).
    """
    if not combos:
        return None, None
    cells = [_marginal_cells(data, combo) for combo in combos]
    offsets = np.cumsum([0] + [size for _, _, size in cells])
    real = _incidence(np.column_stack([r for r, _, _ in cells]) + offsets[:-1], int(offsets[-1]))
    synthetic = _incidence(np.column_stack([s for _, s, _ in cells]) + offsets[:-1], int(offsets[-1]))
    n_real, n_synthetic = data.real.rows, data.synthetic.rows

    def mean_tvd(real_weights: npt.NDArray[np.float32], synthetic_weights: npt.NDArray[np.float32]) -> FloatArray:
        p = np.asarray(real_weights @ real, dtype=np.float64) / n_real
        q = np.asarray(synthetic_weights @ synthetic, dtype=np.float64) / n_synthetic
        per_marginal = 0.5 * np.add.reduceat(np.abs(p - q), offsets[:-1], axis=1)
        return np.asarray(per_marginal.mean(axis=1), dtype=np.float64)

    point = float(mean_tvd(np.ones((1, n_real), np.float32), np.ones((1, n_synthetic), np.float32))[0])
    batch = max(1, min(replicates, int(2e7 // max(int(offsets[-1]), 1))))
    draws: list[FloatArray] = []
    for start in range(0, replicates, batch):
        size = min(batch, replicates - start)
        draws.append(mean_tvd(_resample_weights(n_real, size, rng), _resample_weights(n_synthetic, size, rng)))
    return point, centred_interval(point, np.concatenate(draws))


def associations(data: Prepared, table: Table) -> FloatArray:
    """Symmetric matrix of pairwise association in [0, 1] (|Pearson|, Cramér's V, correlation ratio).

    A pair whose association is undefined (a constant column) counts as no association.
    """
    n = len(data.columns)
    out = np.eye(n, dtype=np.float64)
    for a, b in itertools.combinations(range(n), 2):
        col_a, col_b = data.columns[a], data.columns[b]
        if col_a.numeric and col_b.numeric:
            value = _pearson(table.values[:, a], table.values[:, b])
        elif not col_a.numeric and not col_b.numeric:
            value = _cramers_v(table.cells[:, a], table.cells[:, b], col_a.bins, col_b.bins)
        elif col_a.numeric:
            value = _correlation_ratio(table.cells[:, b], col_b.bins, table.values[:, a])
        else:
            value = _correlation_ratio(table.cells[:, a], col_a.bins, table.values[:, b])
        out[a, b] = out[b, a] = value if math.isfinite(value) else 0.0
    return out


def detection(data: Prepared, seed: int, rng: np.random.Generator) -> tuple[float, tuple[float, float] | None, int]:
    """Out-of-fold AUC of real-vs-synthetic classification, its bootstrap interval, and rows used per side."""
    rows = min(data.real.rows, data.synthetic.rows, MAX_DETECTION_ROWS)
    if rows < 6:
        return float("nan"), None, rows
    columns = list(range(len(data.columns)))
    real = data.real.take(rng.choice(data.real.rows, rows, replace=False))
    synthetic = data.synthetic.take(rng.choice(data.synthetic.rows, rows, replace=False))
    X = trainable(np.vstack([model_features(data, real, columns), model_features(data, synthetic, columns)]))
    y = np.r_[np.zeros(rows, dtype=np.int64), np.ones(rows, dtype=np.int64)]
    scores = np.empty(len(y), dtype=np.float64)
    for train, test in StratifiedKFold(3, shuffle=True, random_state=seed).split(X, y):
        model = HistGradientBoostingClassifier(categorical_features=categorical_mask(data, columns), random_state=seed)
        model.fit(X[train], y[train])
        scores[test] = model.predict_proba(X[test])[:, 1]
    positive = y == 1
    point = auc(positive, scores)
    draws = bootstrap(lambda idx: auc(positive[idx], scores[idx]), len(y), rng, BOOTSTRAP)
    return point, centred_interval(point, draws), rows


def column_subsets(n: int, k: int, limit: int | None, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """All k-subsets of range(n), or a seeded random sample of ``limit`` distinct ones when there are more."""
    if limit is None or math.comb(n, k) <= limit:
        return list(itertools.combinations(range(n), k))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < limit:
        chosen.add(tuple(sorted(int(i) for i in rng.choice(n, k, replace=False))))
    return sorted(chosen)


def _marginal_cells(data: Prepared, combo: tuple[int, ...]) -> tuple[IntArray, IntArray, int]:
    """Cell index of every real and synthetic row in the marginal ``combo``, and the number of cells."""
    real = np.zeros(data.real.rows, dtype=np.int64)
    synthetic = np.zeros(data.synthetic.rows, dtype=np.int64)
    size = 1
    for j in combo:
        bins = data.columns[j].bins
        real = real * bins + data.real.cells[:, j]
        synthetic = synthetic * bins + data.synthetic.cells[:, j]
        size *= bins
    if size > 1 << 16:
        _, inverse = np.unique(np.r_[real, synthetic], return_inverse=True)
        real, synthetic = inverse[: len(real)], inverse[len(real) :]
        size = int(inverse.max()) + 1
    return real, synthetic, size


def _incidence(cells: IntArray, columns: int) -> sparse.csr_matrix:
    """Sparse 0/1 matrix with a row per data row and a 1 in each of its ``cells`` (one per marginal)."""
    rows, per_row = cells.shape
    indptr = np.arange(0, rows * per_row + 1, per_row)
    ones = np.ones(rows * per_row, dtype=np.float32)
    return sparse.csr_matrix((ones, cells.ravel(), indptr), shape=(rows, columns))


def _resample_weights(rows: int, replicates: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """How often each row is drawn in each of ``replicates`` bootstrap resamples, shape (replicates, rows)."""
    draws = rng.integers(0, rows, (replicates, rows))
    return np.stack([np.bincount(d, minlength=rows) for d in draws]).astype(np.float32)


def _pearson(x: FloatArray, y: FloatArray) -> float:
    both = ~(np.isnan(x) | np.isnan(y))
    if both.sum() < 3:
        return float("nan")
    x, y = x[both], y[both]
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(abs(np.corrcoef(x, y)[0, 1]))


def _cramers_v(a: IntArray, b: IntArray, bins_a: int, bins_b: int) -> float:
    table = np.bincount(a * bins_b + b, minlength=bins_a * bins_b).reshape(bins_a, bins_b).astype(np.float64)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    if min(table.shape) < 2:
        return float("nan")
    n = table.sum()
    expected = np.outer(table.sum(1), table.sum(0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / n / (min(table.shape) - 1))


def _correlation_ratio(groups: IntArray, bins: int, x: FloatArray) -> float:
    present = ~np.isnan(x)
    groups, x = groups[present], x[present]
    if len(x) < 3 or x.std() == 0:
        return float("nan")
    counts = np.bincount(groups, minlength=bins).astype(np.float64)
    means = np.bincount(groups, weights=x, minlength=bins) / np.maximum(counts, 1)
    between = float((counts * (means - x.mean()) ** 2).sum())
    total = float(((x - x.mean()) ** 2).sum())
    return math.sqrt(between / total)


def _numeric_plot(real: FloatArray, synthetic: FloatArray) -> dict[str, Any]:
    """Shares of all rows in 30 equal-width bins over the real 0.5-99.5% range (outliers in the end bins)."""
    present = real[~np.isnan(real)]
    low, high = (float(v) for v in np.quantile(present, [0.005, 0.995])) if len(present) else (0.0, 1.0)
    if high <= low:
        low, high = (float(present.min()), float(present.max())) if len(present) else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, _PLOT_BINS + 1)

    def shares(x: FloatArray) -> list[float]:
        kept = np.clip(x[~np.isnan(x)], low, high)
        return [float(v) for v in np.histogram(kept, edges)[0] / max(len(x), 1)]

    return {
        "type": "numeric",
        "edges": edges.tolist(),
        "real": shares(real),
        "synthetic": shares(synthetic),
        "missing_real": float(np.isnan(real).mean()),
        "missing_synthetic": float(np.isnan(synthetic).mean()),
    }


def _category_plot(categories: tuple[str, ...], j: int, data: Prepared) -> dict[str, Any]:
    """Shares of the most common real categories; the rest as ``(other)``, then ``(missing)``."""
    bins = data.columns[j].bins
    real = np.bincount(data.real.cells[:, j], minlength=bins) / data.real.rows
    synthetic = np.bincount(data.synthetic.cells[:, j], minlength=bins) / data.synthetic.rows
    shown = list(np.argsort(-real[:-1], kind="stable")[:_PLOT_CATEGORIES])
    labels = [categories[i] for i in shown]
    real_shares, synthetic_shares = [float(real[i]) for i in shown], [float(synthetic[i]) for i in shown]
    rest = sorted(set(range(bins - 1)) - set(shown))
    if rest:
        labels.append("(other)")
        real_shares.append(float(real[rest].sum()))
        synthetic_shares.append(float(synthetic[rest].sum()))
    if real[-1] or synthetic[-1]:
        labels.append("(missing)")
        real_shares.append(float(real[-1]))
        synthetic_shares.append(float(synthetic[-1]))
    return {"type": "categorical", "labels": labels, "real": real_shares, "synthetic": synthetic_shares}
