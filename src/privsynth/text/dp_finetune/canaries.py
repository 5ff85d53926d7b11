"""The canary exposure audit of a fine-tuned model: Carlini et al., "The Secret Sharer: Evaluating and Testing
Unintended Memorization in Neural Networks" (USENIX Security 2019).

Random canaries (secret digits in a template) are inserted into the training texts, and each one's likelihood is
ranked among random candidates from the same template: exposure = log2(|R|) - log2(rank), about 0 for a canary the
model did not memorise and log2(|R|) at most. The canaries are records of the fit like any other text, so a DP
fit's budget covers the corpus with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privsynth.errors import ParameterError
from privsynth.synth.dp import LedgerArg
from privsynth.text.dp_finetune.encoding import declared_labels
from privsynth.text.dp_finetune.lora import DPLoRA

__all__ = ["CanaryResult", "canary_exposure", "canary_texts", "exposure"]


def exposure(canary: float, candidates: np.ndarray) -> float:
    """log2(|R|) - log2(rank) of a canary's log-likelihood among ``candidates`` (R is the candidates plus the
    canary; rank 1 is the most likely, ties counted against the canary)."""
    rank = 1 + int(np.sum(np.asarray(candidates) >= canary))
    return math.log2(len(candidates) + 1) - math.log2(rank)


def canary_texts(
    rng: np.random.Generator, canaries: int, candidates: int, digits: int, template: str
) -> tuple[list[str], list[str], list[str]]:
    """``(secrets, canary texts, candidate texts)``: distinct random secrets of ``digits`` digits in ``template``,
    the first ``canaries`` to insert and the other ``candidates`` to rank them against."""
    space = 10**digits
    if candidates + canaries > space:
        raise ParameterError(f"{candidates} candidates and {canaries} canaries do not fit in {space} secrets")
    drawn = rng.choice(space, size=canaries + candidates, replace=False)
    secrets = [f"{value:0{digits}d}" for value in drawn[:canaries]]
    others = [template.format(secret=f"{value:0{digits}d}") for value in drawn[canaries:]]
    return secrets, [template.format(secret=secret) for secret in secrets], others


@dataclass(frozen=True)
class CanaryResult:
    """Exposure of each inserted canary after the fit and, as ``baseline``, under the untrained model (what
    chance and the base model's taste for some digit strings give); the secrets, how often each was inserted,
    and the fitted model."""

    exposures: list[float]
    baseline: list[float]
    secrets: list[str]
    repeats: list[int]
    candidates: int
    model: DPLoRA
    template: str = "my secret code is {secret}"

    def to_card(self) -> dict[str, Any]:
        """What a data card records (the secrets are left out: random, but they are the canaries' text)."""
        return {
            "inserted": len(self.exposures),
            "repeats": list(self.repeats),
            "candidates": self.candidates,
            "template": self.template,
            "exposures": [round(value, 4) for value in self.exposures],
            "baseline": [round(value, 4) for value in self.baseline],
            "max_exposure_bits": round(math.log2(self.candidates + 1), 4),
        }


def canary_exposure(
    model: DPLoRA,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    public_labels: Sequence[str] | None = None,
    canaries: int = 4,
    repeats: int | Sequence[int] = 1,
    candidates: int = 1000,
    digits: int = 6,
    template: str = "my secret code is {secret}",
    epsilon: float | None,
    delta: float | None = None,
    seed: int = 0,
    ledger: LedgerArg = None,
    dataset: str | None = None,
    content: str | None = None,
) -> CanaryResult:
    """Insert ``canaries`` random secrets (``digits`` random digits in ``template``) into ``texts``, canary i
    ``repeats[i]`` times (or ``repeats`` times each), fit ``model`` on them, and return each canary's exposure
    among ``candidates`` random secrets of the same template.

    Exposure near 0 means the model ranks its own canary like any other secret; log2(candidates + 1) is the most
    it can be. A canary the model did not memorise has an exposure near its ``baseline``, the same ranking under
    the untrained model (an exposure of several bits can come from the base model alone: it prefers some digit
    strings). With labels, the canaries and candidates carry the first public label. Secrets, candidates and
    the shuffling come from ``seed``. ``ledger``, ``dataset`` and ``content`` go to :meth:`DPLoRA.fit`: the canaries are
    records of the fit like any other text, so the budget and its guarantee cover the corpus with them.
    """
    rng = np.random.default_rng(seed)
    counts = [int(repeats)] * canaries if isinstance(repeats, int | np.integer) else [int(r) for r in repeats]
    if len(counts) != canaries or min(counts, default=1) < 1:
        raise ParameterError(f"repeats must be >= 1, one per canary ({canaries}), got {repeats!r}")
    secrets, inserted, others = canary_texts(rng, canaries, candidates, digits, template)
    corpus = list(texts) + [text for text, count in zip(inserted, counts, strict=True) for _ in range(count)]
    order = rng.permutation(len(corpus))
    tag = None if labels is None else declared_labels(public_labels)[0]
    tags = None if tag is None else [tag] * (canaries + candidates)
    untrained = DPLoRA(max_length=model.max_length)
    untrained.labels_ = None if labels is None else declared_labels(public_labels)
    untrained._load()
    before = untrained.log_likelihood(inserted + others, tags)
    del untrained
    if labels is None:
        model.fit(
            [corpus[i] for i in order], epsilon=epsilon, delta=delta, ledger=ledger, dataset=dataset, content=content
        )
    else:
        tagged = [str(value) for value in labels] + [str(tag)] * sum(counts)
        model.fit(
            [corpus[i] for i in order],
            [tagged[i] for i in order],
            public_labels=public_labels,
            epsilon=epsilon,
            delta=delta,
            ledger=ledger,
            dataset=dataset,
            content=content,
        )
    scores = model.log_likelihood(inserted + others, tags)
    values = [exposure(float(score), scores[canaries:]) for score in scores[:canaries]]
    baseline = [exposure(float(score), before[canaries:]) for score in before[:canaries]]
    return CanaryResult(values, baseline, secrets, counts, candidates, model, template)
