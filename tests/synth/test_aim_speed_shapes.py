"""AIM's time and width (#22): numpy estimation of small models, rounds and candidates that do not grow with d."""

from __future__ import annotations

import itertools
import logging
from fractions import Fraction

import jax
import numpy as np
import pandas as pd
import pytest
from marginal_support import public

from privsynth.data.datasets import load_dataset
from privsynth.synth import _pgm
from privsynth.synth.aim import AIM, _candidates, _round_candidates, default_rounds
from privsynth.synth.mst import MST

COLUMNS = ["dvcat", "weight", "dead", "sex", "ageOFocc", "injSeverity"]


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS")[COLUMNS]


@pytest.fixture(scope="module")
def mst(nass: pd.DataFrame) -> MST:
    model = MST(numeric_bins="uniform").fit(nass, public(nass), epsilon=1.0, ledger=False)
    assert isinstance(model, MST)
    return model


def test_numpy_descent_fits_the_same_model_as_mbis_compiled_steps(mst: MST, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy mirror descent is mbi's iteration: from the same measurements both reach the same marginals."""
    domain, measurements, total = mst.model_.domain, mst.measurements_, mst.model_.total
    fitted = {}
    for engine, cap in (("numpy", 1e9), ("jax", -1.0)):
        monkeypatch.setattr(_pgm, "NUMPY_MAX_MB", cap)
        fitted[engine] = _pgm.estimate(domain, measurements, total, iters=1000)
    for pair in itertools.combinations(domain, 2):
        gap = np.abs(fitted["numpy"].project(pair) - fitted["jax"].project(pair)).sum() / total
        assert gap < 1e-3, (pair, gap)


def test_small_aim_fit_compiles_no_xla_program(nass: pd.DataFrame) -> None:
    """Compiling one XLA program per model structure was ~90% of AIM's time on nassCDS; small models now
    descend in numpy, so a fit compiles nothing."""
    compiled: list[str] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "compil" in record.getMessage().lower():
                compiled.append(record.getMessage())

    handler = Count()
    logging.getLogger("jax").addHandler(handler)
    jax.config.update("jax_log_compiles", True)  # type: ignore[no-untyped-call]
    try:
        model = AIM(rounds=2 * len(COLUMNS), iters=100).fit(nass, public(nass), epsilon=1.0, ledger=False)
    finally:
        jax.config.update("jax_log_compiles", False)  # type: ignore[no-untyped-call]
        logging.getLogger("jax").removeHandler(handler)
    assert isinstance(model, AIM)
    assert compiled == []


def test_default_rounds_are_the_papers_16_d_up_to_256_then_fewer_per_column() -> None:
    assert [default_rounds(d) for d in (3, 14, 16, 17, 30, 55, 74, 200)] == [48, 224, 256, 240, 136, 138, 185, 500]
    # wide tables keep room for the 1-ways and the spanning tree (1.9 d + 1 rounds' budget) and some rounds
    assert all(default_rounds(d) >= 2.5 * d for d in range(3, 300))


def test_a_round_scores_at_most_max_candidates_drawn_without_the_data(mst: MST) -> None:
    columns = list(mst.model_.domain)
    candidates = _candidates(dict.fromkeys(itertools.combinations(columns, 3), 1.0), columns)
    assert len(candidates) == 6 + 15 + 20
    everything, excluded = _round_candidates(candidates, mst.model_, 80.0, 100, np.random.default_rng(0))
    assert (list(everything), excluded) == (list(candidates), 0)  # all of them, in order, when few
    first, _ = _round_candidates(candidates, mst.model_, 80.0, 10, np.random.default_rng(0))
    second, _ = _round_candidates(candidates, mst.model_, 80.0, 10, np.random.default_rng(1))
    assert len(first) == len(second) == 10 and set(first) <= set(candidates) and set(first) != set(second)
    tiny, excluded = _round_candidates(candidates, mst.model_, 1e-9, 10, np.random.default_rng(0))
    # only marginals inside the model's cliques (free to re-measure) pass a cap the model already exceeds
    assert all(any(set(c) <= set(p) for p in mst.model_.potentials) for c in tiny) and excluded > 0


def test_aim_with_sampled_candidates_spends_its_budget_exactly(nass: pd.DataFrame) -> None:
    model = AIM(rounds=2 * len(COLUMNS), iters=100, max_candidates=5).fit(nass, public(nass), epsilon=1.0, ledger=False)
    assert isinstance(model, AIM)
    spent = sum((Fraction(s["rho"]) for s in model.spends_), Fraction(0))
    assert float(spent) == pytest.approx(model.rho_, rel=1e-9) and spent <= Fraction(model.rho_)
    assert sum(s["purpose"].startswith("select round") for s in model.spends_) == model.rounds_
    assert model.get_params()["max_candidates"] == 5
