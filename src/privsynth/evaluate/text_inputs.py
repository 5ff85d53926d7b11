"""Inputs of the text evaluation: the limits, the checked labels and exposures, the seeded samples and their
embeddings (unit length, embedded in chunks)."""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from privsynth.errors import ParameterError
from privsynth.progress import report as progress

logger = logging.getLogger(__name__)

MAX_TEXTS = 5_000  # synthetic and holdout texts used by the embedding metrics
MAX_REAL_TEXTS = 20_000  # private texts embedded (every one, up to this many)
MAX_CLASSES = 100  # a label with more distinct values is not a classification target
MIN_CLASS_ROWS = 10  # holdout texts a class needs for its one-vs-rest AUC to count
K_NEAREST = 3  # neighbourhood size of the precision/recall manifolds (Kynkaenniemi et al. use 3)
NEAR_COPY_THRESHOLD = 0.95  # cosine similarity at or above which two texts are near copies
COPY_WORDS = 8  # consecutive words shared with a private text that make a substring copy
_EMBED_CHUNK = 1_000
PLOT_POINTS = 400
EXAMPLES = 5
DEFAULT_MODEL = "all-MiniLM-L6-v2"
NEEDS_HOLDOUT = "needs holdout texts (real texts the generator never saw)"


class TextEmbedder(Protocol):
    """Anything with ``embed(texts) -> (n, d) array of unit vectors``, as :class:`privsynth.text.llm.Embedder`."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Embedded:
    """Unit-length embeddings of the (sampled) private, synthetic and holdout texts."""

    real: np.ndarray
    synthetic: np.ndarray
    holdout: np.ndarray | None


@dataclass(frozen=True)
class Sizes:
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


class Labels:
    """Label codes over the union of the three label lists (sorted by their text)."""

    def __init__(self, real: Sequence[str], synthetic: Sequence[str], holdout: Sequence[str]) -> None:
        self.classes = sorted({*real, *synthetic, *holdout})
        code = {c: i for i, c in enumerate(self.classes)}
        self.real = np.array([code[v] for v in real], dtype=np.int64)
        self.synthetic = np.array([code[v] for v in synthetic], dtype=np.int64)
        self.holdout = np.array([code[v] for v in holdout], dtype=np.int64)
        self.problem = ""


def check_labels(
    real_texts: Sequence[str],
    synthetic_texts: Sequence[str],
    holdout_texts: Sequence[str] | None,
    real_labels: Iterable[Hashable] | None,
    synthetic_labels: Iterable[Hashable] | None,
    holdout_labels: Iterable[Hashable] | None,
) -> Labels | None:
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
    labels = Labels(cleaned["real_labels"], cleaned["synthetic_labels"], cleaned["holdout_labels"])
    distinct = len(set(cleaned["real_labels"]))
    if distinct > MAX_CLASSES:
        example = cleaned["real_labels"][0]
        labels.problem = (
            f"real_labels has {distinct:,} distinct values (e.g. {example!r}), more than {MAX_CLASSES}: not a "
            "classification target; pass a coarser label"
        )
        logger.warning("text evaluation: %s; the utility metrics are skipped", labels.problem)
    return labels


def check_exposures(values: Sequence[float] | None) -> np.ndarray | None:
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


def default_embedder() -> TextEmbedder:
    from privsynth.text.llm import Embedder

    return Embedder()


def sample_positions(items: list[str], limit: int, rng: np.random.Generator) -> list[int]:
    """Positions of every item, or of a seeded sample of ``limit`` of them in their original order."""
    if len(items) <= limit:
        return list(range(len(items)))
    return sorted(int(i) for i in rng.choice(len(items), limit, replace=False))


def embed(model: TextEmbedder, texts: list[str], what: str) -> np.ndarray:
    chunks = []
    for start in range(0, len(texts), _EMBED_CHUNK):
        progress("embed", start, len(texts), what)
        chunks.append(np.asarray(model.embed(texts[start : start + _EMBED_CHUNK]), dtype=np.float64))
    progress("embed", len(texts), len(texts), what)
    vectors = np.vstack(chunks)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12))
