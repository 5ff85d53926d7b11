"""Memorisation checks of synthetic text: exact, word-run and near copies against fresh real texts, the DCR train
share and a distance membership attack on embeddings, and canary exposure (Carlini et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import gamma

from privsynth.evaluate._stats import BOOTSTRAP, auc, bootstrap, centred_interval, mean_interval, nearest
from privsynth.evaluate.metric import Metric, metric
from privsynth.evaluate.text_inputs import EXAMPLES, NEEDS_HOLDOUT, Embedded
from privsynth.text.filters import normalise, word_ngrams


def privacy(
    emb: Embedded,
    texts: tuple[Sequence[str], Sequence[str], Sequence[str] | None],
    embedded: tuple[list[int], list[int]],
    threshold: float,
    copy_words: int,
    exposures: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[list[Metric], dict[str, Any]]:
    real_texts, synthetic_texts, holdout_texts = texts
    real, synthetic = embedded
    private_exact = {normalise(t) for t in real_texts}
    private_grams = {g for t in real_texts for g in word_ngrams(t, copy_words)}

    def exact(texts: Sequence[str]) -> np.ndarray:
        return np.array([normalise(t) in private_exact for t in texts], dtype=np.float64)

    def substring(texts: Sequence[str]) -> np.ndarray:
        return np.array(
            [normalise(t) in private_exact or not private_grams.isdisjoint(word_ngrams(t, copy_words)) for t in texts],
            dtype=np.float64,
        )

    copies, copies_floor = exact(synthetic_texts), None if holdout_texts is None else exact(holdout_texts)
    runs, runs_floor = substring(synthetic_texts), None if holdout_texts is None else substring(holdout_texts)
    to_private = 1.0 - nearest(emb.synthetic, emb.real)[:, 0] ** 2 / 2.0
    near = (to_private >= threshold - 1e-9).astype(np.float64)
    holdout_to_private = None if emb.holdout is None else 1.0 - nearest(emb.holdout, emb.real)[:, 0] ** 2 / 2.0
    near_floor = None if holdout_to_private is None else (holdout_to_private >= threshold - 1e-9).astype(np.float64)
    sample_note = "" if len(real) == len(real_texts) else f"against {len(real):,} of {len(real_texts):,} private texts"

    holdout_note = "" if holdout_texts is not None else NEEDS_HOLDOUT
    metrics = [
        _rate(
            "privacy.exact_copy_rate",
            copies,
            "Share of synthetic texts identical to a private text (case, Unicode form and spacing ignored)",
        ),
        _rate(
            "privacy.exact_copy_rate_baseline",
            copies_floor,
            "Share of holdout texts identical to a private text: the rate fresh real texts show",
            holdout_note,
        ),
        _rate(
            "privacy.substring_copy_rate",
            runs,
            f"Share of synthetic texts that copy a private text or share a run of {copy_words} consecutive words "
            "with one",
        ),
        _rate(
            "privacy.substring_copy_rate_baseline",
            runs_floor,
            "The same share among holdout texts: what fresh real texts show",
            holdout_note,
        ),
        _rate(
            "privacy.near_copy_rate",
            near,
            f"Share of synthetic texts whose nearest private text has cosine similarity >= {threshold:g} (embeddings)",
            sample_note,
        ),
        _rate(
            "privacy.near_copy_rate_baseline",
            near_floor,
            "The same share among holdout texts: what fresh real texts show",
            holdout_note or sample_note,
        ),
    ]
    details: dict[str, Any] = {
        "near_copy_threshold": threshold,
        "similarity_histogram": _similarity_histogram(to_private, holdout_to_private),
        "closest": [
            {
                "synthetic": synthetic_texts[synthetic[i]][:280],
                "private": _closest_private(emb, real_texts, real, i)[:280],
                "similarity": round(float(to_private[i]), 4),
            }
            for i in np.argsort(-to_private, kind="stable")[:EXAMPLES]
        ],
    }
    metrics += _membership(emb, rng)
    metrics += _canaries(exposures, details)
    return metrics, details


def _rate(key: str, values: np.ndarray | None, definition: str, note: str = "") -> Metric:
    """A share of texts flagged (with its normal-approximation interval), or None with ``note``."""
    if values is None:
        return metric(key, None, definition, "lower", note=note)
    return metric(key, float(values.mean()), definition, "lower", mean_interval(values), note)


def _closest_private(emb: Embedded, real_texts: Sequence[str], real: list[int], i: int) -> str:
    return real_texts[real[int(np.argmax(emb.real @ emb.synthetic[i]))]]


def _similarity_histogram(synthetic: np.ndarray, holdout: np.ndarray | None) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, 51)
    series = {"synthetic to private": synthetic} | ({"holdout to private": holdout} if holdout is not None else {})
    return {
        "edges": edges.tolist(),
        "series": {k: (np.histogram(np.clip(v, 0, 1), edges)[0] / len(v)).tolist() for k, v in series.items()},
    }


def _membership(emb: Embedded, rng: np.random.Generator) -> list[Metric]:
    """DCR train share and the distance membership attack on embeddings, as in the tabular privacy section."""
    dcr_text = (
        "Share of synthetic texts closer (embeddings) to a private text than to a holdout text, reweighted to "
        "equal set sizes (0.5: no closer to the training texts than to fresh ones)"
    )
    mia_text = "AUC of telling private texts from holdout texts by their closeness to the synthetic texts (0.5 ideal)"
    if emb.holdout is None:
        return [
            metric("privacy.dcr_train_share", None, dcr_text, "half", note=NEEDS_HOLDOUT),
            metric("privacy.mia_auc", None, mia_text, "half", note=NEEDS_HOLDOUT),
        ]
    n_train, n_holdout = len(emb.real), len(emb.holdout)
    weight = n_train / (n_train + n_holdout)
    to_train = nearest(emb.synthetic, emb.real)[:, 0]
    to_holdout = nearest(emb.synthetic, emb.holdout)[:, 0]
    closer = np.where(np.abs(to_train - to_holdout) <= 1e-6, weight, (to_train < to_holdout).astype(np.float64))

    def equal_size_share(raw: float) -> float:
        towards_train, towards_holdout = raw / n_train, (1.0 - raw) / n_holdout
        return towards_train / (towards_train + towards_holdout)

    share = equal_size_share(float(closer.mean()))
    draws = bootstrap(lambda idx: equal_size_share(float(closer[idx].mean())), len(closer), rng, BOOTSTRAP)
    size = min(n_train, n_holdout)
    members = emb.real[rng.choice(n_train, size, replace=False)]
    others = emb.holdout[rng.choice(n_holdout, size, replace=False)]
    score = -np.r_[nearest(members, emb.synthetic)[:, 0], nearest(others, emb.synthetic)[:, 0]]
    is_member = np.r_[np.ones(size, dtype=bool), np.zeros(size, dtype=bool)]
    point = auc(is_member, score)
    mia_draws = bootstrap(lambda idx: auc(is_member[idx], score[idx]), len(score), rng, BOOTSTRAP)
    return [
        metric("privacy.dcr_train_share", share, dcr_text, "half", centred_interval(share, draws)),
        metric(
            "privacy.mia_auc", point, mia_text, "half", centred_interval(point, mia_draws), note=f"{size:,} texts each"
        ),
    ]


def canary_p_values(exposures: np.ndarray) -> tuple[float, float]:
    """p-values of the largest and of the mean exposure if the model had not memorised the canaries.

    Without memorisation a canary's rank among the candidates is uniform, so its exposure
    ``log2(candidates) - log2(rank)`` is (up to discreteness) exponential with rate ln 2: ``P(E >= x) = 2^-x``.
    The largest of m then has ``P(max >= x) = 1 - (1 - 2^-x)^m`` and the sum is Gamma(m, 1 / ln 2).
    """
    m = len(exposures)
    largest = float(exposures.max())
    p_max = float(-np.expm1(m * np.log1p(-min(2.0**-largest, 1.0 - 1e-16))))
    p_mean = float(gamma.sf(exposures.sum(), a=m, scale=1.0 / math.log(2)))
    return p_max, p_mean


def _canaries(exposures: np.ndarray | None, details: dict[str, Any]) -> list[Metric]:
    max_text = (
        "Largest exposure (bits) of the canaries inserted before fine-tuning (Carlini et al. 2019): "
        "log2(candidates) - log2(rank of the canary among them)"
    )
    mean_text = "Mean canary exposure (bits); about 1.44 (1 / ln 2) when nothing was memorised"
    if exposures is None:
        note = "no canary exposures were given (they come from the DP fine-tuning audit)"
        return [
            metric("privacy.canary_exposure_max", None, max_text, "lower", note=note),
            metric("privacy.canary_exposure_mean", None, mean_text, "lower", note=note),
        ]
    p_max, p_mean = canary_p_values(exposures)
    details["canary"] = {"exposures": exposures.tolist(), "p_max": p_max, "p_mean": p_mean}
    return [
        metric(
            "privacy.canary_exposure_max",
            float(exposures.max()),
            max_text,
            "lower",
            note=f"{len(exposures)} canaries; p = {p_max:.2g} without memorisation",
        ),
        metric(
            "privacy.canary_exposure_mean",
            float(exposures.mean()),
            mean_text,
            "lower",
            note=f"p = {p_mean:.2g} without memorisation",
        ),
    ]
