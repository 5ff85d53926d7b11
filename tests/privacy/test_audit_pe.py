"""Privacy audit of Private Evolution by membership inference on a canary text.

The same audit as MST's (tests/privacy/test_audit.py, after Jagielski, Ullman and Oprea, NeurIPS 2020, and Nasr
et al., IEEE S&P 2021): PE is fitted many times on a corpus D and on D plus one canary text, each fit is scored
with a membership statistic, and the statistic's error rates give a lower bound on epsilon at 95% confidence.

The statistic is the strongest one a PE release allows. Every voted population and its noisy votes are released
(``history_``); the auditor knows D, so for each iteration it finds the synthetic text the canary would vote for
and subtracts the votes D alone gives it: the difference is 1 (with the canary) or 0 (without) plus the
histogram's noise, and the mean over iterations has the noise of the whole budget, 1/sqrt(2 rho). The threshold
is picked on half of the fits and the bound computed on the other half.

The mechanism under audit is the real one (:meth:`PrivateEvolution.fit` with its OpenDP discrete Gaussian); the
language model and the embedding model are replaced by deterministic stand-ins, which only make fits fast: what
the private texts reveal goes through the vote histograms alone, whatever the models are.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import pytest
from test_audit import epsilon_lower_bound

pytest.importorskip("opendp")

from privsynth.text.private_evolution import PrivateEvolution

PRIVATE = [f"private note number {i} about the weather and the harvest" for i in range(200)]
CANARY = "zqxcanary 8675309 never wrote this"
DIMENSION = 8


class HashEmbedder:
    """Each text's embedding is a unit vector drawn from a generator seeded by its CRC-32: deterministic."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [np.random.default_rng(zlib.crc32(text.encode())).standard_normal(DIMENSION) for text in texts]
        vectors = np.array(rows).reshape(len(rows), DIMENSION)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class NumberedGenerator:
    """A stand-in language model: each completion is a new text determined by its prompt and seed."""

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float, seed: int) -> list[str]:
        return [f"synthetic {zlib.crc32(f'{prompt}|{seed}|{i}'.encode())}" for i, prompt in enumerate(prompts)]


EMBEDDER = HashEmbedder()
PRIVATE_EMBEDDED = EMBEDDER.embed(PRIVATE)
CANARY_EMBEDDED = EMBEDDER.embed([CANARY])[0]


def membership_score(model: PrivateEvolution) -> float:
    """Mean over iterations of (noisy votes of the canary's nearest synthetic text) - (D's votes for it)."""
    history = model.history_
    differences = []
    for _, population in history.groupby("iteration", sort=True):
        pool = EMBEDDER.embed(population["text"].tolist())
        nearest = int(np.argmax(pool @ CANARY_EMBEDDED))
        true = int(np.sum(np.argmax(PRIVATE_EMBEDDED @ pool.T, axis=1) == nearest))
        differences.append(float(population["votes"].iloc[nearest]) - true)
    return float(np.mean(differences))


def scores(epsilon: float, trials: int) -> tuple[list[float], list[float], float]:
    """Membership scores of ``trials`` fits without and with the canary, and the standard deviation the scores
    would have if the histograms cost exactly the rho the fits charged."""
    out: list[float] = []
    inside: list[float] = []
    charged = []
    for trial in range(trials):
        for texts, found in ((PRIVATE, out), ([*PRIVATE, CANARY], inside)):
            model = PrivateEvolution(NumberedGenerator(), EMBEDDER, iterations=2, population=8, seed=trial)  # type: ignore[arg-type]
            model.fit(texts, epsilon=epsilon, ledger=False)
            found.append(membership_score(model))
            charged.append(model.record_.rho_spent)
    # T histograms of rho / T each, sigma^2 = T / (2 rho): the mean over T has variance 1 / (2 rho)
    return out, inside, 1 / math.sqrt(2 * float(np.mean(charged)))


def _spread(out: list[float], inside: list[float]) -> float:
    return float(np.std(np.concatenate([np.subtract(out, np.mean(out)), np.subtract(inside, np.mean(inside))])))


def test_pe_canary_audit_stays_below_epsilon() -> None:
    """500 fits per world at epsilon 1 (seconds: the models are stand-ins): the bound must not pass the claim,
    and the canary's vote must see the noise the charged rho pays for (sd 4.53). The same audit at epsilon 50
    shows it would catch a mechanism that leaked much more than epsilon 1 (there the discrete Gaussian, at
    sigma 0.23, is mostly 0 and its spread is below sigma)."""
    out, inside, claimed_sd = scores(1.0, 500)
    assert claimed_sd == pytest.approx(4.53, abs=0.01)
    assert epsilon_lower_bound(out, inside) <= 1.0
    spread = _spread(out, inside)
    assert 0.9 * claimed_sd < spread < 1.1 * claimed_sd
    assert abs(np.mean(inside) - np.mean(out) - 1) < 4 * spread / math.sqrt(250)
    leaky_out, leaky_inside, _ = scores(50.0, 60)
    assert epsilon_lower_bound(leaky_out, leaky_inside) > 1.0
