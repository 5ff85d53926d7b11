"""Privacy audit of MST, AIM and PrivBayes by membership inference on a canary record.

The auditor fits the method many times on a dataset D and on D plus one canary record, scores each fitted model with a
membership statistic, and turns the statistic's error rates into a lower bound on epsilon that holds with 95%
confidence (Jagielski, Ullman and Oprea, "Auditing Differentially Private Machine Learning: How Private is
Private SGD?", NeurIPS 2020; Nasr, Song, Thakurta, Papernot and Carlini, "Adversary Instantiation: Lower Bounds
for Differentially Private Machine Learning", IEEE S&P 2021): any threshold test with false-positive rate FPR and
false-negative rate FNR on an (epsilon, delta)-DP mechanism satisfies FPR e^epsilon + FNR >= 1 - delta, so
epsilon >= log((1 - delta - FNR) / FPR), with each rate replaced by its Clopper-Pearson upper bound.

The statistic is the strongest one the released model allows: the noisy counts of the canary's cell in every
marginal MST measured, each minus D's true count, weighted by its inverse noise variance (the likelihood-ratio
test between the two worlds). The threshold is chosen on half of the fits and the bound computed on the other
half, so the bound is not inflated by the choice. At epsilon 1 such a bound has little power, so the audit also
checks the one thing a broken implementation would most likely get wrong: the noise on the canary's cells must
be as large as the rho charged in the ledger pays for.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Schema
from privsynth.privacy.mechanisms import seeded_noise
from privsynth.synth.marginal import AIM, MST
from privsynth.synth.privbayes import PrivBayes

DELTA = 1e-6
CONFIDENCE = 0.95
CANARY = {"dead": "dead", "airbag": "none", "sex": "f"}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, Schema]:
    """D (4,000 nassCDS rows, three columns with public categories) and D plus the canary."""
    base = load_dataset("nassCDS")[list(CANARY)].iloc[:4000].reset_index(drop=True)
    schema = Schema([dataclasses.replace(c, public=True) for c in Schema.infer(base).synthesized()])
    return base, pd.concat([base, pd.DataFrame([CANARY])], ignore_index=True), schema


Marginal = MST | AIM | PrivBayes


def mst() -> Marginal:
    return MST(numeric_bins="uniform", iters=50)


def aim() -> Marginal:
    """AIM with few rounds (each round selects with the exponential mechanism and measures one marginal)."""
    return AIM(numeric_bins="uniform", iters=30, rounds=3)


def membership_score(model: Marginal, base: pd.DataFrame) -> float:
    """Estimate of how many canaries the data held: 0 without it, 1 with it, plus noise of fixed variance."""
    assert model.compression_ == {}  # every cell of these columns is far above MST's 3-sigma cut
    weighted = precision = 0.0
    for m in model.measurements_:
        cells = tuple(model.domains_[c].cell_of(CANARY[c]) for c in m.clique)
        index = int(np.ravel_multi_index(cells, tuple(model.domains_[c].size for c in m.clique)))
        true = int(base[list(m.clique)].eq(pd.Series({c: CANARY[c] for c in m.clique})).all(axis=1).sum())
        weighted += (m.values[index] - true) / m.sigma**2
        precision += 1 / m.sigma**2
    return weighted / precision


def scores(
    epsilon: float, trials: int, data: tuple[pd.DataFrame, pd.DataFrame, Schema], make: Callable[[], Marginal] = mst
) -> tuple[list[float], list[float], float]:
    """Membership scores of ``trials`` fits without and with the canary, and the standard deviation the
    scores would have if the measurements cost exactly the rho the fits charged for them."""
    base, with_canary, schema = data
    out: list[float] = []
    inside: list[float] = []
    charged = []
    for _ in range(trials):
        for frame, found in ((base, out), (with_canary, inside)):
            model = make().fit(frame, schema, epsilon=epsilon, ledger=False)
            assert isinstance(model, MST | AIM | PrivBayes)
            found.append(membership_score(model, base))
            charged.append(sum(s["rho"] for s in model.spends_ if s["purpose"].endswith(_measured(model))))
    # a Gaussian measurement of rho has 1 / sigma^2 = 2 rho: the score's variance is 1 / (2 sum of rho)
    return out, inside, 1 / math.sqrt(2 * float(np.mean(charged)))


def _measured(model: Marginal) -> tuple[str, ...]:
    return tuple(f"marginal of {' x '.join(repr(c) for c in m.clique)}" for m in model.measurements_)


def _spread(out: list[float], inside: list[float]) -> float:
    """The scores' standard deviation within each world, pooled."""
    return float(np.std(np.concatenate([np.subtract(out, np.mean(out)), np.subtract(inside, np.mean(inside))])))


def upper(errors: int, trials: int) -> float:
    """One-sided Clopper-Pearson upper confidence bound on an error rate."""
    return 1.0 if errors >= trials else float(stats.beta.ppf(CONFIDENCE, errors + 1, trials - errors))


