"""Utility of synthetic text: a classifier on embeddings trained on synthetic texts (TSTR) and on real ones (TRTR),
scored on the labelled holdout."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from privsynth.evaluate._stats import BOOTSTRAP, auc, bootstrap, centred_interval
from privsynth.evaluate.metric import Metric, metric
from privsynth.evaluate.text_inputs import MIN_CLASS_ROWS, NEEDS_HOLDOUT, Embedded, Labels

_UTILITY = {
    "utility.tstr": "Macro one-vs-rest AUC on holdout texts of logistic regression on embeddings trained on synthetic "
    "texts",
    "utility.trtr": "The same AUC trained on as many private texts: the reference",
    "utility.tstr_accuracy": "Holdout accuracy of the model trained on synthetic texts",
    "utility.trtr_accuracy": "Holdout accuracy of the model trained on as many private texts",
}


def utility(
    emb: Embedded,
    labels: Labels | None,
    real: list[int],
    synthetic: list[int],
    holdout: list[int] | None,
    label_name: str,
    rng: np.random.Generator,
    seed: int,
) -> tuple[list[Metric], dict[str, Any]]:
    why = ""
    if labels is None:
        why = "needs labels for the real, synthetic and holdout texts"
    elif labels.problem:
        why = labels.problem
    elif emb.holdout is None or holdout is None:
        why = NEEDS_HOLDOUT
    if why or labels is None or emb.holdout is None or holdout is None:
        return [metric(key, None, text, "higher", note=why) for key, text in _UTILITY.items()], {"measure": "AUC"}
    truth = labels.holdout[holdout]
    counts = np.bincount(truth, minlength=len(labels.classes))
    scored = [c for c in range(len(labels.classes)) if counts[c] >= MIN_CLASS_ROWS and counts[c] < len(truth)]
    y_synthetic = labels.synthetic[synthetic]
    y_real_all = labels.real[real]
    size = min(len(y_synthetic), len(y_real_all))
    chosen = np.sort(rng.choice(len(y_real_all), size, replace=False))
    notes: dict[str, str] = {}
    probabilities: dict[str, np.ndarray | None] = {}
    for name, X, y in (
        ("tstr", emb.synthetic, y_synthetic),
        ("trtr", emb.real[chosen], y_real_all[chosen]),
    ):
        if len(np.unique(y)) < 2:
            notes[name] = f"the training texts hold a single {label_name!r} value"
            probabilities[name] = None
            continue
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(X, y)
        out = np.zeros((len(emb.holdout), len(labels.classes)))
        out[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(emb.holdout)
        probabilities[name] = out
    metrics: list[Metric] = []
    for name in ("tstr", "trtr"):
        values = probabilities[name]
        if values is None or not scored:
            note = notes.get(name) or f"no holdout class of {label_name!r} has {MIN_CLASS_ROWS} texts and a rest"
            metrics.append(metric(f"utility.{name}", None, _UTILITY[f"utility.{name}"], "higher", note=note))
            continue

        def score(idx: np.ndarray, values: np.ndarray = values) -> float:
            return _macro_auc(truth[idx], values[idx], scored)

        point = score(np.arange(len(truth)))
        draws = bootstrap(score, len(truth), rng, BOOTSTRAP)
        note = f"{len(scored)} classes of {label_name!r} scored on {len(truth):,} holdout texts; trained on {size:,}"
        metrics.append(
            metric(
                f"utility.{name}", point, _UTILITY[f"utility.{name}"], "higher", centred_interval(point, draws), note
            )
        )
    for name in ("tstr", "trtr"):
        values = probabilities[name]
        accuracy = None if values is None else float((values.argmax(axis=1) == truth).mean())
        key = f"utility.{name}_accuracy"
        metrics.append(metric(key, accuracy, _UTILITY[key], "higher", note=notes.get(name, "")))
    details = {
        "measure": "AUC",
        "label": label_name,
        "classes": labels.classes,
        "scored_classes": [labels.classes[c] for c in scored],
        "train_texts": size,
        "majority_share": float(counts.max() / len(truth)),
    }
    return metrics, details


def _macro_auc(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[int]) -> float:
    values = [auc(truth == c, probabilities[:, c]) for c in classes]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
