from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privsynth.data.datasets import load_dataset
from privsynth.errors import DataError, ParameterError, PrivsynthError
from privsynth.synth import Synthesizer, available, create
from privsynth.synth.copula import GaussianCopula


@pytest.fixture(scope="module")
def nass() -> pd.DataFrame:
    return load_dataset("nassCDS")


@pytest.fixture(scope="module")
def fitted(nass: pd.DataFrame) -> Synthesizer:
    return create("copula").fit(nass)


def test_registry_creates_copula() -> None:
    assert available()["copula"] is GaussianCopula
    with pytest.raises(ParameterError, match="unknown method 'gan'"):
        create("gan")


def test_copula_keeps_dtypes_bounds_and_marginals(nass: pd.DataFrame, fitted: Synthesizer) -> None:
    synthetic = fitted.sample(len(nass), seed=0)
    assert list(synthetic.columns) == list(nass.columns)
    assert synthetic.dtypes.to_dict() == nass.dtypes.to_dict()
    for column in ["weight", "ageOFocc", "yearVeh"]:
        assert synthetic[column].min() >= nass[column].min()
        assert synthetic[column].max() <= nass[column].max()
        assert abs(synthetic[column].median() - nass[column].median()) <= 0.05 * nass[column].std()
    assert (synthetic["ageOFocc"] == synthetic["ageOFocc"].round()).all()
    share = synthetic["dead"].value_counts(normalize=True)["dead"]
    assert share == pytest.approx((nass["dead"] == "dead").mean(), abs=0.01)
    missing = synthetic["injSeverity"].isna().mean()
    assert missing == pytest.approx(nass["injSeverity"].isna().mean(), abs=0.005)


def test_copula_keeps_numeric_correlation(nass: pd.DataFrame, fitted: Synthesizer) -> None:
    synthetic = fitted.sample(len(nass), seed=1)
    real = nass[["ageOFocc", "yearVeh", "weight"]].corr(method="spearman")
    fake = synthetic[["ageOFocc", "yearVeh", "weight"]].corr(method="spearman")
    assert np.abs(real.to_numpy() - fake.to_numpy()).max() < 0.05


def test_same_seed_same_rows(fitted: Synthesizer) -> None:
    assert fitted.sample(300, seed=7).equals(fitted.sample(300, seed=7))
    assert not fitted.sample(300, seed=7).equals(fitted.sample(300, seed=8))


def test_save_and_load_round_trip(fitted: Synthesizer, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model.pkl")
    loaded = Synthesizer.load(tmp_path / "model.pkl")
    assert loaded.sample(200, seed=3).equals(fitted.sample(200, seed=3))
    (tmp_path / "junk.pkl").write_bytes(b"not a model")
    with pytest.raises(DataError, match="is not a privsynth model"):
        Synthesizer.load(tmp_path / "junk.pkl")


def test_conditional_sampling_meets_the_condition(fitted: Synthesizer) -> None:
    rows = fitted.sample(400, conditions={"dead": "dead"}, seed=0)
    assert len(rows) == 400 and (rows["dead"] == "dead").all()
    with pytest.raises(ParameterError, match="'zombie' is not a category of 'dead'"):
        fitted.sample(10, conditions={"dead": "zombie"})
    with pytest.raises(ParameterError, match="no such column"):
        fitted.sample(10, conditions={"speed": 3})


def test_copula_handles_datetimes_and_missing_values() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame(
        {
            "when": pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
            "amount": np.where(rng.random(n) < 0.2, np.nan, rng.gamma(2.0, 10.0, n)),
            "kind": rng.choice(["a", "b", None], n, p=[0.5, 0.3, 0.2]),
        }
    )
    synthetic = create("copula").fit(df).sample(n, seed=0)
    assert synthetic["when"].dtype == df["when"].dtype
    assert synthetic["when"].between(df["when"].min(), df["when"].max()).all()
    assert synthetic["amount"].isna().mean() == pytest.approx(0.2, abs=0.03)
    assert synthetic["kind"].isna().mean() == pytest.approx(0.2, abs=0.03)


def test_non_private_method_refuses_a_budget(nass: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="not differentially private"):
        create("copula").fit(nass, epsilon=1.0)


def test_sample_before_fit_and_bad_row_counts(fitted: Synthesizer) -> None:
    with pytest.raises(PrivsynthError, match="not fitted yet"):
        create("copula").sample(5)
    with pytest.raises(ParameterError, match="positive whole number"):
        fitted.sample(0)
