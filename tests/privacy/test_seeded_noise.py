"""The seeded noise backend: reproducible for tests, off by default, out of reach of the CLI and the service, and
marked on every spend made under it."""

from __future__ import annotations

import inspect
import math
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import privsynth as ps
from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.privacy import Accountant, Budget, Ledger, _seeded
from privsynth.privacy.dp_sgd import secret_generator
from privsynth.privacy.mechanisms import (
    exponential_mechanism,
    gaussian_mechanism,
    gaussian_threshold_mechanism,
    laplace_mechanism,
    seeded_noise,
)

SEEDED = "noise: seeded for testing, not private"


def _draws() -> tuple[list[int], list[float], list[int], int, dict[str, int], int]:
    """One draw of each mechanism (and of DP-SGD's generator) on a fresh accountant."""
    accountant = Accountant(Budget.from_rho(100.0, 1e-6, approx_delta=1e-7))
    counts = gaussian_mechanism(np.arange(50), sensitivity=1, rho=0.01, accountant=accountant, purpose="ints")
    floats = gaussian_mechanism(np.zeros(5), sensitivity=1, rho=0.01, accountant=accountant, purpose="floats")
    laplace = laplace_mechanism(np.zeros(20, dtype=int), sensitivity=1, rho=0.01, accountant=accountant, purpose="l")
    chosen = exponential_mechanism(np.zeros(100), sensitivity=1, rho=0.01, accountant=accountant, purpose="pick")
    keys = gaussian_threshold_mechanism(
        {f"k{i}": 30 for i in range(40)}, rho=0.01, delta=1e-8, accountant=accountant, purpose="keys"
    )
    generator = int(torch.randint(0, 2**62, (1,), generator=secret_generator()))
    return counts.tolist(), floats.tolist(), laplace.tolist(), chosen, keys, generator


def test_the_same_seed_gives_the_same_noise_and_another_seed_other_noise() -> None:
    with seeded_noise(7):
        first = _draws()
    with seeded_noise(7):
        again = _draws()
    with seeded_noise(8):
        other = _draws()
    assert first == again
    for a, b in zip(first, other, strict=True):
        assert a != b
    counts, _, _, _, keys, _ = first
    assert counts != list(range(50))  # noise was added (sigma about 7)
    assert 0 < len(keys) < 40  # counts of 30 sit near the threshold: some keys pass, some do not


def test_noise_is_secure_by_default_whatever_the_global_seeds() -> None:
    assert _seeded.seeded() is None
    runs = []
    for _ in range(2):
        np.random.seed(0)  # noqa: NPY002 - the legacy global seed is what a careless test would set
        random.seed(0)
        torch.manual_seed(0)
        runs.append(_draws())
    for a, b in zip(*runs, strict=True):
        assert a != b  # each differs by chance with probability far below 1e-9
    with seeded_noise(1):
        pass
    assert _seeded.seeded() is None  # the block ends, and so does the seeding


def test_a_seeded_block_does_not_reach_other_threads() -> None:
    seen: list[object] = []
    with seeded_noise(3):
        thread = threading.Thread(target=lambda: seen.append(_seeded.seeded()))
        thread.start()
        thread.join()
        assert _seeded.seeded() is not None
    assert seen == [None]


def test_seeded_noise_refuses_a_seed_that_is_not_a_whole_number() -> None:
    for seed in (-1, 1.5, "7", True):
        with pytest.raises(ParameterError, match="non-negative integer"), seeded_noise(seed):  # type: ignore[arg-type]
            pass


