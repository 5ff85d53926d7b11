"""PrivBayes on nassCDS: network of bounded degree, exact budget, noise scale, conditions, the selection score."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from marginal_support import public

from privsynth.data.datasets import load_dataset
from privsynth.errors import ParameterError
from privsynth.privacy.budget import gaussian_sigma
from privsynth.privacy.ledger import Ledger
from privsynth.privacy.mechanisms import seeded_noise
from privsynth.synth import available, create
from privsynth.synth.privbayes import SCORE_SENSITIVITY, PrivBayes, dependence

COLUMNS = ["dvcat", "weight", "dead", "airbag", "sex", "ageOFocc", "injSeverity"]


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS")[COLUMNS]


@pytest.fixture(scope="module")
def model(nass: pd.DataFrame, ledger: Ledger) -> PrivBayes:
    fitted = PrivBayes(numeric_bins="uniform", iters=500).fit(nass, public(nass), epsilon=1.0, ledger=ledger)
    assert isinstance(fitted, PrivBayes)
    return fitted


def spent(model: PrivBayes) -> Fraction:
    return sum((Fraction(s["rho"]) for s in model.spends_), Fraction(0))


def test_privbayes_is_a_registered_dp_method() -> None:
    assert available()["privbayes"] is PrivBayes
    assert isinstance(create("privbayes", degree=2), PrivBayes) and PrivBayes.differentially_private


def test_fits_and_samples_with_the_columns_and_dtypes(nass: pd.DataFrame, model: PrivBayes) -> None:
    synthetic = model.sample(len(nass), seed=0)
    assert list(synthetic.columns) == COLUMNS
    assert synthetic.dtypes.to_dict() == nass.dtypes.to_dict()
    assert (synthetic["ageOFocc"] == synthetic["ageOFocc"].round()).all()
    assert synthetic["dead"].eq("dead").mean() == pytest.approx(nass["dead"].eq("dead").mean(), abs=0.015)
    assert abs(model.rows_estimate_ - len(nass)) < 200
    assert model.sample(300, seed=3).equals(model.sample(300, seed=3))


def test_budget_is_spent_exactly_in_the_papers_three_parts(model: PrivBayes, ledger: Ledger) -> None:
    d = len(COLUMNS)
    assert spent(model) <= Fraction(model.rho_)
    assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9)
    purposes = [s["purpose"] for s in model.spends_]
    assert purposes[:d] == [f"1-way marginal of {c!r}" for c in COLUMNS]
    selections = [s for s in model.spends_ if s["purpose"].startswith("select attribute")]
    assert len(selections) == d - 1
    assert float(sum(Fraction(s["rho"]) for s in selections)) == pytest.approx(0.3 * model.rho_, rel=1e-9)
    ones = sum(s["rho"] for s in model.spends_[:d])
    assert ones == pytest.approx(0.1 * model.rho_, rel=1e-9)
    conditionals = [m for m in model.measurements_ if len(m.clique) > 1]
    assert len(conditionals) == sum(1 for _, parents in model.network_ if parents)
    assert len(model.spends_) == d + (d - 1) + len(conditionals)
    rows = ledger.entries(model.dataset_)
    (reservation,) = [r for r in rows if r.reservation_id is None]
    under = [(r.purpose, r.rho) for r in rows if r.reservation_id == reservation.id]
    assert under == [(s["purpose"], s["rho"]) for s in model.spends_]


def test_measurements_carry_the_noise_their_rho_pays_for(model: PrivBayes) -> None:
    """Each measurement's sigma is the Gaussian sigma of the rho charged for it (sensitivity 1); the
    conditionals share 0.6 of rho evenly, so with d - 1 of them their sigma is the planned ``sigma_``."""
    by_purpose = {s["purpose"]: s["rho"] for s in model.spends_}
    for m in model.measurements_:
        rho = by_purpose[f"{len(m.clique)}-way marginal of {' x '.join(repr(c) for c in m.clique)}"]
        assert m.sigma == pytest.approx(gaussian_sigma(rho, 1.0), rel=1e-12)
    conditionals = [m for m in model.measurements_ if len(m.clique) > 1]
    assert len(conditionals) == len(COLUMNS) - 1
    expected = 1 / math.sqrt(2 * 0.6 * model.rho_ / (len(COLUMNS) - 1))
    assert model.sigma_ == pytest.approx(expected, rel=1e-9)
    assert all(m.sigma == pytest.approx(model.sigma_, rel=1e-9) for m in conditionals)


def test_network_covers_every_column_once_within_the_degree(model: PrivBayes, nass: pd.DataFrame) -> None:
    placed = [x for x, _ in model.network_]
    assert sorted(placed) == sorted(COLUMNS)
    assert model.network_[0][1] == ()
    # the network is a DP output (exponential mechanism), published on the card with the noisy row count
    assert model.record_.released["network"] == [{"attribute": x, "parents": list(p)} for x, p in model.network_]
    for i, (_, parents) in enumerate(model.network_):
        assert len(parents) <= 3 and set(parents) <= set(placed[:i])
    one = PrivBayes(degree=1, numeric_bins="uniform", iters=200).fit(nass, public(nass), epsilon=1.0, ledger=False)
    assert isinstance(one, PrivBayes)
    assert all(len(parents) <= 1 for _, parents in one.network_)
    assert max(len(m.clique) for m in one.measurements_) == 2


def test_usefulness_rule_drops_parents_when_noise_would_swamp_them(nass: pd.DataFrame) -> None:
    """theta so large that no marginal with a parent is useful: every attribute enters alone, and the
    conditionals' share measures the 1-way marginals again, so the budget is still spent exactly."""
    model = PrivBayes(theta=1e9, numeric_bins="uniform", iters=200).fit(nass, public(nass), epsilon=1.0, ledger=False)
    assert isinstance(model, PrivBayes)
    assert all(parents == () for _, parents in model.network_)
    assert all(len(m.clique) == 1 for m in model.measurements_) and len(model.measurements_) == 2 * len(COLUMNS)
    assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9)


