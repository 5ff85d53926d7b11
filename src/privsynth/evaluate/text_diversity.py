"""Diversity of synthetic text: near-duplicates within the synthetic texts and distinct word bigrams."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from privsynth.evaluate._stats import nearest
from privsynth.evaluate.metric import Metric, metric
from privsynth.evaluate.text_inputs import NEEDS_HOLDOUT, Embedded
from privsynth.text.filters import normalise


def diversity(
    emb: Embedded,
    synthetic_texts: Sequence[str],
    holdout_texts: Sequence[str] | None,
    synthetic: list[int],
    holdout: list[int] | None,
    threshold: float,
) -> tuple[list[Metric], dict[str, Any]]:
    n = len(emb.synthetic) if emb.holdout is None else min(len(emb.synthetic), len(emb.holdout))
    rate = _self_duplicates(emb.synthetic[:n], threshold)
    floor = None if emb.holdout is None else _self_duplicates(emb.holdout[:n], threshold)
    distinct = _distinct_bigrams([synthetic_texts[i] for i in synthetic[:n]])
    distinct_floor = (
        None if holdout_texts is None or holdout is None else _distinct_bigrams([holdout_texts[i] for i in holdout[:n]])
    )
    metrics = [
        metric(
            "diversity.near_duplicate_rate",
            rate,
            f"Share of synthetic texts with another synthetic text at cosine similarity >= {threshold:g}",
            "lower",
            note=f"{n:,} texts",
        ),
        metric(
            "diversity.near_duplicate_rate_holdout",
            floor,
            "The same share among as many holdout texts: what real texts show",
            "lower",
            note="" if floor is not None else NEEDS_HOLDOUT,
        ),
        metric(
            "diversity.distinct_bigrams",
            distinct,
            "Distinct word bigrams over all word bigrams of the synthetic texts (1: no bigram repeats)",
            "higher",
            note=f"{n:,} texts",
        ),
        metric(
            "diversity.distinct_bigrams_holdout",
            distinct_floor,
            "Distinct bigram share of as many holdout texts: what real texts show",
            "higher",
            note="" if distinct_floor is not None else NEEDS_HOLDOUT,
        ),
    ]
    return metrics, {"texts": n}


def _self_duplicates(vectors: np.ndarray, threshold: float) -> float:
    if len(vectors) < 2:
        return math.nan
    second = nearest(vectors, vectors, 2)[:, 1]
    return float((1.0 - second**2 / 2.0 >= threshold - 1e-9).mean())


def _distinct_bigrams(texts: Sequence[str]) -> float:
    grams = []
    for text in texts:
        words = normalise(text).split()
        grams += list(itertools.pairwise(words))
    return len(set(grams)) / len(grams) if grams else math.nan
