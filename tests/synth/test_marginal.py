"""MST and AIM on nassCDS: budget, ledger, fidelity, decoding, conditional sampling, sources, model-size cap."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from marginal_support import public

from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Schema
from privsynth.data.sources import Source, load_source
from privsynth.errors import BudgetExceeded, ParameterError
from privsynth.privacy.budget import Budget
from privsynth.privacy.ledger import Ledger
from privsynth.synth import Synthesizer, create
from privsynth.synth.aim import _candidates
from privsynth.synth.domain import ColumnDomain
from privsynth.synth.marginal import AIM, MST

COLUMNS = ["dvcat", "weight", "dead", "sex", "ageOFocc", "injSeverity"]
SMALL = ["dvcat", "dead", "sex", "injSeverity"]


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS")[COLUMNS]


@pytest.fixture(scope="module")
def mst(nass: pd.DataFrame, ledger: Ledger) -> MST:
    model = MST(numeric_bins="uniform").fit(nass, public(nass), epsilon=1.0, ledger=ledger)
    assert isinstance(model, MST)
    return model


@pytest.fixture(scope="module")
def aim(nass: pd.DataFrame) -> AIM:
    # Time-boxed: 12 rounds rather than 16 d = 96 (about 25 s on a quiet core, 60 s on a busy one).
    model = AIM(rounds=2 * len(COLUMNS), numeric_bins="uniform").fit(nass, public(nass), epsilon=1.0)
    assert isinstance(model, AIM)
    return model


def two_way_tvd(domains: dict[str, ColumnDomain], real: pd.DataFrame, fake: pd.DataFrame | None) -> float:
    """Mean total variation distance of the 2-way marginals on the model's cells; ``fake=None`` scores the
    product of the real 1-way marginals (every column independent)."""
    distances = []
    for a, b in itertools.combinations(domains, 2):
        size = domains[a].size * domains[b].size
        real_cells = domains[a].encode(real[a]) * domains[b].size + domains[b].encode(real[b])
        p = np.bincount(real_cells, minlength=size) / len(real)
        if fake is None:
            q = (
                np.outer(
                    np.bincount(domains[a].encode(real[a]), minlength=domains[a].size),
                    np.bincount(domains[b].encode(real[b]), minlength=domains[b].size),
                ).ravel()
                / len(real) ** 2
            )
        else:
            fake_cells = domains[a].encode(fake[a]) * domains[b].size + domains[b].encode(fake[b])
            q = np.bincount(fake_cells, minlength=size) / len(fake)
        distances.append(0.5 * np.abs(p - q).sum())
    return float(np.mean(distances))


def marginal_tvd(domains: dict[str, ColumnDomain], real: pd.DataFrame, fake: pd.DataFrame, k: int) -> float:
    """Mean total variation distance of every k-way marginal on the model's cells."""
    distances = []
    for combo in itertools.combinations(domains, k):
        sizes = tuple(domains[c].size for c in combo)
        cells = [np.ravel_multi_index(tuple(domains[c].encode(f[c]) for c in combo), sizes) for f in (real, fake)]
        p, q = (np.bincount(c, minlength=int(np.prod(sizes))) / len(c) for c in cells)
        distances.append(0.5 * np.abs(p - q).sum())
    return float(np.mean(distances))


def spent(model: MST | AIM) -> Fraction:
    return sum((Fraction(s["rho"]) for s in model.spends_), Fraction(0))


def test_mst_fits_and_samples_at_epsilon_1_with_dtypes(nass: pd.DataFrame, mst: MST) -> None:
    synthetic = mst.sample(len(nass), seed=0)
    assert synthetic.dtypes.to_dict() == nass.dtypes.to_dict()
    assert synthetic["weight"].between(0, nass["weight"].max()).all()
    assert (synthetic["ageOFocc"] == synthetic["ageOFocc"].round()).all()
    # numbers are drawn inside their bin, not set to a midpoint
    assert synthetic["weight"].nunique() > 0.9 * len(synthetic)
    assert synthetic["dead"].eq("dead").mean() == pytest.approx(nass["dead"].eq("dead").mean(), abs=0.01)
    assert synthetic["injSeverity"].isna().mean() == pytest.approx(nass["injSeverity"].isna().mean(), abs=0.01)
    # the row count is private: estimated from the noisy 1-way marginals, within a few sigma
    assert abs(mst.rows_estimate_ - len(nass)) < 100
    assert mst.epsilon_ == 1.0 and mst.delta_ == 1e-6
    assert mst.rho_ == pytest.approx(0.02436, abs=1e-5)