def test_conditional_sampling_is_exact(model: PrivBayes) -> None:
    rows = model.sample(20_000, conditions={"dead": "dead"}, seed=0)
    assert len(rows) == 20_000 and rows["dead"].eq("dead").all()
    assert "dead" not in model.compression_ and "airbag" not in model.compression_
    joint = model.model_.project(("dead", "airbag"))
    dead = model.domains_["dead"].cell_of("dead")
    expected = joint[dead] / joint[dead].sum()
    observed = np.bincount(model.domains_["airbag"].encode(rows["airbag"]), minlength=len(expected)) / len(rows)
    np.testing.assert_allclose(observed, expected, atol=0.015)
    assert model.sample(50, conditions={"ageOFocc": 30}, seed=1)["ageOFocc"].eq(30).all()
    with pytest.raises(ParameterError, match="not a category of 'dead'"):
        model.sample(5, conditions={"dead": "undead"})


def test_dependence_score_moves_at_most_its_sensitivity_per_record() -> None:
    """Adding one record to any cell moves the score by at most 2; the score is never negative, and it is
    near 0 when X is independent of its parents however noisy the reference distribution is."""
    rng = np.random.default_rng(0)
    columns = ["x", "a", "b"]
    for _ in range(300):
        table = rng.integers(0, 30, size=(3, 2, 4)).astype(float)
        reference = rng.dirichlet(np.ones(3))
        for parents in (("a",), ("a", "b")):
            clique_table = table if parents == ("a", "b") else table.sum(axis=2)
            base = dependence(clique_table, "x", parents, columns, reference)
            assert base >= -1e-9
            cell = tuple(rng.integers(0, s) for s in clique_table.shape)
            plus = clique_table.copy()
            plus[cell] += 1
            assert abs(dependence(plus, "x", parents, columns, reference) - base) <= SCORE_SENSITIVITY + 1e-9
    independent = np.multiply.outer(np.array([600.0, 300.0, 100.0]), np.array([0.25, 0.75]))
    assert dependence(independent, "x", ("a",), ["x", "a"], np.array([0.5, 0.3, 0.2])) == pytest.approx(0, abs=1e-9)
    dependent = np.diag([500.0, 500.0])
    # a copy: R = n / 2 with the true reference; a noisy one costs it the reference's own error, 100
    assert dependence(dependent, "x", ("a",), ["x", "a"], np.array([0.5, 0.5])) == pytest.approx(500.0)
    assert dependence(dependent, "x", ("a",), ["x", "a"], np.array([0.4, 0.6])) == pytest.approx(400.0)


def test_selection_finds_a_strong_dependence_at_a_large_epsilon() -> None:
    """b copies a, c and e are noise: with one parent each at epsilon 20, the draws link a and b, and the rows
    keep the copy. Seeded noise (a regression test of the draws); the model's estimate runs its default steps
    (200 left a 0.84 share of copies in one seeded run)."""
    rng = np.random.default_rng(1)
    a = rng.choice(["p", "q", "r"], 5000)
    frame = pd.DataFrame({"a": a, "c": rng.choice(["u", "v"], 5000), "b": a, "e": rng.choice(["s", "t"], 5000)})
    for seed in (0, 1):
        with seeded_noise(seed):
            model = PrivBayes(degree=1).fit(frame, public(frame), epsilon=20.0, ledger=False)
        assert isinstance(model, PrivBayes)
        parents = dict(model.network_)
        assert parents["b"] == ("a",) or parents["a"] == ("b",), model.network_
        synthetic = model.sample(2000, seed=0)
        assert synthetic["a"].eq(synthetic["b"]).mean() > 0.98


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"degree": 0}, "degree"),
        ({"theta": -1.0}, "theta"),
        ({"selection_share": 0.95}, "selection_share must be below 0.9"),
        ({"max_candidates": 0}, "max_candidates"),
    ],
)
def test_bad_settings_are_refused(params: dict[str, float], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        PrivBayes(**params)  # type: ignore[arg-type]


def test_two_columns_and_a_pickle_round_trip(nass: pd.DataFrame, tmp_path: Path) -> None:
    two = nass[["dead", "airbag"]]
    model = PrivBayes(iters=200).fit(two, public(two), epsilon=1.0, ledger=False)
    assert isinstance(model, PrivBayes)
    assert [len(p) for _, p in model.network_] == [0, 1]
    assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9)
    model.save(tmp_path / "pb.pkl")
    assert PrivBayes.load(tmp_path / "pb.pkl").sample(100, seed=2).equals(model.sample(100, seed=2))
    assert list(itertools.chain(model.sample(3, seed=0).columns)) == ["dead", "airbag"]
