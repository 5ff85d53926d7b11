"""The bench harness on small slices of the bundled datasets: results files, failures, resume, power laws."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privsynth.bench.harness import plan_runs, run_bench
from privsynth.bench.leaderboard import leaderboard_table
from privsynth.bench.results import REFERENCE_METHOD, RunKey, key_id, read_results, row_id
from privsynth.bench.scaling import fit_power_law, run_scaling
from privsynth.errors import OutputExistsError, ParameterError
from privsynth.evaluate.catalogue import format_metric


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """copula plus a peer whose environment does not exist, on 1,500 rows of nafld1."""
    folder = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVSYNTH_PEERS_DIR", str(folder / "no-peers"))
        run_bench(["nafld1"], ["copula", "sdv-copula"], epsilons=[1.0], seeds=1, out_dir=folder / "out", limit=1500)
    return folder / "out"


def test_bench_writes_one_json_line_per_run_and_a_reference(bench_dir: Path) -> None:
    rows = [json.loads(line) for line in (bench_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["status"]) for r in rows] == [
        ("copula", "ok"),
        ("sdv-copula", "failed"),
        (REFERENCE_METHOD, "ok"),
    ]
    copula = rows[0]
    assert copula["rows"] == copula["train_rows"] == 1500
    assert copula["epsilon"] is None and copula["dp"] is False
    assert copula["fit_seconds"] > 0 and copula["evaluate_seconds"] > 0
    assert copula["total_seconds"] >= copula["fit_seconds"] + copula["evaluate_seconds"]
    # On 1,500 rows the copula keeps a little of what predicts nafld1's status (0.55 against 0.81 for real rows).
    assert 0.5 < copula["metrics"]["utility.tstr"] < copula["metrics"]["utility.trtr"] - 0.1
    # The real holdout is closer to the real train split than the copula's rows are.
    reference = rows[2]
    assert reference["rows"] == 1500
    assert reference["metrics"]["fidelity.tvd_2way"] < copula["metrics"]["fidelity.tvd_2way"]
    assert reference["metrics"]["fidelity.detection_auc"] < 0.6


def test_failing_peer_is_recorded_with_the_setup_command(bench_dir: Path) -> None:
    failed = read_results(bench_dir / "results.jsonl")[1]
    assert failed["metrics"] == {}
    assert "PeerError" in failed["error"]
    assert "privsynth bench peers setup sdv" in failed["error"]


def test_reference_row_reads_the_trtr_as_its_tstr(bench_dir: Path) -> None:
    rows = read_results(bench_dir / "results.jsonl")
    assert rows[2]["metrics"]["utility.tstr"] == rows[0]["metrics"]["utility.trtr"]


def test_csv_and_leaderboard_hold_the_same_numbers(bench_dir: Path) -> None:
    frame = pd.read_csv(bench_dir / "results.csv")
    assert list(frame["method"]) == ["copula", "sdv-copula", REFERENCE_METHOD]
    rows = read_results(bench_dir / "results.jsonl")
    assert frame.loc[0, "utility.tstr"] == pytest.approx(rows[0]["metrics"]["utility.tstr"])
    assert math.isnan(frame.loc[1, "utility.tstr"]) and "PeerError" in frame.loc[1, "error"]
    html = (bench_dir / "leaderboard.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # the privacy-utility plot and the timing plot
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert format_metric("utility.tstr", rows[0]["metrics"]["utility.tstr"]) in html
    table = leaderboard_table(rows)
    ranks = [(e["rank"], e["method"]) for e in table]
    assert ranks == [("1", "copula"), ("-", "sdv-copula"), ("ref", REFERENCE_METHOD)]


def test_existing_results_need_overwrite_or_resume(bench_dir: Path) -> None:
    with pytest.raises(OutputExistsError, match="resume"):
        run_bench(["nafld1"], ["copula"], out_dir=bench_dir, limit=1500)
    with pytest.raises(ParameterError, match="either"):
        run_bench(["nafld1"], ["copula"], out_dir=bench_dir, overwrite=True, resume=True)


def test_resume_skips_finished_runs(bench_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "resumed"
    folder.mkdir()
    lines = (bench_dir / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join([lines[0], lines[2]]) + "\n")
    results = run_bench(["nafld1"], ["copula"], out_dir=folder, resume=True, limit=1500)
    assert [r["method"] for r in results] == ["copula", REFERENCE_METHOD]
    assert results[0]["finished_at"] == json.loads(lines[0])["finished_at"]
    assert (folder / "leaderboard.html").exists()


def test_rerun_redoes_a_method_and_its_new_row_supersedes_the_old(bench_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "rerun"
    folder.mkdir()
    lines = (bench_dir / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ParameterError, match="not methods of this run"):
        run_bench(["nafld1"], ["copula"], out_dir=folder, resume=True, rerun=["aim"])
    results = run_bench(["nafld1"], ["copula"], out_dir=folder, resume=True, limit=1500, rerun=["copula"])
    logged = (folder / "results.jsonl").read_text().splitlines()
    assert len(logged) == len(lines) + 1
    copula = [r for r in results if r["method"] == "copula"]
    assert len(copula) == 1 and copula[0] == json.loads(logged[-1])
    assert copula[0]["cpu_seconds"] > 0


def test_runs_with_other_peer_options_are_other_runs_when_resuming() -> None:
    key = RunKey("nassCDS", "sdv-ctgan", None, 0)
    row = {"dataset": "nassCDS", "method": "sdv-ctgan", "epsilon": None, "seed": 0, "options": {"epochs": 30}}
    assert row_id(row) == key_id(key, {"epochs": 30}) != key_id(key, {})
    assert row_id({**row, "options": {}}) == key_id(key, {})


def test_plan_runs_budgets_only_the_dp_methods() -> None:
    keys = plan_runs(["nafld1"], ["copula", "smartnoise-mst"], [1.0, 3.0], [0, 1])
    assert [(k.method, k.epsilon, k.seed) for k in keys] == [
        ("copula", None, 0),
        ("copula", None, 1),
        ("smartnoise-mst", 1.0, 0),
        ("smartnoise-mst", 1.0, 1),
        ("smartnoise-mst", 3.0, 0),
        ("smartnoise-mst", 3.0, 1),
    ]
    with pytest.raises(ParameterError, match="unknown method 'nope'"):
        plan_runs(["nafld1"], ["nope"], [1.0], [0])
    with pytest.raises(ParameterError, match="unknown dataset"):
        plan_runs(["iris"], ["copula"], [1.0], [0])
    with pytest.raises(ParameterError, match="positive number"):
        plan_runs(["nafld1"], ["smartnoise-mst"], [0.0], [0])


def test_power_law_fit_recovers_known_parameters() -> None:
    rng = np.random.default_rng(0)
    rows = np.array([100, 200, 500, 1000, 2000, 5000, 10000, 50000], dtype=float)
    loss = 3.0 * rows**-0.6 + 0.12
    law = fit_power_law(rows, loss * (1 + rng.normal(0, 0.005, len(rows))))
    assert law is not None
    assert law.a == pytest.approx(3.0, rel=0.15)
    assert law.b == pytest.approx(0.6, abs=0.03)
    assert law.c == pytest.approx(0.12, abs=0.003)
    assert law(1e9) == pytest.approx(law.c, abs=1e-4)
    assert fit_power_law([100, 200], [0.3, 0.2]) is None


def test_scaling_utility_improves_with_rows_and_writes_a_plot(tmp_path: Path) -> None:
    result = run_scaling("nafld1", "copula", [100, 300, 1000, 3000], seeds=1, out_dir=tmp_path)
    losses = [p.loss for p in result.points]
    assert [p.rows for p in result.points] == [100, 300, 1000, 3000]
    assert losses[-1] < losses[0]
    assert result.trtr is not None and 0.7 < result.trtr < 1
    assert result.law is not None and 0 <= result.law.c <= losses[-1] + 0.02
    written = json.loads((tmp_path / "scaling.json").read_text())
    assert written["power_law"]["plateau_c"] == pytest.approx(result.law.c)
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputExistsError):
        run_scaling("nafld1", "copula", [100, 300, 1000], seeds=1, out_dir=tmp_path)


def test_a_dp_run_fits_through_the_pipeline_and_spends_from_no_ledger(tmp_path: Path) -> None:
    results = run_bench(["nafld1"], ["mst"], epsilons=[1.0], seeds=1, out_dir=tmp_path / "out", limit=400)
    mst = results[0]
    assert mst["status"] == "ok", mst["error"]
    assert (mst["method"], mst["dp"], mst["epsilon"], mst["delta"], mst["rows"]) == ("mst", True, 1.0, 1e-6, 400)
    assert mst["details"]["params"] == {
        "preprocessing_share": None,
        "bins": 16,
        "numeric_bins": "quantile",
        "iters": 2000,
        "contribution_bound": 1,
        "unit": "row",
    }
    assert mst["fit_seconds"] > 0 and mst["sample_seconds"] > 0
    assert 0 <= mst["metrics"]["fidelity.tvd_1way"] <= 1  # scored like any other run
    # The bundled data are public: the run records no spend and registers no release in the default ledger.
    assert not (tmp_path / "ledger.sqlite").exists()