def test_budget_is_spent_exactly_and_never_exceeded(mst: MST, aim: AIM) -> None:
    for model in (mst, aim):
        assert spent(model) <= Fraction(model.rho_)
        assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9)
    purposes = [s["purpose"] for s in mst.spends_]
    assert purposes[:6] == [f"1-way marginal of {c!r}" for c in COLUMNS]
    assert sum(p.startswith("select edge") for p in purposes) == len(COLUMNS) - 1
    assert sum(p.startswith("2-way marginal") for p in purposes) == len(COLUMNS) - 1
    assert all(s["rho"] > 0 and s["mechanism"].startswith(("gaussian", "exponential")) for s in mst.spends_)
    rounds = [s for s in aim.spends_ if s["purpose"].startswith("select round")]
    assert len(rounds) == aim.rounds_ >= 2


def test_ledger_holds_a_row_for_every_measurement(mst: MST, ledger: Ledger) -> None:
    rows = ledger.entries(mst.dataset_)
    reservations = [r for r in rows if r.reservation_id is None]
    assert len(reservations) == 1
    assert reservations[0].status == "committed" and reservations[0].rho == mst.rho_
    under = [r for r in rows if r.reservation_id == reservations[0].id]
    assert [(r.purpose, r.rho) for r in under] == [(s["purpose"], s["rho"]) for s in mst.spends_]
    assert ledger.dataset(mst.dataset_).spent_rho == pytest.approx(mst.rho_, rel=1e-12)


def test_spent_cap_refuses_before_any_noise(nass: pd.DataFrame, tmp_path: Path) -> None:
    book = Ledger(tmp_path / "capped.sqlite")
    book.register("nassCDS-slice")
    book.set_cap("nassCDS-slice", epsilon=0.5, delta=1e-6)
    with pytest.raises(BudgetExceeded, match="refused"):
        MST(numeric_bins="uniform").fit(nass, public(nass), epsilon=1.0, ledger=book, dataset="nassCDS-slice")
    assert book.entries("nassCDS-slice") == []
    # a ledger given as a URL works the same way
    with pytest.raises(BudgetExceeded):
        create("aim").fit(
            nass, public(nass), epsilon=1.0, ledger=f"sqlite:///{tmp_path / 'capped.sqlite'}", dataset="nassCDS-slice"
        )
    assert book.entries("nassCDS-slice") == []


