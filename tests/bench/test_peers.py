"""Peer adapters: a missing environment says how to make it; real runs in the peer environments when they exist.

The environments are made by `privsynth bench peers setup sdv|smartnoise` (minutes, from PyPI); the tests that
need one skip with that command as the reason.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from privsynth.bench import peers
from privsynth.bench.peers import PeerError, run_peer
from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Kind, Schema
from privsynth.errors import ParameterError
from privsynth.evaluate import evaluate


def _needs(method: str) -> pytest.MarkDecorator:
    problem = peers.peer_status(method)
    return pytest.mark.skipif(problem is not None, reason=problem or "")


def _check_restored(synthetic: pd.DataFrame, train: pd.DataFrame, schema: Schema) -> None:
    """Same columns and dtypes as the real rows, categories from the schema, numbers within its bounds."""
    modelled = schema.synthesized()
    assert list(synthetic.columns) == modelled.names
    for column in modelled:
        values = synthetic[column.name]
        assert str(values.dtype) == str(train[column.name].dtype), column.name
        if column.kind is Kind.CATEGORICAL:
            assert set(values.dropna()) <= set(column.categories or []), column.name
        elif column.bounds is not None:
            low, high = column.bounds
            assert values.dropna().between(low, high).all(), column.name


def test_missing_environment_names_the_setup_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVSYNTH_PEERS_DIR", str(tmp_path))
    assert "privsynth bench peers setup smartnoise" in (peers.peer_status("smartnoise-mst") or "")
    train = load_dataset("nafld1").head(200)
    with pytest.raises(PeerError, match="privsynth bench peers setup sdv"):
        run_peer("sdv-copula", train, Schema.infer(train), 100, seed=0, epsilon=None, delta=None)


def test_budget_arguments_are_checked_before_anything_runs() -> None:
    train = load_dataset("nafld1").head(200)
    schema = Schema.infer(train)
    with pytest.raises(ParameterError, match="needs a positive epsilon"):
        run_peer("smartnoise-mst", train, schema, 100, seed=0, epsilon=None, delta=1e-6)
    with pytest.raises(ParameterError, match="needs a delta"):
        run_peer("smartnoise-mst", train, schema, 100, seed=0, epsilon=1.0, delta=None)
    with pytest.raises(ParameterError, match="not differentially private"):
        run_peer("sdv-copula", train, schema, 100, seed=0, epsilon=1.0, delta=1e-6)
    with pytest.raises(ParameterError, match="unknown peer method 'sdv-gan'"):
        run_peer("sdv-gan", train, schema, 100, seed=0, epsilon=None, delta=None)


@pytest.mark.slow  # about 15 s on an idle machine (SDV's import and fit), over a minute on a busy one
@_needs("sdv-copula")
def test_sdv_copula_on_covid_testing_gives_restored_rows_evaluate_accepts() -> None:
    train = load_dataset("covid_testing").head(3000)
    holdout = load_dataset("covid_testing", "holdout").head(1000)
    schema = Schema.infer(train)
    result = run_peer("sdv-copula", train, schema, 2000, seed=0, epsilon=None, delta=None)
    assert len(result.data) == 2000
    assert result.details["library"] == "sdv" and result.details["version"].startswith("2.")
    assert 0 < result.fit_seconds < result.details["process_seconds"]
    _check_restored(result.data, train, schema)
    # The PII columns (fake names, subject id) never reach the peer.
    assert not {"fake_first_name", "fake_last_name", "subject_id"} & set(result.data.columns)
    # Missing values survive the round trip (payor_group is missing in 47% of these rows, ct_result in 1.2%).
    assert 0.4 < result.data["payor_group"].isna().mean() < 0.55
    assert 0.002 < result.data["ct_result"].isna().mean() < 0.03
    report = evaluate(train, result.data, holdout=holdout, target="result", schema=schema)
    assert report["utility.tstr"] is not None and report["utility.tstr"] > 0.5
    assert report["fidelity.tvd_1way"] is not None and report["fidelity.tvd_1way"] < 0.15


@_needs("sdv-copula")
def test_a_failing_peer_reports_the_tail_of_its_error() -> None:
    train = load_dataset("nafld1").head(300)
    schema = Schema.infer(train)
    with pytest.raises(PeerError, match=r"sdv-copula failed in its environment \(exit 1\).*no_such_option"):
        run_peer("sdv-copula", train, schema, 100, seed=0, epsilon=None, delta=None, options={"no_such_option": 1})


@pytest.mark.slow
@_needs("smartnoise-mst")
def test_smartnoise_mst_spends_nothing_on_the_given_domains() -> None:
    train = load_dataset("nafld1").head(4000)
    schema = Schema.infer(train)
    result = run_peer("smartnoise-mst", train, schema, 3000, seed=0, epsilon=1.0, delta=1e-6)
    assert result.details["preprocessor_epsilon"] == 0.0
    assert result.details["numeric_bins"]["age"] == 16
    _check_restored(result.data, train, schema)
    # status is rare (about 8%): MST at epsilon 1 keeps its share within a few points.
    assert abs(result.data["status"].mean() - train["status"].mean()) < 0.05


@pytest.mark.slow
@_needs("opendp-mst")
def test_opendp_mst_keeps_missing_shares_and_bounds() -> None:
    train = load_dataset("nafld1").head(3000)
    schema = Schema.infer(train)
    result = run_peer("opendp-mst", train, schema, 2000, seed=0, epsilon=1.0, delta=1e-6)
    assert result.details["library"] == "opendp" and result.details["rho"] <= result.details["rho_attempts"][0]
    for column in ("weight", "height", "bmi"):  # missing in 18-28% of the rows: modelled as a column of their own
        assert abs(result.data[column].isna().mean() - train[column].isna().mean()) < 0.05, column
    for column in ("age", "weight", "futime"):
        low, high = schema[column].bounds or (None, None)
        assert result.data[column].dropna().between(low, high).all(), column


def test_dpmm_and_mostlyai_peers_are_registered_with_their_privacy() -> None:
    assert {m: peers.peer_method(m).differentially_private for m in peers.PEER_METHODS if m.startswith("dpmm")} == {
        "dpmm-privbayes": True,
        "dpmm-mst": True,
        "dpmm-aim": True,
    }
    assert not peers.peer_method("mostlyai-argn").differentially_private
    assert peers.peer_method("mostlyai-argn-dp").differentially_private
    assert peers.peer_method("mostlyai-argn-cpu").options == peers.MOSTLYAI_CPU_OPTIONS
    # torch is installed first, on its own, so pip never resolves a CUDA build for the engine.
    assert peers.peer_group("mostlyai").steps[0] == ("torch==2.13.0",)


def _nafld1_subset(rows: int) -> tuple[pd.DataFrame, Schema]:
    train = load_dataset("nafld1").head(rows)[["age", "male", "weight", "status"]]
    return train, Schema.infer(train)


@pytest.mark.slow  # about 20 CPU s (import, PrivTree bins, PrivBayes on 4 columns), minutes of wall on a busy machine
@_needs("dpmm-privbayes")
def test_dpmm_privbayes_splits_the_budget_and_reads_categories_from_the_rows() -> None:
    # 4,000 rows: with fewer, PrivTree's DP bounds at 0.1 / 3 epsilon a column find no bin above the noise
    # threshold and dpmm fails ("Bin labels must be one fewer than the number of bin edges").
    train, schema = _nafld1_subset(4000)
    result = run_peer("dpmm-privbayes", train, schema, 2000, seed=0, epsilon=1.0, delta=1e-6)
    details = result.details
    assert details["library"] == "dpmm" and details["model"] == "PrivBayesGM"
    assert details["epsilon_model"] + details["epsilon_preprocessing"] == pytest.approx(1.0)
    assert sum(details["preprocessing_spent"].values()) <= details["epsilon_preprocessing"] + 1e-12
    assert details["domains_given_free"] is False and "categories" in details["domains_from_data"]
    assert len(result.data) == 2000
    _check_restored(result.data, train, schema)
    assert abs(result.data["weight"].isna().mean() - train["weight"].isna().mean()) < 0.05  # 28% missing
    assert abs(result.data["status"].mean() - train["status"].mean()) < 0.05  # about 8%


@_needs("mostlyai-argn")  # about 10 CPU s (torch import, 2 epochs on 1,000 rows), 30 s of wall on a busy machine
def test_mostlyai_argn_trains_within_its_epoch_limit_and_keeps_missing_shares() -> None:
    train, schema = _nafld1_subset(1000)
    result = run_peer("mostlyai-argn", train, schema, 1000, seed=0, epsilon=None, delta=None, options={"max_epochs": 2})
    details = result.details
    assert details["library"] == "mostlyai-engine" and details["version"].startswith("2.")
    assert details["domains_from_data"] is True and details["epochs"] <= 2
    assert details["epsilon_spent"] is None
    _check_restored(result.data, train, schema)
    assert abs(result.data["weight"].isna().mean() - train["weight"].isna().mean()) < 0.08


@pytest.mark.slow  # about 12 CPU s (DP-SGD, 2 epochs on 1,000 rows), a minute of wall on a busy machine
@_needs("mostlyai-argn-dp")
def test_mostlyai_argn_dp_stops_within_its_epsilon() -> None:
    train, schema = _nafld1_subset(1000)
    result = run_peer(
        "mostlyai-argn-dp", train, schema, 1000, seed=0, epsilon=3.0, delta=1e-6, options={"max_epochs": 2}
    )
    details = result.details
    privacy = details["options"]["differential_privacy"]
    assert privacy["max_epsilon"] == 3.0 and privacy["value_protection_epsilon"] == pytest.approx(0.3)
    assert details["domains_from_data"] is False
    assert details["epsilon_spent"] is not None and 0.3 <= details["epsilon_spent"] <= 3.0
    _check_restored(result.data, train, schema)
