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

import itertools
import logging
import math
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.stats import gamma, ks_2samp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from privsynth.errors import ParameterError
from privsynth.evaluate._stats import BOOTSTRAP, auc, bootstrap, centred_interval, mean_interval, nearest
from privsynth.evaluate.metric import Metric, metric
from privsynth.evaluate.report import Report
from privsynth.evaluate.run import _check_budget
from privsynth.progress import report as progress
from privsynth.text.filters import as_texts, normalise, word_ngrams

__all__ = ["TextEmbedder", "evaluate_text"]

logger = logging.getLogger(__name__)

MAX_TEXTS = 5_000  # synthetic and holdout texts used by the embedding metrics
MAX_REAL_TEXTS = 20_000  # private texts embedded (every one, up to this many)
MAX_CLASSES = 100  # a label with more distinct values is not a classification target
MIN_CLASS_ROWS = 10  # holdout texts a class needs for its one-vs-rest AUC to count
K_NEAREST = 3  # neighbourhood size of the precision/recall manifolds (Kynkaenniemi et al. use 3)
NEAR_COPY_THRESHOLD = 0.95  # cosine similarity at or above which two texts are near copies
COPY_WORDS = 8  # consecutive words shared with a private text that make a substring copy
_EMBED_CHUNK = 1_000
_PLOT_POINTS = 400
_EXAMPLES = 5
DEFAULT_MODEL = "all-MiniLM-L6-v2"
NEEDS_HOLDOUT = "needs holdout texts (real texts the generator never saw)"