@pytest.mark.parametrize(
    ("epsilon", "delta", "message"),
    [
        (None, None, "needs a privacy budget"),
        (0.0, None, "epsilon must be a finite number > 0"),
        (-1.0, None, "epsilon must be a finite number > 0"),
        (float("nan"), None, "epsilon must be a finite number > 0"),
        (1.0, 1e-3, "delta=0.001 is too large"),
        (1.0, 0.0, "delta must be a finite number > 0"),
    ],
)
def test_bad_budget_is_refused(nass: pd.DataFrame, epsilon: float | None, delta: float | None, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        MST().fit(nass, public(nass), epsilon=epsilon, delta=delta)


def test_bad_settings_are_refused(nass: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="max_model_size must be a finite number > 0"):
        AIM(max_model_size=0)
    with pytest.raises(ParameterError, match="numeric_bins must be one of"):
        MST(numeric_bins="equal")
    with pytest.raises(ParameterError, match="rounds=3 is below the number of columns"):
        AIM(rounds=3).fit(nass, public(nass), epsilon=1.0)
    with pytest.raises(ParameterError, match=r"unknown column\(s\) \['speed'\]"):
        AIM(workload=[("dead", "speed")]).fit(nass, public(nass), epsilon=1.0)


def test_mst_and_aim_beat_independent_columns_at_epsilon_3(nass: pd.DataFrame, aim: AIM) -> None:
    mst = MST(numeric_bins="uniform").fit(nass, public(nass), epsilon=3.0)
    assert isinstance(mst, MST)
    synthetic = mst.sample(len(nass), seed=1)
    independent = two_way_tvd(mst.domains_, nass, None)
    # measured: 0.014 against 0.035 for independent columns
    assert independent > 0.02
    assert two_way_tvd(mst.domains_, nass, synthetic) < 0.5 * independent
    # AIM at epsilon 1 (the fixture), measured: 0.013 against 0.035
    independent = two_way_tvd(aim.domains_, nass, None)
    assert two_way_tvd(aim.domains_, nass, aim.sample(len(nass), seed=1)) < 0.5 * independent


def test_aim_is_at_least_as_good_as_mst_on_3_way_marginals_at_epsilon_1(nass: pd.DataFrame, mst: MST, aim: AIM) -> None:
    """The issue's target on the model's cells, same budget and public domains. DP noise cannot be seeded, so the
    bounds come from the spread of 30 AIM and 10 MST fits (session 9), and 10x as many rows as the data keep the
    sampling noise out of the comparison (at 1x, one CI run drew a 3-way TVD 2.7 sd above AIM's mean)."""
    n = 10 * len(nass)
    aim_rows, mst_rows = aim.sample(n, seed=2), mst.sample(n, seed=2)
    # measured over 30 fits: AIM 3-way 0.0218 +- 0.0018 (max 0.025), 2-way 0.0097 +- 0.0007; MST 3-way
    # 0.0298 +- 0.0006: AIM's lead is 4 standard deviations of the difference
    aim_3, mst_3 = marginal_tvd(aim.domains_, nass, aim_rows, 3), marginal_tvd(mst.domains_, nass, mst_rows, 3)
    assert aim_3 < 0.030
    assert aim_3 < mst_3
    assert marginal_tvd(aim.domains_, nass, aim_rows, 2) < 0.013


def test_conditional_sampling_is_exact(mst: MST) -> None:
    rows = mst.sample(20_000, conditions={"dead": "dead"}, seed=0)
    assert len(rows) == 20_000 and rows["dead"].eq("dead").all()
    # the other columns follow the model's conditional distribution given the condition
    assert "dead" not in mst.compression_ and "sex" not in mst.compression_
    joint = mst.model_.project(("dead", "sex"))
    dead = mst.domains_["dead"].cell_of("dead")
    expected = joint[dead] / joint[dead].sum()
    observed = np.bincount(mst.domains_["sex"].encode(rows["sex"]), minlength=len(expected)) / len(rows)
    np.testing.assert_allclose(observed, expected, atol=0.015)
    # numeric conditions hold exactly, in the column's dtype, and a rare cell needs no rejection sampling
    rare = mst.sample(300, conditions={"ageOFocc": 30, "weight": 57_000.5, "dead": "dead"}, seed=1)
    assert rare["ageOFocc"].eq(30).all() and rare["ageOFocc"].dtype == np.int64
    assert rare["weight"].eq(57_000.5).all() and rare["dead"].eq("dead").all()
    with pytest.raises(ParameterError, match="not a category of 'dead'"):
        mst.sample(5, conditions={"dead": "undead"})


def test_same_seed_same_rows_and_pickle_round_trip(mst: MST, tmp_path: Path) -> None:
    assert mst.sample(500, seed=3).equals(mst.sample(500, seed=3))
    assert not mst.sample(500, seed=3).equals(mst.sample(500, seed=4))
    assert mst.sample(50, conditions={"sex": "f"}, seed=5).equals(mst.sample(50, conditions={"sex": "f"}, seed=5))
    mst.save(tmp_path / "mst.pkl")
    assert Synthesizer.load(tmp_path / "mst.pkl").sample(200, seed=2).equals(mst.sample(200, seed=2))


def test_fits_a_parquet_file_through_counts_only(
    nass: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nass.parquet"
    nass.to_parquet(path)

    def no_rows(*args: object, **kwargs: object) -> None:
        raise AssertionError("the marginal methods must read the data only through Source.counts")

    for reader in ("to_pandas", "iter_chunks", "head"):
        monkeypatch.setattr(Source, reader, no_rows)
    model = MST(numeric_bins="uniform").fit(path, public(nass), epsilon=1.0)
    synthetic = model.sample(1000, seed=0)
    assert synthetic.dtypes.to_dict() == nass.dtypes.to_dict()
    # the budget is kept under the file's name; no hash of the data is kept on the model
    assert model.dataset_ == path.name.split(".")[0]
    assert not any(isinstance(v, str) and v == load_source(path).fingerprint() for v in vars(model).values())


def test_learns_private_domains_and_pays_for_them(nass: pd.DataFrame) -> None:
    schema = Schema.infer(nass).synthesized()
    model = MST().fit(nass, schema, epsilon=1.0)
    assert isinstance(model, MST)
    budget = Budget.from_epsilon_delta(1.0, 1e-6, approx_delta=1e-7)
    assert model.rho_ == budget.rho
    paid = [s for s in model.spends_ if s["purpose"].startswith("domain of")]
    assert {s["purpose"].split("'")[1] for s in paid} == set(COLUMNS)
    share = model.preprocessing_share_
    assert share == 0.2  # 14 columns to learn: the narrow-table default
    assert 0.9 * share * model.rho_ < float(sum(Fraction(s["rho"]) for s in paid)) <= share * model.rho_ * (1 + 1e-9)
    assert sum(s["delta"] for s in model.spends_) <= 1e-7
    assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9) and spent(model) <= Fraction(model.rho_)
    synthetic = model.sample(5000, seed=0)
    assert synthetic.dtypes.to_dict() == nass.dtypes.to_dict()
    assert synthetic["dead"].isin(["alive", "dead"]).all()


def test_the_default_preprocessing_share_grows_with_the_columns_to_learn() -> None:
    from privsynth.synth.marginal_method import default_preprocessing_share

    shares = [default_preprocessing_share(d) for d in (1, 16, 20, 32, 40, 55, 200)]
    assert shares == pytest.approx([0.2, 0.2, 0.25, 0.4, 0.5, 0.5, 0.5])
    assert MST(preprocessing_share=0.3).preprocessing_share == 0.3  # the user's share is kept as given


def test_aim_model_size_cap_binds_with_a_message(nass: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    small = nass[SMALL]
    cap = 0.001  # MB: 131 cells, less than two of the 3-way marginals (80 cells each) together
    with caplog.at_level(logging.WARNING, logger="privsynth.synth.aim"):
        model = AIM(rounds=2 * len(SMALL), max_model_size=cap, numeric_bins="uniform").fit(
            small, public(small), epsilon=3.0
        )
    assert isinstance(model, AIM)
    assert model.size_capped_ > 0
    assert f"model-size cap of {cap:g} MB bound: {model.size_capped_} of" in caplog.text
    assert model.model_.size_mb <= cap


def test_aim_out_of_time_spends_the_rest_on_what_it_measured(
    nass: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``max_minutes`` on a clock that moves 10 s each time AIM reads it: the rounds stop before the final
    estimate would end past the limit, and the budget left measures the marginals already measured again."""
    from privsynth.synth import aim

    ticks = itertools.count()
    monkeypatch.setattr(aim, "_clock", lambda: 10.0 * next(ticks))
    small = nass[SMALL]
    with caplog.at_level(logging.INFO, logger="privsynth.synth.aim"):
        # iters=100: the final estimate AIM reserves time for (2.5 rounds of steps at the measured seconds per
        # step) stays well under the fake clock's 10 s even on a loaded machine
        model = AIM(rounds=200, max_model_size=1, numeric_bins="uniform", max_minutes=1, iters=100).fit(
            small, public(small), epsilon=1.0
        )
    assert isinstance(model, AIM) and model.time_limited_
    # start at 0 s, round t reads 10 t s: rounds 1-5 fit in 60 s with the final estimate (about 1 s), round 6 does
    # not; without the limit, 200 planned rounds end after about 13 (the round budget grows when progress stalls)
    assert model.rounds_ == 5
    assert "ran out of time (max_minutes=1) after 5 rounds" in caplog.text
    assert sum(s["purpose"].startswith("select round") for s in model.spends_) == 5
    assert float(spent(model)) == pytest.approx(model.rho_, rel=1e-9) and spent(model) <= Fraction(model.rho_)
    # 200 rounds leave room for the spanning-tree start (d - 1 = 3 edges, measured before the rounds and the
    # clock's first check): the 1-ways, the tree, the 5 rounds' marginals, then each of those once more
    measured = [s["purpose"] for s in model.spends_ if "marginal of" in s["purpose"]]
    first = len(SMALL) + (len(SMALL) - 1) + 5
    assert sum(s["purpose"].startswith("select edge") for s in model.spends_) == len(SMALL) - 1
    again = measured[first:]
    assert sorted(again) == sorted(set(measured[:first])) and len(again) == len(set(again))
    with pytest.raises(ParameterError, match="max_minutes must be a finite number > 0"):
        AIM(max_minutes=0)


def test_junction_tree_answers_are_exact() -> None:
    """Marginals, conditionals and model sizes of the numpy junction tree, against brute force and mbi."""
    from mbi import Domain, junction_tree

    from privsynth.synth import _pgm

    rng = np.random.default_rng(1)
    domain = {"a": 3, "b": 2, "c": 4, "d": 2, "e": 3, "f": 2}
    cliques = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "c"), ("e",), ("d", "f")]
    potentials = {cl: rng.normal(0, 1, tuple(domain[x] for x in cl)) for cl in cliques}
    model = _pgm.Model(domain, potentials, 1000.0)
    names = list(domain)
    joint = np.zeros(tuple(domain.values()))
    for clique, values in potentials.items():
        shape = [domain[x] if x in clique else 1 for x in names]
        joint = joint + np.transpose(values, [clique.index(x) for x in names if x in clique]).reshape(shape)
    joint = np.exp(joint) / np.exp(joint).sum()
    for attrs in [("e", "a"), ("f", "a", "b"), ("b", "e", "d"), ("c",)]:
        axes = tuple(i for i, x in enumerate(names) if x not in attrs)
        present = [x for x in names if x in attrs]
        truth = np.transpose(joint.sum(axis=axes), [present.index(x) for x in attrs])
        np.testing.assert_allclose(model.project(attrs), 1000 * truth, atol=1e-9)
    cells = model.sample(200_000, np.random.default_rng(0), {"c": [2], "f": [0, 1]})
    assert (cells[:, 2] == 2).all()
    given = joint[:, :, 2, :, :, :] / joint[:, :, 2, :, :, :].sum()
    observed = np.bincount(cells[:, 0], minlength=3) / len(cells)
    np.testing.assert_allclose(observed, given.sum(axis=(1, 2, 3, 4)), atol=0.005)
    for _ in range(100):
        picked = [tuple(sorted(rng.choice(names, size=int(rng.integers(1, 4)), replace=False), key=names.index))]
        chosen = cliques[: int(rng.integers(0, len(cliques)))] + picked
        expected = junction_tree.hypothetical_model_size(Domain(names, list(domain.values())), chosen)
        assert _pgm.model_size_mb(domain, chosen) == pytest.approx(expected, rel=1e-12)


def test_marginals_across_cliques_stay_finite_next_to_near_impossible_cells() -> None:
    """A separator cell of probability about 1e-321 (a subnormal float, as AIM's models reach after many rounds)
    once overflowed 1 / P(separator) and turned AIM's selection scores into NaN."""
    from privsynth.synth import _pgm

    rng = np.random.default_rng(0)
    domain = {"a": 3, "b": 3, "c": 3, "d": 3}
    potentials = {clique: rng.normal(0, 1, (3, 3)) for clique in [("a", "b"), ("b", "c"), ("c", "d")]}
    potentials[("a", "b")][:, 2] -= 740.0
    model = _pgm.Model(domain, potentials, 1000.0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to zero is harmless
        table = model.project(("a", "d"))
    assert np.isfinite(table).all() and table.sum() == pytest.approx(1000.0)
    # brute force over the 81 cells of the joint
    joint = sum(
        np.expand_dims(values, tuple(i for i, x in enumerate(domain) if x not in clique))
        for clique, values in potentials.items()
    )
    joint = np.exp(joint - joint.max())
    np.testing.assert_allclose(table, 1000 * joint.sum(axis=(1, 2)) / joint.sum(), rtol=1e-9)


@pytest.mark.slow
def test_aim_beats_mst_on_3_way_marginals_of_all_nasscds_columns_at_epsilon_1() -> None:
    """Every nassCDS column (public domains, so preprocessing cannot decide), AIM with its defaults against MST.

    About 10 minutes. The bench (``benchmarks/results/bench_issue5``, learned domains, the train split, scored by
    ``evaluate`` on 16 quantile bins) measured AIM 0.040 against MST 0.059 at epsilon 1.
    """
    train = load_dataset("nassCDS", "train")
    schema = public(train)
    aim = AIM(numeric_bins="uniform").fit(train, schema, epsilon=1.0)
    mst = MST(numeric_bins="uniform").fit(train, schema, epsilon=1.0)
    assert isinstance(aim, AIM) and isinstance(mst, MST)
    aim_rows, mst_rows = aim.sample(len(train), seed=0), mst.sample(len(train), seed=0)
    aim_3, mst_3 = marginal_tvd(aim.domains_, train, aim_rows, 3), marginal_tvd(mst.domains_, train, mst_rows, 3)
    assert np.isfinite(aim_3)
    assert aim_3 <= 1.05 * mst_3


def test_target_weights_the_default_workload_and_is_free(nass: pd.DataFrame) -> None:
    schema = dataclasses.replace(public(nass), target="dead")
    plain = AIM(target_weight=1.0)
    plain._check(schema)
    weighted = AIM()
    weighted._check(schema)
    assert weighted.target_ == "dead"  # from the schema
    workload, flat = weighted._workload(COLUMNS), plain._workload(COLUMNS)
    assert set(workload) == set(flat) and set(flat.values()) == {1.0}
    holding = {c: w for c, w in workload.items() if "dead" in c}
    others = {c: w for c, w in workload.items() if "dead" not in c}
    # 5 pairs and 10 triples hold the target, 10 pairs and 10 triples do not: weight 20/15 each, equal totals
    assert len(holding) == 15 and set(others.values()) == {1.0}
    assert sum(holding.values()) == pytest.approx(sum(others.values()))
    # a candidate's weight is its weighted overlap with the workload, so those holding the target rise
    candidates, flat_candidates = _candidates(workload, COLUMNS), _candidates(flat, COLUMNS)
    assert candidates[("dead",)] / flat_candidates[("dead",)] == pytest.approx(20 / 15)
    assert candidates[("sex",)] < candidates[("dead", "sex")]
    explicit = AIM(target="sex", target_weight=3.0)
    explicit._check(schema)
    assert explicit.target_ == "sex" and {w for c, w in explicit._workload(COLUMNS).items() if "sex" in c} == {3.0}
    assert explicit.get_params()["target"] == "sex"


def test_bad_target_settings_are_refused_before_anything_is_spent(nass: pd.DataFrame, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(ParameterError, match="target column 'speed' is not among the synthesized columns"):
        AIM(target="speed").fit(nass, public(nass), epsilon=1.0, ledger=ledger)
    with pytest.raises(ParameterError, match=r"either workload .* or target/target_weight"):
        AIM(workload=[("dead", "sex")], target="dead")
    with pytest.raises(ParameterError, match="target_weight must be a finite number > 0"):
        AIM(target_weight=0)
    assert ledger.entries() == []


def test_weighted_workload_is_recorded_as_plain_data() -> None:
    aim = AIM(workload={("dead", "sex"): 2.0, ("sex",): 1.0})
    assert aim.get_params()["workload"] == [
        {"columns": ["dead", "sex"], "weight": 2.0},
        {"columns": ["sex"], "weight": 1.0},
    ]
    with pytest.raises(ParameterError, match=r"weight of workload marginal \('sex',\) must be a finite number > 0"):
        AIM(workload={("sex",): -1.0})


def test_aim_merges_values_measured_below_3_sigma_like_mst(nass: pd.DataFrame, aim: AIM) -> None:
    # Uniform bins over weight's public bounds leave most of its bins nearly empty: they merge into one cell.
    assert "weight" in aim.compression_
    for column, mapping in aim.compression_.items():
        assert len(mapping) == aim.domains_[column].size
        assert aim.model_.domain[column] == int(mapping.max()) + 1 < len(mapping)
    assert all(aim.model_.domain[c] == aim.domains_[c].size for c in COLUMNS if c not in aim.compression_)
    rows = aim.sample(5_000, seed=0)
    heavy = aim.domains_["weight"].encode(rows["weight"])
    # rows are decoded back onto the full domain, merged bins included
    assert set(np.unique(heavy)) - set(np.flatnonzero(aim.compression_["weight"] < aim.compression_["weight"].max()))
    assert not AIM(compress=False).get_params()["compress"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts memory mappings through Linux's /proc")
def test_repeated_aim_fits_do_not_pile_up_compiled_programs(nass: pd.DataFrame) -> None:
    """Each new model structure compiles XLA programs that hold memory mappings; before the estimates dropped
    JAX's caches a process gained about 2,500 mappings per AIM fit and a long run (or a service worker fitting
    job after job) died at the kernel's 65,530 with "LLVM compilation error: Cannot allocate memory"."""

    def mappings() -> int:
        with open("/proc/self/maps") as fh:
            return sum(1 for _ in fh)

    small, schema = nass[SMALL], public(nass[SMALL])
    counts = []
    for _ in range(3):  # the noise differs from fit to fit, and so do the structures
        AIM(rounds=2 * len(SMALL), iters=100).fit(small, schema, epsilon=1.0)
        counts.append(mappings())
    assert counts[2] - counts[0] < 40, counts
