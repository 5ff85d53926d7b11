"""AIM's round logic (#22, #19): the MST tree start, batches of rounds once the model is large, exact spending."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from marginal_support import public

from privsynth.data.datasets import load_dataset
from privsynth.errors import ParameterError
from privsynth.synth import _pgm, aim
from privsynth.synth.aim import AIM, _round_candidates
from privsynth.synth.mst import MST

COLUMNS = ["dvcat", "weight", "dead", "sex", "ageOFocc", "injSeverity"]


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS")[COLUMNS]


def spent(model: AIM) -> Fraction:
    return sum((Fraction(s["rho"]) for s in model.spends_), Fraction(0))


def test_tree_start_measures_a_spanning_tree_first_and_spends_the_budget_exactly(nass: pd.DataFrame) -> None:
    model = AIM(rounds=4 * len(COLUMNS), numeric_bins="uniform", iters=100, tree=True).fit(
        nass, public(nass), epsilon=1.0, ledger=False
    )
    assert isinstance(model, AIM)
    assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9) and spent(model) <= Fraction(model.rho_)
    purposes = [s["purpose"] for s in model.spends_]
    edges = [p for p in purposes if p.startswith("select edge")]
    assert len(edges) == len(COLUMNS) - 1
    # the 1-ways, then the tree's selections and measurements, then the rounds
    first_round = next(i for i, p in enumerate(purposes) if p.startswith("select round"))
    assert all(p.startswith(("1-way", "select edge", "2-way")) for p in purposes[:first_round])
    tree = [m.clique for m in model.measurements_[len(COLUMNS) : 2 * len(COLUMNS) - 1]]
    assert all(len(c) == 2 for c in tree)
    linked = {COLUMNS[0]}  # the tree's edges connect every column
    for _ in tree:
        linked |= {a for c in tree if set(c) & linked for a in c}
    assert linked == set(COLUMNS)
    assert sum(p.startswith("select round") for p in purposes) == model.rounds_
    # the tree costs d - 1 rounds' budget: the 24 rounds' budget leaves at most 24 - 5.4 - 5 rounds
    assert model.rounds_ <= 14


def test_tree_start_is_the_default_only_when_the_rounds_leave_room_for_it(nass: pd.DataFrame) -> None:
    few = AIM(rounds=2 * len(COLUMNS), numeric_bins="uniform", iters=100).fit(
        nass, public(nass), epsilon=1.0, ledger=False
    )
    many = AIM(rounds=3 * len(COLUMNS), numeric_bins="uniform", iters=100).fit(
        nass, public(nass), epsilon=1.0, ledger=False
    )
    assert not any(s["purpose"].startswith("select edge") for s in few.spends_)
    assert sum(s["purpose"].startswith("select edge") for s in many.spends_) == len(COLUMNS) - 1
    off = AIM(rounds=3 * len(COLUMNS), numeric_bins="uniform", iters=100, tree=False)
    assert off.get_params()["tree"] is False


def test_a_tree_the_rounds_cannot_pay_for_is_refused_before_any_spend(nass: pd.DataFrame) -> None:
    # 6 columns: the 1-ways (5.4 rounds' budget) and 5 edges leave under two rounds of 12
    with pytest.raises(ParameterError, match=r"tree=True needs at least 13 rounds on 6 columns.*got rounds=12"):
        AIM(rounds=12, tree=True).fit(nass, public(nass), epsilon=1.0, ledger=False)


def test_large_models_batch_rounds_per_estimate_with_distinct_picks(
    nass: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every model counts as large here: each estimate follows a batch of up to 8 rounds, the batch's picks
    are distinct marginals, and the spends still add up to the budget."""
    monkeypatch.setattr(aim, "_LARGE_MB", -1.0)
    estimates: list[int] = []
    real = _pgm.estimate

    def counting(*args: object, **kwargs: object) -> _pgm.Model:
        estimates.append(kwargs["iters"])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_pgm, "estimate", counting)
    model = AIM(rounds=3 * len(COLUMNS), numeric_bins="uniform", iters=200, tree=False).fit(
        nass, public(nass), epsilon=10.0, ledger=False
    )
    assert isinstance(model, AIM)
    assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9) and spent(model) <= Fraction(model.rho_)
    # one estimate from the 1-ways, one per batch, the final one; batches of 8 rounds (the last maybe fewer)
    batches = len(estimates) - 2
    assert batches == -(-model.rounds_ // aim._BATCH) and batches < model.rounds_
    assert estimates[1:-1] == [200 // aim._LARGE_STEPS] * batches  # fewer steps once large
    assert estimates[-1] == 200  # the final estimate bounded to iters on a large model
    rounds = [m.clique for m in model.measurements_[len(COLUMNS) :]]
    for start in range(0, len(rounds), aim._BATCH):
        batch = rounds[start : start + aim._BATCH]
        assert len(set(batch)) == len(batch)


def test_a_batch_leaves_out_its_own_picks_and_counts_them_in_the_model_size() -> None:
    nass = load_dataset("nassCDS")[COLUMNS]
    mst = MST(numeric_bins="uniform").fit(nass, public(nass), epsilon=1.0, ledger=False)
    assert isinstance(mst, MST)
    columns = list(mst.model_.domain)
    candidates = dict.fromkeys(itertools.combinations(columns, 3), 1.0)
    taken = [("dvcat", "weight", "ageOFocc")]
    allowed, _ = _round_candidates(candidates, mst.model_, 80.0, 100, np.random.default_rng(0), taken)
    assert taken[0] not in allowed and len(allowed) == len(candidates) - 1
    size = _pgm.model_size_mb(mst.model_.domain, [*mst.model_.potentials, *taken])
    capped, excluded = _round_candidates(candidates, mst.model_, size, 100, np.random.default_rng(0), taken)
    # at a cap equal to the model with the pick, only candidates inside its cliques (and the pick's) still fit
    assert excluded > 0 and ("dvcat", "weight", "ageOFocc") not in capped
