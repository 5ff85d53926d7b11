"""Bad input fails early with a privsynth error that names the argument and the column."""

from __future__ import annotations

import pandas as pd
import pytest

from privsynth.errors import DataError, ParameterError
from privsynth.evaluate import evaluate


@pytest.fixture
def small(nass: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: frame.iloc[:200] for name, frame in nass.items()}


def test_synthetic_missing_a_column(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(DataError, match=r"synthetic data lacks column\(s\) \['weight'\]"):
        evaluate(small["real"], small["other"].drop(columns="weight"))


def test_holdout_missing_a_column(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(DataError, match=r"holdout data lacks column\(s\) \['dead'\]"):
        evaluate(small["real"], small["other"], small["holdout"].drop(columns="dead"), target="dead")


def test_target_not_in_data(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ParameterError, match="target column 'survived' is not among the evaluated columns"):
        evaluate(small["real"], small["other"], small["holdout"], target="survived")


def test_sensitive_not_in_data(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ParameterError, match="sensitive column 'gender'"):
        evaluate(small["real"], small["other"], sensitive="gender")


@pytest.mark.parametrize("which", ["real", "synthetic", "holdout"])
def test_empty_frames(small: dict[str, pd.DataFrame], which: str) -> None:
    frames = {"real": small["real"], "synthetic": small["other"], "holdout": small["holdout"]}
    frames[which] = frames[which].iloc[:0]
    with pytest.raises(DataError, match=f"the {which} data has no rows"):
        evaluate(frames["real"], frames["synthetic"], frames["holdout"])


def test_frame_without_columns(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(DataError, match="the synthetic data has no columns"):
        evaluate(small["real"], pd.DataFrame(index=range(3)))


def test_text_in_a_numeric_column(small: dict[str, pd.DataFrame]) -> None:
    other = small["other"].astype({"ageOFocc": object})
    other.loc[5, "ageOFocc"] = "unknown"
    with pytest.raises(DataError, match="column 'ageOFocc' of the synthetic data is integer but holds 'unknown'"):
        evaluate(small["real"], other)


def test_not_a_frame(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ParameterError, match="synthetic must be a pandas DataFrame, not list"):
        evaluate(small["real"], [])  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [{"epsilon": -1}, {"epsilon": "one"}, {"delta": float("nan")}])
def test_bad_privacy_budget(small: dict[str, pd.DataFrame], budget: dict[str, object]) -> None:
    with pytest.raises(ParameterError, match="privacy_budget"):
        evaluate(small["real"], small["other"], privacy_budget=budget)  # type: ignore[arg-type]


def test_target_equal_to_sensitive(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ParameterError, match="both the target and the sensitive column"):
        evaluate(small["real"], small["other"], target="sex", sensitive="sex")


def test_unknown_linkability_column(small: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ParameterError, match="linkability column 'zip'"):
        evaluate(small["real"], small["other"], small["holdout"], linkability_columns=(["zip"], ["sex"]))