def epsilon_lower_bound(out: list[float], inside: list[float]) -> float:
    """Threshold picked on the first half of each world's scores, bound computed on the second half."""
    half = len(out) // 2
    pick_out, pick_in = np.array(out[:half]), np.array(inside[:half])
    test_out, test_in = np.array(out[half:]), np.array(inside[half:])

    def estimate(threshold: float) -> float:
        false_positive = (np.sum(pick_out > threshold) + 1) / (half + 2)
        false_negative = (np.sum(pick_in <= threshold) + 1) / (half + 2)
        return max(math.log((1 - false_negative) / false_positive), math.log((1 - false_positive) / false_negative))

    threshold = max(np.concatenate([pick_out, pick_in]), key=estimate)
    fpr = upper(int(np.sum(test_out > threshold)), len(test_out))
    fnr = upper(int(np.sum(test_in <= threshold)), len(test_in))
    bounds = [(1 - DELTA - fnr) / fpr, (1 - DELTA - fpr) / fnr]
    return max(0.0, *(math.log(b) for b in bounds if b > 0))


def test_canary_audit_stays_below_epsilon_fast(data: tuple[pd.DataFrame, pd.DataFrame, Schema]) -> None:
    """25 fits per world: little power, but the bound must not pass the claim, and the noise the canary sees
    must not be smaller than the noise the charged rho pays for. The noise is seeded (the same on every run, a
    regression test of the fit's measurements); the slow audit below draws it securely."""
    with seeded_noise(25):
        out, inside, claimed_sd = scores(1.0, 25, data)
    # the worlds differ by one record: the score's means are 0 and 1, its noise sd about 5.5
    assert abs(np.mean(out)) < 4 and abs(np.mean(inside) - 1) < 4
    assert _spread(out, inside) > 0.7 * claimed_sd
    assert epsilon_lower_bound(out, inside) <= 1.0


@pytest.mark.slow
def test_canary_audit_stays_below_epsilon(data: tuple[pd.DataFrame, pd.DataFrame, Schema]) -> None:
    """500 fits per world at epsilon 1; the same audit on fits at epsilon 50 shows it would catch a mechanism
    that leaked much more than epsilon 1.

    Measured: lower bound 0.0; score means 0.28 and 1.24, standard deviations 5.56 and 5.41 against 5.55
    paid for.
    """
    out, inside, claimed_sd = scores(1.0, 500, data)
    assert epsilon_lower_bound(out, inside) <= 1.0
    spread = _spread(out, inside)
    assert spread > 0.9 * claimed_sd
    assert abs(np.mean(inside) - np.mean(out) - 1) < 4 * spread / math.sqrt(250)
    leaky_out, leaky_inside, _ = scores(50.0, 60, data)
    assert epsilon_lower_bound(leaky_out, leaky_inside) > 1.0


def test_aim_canary_audit_stays_below_epsilon_fast(data: tuple[pd.DataFrame, pd.DataFrame, Schema]) -> None:
    """The same audit for AIM: its rounds re-measure marginals holding the canary's cells, and the noise the
    canary sees in all of them together must be what the rho charged for them pays for. Seeded noise, as above."""
    with seeded_noise(12):
        out, inside, claimed_sd = scores(1.0, 12, data, aim)
    assert abs(np.mean(out)) < 4 * claimed_sd / math.sqrt(12) + 1 and abs(np.mean(inside) - 1) < 4 * claimed_sd
    assert _spread(out, inside) > 0.5 * claimed_sd  # 24 scores: their sd is within 30% of the truth 99.9% of the time
    assert epsilon_lower_bound(out, inside) <= 1.0


@pytest.mark.slow
def test_aim_canary_audit_stays_below_epsilon(data: tuple[pd.DataFrame, pd.DataFrame, Schema]) -> None:
    """300 AIM fits per world at epsilon 1; at epsilon 50 the same audit catches the leak."""
    out, inside, claimed_sd = scores(1.0, 300, data, aim)
    assert epsilon_lower_bound(out, inside) <= 1.0
    assert _spread(out, inside) > 0.9 * claimed_sd
    leaky_out, leaky_inside, _ = scores(50.0, 60, data, aim)
    assert epsilon_lower_bound(leaky_out, leaky_inside) > 1.0


def privbayes() -> Marginal:
    """PrivBayes: two exponential-mechanism draws choose the network, then its conditionals are measured."""
    return PrivBayes(numeric_bins="uniform", iters=30)


def test_privbayes_canary_audit_stays_below_epsilon_fast(data: tuple[pd.DataFrame, pd.DataFrame, Schema]) -> None:
    """The same audit for PrivBayes: the canary's cells in the 1-way marginals and in the network's conditionals
    must see the noise the rho charged for them pays for. Seeded noise, as above."""
    with seeded_noise(20):
        out, inside, claimed_sd = scores(1.0, 20, data, privbayes)
    assert abs(np.mean(out)) < 4 * claimed_sd / math.sqrt(20) + 1 and abs(np.mean(inside) - 1) < 4 * claimed_sd
    assert _spread(out, inside) > 0.6 * claimed_sd
    assert epsilon_lower_bound(out, inside) <= 1.0


@pytest.mark.slow
def test_privbayes_canary_audit_stays_below_epsilon(data: tuple[pd.DataFrame, pd.DataFrame, Schema]) -> None:
    """300 PrivBayes fits per world at epsilon 1, noise drawn securely; at epsilon 50 the same audit catches the
    leak (the audit has the power to see a mechanism that pays for much less noise than it draws)."""
    out, inside, claimed_sd = scores(1.0, 300, data, privbayes)
    assert epsilon_lower_bound(out, inside) <= 1.0
    assert _spread(out, inside) > 0.9 * claimed_sd
    leaky_out, leaky_inside, _ = scores(50.0, 60, data, privbayes)
    assert epsilon_lower_bound(leaky_out, leaky_inside) > 1.0