class TextEmbedder(Protocol):
    """Anything with ``embed(texts) -> (n, d) array of unit vectors``, as :class:`privsynth.text.llm.Embedder`."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


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
    ``report.to_html(path)`` / :func:`~privsynth.evaluate.report.write_report` write the page and the JSON.
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
    labels = _check_labels(real_texts, synthetic_texts, holdout_texts, real_labels, synthetic_labels, holdout_labels)
    exposures = _check_exposures(canary_exposure)
    budget = _check_budget(privacy_budget)
    rng = np.random.default_rng(seed)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    real = _sample(list(real_texts), MAX_REAL_TEXTS, rng)
    synthetic = _sample(list(synthetic_texts), MAX_TEXTS, rng)
    holdout = _sample(list(holdout_texts), MAX_TEXTS, rng) if holdout_texts is not None else None
    model = embedder if embedder is not None else _default_embedder()
    holdout_vectors = None
    if holdout_texts is not None and holdout is not None:
        holdout_vectors = _embed(model, [holdout_texts[i] for i in holdout], "holdout")
    emb = _Embedded(
        real=_embed(model, [real_texts[i] for i in real], "private"),
        synthetic=_embed(model, [synthetic_texts[i] for i in synthetic], "synthetic"),
        holdout=holdout_vectors,
    )
    seconds["embed"] = round(time.perf_counter() - start, 3)
    sizes = _Sizes(len(real_texts), len(real), len(synthetic_texts), len(synthetic))
    sections: dict[str, tuple[list[Metric], dict[str, Any]]] = {}
    steps = ("fidelity", "diversity", "utility", "privacy")
    # One BLAS thread: the matrices are small, and on a busy 2-core machine two threads ran these steps 5 to 10x
    # slower than one (detection 0.74 s against 0.07 s).
    with threadpool_limits(limits=1):
        for done, step in enumerate(steps):
            progress("evaluate", done, len(steps), step)
            start = time.perf_counter()
            if step == "fidelity":
                sections[step] = _fidelity(emb, real_texts, synthetic_texts, holdout_texts, sizes, rng, seed)
            elif step == "diversity":
                sections[step] = _diversity(
                    emb, synthetic_texts, holdout_texts, synthetic, holdout, near_copy_threshold
                )
            elif step == "utility":
                sections[step] = _utility(emb, labels, real, synthetic, holdout, label_name, rng, seed)
            else:
                sections[step] = _privacy(
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


# ---- inputs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Embedded:
    """Unit-length embeddings of the (sampled) private, synthetic and holdout texts."""

    real: np.ndarray
    synthetic: np.ndarray
    holdout: np.ndarray | None


@dataclass(frozen=True)
class _Sizes:
    """How many texts were given and how many of them were embedded."""

    real: int
    real_embedded: int
    synthetic: int
    synthetic_embedded: int

    def note(self) -> str:
        parts = []
        if self.real_embedded < self.real:
            parts.append(f"{self.real_embedded:,} of {self.real:,} private texts (seeded sample)")
        if self.synthetic_embedded < self.synthetic:
            parts.append(f"{self.synthetic_embedded:,} of {self.synthetic:,} synthetic texts (seeded sample)")
        return "; ".join(parts)


class _Labels:
    """Label codes over the union of the three label lists (sorted by their text)."""

    def __init__(self, real: Sequence[str], synthetic: Sequence[str], holdout: Sequence[str]) -> None:
        self.classes = sorted({*real, *synthetic, *holdout})
        code = {c: i for i, c in enumerate(self.classes)}
        self.real = np.array([code[v] for v in real], dtype=np.int64)
        self.synthetic = np.array([code[v] for v in synthetic], dtype=np.int64)
        self.holdout = np.array([code[v] for v in holdout], dtype=np.int64)
        self.problem = ""


def _check_labels(
    real_texts: Sequence[str],
    synthetic_texts: Sequence[str],
    holdout_texts: Sequence[str] | None,
    real_labels: Iterable[Hashable] | None,
    synthetic_labels: Iterable[Hashable] | None,
    holdout_labels: Iterable[Hashable] | None,
) -> _Labels | None:
    given = {"real_labels": real_labels, "synthetic_labels": synthetic_labels, "holdout_labels": holdout_labels}
    if all(v is None for v in given.values()):
        return None
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise ParameterError(
            f"labels are needed for the real, synthetic and holdout texts alike; {', '.join(missing)} is missing"
        )
    if holdout_texts is None:
        raise ParameterError("holdout_labels were given without holdout_texts; pass the holdout texts too")
    texts = {"real_labels": real_texts, "synthetic_labels": synthetic_texts, "holdout_labels": holdout_texts}
    cleaned: dict[str, list[str]] = {}
    for name, given_values in given.items():
        if given_values is None or isinstance(given_values, str | bytes) or not isinstance(given_values, Iterable):
            raise ParameterError(f"{name} must be a list with one label per text, not {type(given_values).__name__}")
        values = list(given_values)
        if len(values) != len(texts[name]):
            raise ParameterError(
                f"{name} has {len(values):,} labels for {len(texts[name]):,} texts; give one label per text"
            )
        out = []
        for i, value in enumerate(values):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise ParameterError(f"{name}[{i}] is missing ({value!r}); drop that text or give it a label")
            out.append(str(value))
        cleaned[name] = out
    labels = _Labels(cleaned["real_labels"], cleaned["synthetic_labels"], cleaned["holdout_labels"])
    distinct = len(set(cleaned["real_labels"]))
    if distinct > MAX_CLASSES:
        example = cleaned["real_labels"][0]
        labels.problem = (
            f"real_labels has {distinct:,} distinct values (e.g. {example!r}), more than {MAX_CLASSES}: not a "
            "classification target; pass a coarser label"
        )
        logger.warning("text evaluation: %s; the utility metrics are skipped", labels.problem)
    return labels


def _check_exposures(values: Sequence[float] | None) -> np.ndarray | None:
    if values is None:
        return None
    if not isinstance(values, Sequence | np.ndarray) or len(values) == 0:
        raise ParameterError("canary_exposure must be a non-empty list of exposures in bits (or None)")
    out = np.empty(len(values))
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ParameterError(f"canary_exposure[{i}] is {value!r}; an exposure is a finite number of bits >= 0")
        out[i] = float(value)
    return out


def _default_embedder() -> TextEmbedder:
    from privsynth.text.llm import Embedder

    return Embedder()


def _sample(items: list[str], limit: int, rng: np.random.Generator) -> list[int]:
    """Positions of every item, or of a seeded sample of ``limit`` of them in their original order."""
    if len(items) <= limit:
        return list(range(len(items)))
    return sorted(int(i) for i in rng.choice(len(items), limit, replace=False))


def _embed(model: TextEmbedder, texts: list[str], what: str) -> np.ndarray:
    chunks = []
    for start in range(0, len(texts), _EMBED_CHUNK):
        progress("embed", start, len(texts), what)
        chunks.append(np.asarray(model.embed(texts[start : start + _EMBED_CHUNK]), dtype=np.float64))
    progress("embed", len(texts), len(texts), what)
    vectors = np.vstack(chunks)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12))


# ---- fidelity ---------------------------------------------------------------------------------------------------


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


def _fidelity(
    emb: _Embedded,
    real_texts: Sequence[str],
    synthetic_texts: Sequence[str],
    holdout_texts: Sequence[str] | None,
    sizes: _Sizes,
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
            "lower",
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


def _projection(emb: _Embedded, rng: np.random.Generator) -> dict[str, Any]:
    """The first two principal components of the private embeddings, with up to 400 points of each set."""
    centre = emb.real.mean(axis=0)
    _, _, axes = np.linalg.svd(emb.real[rng.choice(len(emb.real), min(len(emb.real), 2000), replace=False)] - centre)
    basis = axes[:2].T
    out: dict[str, Any] = {}
    sets = {"private": emb.real, "synthetic": emb.synthetic, "holdout": emb.holdout}
    for name, vectors in sets.items():
        if vectors is None:
            continue
        chosen = rng.choice(len(vectors), min(len(vectors), _PLOT_POINTS), replace=False)
        out[name] = np.round((vectors[chosen] - centre) @ basis, 4).tolist()
    return out


# ---- diversity --------------------------------------------------------------------------------------------------


def _diversity(
    emb: _Embedded,
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


# ---- utility ----------------------------------------------------------------------------------------------------

_UTILITY = {
    "utility.tstr": "Macro one-vs-rest AUC on holdout texts of logistic regression on embeddings trained on synthetic "
    "texts",
    "utility.trtr": "The same AUC trained on as many private texts: the reference",
    "utility.tstr_accuracy": "Holdout accuracy of the model trained on synthetic texts",
    "utility.trtr_accuracy": "Holdout accuracy of the model trained on as many private texts",
}


def _utility(
    emb: _Embedded,
    labels: _Labels | None,
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


# ---- privacy ----------------------------------------------------------------------------------------------------


def _privacy(
    emb: _Embedded,
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
            for i in np.argsort(-to_private, kind="stable")[:_EXAMPLES]
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


def _closest_private(emb: _Embedded, real_texts: Sequence[str], real: list[int], i: int) -> str:
    return real_texts[real[int(np.argmax(emb.real @ emb.synthetic[i]))]]


def _similarity_histogram(synthetic: np.ndarray, holdout: np.ndarray | None) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, 51)
    series = {"synthetic to private": synthetic} | ({"holdout to private": holdout} if holdout is not None else {})
    return {
        "edges": edges.tolist(),
        "series": {k: (np.histogram(np.clip(v, 0, 1), edges)[0] / len(v)).tolist() for k, v in series.items()},
    }


def _membership(emb: _Embedded, rng: np.random.Generator) -> list[Metric]:
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