def test_seeded_noise_has_the_scale_the_budget_pays_for() -> None:
    """The seeded samplers draw what the mechanisms claim, so regression tests see realistic noise."""
    rng = np.random.default_rng(0)
    for sigma in (0.5, 3.0, 40.0):
        x = _seeded.discrete_gaussian(rng, sigma, 40_000)
        support = np.arange(-12 * math.ceil(sigma), 12 * math.ceil(sigma) + 1)
        weights = np.exp(-(support**2) / (2 * sigma**2))
        exact_sd = math.sqrt(float(np.sum(weights * support**2) / np.sum(weights)))
        assert np.std(x) == pytest.approx(exact_sd, rel=0.02) and abs(np.mean(x)) < 5 * exact_sd / 200
    x = _seeded.discrete_laplace(rng, 10.0, 40_000)
    p = math.exp(-1 / 10.0)
    assert np.mean(np.abs(x)) == pytest.approx(2 * p / (1 - p**2), rel=0.02)  # E|X| of the two-sided geometric
    with seeded_noise(0):
        accountant = Accountant(Budget.from_rho(1000.0, 1e-6))
        sigma = 1000.0
        noise = gaussian_mechanism(
            np.zeros(20_000), sensitivity=1, rho=1 / (2 * sigma**2), accountant=accountant, purpose="scale"
        )
        assert stats.kstest(noise, stats.norm(scale=sigma).cdf).pvalue > 1e-3
        scores = np.array([0.0, 1.0, 2.0, 0.5])
        chosen = [
            exponential_mechanism(scores, sensitivity=1, rho=0.125, accountant=accountant, purpose="select")
            for _ in range(4000)
        ]
    expected = np.exp(scores / 2) / np.exp(scores / 2).sum()  # epsilon 1: weights exp(score / 2)
    assert np.bincount(chosen, minlength=4) / 4000 == pytest.approx(expected, abs=0.03)


def test_every_spend_made_with_seeded_noise_says_so_in_the_ledger_and_on_the_card(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.register("fp")
    accountant = Accountant(Budget.from_epsilon_delta(1.0, 1e-6), ledger=ledger, dataset="fp")
    with seeded_noise(0):
        gaussian_mechanism([3, 1, 4], sensitivity=1.0, rho=0.01, accountant=accountant, purpose="marginal")
    gaussian_mechanism([3, 1, 4], sensitivity=1.0, rho=0.01, accountant=accountant, purpose="marginal")
    seeded_row, secure_row = ledger.entries("fp")
    assert seeded_row.mechanism.endswith(f"; {SEEDED}") and accountant.charges[0].mechanism == seeded_row.mechanism
    assert SEEDED not in secure_row.mechanism
    ledger.close()

    nass = load_dataset("nassCDS")[["dead", "sex", "airbag"]].head(2000)
    schema = Schema([c.__class__(**{**vars(c), "public": True}) for c in Schema.infer(nass)])
    with seeded_noise(5):
        release = ps.synthesize(
            nass, "mst", rows=50, schema=schema, epsilon=1.0, ledger=False, dataset="crashes", seed=0
        )
    release.data.to_csv(tmp_path / "crashes.csv", index=False)
    spends = release.card(tmp_path / "crashes.csv").to_dict()["privacy"]["spends"]
    assert spends and all(spend["mechanism"].endswith(SEEDED) for spend in spends)
    with seeded_noise(5):
        again = ps.synthesize(nass, "mst", rows=50, schema=schema, epsilon=1.0, ledger=False, dataset="crashes", seed=0)
    assert release.fit.released == again.fit.released  # the noisy row count, reproduced
    assert release.data.equals(again.data)


def test_the_user_seed_never_seeds_the_dp_noise() -> None:
    """``--seed`` (CLI), ``seed`` (service job) and ``seed=`` (Python) fix the sampling, not the noise."""
    nass = load_dataset("nassCDS")[["dead", "sex", "airbag"]].head(2000)
    schema = Schema([c.__class__(**{**vars(c), "public": True}) for c in Schema.infer(nass)])
    fits = [
        ps.synthesize(nass, "mst", rows=50, schema=schema, epsilon=1.0, ledger=False, seed=0).model for _ in range(2)
    ]
    first, second = ([m.values.tolist() for m in fit.measurements_] for fit in fits)  # type: ignore[attr-defined]
    assert first != second


def test_seeded_noise_is_not_reachable_from_the_cli_the_service_or_the_environment() -> None:
    from privsynth.cli import app
    from privsynth.service.models import JobRequest
    from privsynth.synth import available

    groups = [g.typer_instance for g in app.registered_groups if g.typer_instance is not None]
    for command in app.registered_commands + [c for group in groups for c in group.registered_commands]:
        assert command.callback is not None
        names = " ".join(inspect.signature(command.callback).parameters).lower()
        assert "noise" not in names and "seeded" not in names, command.callback.__name__
    assert set(JobRequest.model_fields) == {"method", "epsilon", "delta", "rows", "seed", "conditions", "params"}
    for name, cls in available().items():  # a job's params are a method's constructor arguments
        assert not any("noise" in p or "seeded" in p for p in inspect.signature(cls).parameters), name
    for module in (_seeded, inspect.getmodule(gaussian_mechanism)):
        source = inspect.getsource(module)  # type: ignore[arg-type]
        assert "os.environ" not in source and "getenv" not in source
