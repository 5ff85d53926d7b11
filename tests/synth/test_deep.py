import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("opacus")

import torch

from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError
from privsynth.privacy import Ledger, epsilon_from_rho_delta
from privsynth.progress import ProgressEvent, listen
from privsynth.synth import Synthesizer, create
from privsynth.synth._deep_net import AnyOrderNet
from privsynth.synth.deep import DeepSynthesizer, DPDeepSynthesizer

FAST = {"hidden": 64, "epochs": 25, "patience": 4, "batch_size": 256, "learning_rate": 5e-3, "dropout": 0.0}


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    """3,000 random rows of the nassCDS train split (the first rows are all from one year)."""
    return load_dataset("nassCDS").sample(3000, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(nass: pd.DataFrame) -> tuple[DeepSynthesizer, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    with listen(events.append):
        model = create("deep", **FAST).fit(nass)
    assert isinstance(model, DeepSynthesizer)
    return model, events


@pytest.fixture(scope="module")
def fitted(trained: tuple[DeepSynthesizer, list[ProgressEvent]]) -> DeepSynthesizer:
    return trained[0]


@pytest.fixture(scope="module")
def covid() -> pd.DataFrame:
    """covid_testing rows: many rare clinic names, and payor_group missing in about 45% of rows."""
    return load_dataset("covid_testing").sample(2500, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def covid_model(covid: pd.DataFrame) -> DeepSynthesizer:
    model = create("deep", **{**FAST, "epochs": 12})
    assert isinstance(model, DeepSynthesizer)
    return model.fit(covid)


def _pair_tvd(a: pd.DataFrame, b: pd.DataFrame, x: str, y: str) -> float:
    p = a.groupby([x, y]).size() / len(a)
    q = b.groupby([x, y]).size() / len(b)
    return float(p.subtract(q, fill_value=0).abs().sum() / 2)


def test_registry_creates_deep_and_dp_deep() -> None:
    assert type(create("deep")) is DeepSynthesizer
    assert type(create("dp-deep")) is DPDeepSynthesizer
    assert DPDeepSynthesizer.differentially_private and not DeepSynthesizer.differentially_private


def test_deep_learns_a_strong_pairwise_dependency(nass: pd.DataFrame, fitted: DeepSynthesizer) -> None:
    synthetic = fitted.sample(len(nass), seed=0)
    rng = np.random.default_rng(0)
    independent = pd.DataFrame(
        {c: rng.permutation(nass[c].to_numpy()) for c in ["airbag", "abcat", "deploy", "frontal"]}
    )
    for x, y in [("abcat", "deploy"), ("airbag", "abcat"), ("airbag", "deploy")]:
        assert _pair_tvd(nass, synthetic, x, y) < 0.5 * _pair_tvd(nass, independent, x, y) + 0.01
    # abcat == "deploy" exactly when deploy == 1 in the real data
    deployed = synthetic.loc[synthetic["abcat"] == "deploy", "deploy"]
    assert (deployed == 1).mean() > 0.95


def test_deep_keeps_dtypes_ranges_and_spreads_numbers_within_bins(nass: pd.DataFrame, fitted: DeepSynthesizer) -> None:
    synthetic = fitted.sample(len(nass), seed=1)
    assert list(synthetic.columns) == list(nass.columns)
    assert synthetic.dtypes.to_dict() == nass.dtypes.to_dict()
    assert synthetic["weight"].between(nass["weight"].min(), nass["weight"].max()).all()
    # 48 quantile bins, decoded through each bin's quantiles: far more distinct values than bins
    assert synthetic["weight"].nunique() > 1000
    assert (synthetic["ageOFocc"] == synthetic["ageOFocc"].round()).all()
    assert synthetic["ageOFocc"].median() == pytest.approx(nass["ageOFocc"].median(), abs=3)
    assert (synthetic["dead"] == "dead").mean() == pytest.approx((nass["dead"] == "dead").mean(), abs=0.02)


def test_conditions_are_exact_even_for_rare_values(nass: pd.DataFrame, fitted: DeepSynthesizer) -> None:
    rows = fitted.sample(400, conditions={"dead": "dead"}, seed=0)
    assert len(rows) == 400 and (rows["dead"] == "dead").all()
    # the rest is drawn given the condition: deaths are far more often unbelted than on average
    unbelted = (nass.loc[nass["dead"] == "dead", "seatbelt"] == "none").mean()
    assert (rows["seatbelt"] == "none").mean() == pytest.approx(unbelted, abs=0.12)
    assert (rows["seatbelt"] == "none").mean() > (nass["seatbelt"] == "none").mean() + 0.1
    # injSeverity 6 occurs in a handful of rows; a numeric condition sets the exact value
    assert (nass["injSeverity"] == 6).sum() <= 5
    rare = fitted.sample(300, conditions={"injSeverity": 6, "sex": "f"}, seed=0)
    assert (rare["injSeverity"] == 6).all() and (rare["sex"] == "f").all()
    assert rare["injSeverity"].dtype == nass["injSeverity"].dtype
    heavy = fitted.sample(200, conditions={"weight": 1234.5}, seed=0)
    assert (heavy["weight"] == 1234.5).all()


def test_conditions_on_merged_rare_categories_and_missing_rates(
    covid: pd.DataFrame, covid_model: DeepSynthesizer
) -> None:
    counts = covid["clinic_name"].value_counts()
    rare = str(counts.index[-1])
    assert counts.iloc[-1] < 5  # below the rare threshold: it shares the "other" token
    rows = covid_model.sample(150, conditions={"clinic_name": rare}, seed=0)
    assert (rows["clinic_name"] == rare).all()
    synthetic = covid_model.sample(len(covid), seed=0)
    for column in ["payor_group", "patient_class", "ct_result"]:
        assert synthetic[column].isna().mean() == pytest.approx(covid[column].isna().mean(), abs=0.04)
    assert set(synthetic["clinic_name"].dropna()) <= set(covid["clinic_name"])


def test_same_seed_same_rows(fitted: DeepSynthesizer) -> None:
    assert fitted.sample(300, seed=7).equals(fitted.sample(300, seed=7))
    assert not fitted.sample(300, seed=7).equals(fitted.sample(300, seed=8))
    conditioned = fitted.sample(100, conditions={"dead": "dead"}, seed=3)
    assert conditioned.equals(fitted.sample(100, conditions={"dead": "dead"}, seed=3))


def test_same_seed_same_model(nass: pd.DataFrame) -> None:
    small = {**FAST, "hidden": 32, "epochs": 3}
    first, second = (create("deep", **small).fit(nass.iloc[:800]) for _ in range(2))
    assert first.sample(200, seed=0).equals(second.sample(200, seed=0))


def test_save_and_load_round_trip(fitted: DeepSynthesizer, tmp_path: Path) -> None:
    fitted.save(tmp_path / "deep.pkl")
    loaded = Synthesizer.load(tmp_path / "deep.pkl")
    assert loaded.sample(250, seed=3).equals(fitted.sample(250, seed=3))
    assert loaded.sample(50, conditions={"dead": "dead"}, seed=1).equals(
        fitted.sample(50, conditions={"dead": "dead"}, seed=1)
    )


def test_bad_conditions_and_parameters_are_clear_errors(fitted: DeepSynthesizer, nass: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="'zombie' is not a category of 'dead'"):
        fitted.sample(10, conditions={"dead": "zombie"})
    with pytest.raises(ParameterError, match="no such column"):
        fitted.sample(10, conditions={"speed": 3})
    with pytest.raises(ParameterError, match=r"outside the range of 'ageOFocc'"):
        fitted.sample(10, conditions={"ageOFocc": 300})
    with pytest.raises(ParameterError, match="is numeric"):
        fitted.sample(10, conditions={"ageOFocc": "old"})
    with pytest.raises(ParameterError, match="must sum to 1"):
        fitted.rebalance("dead", {"dead": 0.5, "alive": 0.2}, 100)
    with pytest.raises(ParameterError, match="not a category of 'dead'"):
        fitted.rebalance("dead", {"zombie": 1.0}, 100)
    with pytest.raises(ParameterError, match="needs a categorical column"):
        fitted.rebalance("ageOFocc", "uniform", 100)
    with pytest.raises(ParameterError, match="hidden must be a positive whole number"):
        create("deep", hidden=0).fit(nass)
    with pytest.raises(ParameterError, match="takes no epsilon"):
        create("deep").fit(nass, epsilon=1.0)


def test_rebalance_generates_the_requested_mix(nass: pd.DataFrame, fitted: DeepSynthesizer) -> None:
    rows = fitted.rebalance("dead", {"dead": 0.3, "alive": 0.7}, 1001, seed=0)
    assert len(rows) == 1001
    assert (rows["dead"] == "dead").sum() == 300 and (rows["dead"] == "alive").sum() == 701
    assert rows.equals(fitted.rebalance("dead", {"dead": 0.3, "alive": 0.7}, 1001, seed=0))
    assert rows["dead"].iloc[:100].nunique() == 2  # shuffled, not in blocks
    dead = rows[rows["dead"] == "dead"]
    assert (dead["seatbelt"] == "none").mean() > (nass["seatbelt"] == "none").mean() + 0.1
    uniform = fitted.rebalance("dvcat", "uniform", 500, seed=1)
    assert uniform["dvcat"].value_counts().tolist() == [100] * 5
    assert uniform.dtypes.to_dict() == nass.dtypes.to_dict()


def test_training_reports_epochs_loss_and_time_left(trained: tuple[DeepSynthesizer, list[ProgressEvent]]) -> None:
    model, events = trained
    train = [e for e in events if e.task == "train"]
    assert len(train) >= len(model.history_.validation_loss)
    epochs = [e for e in train if 0 < e.completed <= FAST["epochs"] and "left" in e.detail]
    assert len(epochs) == len(model.history_.validation_loss)
    assert all(e.total == FAST["epochs"] for e in epochs)
    assert all(re.fullmatch(r"loss \d+\.\d{3}, ~\d+s left", e.detail) for e in epochs)
    losses = [float(e.detail.split()[1].rstrip(",")) for e in epochs]
    assert losses[-1] < losses[0]
    assert model.history_.validation_loss[0] > min(model.history_.validation_loss)


# ---- dp-deep ------------------------------------------------------------------------------------------------


def _public(schema: Schema) -> Schema:
    """The inferred schema with every domain declared public (as a person reviewing it might for nassCDS)."""
    return Schema([dataclasses.replace(c, public=True) for c in schema])


@pytest.fixture(scope="module")
def dp_fit(nass: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[DPDeepSynthesizer, Ledger]:
    ledger = Ledger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite")
    model = create("dp-deep", hidden=64, epochs=2, batch_size=256)
    assert isinstance(model, DPDeepSynthesizer)
    model.fit(nass, schema=_public(Schema.infer(nass)), epsilon=3.0, delta=1e-6, ledger=ledger)
    return model, ledger


def test_dp_deep_training_changes_the_weights(dp_fit: tuple[DPDeepSynthesizer, Ledger]) -> None:
    model, _ = dp_fit
    torch.manual_seed(model.seed)
    initial = AnyOrderNet([c.size for c in model.codecs_], model.hidden, model.depth, 0.0).state_dict()
    trained = model.net_.state_dict()
    assert initial.keys() == trained.keys()
    moved = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert "tokens.weight" in moved and all(f"heads.{j}.weight" in moved for j in range(len(model.codecs_)))


def test_dp_deep_epsilon_matches_the_opacus_accountant(dp_fit: tuple[DPDeepSynthesizer, Ledger]) -> None:
    from opacus.accountants import RDPAccountant

    model, _ = dp_fit
    privacy = model.privacy_
    # our accounting: every spend together converts to the requested epsilon (all of rho is used)
    assert privacy["rho_spent"] <= privacy["rho"] * (1 + 1e-9)
    assert epsilon_from_rho_delta(privacy["rho_spent"], 1e-6) == pytest.approx(3.0, rel=2e-3)
    # opacus's accountant on the DP-SGD part alone, and with the zCDP preprocessing added at each order
    accountant = RDPAccountant()
    accountant.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    alone = accountant.get_epsilon(delta=1e-6, alphas=[float(a) for a in range(2, 257)])
    assert alone < privacy["epsilon_opacus"] <= 3.0
    # the charge is exact at the conversion order, so opacus's optimum over orders is only a little lower
    assert privacy["epsilon_opacus"] > 0.8 * 3.0
    assert privacy["steps"] == math.ceil(2 / privacy["sample_rate"])
    assert privacy["sample_rate"] == pytest.approx(256 / 3000, rel=0.1)


def test_dp_deep_records_its_spends_in_the_ledger(dp_fit: tuple[DPDeepSynthesizer, Ledger]) -> None:
    model, ledger = dp_fit
    entries = ledger.entries(model.record_.dataset)
    sgd = [e for e in entries if e.mechanism.startswith("dp-sgd(")]
    assert len(sgd) == 1 and sgd[0].rho == pytest.approx(model.privacy_["rho_dp_sgd"])
    assert f"noise_multiplier={model.privacy_['noise_multiplier']:.6g}" in sgd[0].mechanism
    assert any("row count" in e.purpose for e in entries)
    assert ledger.spent(model.record_.dataset) == pytest.approx(model.privacy_["rho"])


def test_dp_deep_samples_valid_rows_and_conditions(
    dp_fit: tuple[DPDeepSynthesizer, Ledger], nass: pd.DataFrame
) -> None:
    model, _ = dp_fit
    rows = model.sample(500, seed=0)
    # a DP fit gives every column a missing cell, so integer columns may come back as pandas' nullable Int64
    assert {c: str(t).lower() for c, t in rows.dtypes.items()} == {c: str(t) for c, t in nass.dtypes.items()}
    assert rows.equals(model.sample(500, seed=0))
    dead = model.sample(100, conditions={"dead": "dead"}, seed=0)
    assert (dead["dead"] == "dead").all()
    with pytest.raises(ParameterError, match="outside"):
        model.sample(10, conditions={"ageOFocc": 300})


def test_dp_deep_pays_for_domains_the_schema_does_not_declare_public(tmp_path: Path) -> None:
    nafld = load_dataset("nafld1").sample(2000, random_state=1).reset_index(drop=True)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    model = create("dp-deep", hidden=32, epochs=1, batch_size=256).fit(nafld, epsilon=2.0, delta=1e-6, ledger=ledger)
    assert isinstance(model, DPDeepSynthesizer)
    purposes = [e.purpose for e in ledger.entries(model.record_.dataset)]
    assert {f"domain of '{c}'" for c in nafld.columns} <= {p.split(":")[0] for p in purposes}
    assert ledger.spent(model.record_.dataset) == pytest.approx(model.privacy_["rho"])
    assert model.privacy_["epsilon_opacus"] <= 2.0
    rows = model.sample(1000, seed=0)
    assert set(rows["status"].dropna()) <= {0, 1}
    assert rows["age"].dropna().between(0, 200).all()


def test_dp_deep_needs_a_budget(nass: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="needs a privacy budget"):
        create("dp-deep").fit(nass)
    with pytest.raises(ParameterError, match="too large"):
        create("dp-deep").fit(nass, epsilon=1.0, delta=1e-3)


# ---- slow: full data ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deep_quality_on_full_nasscds() -> None:
    from privsynth.evaluate import evaluate

    train, holdout = load_dataset("nassCDS"), load_dataset("nassCDS", "holdout")
    model = create("deep").fit(train)
    report = evaluate(train, model.sample(len(train), seed=0), holdout, target="dead", sensitive="sex")
    values = {key: report.metrics[key].value for key in report.metrics}
    assert values["fidelity.tvd_2way"] < 0.035
    assert values["fidelity.tvd_3way"] < 0.06
    assert values["fidelity.detection_auc"] < 0.6
    assert values["utility.tstr"] > 0.97
    assert 0.4 < values["privacy.dcr_train_share"] < 0.56


@pytest.mark.slow
def test_dp_deep_on_full_nasscds_with_learned_domains(tmp_path: Path) -> None:
    from privsynth.evaluate import evaluate

    train, holdout = load_dataset("nassCDS"), load_dataset("nassCDS", "holdout")
    model = create("dp-deep").fit(train, epsilon=3.0, delta=1e-6, ledger=Ledger(tmp_path / "ledger.sqlite"))
    report = evaluate(train, model.sample(len(train), seed=0), holdout, target="dead")
    assert report.metrics["fidelity.tvd_2way"].value < 0.12
    assert report.metrics["utility.tstr"].value > 0.8


def test_deep_handles_datetimes_and_missing_numbers() -> None:
    """nafld1 follow-up as dates (a fixed start plus futime days), with its missing weights and BMIs."""
    nafld = load_dataset("nafld1").sample(1500, random_state=0).reset_index(drop=True)
    nafld["last_seen"] = pd.Timestamp("1990-01-01") + pd.to_timedelta(nafld["futime"], unit="D")
    model = create("deep", **FAST).fit(nafld)
    synthetic = model.sample(1500, seed=0)
    assert synthetic.dtypes.to_dict() == nafld.dtypes.to_dict()
    assert synthetic["last_seen"].between(nafld["last_seen"].min(), nafld["last_seen"].max()).all()
    assert synthetic["last_seen"].nunique() > 500
    assert synthetic["bmi"].isna().mean() == pytest.approx(nafld["bmi"].isna().mean(), abs=0.05)


def test_dp_codec_puts_unexpected_values_in_cells_without_failing_or_naming_them() -> None:
    from privsynth.data.schema import Column, Kind
    from privsynth.synth._deep_codec import DomainCodec
    from privsynth.synth.domain import public_domain

    # public categories without an 'other' cell and no missing cell: two extra tokens, never sampled
    role = public_domain(Column("occRole", Kind.CATEGORICAL, categories=["driver", "pass"], public=True))
    assert role is not None and role.size == 2
    codec = DomainCodec(role)
    assert codec.size == 4 and codec.sampled().tolist() == [True, True, False, False]
    tokens = codec.encode(pd.Series(["pass", "zqxcanary", None, "driver"], index=[7, 3, 9, 1]))
    assert tokens.tolist() == [1, 2, 3, 0]
    # numbers: out of range clipped into the end cells, a value that is no number counts as missing
    age = public_domain(Column("age", Kind.INTEGER, "int64", bounds=(16, 96), public=True), bins=8)
    assert age is not None and age.size == 8
    codec = DomainCodec(age)
    assert codec.size == 9
    tokens = codec.encode(pd.Series([20, 8675309, -5, "unknown", None, float("inf")], dtype=object))
    assert tokens.tolist() == [0, 7, 0, 8, 8, 7]
    for value in (8675309, "unknown"):
        with pytest.raises(ParameterError) as caught:
            codec.condition(value)
        assert not any(ch.isdigit() for ch in str(caught.value)) and "unknown" not in str(caught.value)
    assert codec.condition(40) == (int(age.encode(pd.Series([40]))[0]), 40)


def test_dp_codec_keeps_no_domain_the_schema_does_not_declare_public() -> None:
    from privsynth.data.binning import Categories
    from privsynth.data.schema import Column, Kind
    from privsynth.synth._deep_codec import DomainCodec
    from privsynth.synth.domain import ColumnDomain

    inferred = Column("occRole", Kind.CATEGORICAL, categories=["driver", "pass", "zqxcanary"], nullable=True)
    codec = DomainCodec(ColumnDomain(inferred, Categories(("driver", "pass"), other=True, null=True)))
    assert codec.column.categories is None and codec.domain.column.categories is None
    assert codec.size == 4 and codec.sampled().all()  # the domain has 'other' and missing cells of its own
    assert codec.encode(pd.Series(["zqxcanary", None])).tolist() == [2, 3]
    with pytest.raises(ParameterError, match="outside its DP domain") as caught:
        codec.condition("zqxcanary")
    assert "zqxcanary" not in str(caught.value) and "driver" not in str(caught.value)
