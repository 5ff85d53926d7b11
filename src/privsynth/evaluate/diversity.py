"""Diversity and tails: does the synthetic data cover what the real data holds, rare values and extremes included.

Coverage of categories and numeric ranges (as sdmetrics' CategoryCoverage and RangeCoverage), recall of rare
categories, error at the tail quantiles, and k-nearest-neighbour precision and recall (Kynkäänniemi et al., 2019,
"Improved precision and recall metric for assessing generative models"): precision is the share of synthetic
rows that fall inside the real data's k-NN balls (realism), recall the share of real rows inside the synthetic
data's balls (coverage), in the spirit of alpha-precision / beta-recall (Alaa et al., 2022).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privsynth.evaluate._stats import squared_distances
from privsynth.evaluate.metric import Section, metric
from privsynth.evaluate.prepared import FloatArray, Prepared, distance_encoding

RARE_SHARE = 0.01
TAIL_QUANTILES = (0.01, 0.05, 0.95, 0.99)
NN_K = 5
MAX_NN_ROWS = 5_000


def diversity(data: Prepared, seed: int) -> Section:
    """Coverage, rare-category recall, tail-quantile error and k-NN precision/recall."""
    rng = np.random.default_rng(seed)
    columns: list[dict[str, Any]] = []
    category_coverage: list[float] = []
    range_coverage: list[float] = []
    quantile_errors: list[float] = []
    unscored: list[str] = []  # numeric columns with no synthetic value: no quantile to compare
    rare_total = rare_found = 0
    for j, col in enumerate(data.columns):
        real, synthetic = data.real.values[:, j], data.synthetic.values[:, j]
        real, synthetic = real[~np.isnan(real)], synthetic[~np.isnan(synthetic)]
        row: dict[str, Any] = {
            "name": col.name,
            "kind": col.kind.value,
            "category_coverage": None,
            "rare_categories": None,
            "rare_found": None,
            "missing_categories": None,
            "range_coverage": None,
            "quantile_error": None,
        }
        if len(real) == 0:
            columns.append(row)
            continue
        if col.numeric:
            coverage = _range_coverage(real, synthetic)
            row["range_coverage"] = coverage
            range_coverage.append(coverage)
            if len(synthetic):
                errors = _quantile_errors(real, synthetic)
                row["quantile_error"] = dict(zip(TAIL_QUANTILES, errors, strict=True))
                quantile_errors.extend(errors)
            else:
                unscored.append(col.name)
        else:
            real_counts = np.bincount(real.astype(np.int64), minlength=len(col.categories))
            seen = np.bincount(synthetic.astype(np.int64), minlength=len(col.categories)) > 0
            present = real_counts > 0
            rare = present & (real_counts < RARE_SHARE * len(real))
            coverage = float(seen[present].mean())
            row.update(
                category_coverage=coverage,
                rare_categories=int(rare.sum()),
                rare_found=int((rare & seen).sum()),
                missing_categories=[col.categories[i] for i in np.flatnonzero(present & ~seen)][:20],
            )
            category_coverage.append(coverage)
            rare_total += int(rare.sum())
            rare_found += int((rare & seen).sum())
        columns.append(row)
    precision, recall, rows = nn_precision_recall(data, rng)
    metrics = [
        metric(
            "diversity.category_coverage",
            float(np.mean(category_coverage)) if category_coverage else None,
            "Mean over categorical columns of the share of real categories that appear in the synthetic data",
            "higher",
            note="" if category_coverage else "no categorical column",
        ),
        metric(
            "diversity.range_coverage",
            float(np.mean(range_coverage)) if range_coverage else None,
            "Mean over numeric columns of the share of the real [min, max] range that the synthetic range covers",
            "higher",
            note="" if range_coverage else "no numeric column",
        ),
        metric(
            "diversity.rare_category_recall",
            rare_found / rare_total if rare_total else None,
            f"Share of categories under {RARE_SHARE:.0%} of the real rows (all categorical columns pooled) that "
            "appear in the synthetic data",
            "higher",
            note=f"{rare_found} of {rare_total} rare categories" if rare_total else "no rare category",
        ),
        metric(
            "diversity.quantile_error",
            float(np.mean(quantile_errors)) if quantile_errors else None,
            "Mean over numeric columns and the 1/5/95/99% quantiles of |synthetic - real quantile| divided by "
            "the real interquartile range (by the range when the IQR is 0)",
            "lower",
            note=f"no synthetic values in {unscored}" if unscored else "" if quantile_errors else "no numeric column",
        ),
        metric(
            "diversity.nn_precision",
            precision,
            f"Share of synthetic rows inside some real row's {NN_K}-nearest-neighbour ball (improved precision, "
            f"Kynkäänniemi et al. 2019) on the common distance encoding, at most {MAX_NN_ROWS} rows of each",
            "higher",
            note=f"{rows} rows of each",
        ),
        metric(
            "diversity.nn_recall",
            recall,
            f"Share of real rows inside some synthetic row's {NN_K}-nearest-neighbour ball (improved recall) on "
            f"the common distance encoding, at most {MAX_NN_ROWS} rows of each",
            "higher",
            note=f"{rows} rows of each",
        ),
    ]
    return Section(metrics, {"columns": columns})


def nn_precision_recall(data: Prepared, rng: np.random.Generator) -> tuple[float | None, float | None, int]:
    """k-NN precision and recall on equal-size subsamples; None when there are too few rows."""
    rows = min(data.real.rows, data.synthetic.rows, MAX_NN_ROWS)
    if rows <= NN_K:
        return None, None, rows
    real = data.real.take(rng.choice(data.real.rows, rows, replace=False))
    synthetic = data.synthetic.take(rng.choice(data.synthetic.rows, rows, replace=False))
    real_x, synthetic_x = distance_encoding(data, [real, synthetic])
    real_radius = _kth_radius(real_x)
    synthetic_radius = _kth_radius(synthetic_x)
    return _inside_share(synthetic_x, real_x, real_radius), _inside_share(real_x, synthetic_x, synthetic_radius), rows


def _kth_radius(x: FloatArray) -> FloatArray:
    """Squared distance from each row to its k-th nearest other row."""
    radius = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), 1000):
        block = squared_distances(x[start : start + 1000], x)
        radius[start : start + 1000] = np.partition(block, NN_K, axis=1)[:, NN_K]  # index 0 is the row itself
    return radius


def _inside_share(queries: FloatArray, reference: FloatArray, radius: FloatArray) -> float:
    inside = np.empty(len(queries), dtype=bool)
    for start in range(0, len(queries), 1000):
        block = squared_distances(queries[start : start + 1000], reference)
        inside[start : start + 1000] = (block <= radius[None, :] + 1e-9).any(axis=1)
    return float(inside.mean())


def _range_coverage(real: FloatArray, synthetic: FloatArray) -> float:
    low, high = float(real.min()), float(real.max())
    if len(synthetic) == 0:
        return 0.0
    if high == low:
        return float(np.any(synthetic == low))
    overlap = min(high, float(synthetic.max())) - max(low, float(synthetic.min()))
    return float(np.clip(overlap / (high - low), 0.0, 1.0))


def _quantile_errors(real: FloatArray, synthetic: FloatArray) -> list[float]:
    q_real = np.quantile(real, TAIL_QUANTILES)
    q_synthetic = np.quantile(synthetic, TAIL_QUANTILES)
    iqr = float(np.subtract(*np.quantile(real, [0.75, 0.25])))
    scale = iqr if iqr > 0 else float(real.max() - real.min()) or 1.0
    return [float(e) for e in np.abs(q_synthetic - q_real) / scale]
