"""Utility: is the synthetic data as useful as the real data for learning the target?

Train on synthetic, test on real (TSTR) against train on real, test on real (TRTR), both scored on the holdout
(Esteban et al., 2017; Jordon et al., 2022), with scikit-learn's histogram gradient boosting, plus agreement of
the two models' permutation feature importances: a model trained on synthetic data should rely on the same
features as one trained on real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from privsynth.evaluate._stats import BOOTSTRAP, bootstrap, centred_interval, macro_auc
from privsynth.evaluate.metric import Better, Metric, Section, metric
from privsynth.evaluate.prepared import (
    BoolArray,
    FloatArray,
    IntArray,
    Prepared,
    Table,
    categorical_mask,
    model_features,
    trainable,
)

Task = Literal["classification", "regression"]
IMPORTANCE_ROWS = 2_000
IMPORTANCE_REPEATS = 3


@dataclass(frozen=True)
class Predictions:
    """Holdout labels and the two models' predictions (class probabilities, or values for regression)."""

    task: Task
    truth: FloatArray
    tstr: FloatArray | None
    trtr: FloatArray | None
    rows: BoolArray  # which holdout rows have a target value (the rows predicted)


def score(task: Task, truth: FloatArray, predicted: FloatArray) -> float:
    """AUC (macro one-vs-rest for more than two classes) for classification, R^2 for regression."""
    if task == "classification":
        return macro_auc(truth.astype(np.int64), predicted)
    total = float(((truth - truth.mean()) ** 2).sum())
    if len(truth) < 2 or total == 0:
        return float("nan")
    return 1.0 - float(((truth - predicted) ** 2).sum()) / total


def accuracy(truth: FloatArray, probabilities: FloatArray) -> float:
    return float((probabilities.argmax(axis=1) == truth.astype(np.int64)).mean()) if len(truth) else float("nan")


def utility(data: Prepared, seed: int) -> tuple[Section, Predictions | None]:
    """TSTR and TRTR scores with bootstrap intervals, accuracies, and feature-importance agreement."""
    if data.target is None or data.holdout is None:
        why = "needs a target column" if data.target is None else "needs a holdout (real rows to test on)"
        return Section([metric(key, None, text, better, note=why) for key, text, better in _DEFINITIONS]), None
    rng = np.random.default_rng(seed)
    target = data.index(data.target)
    task: Task = "regression" if data.columns[target].numeric else "classification"
    features = [j for j in range(len(data.columns)) if j != target]
    holdout = data.holdout
    rows = ~np.isnan(holdout.values[:, target])
    truth = holdout.values[rows, target]
    X_holdout = model_features(data, holdout.take(rows), features)
    notes: dict[str, str] = {}
    models = {}
    for name, table in (("tstr", data.synthetic), ("trtr", data.real)):
        model, why = _fit(data, table, target, features, task, seed)
        models[name] = model
        if why:
            notes[name] = why
    classes = len(data.columns[target].categories)
    predicted = {
        name: None if model is None else _predict(model, X_holdout, task, classes) for name, model in models.items()
    }
    definitions = {key: (text, better) for key, text, better in _DEFINITIONS}
    measure = "AUC" if task == "classification" else "R^2"
    metrics: list[Metric] = []
    for name in ("tstr", "trtr"):
        values = predicted[name]
        point = float("nan") if values is None else score(task, truth, values)
        interval = None
        if values is not None:

            def resampled(idx: IntArray, values: FloatArray = values) -> float:
                return score(task, truth[idx], values[idx])

            draws = bootstrap(resampled, len(truth), rng, BOOTSTRAP)
            interval = centred_interval(point, draws, low=-np.inf if task == "regression" else 0.0)
        note = notes.get(name, f"{task}: {measure} on {len(truth)} holdout rows")
        metrics.append(metric(f"utility.{name}", point, *definitions[f"utility.{name}"], interval, note))
    for name in ("tstr", "trtr"):
        values = predicted[name]
        value = accuracy(truth, values) if task == "classification" and values is not None else None
        note = notes.get(name, "") if task == "classification" else "regression target: no accuracy"
        metrics.append(metric(f"utility.{name}_accuracy", value, *definitions[f"utility.{name}_accuracy"], note=note))
    agreement, importances = _importance_agreement(models, X_holdout, truth, task, classes, rng)
    metrics.append(metric("utility.importance_agreement", agreement, *definitions["utility.importance_agreement"]))
    details: dict[str, Any] = {
        "task": task,
        "measure": measure,
        "features": [data.columns[j].name for j in features],
        "importances": importances,
    }
    return Section(metrics, details), Predictions(task, truth, predicted["tstr"], predicted["trtr"], rows)


