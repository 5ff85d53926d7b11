"""Evaluation of synthetic text in the same :class:`~privsynth.evaluate.report.Report` as tables.

Texts are compared through sentence embeddings (all-MiniLM-L6-v2, unit length, :class:`privsynth.text.llm.Embedder`)
and through their words. Every distance comes with what an independent real sample (the holdout) scores, the
noise floor a perfect generator would reach:

- fidelity: Frechet distance between Gaussian fits of the embeddings (as FID, Heusel et al. 2017), and the
  kernel distance (KID, Binkowski et al. 2018: unbiased squared MMD with the kernel ``(x.y / d + 1)^3``), which
  unlike the Frechet distance has no bias from the sample size: on a few hundred texts in 384 dimensions the
  Frechet distance is mostly that bias (two real samples of 300 tweets: 0.21; words shuffled across texts: 0.29)
  while the kernel distance separates them clearly (0.006 against 0.21, x1000); precision
  and recall on k-NN manifolds of the embeddings (Kynkaenniemi et al. 2019, k = 3: the share of synthetic texts
  inside the real manifold, and of real texts inside the synthetic one); a detection AUC (logistic regression
  on embeddings telling synthetic from real, out of fold); the Kolmogorov-Smirnov distance of word counts.
- diversity: near-duplicates within the synthetic texts (another synthetic text at cosine similarity >= the
  threshold) and distinct word bigrams.
- utility: with labels, logistic regression on embeddings trained on synthetic texts (TSTR) and on as many real
  texts (TRTR), both scored on the labelled holdout: macro one-vs-rest AUC over the holdout classes with at
  least :data:`MIN_CLASS_ROWS` texts, and accuracy.
- privacy (memorisation): exact copies of private texts (after normalisation), texts sharing a run of
  ``copy_words`` consecutive words with a private text, near copies (the nearest private text at cosine
  similarity >= ``near_copy_threshold``), each against the rate of holdout texts; the DCR train share and a
  distance membership attack on embeddings as in the tabular report; and, for DP fine-tuning, the exposure of
  inserted canaries (Carlini et al. 2019, "The Secret Sharer") when another step computed them.

Subsamples are seeded; the quadratic metrics use at most :data:`MAX_TEXTS` synthetic and holdout texts and
:data:`MAX_REAL_TEXTS` private texts (a seeded sample beyond that, noted on the metrics).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from privsynth.errors import ParameterError
from privsynth.evaluate import text_diversity, text_fidelity, text_privacy, text_utility
from privsynth.evaluate.metric import Metric
from privsynth.evaluate.report import Report
from privsynth.evaluate.run import check_budget
from privsynth.evaluate.text_inputs import (
    COPY_WORDS,
    DEFAULT_MODEL,
    MAX_REAL_TEXTS,
    MAX_TEXTS,
    NEAR_COPY_THRESHOLD,
    Embedded,
    Sizes,
    TextEmbedder,
    check_exposures,
    check_labels,
    default_embedder,
    embed,
    sample_positions,
)
from privsynth.evaluate.text_privacy import canary_p_values
from privsynth.progress import report as progress
from privsynth.text.filters import as_texts

__all__ = ["TextEmbedder", "canary_p_values", "evaluate_text"]


def evaluate_text(
    real_texts: Iterable[str],
    synthetic_texts: Iterable[str],
    holdout_texts: Iterable[str] | None = None,
    *,
    real_labels: Iterable[Hashable] | None = None,
    synthetic_labels: Iterable[Hashable] | None = None,
    holdout_labels: Iterable[Hashable] | None = None,
    label_name: str = "label",
    canary_exposure: Sequence[float] | None = None,
    embedder: TextEmbedder | None = None,
    near_copy_threshold: float = NEAR_COPY_THRESHOLD,
    copy_words: int = COPY_WORDS,
    privacy_budget: Mapping[str, float] | None = None,
    seed: int = 0,
) -> Report:
    """Score ``synthetic_texts`` against the private ``real_texts`` they were generated from; return a Report.

    ``holdout_texts`` are real texts the generator never saw: the noise floor of every distance, the test set
    of the utility models and the control of the memorisation checks (without them those metrics are None).
    Labels (one per text, e.g. the ``source`` of a tweet) enable the utility metrics: all three label lists are
    needed, named ``label_name`` in the report. ``canary_exposure`` is the exposure in bits of each canary
    inserted before DP fine-tuning, as computed by the fine-tuning audit. ``embedder`` defaults to
    all-MiniLM-L6-v2 (:class:`privsynth.text.llm.Embedder`). ``privacy_budget`` is shown, not checked.
    :func:`~privsynth.evaluate.html.write_report` writes the page and the JSON.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParameterError(f"seed must be a whole number, not {seed!r}")
    real_texts = as_texts(real_texts, "real_texts")
    synthetic_texts = as_texts(synthetic_texts, "synthetic_texts")
    if holdout_texts is not None:
        holdout_texts = as_texts(holdout_texts, "holdout_texts")
    for name, texts in (("real_texts", real_texts), ("synthetic_texts", synthetic_texts)):
        if len(texts) < 2:
            raise ParameterError(f"{name} has {len(texts)} text(s); the evaluation needs at least 2")
    if holdout_texts is not None and len(holdout_texts) < 2:
        raise ParameterError(f"holdout_texts has {len(holdout_texts)} text(s); give at least 2 or None")
    if not 0.0 < near_copy_threshold <= 1.0:
        raise ParameterError(f"near_copy_threshold must be in (0, 1], not {near_copy_threshold!r}")
    if isinstance(copy_words, bool) or not isinstance(copy_words, int) or copy_words < 2:
        raise ParameterError(f"copy_words must be a whole number of at least 2, not {copy_words!r}")
    labels = check_labels(real_texts, synthetic_texts, holdout_texts, real_labels, synthetic_labels, holdout_labels)
    exposures = check_exposures(canary_exposure)
    budget = check_budget(privacy_budget)
    rng = np.random.default_rng(seed)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    real = sample_positions(list(real_texts), MAX_REAL_TEXTS, rng)
    synthetic = sample_positions(list(synthetic_texts), MAX_TEXTS, rng)
    holdout = sample_positions(list(holdout_texts), MAX_TEXTS, rng) if holdout_texts is not None else None
    model = embedder if embedder is not None else default_embedder()
    holdout_vectors = None
    if holdout_texts is not None and holdout is not None:
        holdout_vectors = embed(model, [holdout_texts[i] for i in holdout], "holdout")
    emb = Embedded(
        real=embed(model, [real_texts[i] for i in real], "private"),
        synthetic=embed(model, [synthetic_texts[i] for i in synthetic], "synthetic"),
        holdout=holdout_vectors,
    )
    seconds["embed"] = round(time.perf_counter() - start, 3)
    sizes = Sizes(len(real_texts), len(real), len(synthetic_texts), len(synthetic))
    sections: dict[str, tuple[list[Metric], dict[str, Any]]] = {}
    steps = ("fidelity", "diversity", "utility", "privacy")
    # One BLAS thread: the matrices are small, and on a busy 2-core machine two threads ran these steps 5 to 10x
    # slower than one (detection 0.74 s against 0.07 s).
    with threadpool_limits(limits=1):
        for done, step in enumerate(steps):
            progress("evaluate", done, len(steps), step)
            start = time.perf_counter()
            if step == "fidelity":
                sections[step] = text_fidelity.fidelity(
                    emb, real_texts, synthetic_texts, holdout_texts, sizes, rng, seed
                )
            elif step == "diversity":
                sections[step] = text_diversity.diversity(
                    emb, synthetic_texts, holdout_texts, synthetic, holdout, near_copy_threshold
                )
            elif step == "utility":
                sections[step] = text_utility.utility(emb, labels, real, synthetic, holdout, label_name, rng, seed)
            else:
                sections[step] = text_privacy.privacy(
                    emb,
                    (real_texts, synthetic_texts, holdout_texts),
                    (real, synthetic),
                    near_copy_threshold,
                    copy_words,
                    exposures,
                    rng,
                )
            seconds[step] = round(time.perf_counter() - start, 3)
    progress("evaluate", len(steps), len(steps), "done")
    metrics = {m.key: m for found, _ in sections.values() for m in found}
    meta: dict[str, Any] = {
        "kind": "text",
        "real_rows": len(real_texts),
        "synthetic_rows": len(synthetic_texts),
        "holdout_rows": None if holdout_texts is None else len(holdout_texts),
        "columns": [{"name": "text", "kind": "text"}]
        + ([{"name": label_name, "kind": "categorical"}] if labels is not None else []),
        "target": label_name if labels is not None else None,
        "sensitive": None,
        "seed": seed,
        "privacy_budget": budget,
        "embedding_model": getattr(model, "model_name", DEFAULT_MODEL if embedder is None else type(model).__name__),
        "near_copy_threshold": near_copy_threshold,
        "copy_words": copy_words,
        "seconds": seconds,
    }
    return Report(metrics, {name: details for name, (_, details) in sections.items()}, meta)