def _fit(
    data: Prepared, table: Table, target: int, features: list[int], task: Task, seed: int
) -> tuple[HistGradientBoostingClassifier | HistGradientBoostingRegressor | None, str]:
    """A gradient-boosting model of the target on ``table``, or None and the reason it cannot be fitted."""
    rows = ~np.isnan(table.values[:, target])
    y = table.values[rows, target]
    if len(y) < 10:
        return None, f"only {len(y)} rows with a target value to learn from"
    if task == "classification" and len(np.unique(y)) < 2:
        return None, "the training rows hold a single class of the target"
    X = trainable(model_features(data, table.take(rows), features))
    mask = categorical_mask(data, features)
    if task == "classification":
        classifier = HistGradientBoostingClassifier(categorical_features=mask, random_state=seed)
        return classifier.fit(X, y.astype(np.int64)), ""
    regressor = HistGradientBoostingRegressor(categorical_features=mask, random_state=seed)
    return regressor.fit(X, y), ""


def _predict(
    model: HistGradientBoostingClassifier | HistGradientBoostingRegressor, X: FloatArray, task: Task, classes: int
) -> FloatArray:
    """Class probabilities over every class code (zero for classes the model never saw), or predictions."""
    if task == "regression":
        return np.asarray(model.predict(X), dtype=np.float64)
    out = np.zeros((len(X), max(classes, 2)), dtype=np.float64)
    out[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(X)
    return out


def _importance_agreement(
    models: dict[str, Any], X: FloatArray, truth: FloatArray, task: Task, classes: int, rng: np.random.Generator
) -> tuple[float | None, dict[str, list[float]]]:
    """Spearman correlation of the two models' permutation importances on a holdout sample."""
    if models["tstr"] is None or models["trtr"] is None or X.shape[1] < 3:
        return None, {}
    rows = rng.choice(len(X), min(len(X), IMPORTANCE_ROWS), replace=False)
    X, truth = X[rows], truth[rows]
    # Every (feature, repeat) copy of X with that feature's column permuted, stacked: one prediction call each.
    copies = []
    for j in range(X.shape[1]):
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = X.copy()
            shuffled[:, j] = X[rng.permutation(len(X)), j]
            copies.append(shuffled)
    stacked = np.vstack(copies)
    importances: dict[str, list[float]] = {}
    for name, model in models.items():
        base = score(task, truth, _predict(model, X, task, classes))
        predicted = np.split(_predict(model, stacked, task, classes), len(copies))
        losses = np.array([base - score(task, truth, p) for p in predicted]).reshape(X.shape[1], IMPORTANCE_REPEATS)
        importances[name] = [float(v) for v in losses.mean(axis=1)]
    if np.std(importances["tstr"]) == 0 or np.std(importances["trtr"]) == 0:
        return None, importances
    return float(spearmanr(importances["tstr"], importances["trtr"]).statistic), importances


_DEFINITIONS: list[tuple[str, str, Better]] = [
    (
        "utility.tstr",
        "Train on synthetic, test on real: holdout AUC (macro one-vs-rest for multiclass) of gradient boosting "
        "for a categorical target, R^2 for a numeric one; bootstrap interval over holdout rows",
        "higher",
    ),
    (
        "utility.trtr",
        "Train on real, test on real: the same model and score trained on the real training rows (the "
        "reference TSTR should reach)",
        "higher",
    ),
    ("utility.tstr_accuracy", "Holdout accuracy of the model trained on synthetic rows", "higher"),
    ("utility.trtr_accuracy", "Holdout accuracy of the model trained on real rows", "higher"),
    (
        "utility.importance_agreement",
        f"Spearman rank correlation of the two models' permutation importances ({IMPORTANCE_REPEATS} "
        f"permutations on at most {IMPORTANCE_ROWS} holdout rows)",
        "higher",
    ),
]
