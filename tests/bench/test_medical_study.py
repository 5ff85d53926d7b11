"""The medical study's script (benchmarks/medical_study.py): its tables load as the study file states them, its run
plan orders and filters runs as documented, and its report pairs the whole and task arms of the committed results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "medical_study.py"
RESULTS = ROOT / "benchmarks" / "results" / "medical_study" / "results.jsonl"


@pytest.fixture(scope="module")
def study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("medical_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["medical_study"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_every_study_table_loads_with_its_task_and_drops(study: ModuleType) -> None:
    spec = study.load_study()
    assert len(spec["tables"]) >= 10
    for name, entry in spec["tables"].items():
        table = study.load_table(name, entry, int(spec["max_rows"]))
        whole, task = table.columns("whole"), table.columns("task")
        assert set(task) < set(whole), name  # the whole arm adds at least one adjunct column
        assert not set(entry.get("drop", [])) & set(whole), name
        assert set(table.train[table.target].dropna().unique()) <= set(table.categories), name
        rows = len(table.train) + len(table.holdout)
        assert rows <= spec["max_rows"] and 0.15 < len(table.holdout) / rows < 0.25, name
    colon = study.load_table("colon", spec["tables"]["colon"], int(spec["max_rows"]))
    assert len(colon.train) + len(colon.holdout) == 929  # one death record per patient (etype == 2)


def test_the_plan_runs_seed_zero_of_every_generator_first_and_filters_budgets(study: ModuleType) -> None:
    runs = list(study.plan(["gbsg", "pbc"], ["fast"], None))
    seeds = [seed for *_, seed in runs]
    assert seeds == sorted(seeds) and set(seeds) == {0, 1, 2}
    assert len(runs) == 3 * (1 + 2 + 2) * 2 * 2  # seeds x (copula + MST, PrivBayes at 2 budgets) x tables x arms
    only = list(study.plan(["gbsg"], ["fast", "slow"], 1, None, [1.0]))
    assert {(gen.method, epsilon) for _, _, _, gen, epsilon, _ in only} == {
        ("copula", None),
        ("mst", 1.0),
        ("privbayes", 1.0),
        ("deep", None),
        ("dp-deep", 1.0),
        ("aim", 1.0),
    }
    aim = list(study.plan(["gbsg"], ["slow"], None, ["aim"]))
    assert {seed for *_, seed in aim} == {0} and {epsilon for _, _, _, _, epsilon, _ in aim} == {1.0, 3.0}


def test_the_report_pairs_each_tables_whole_and_task_arms(study: ModuleType, tmp_path: Path) -> None:
    rows = study.read_rows(RESULTS)
    wide = study.paired(rows)
    assert not wide.empty
    line = wide[(wide["table"] == "gbsg") & (wide["method"] == "mst") & (wide["epsilon"] == 1.0)].iloc[0]
    tstr = {
        arm: [
            r["metrics"]["tstr"]
            for r in rows
            if (r["table"], r["method"], r["epsilon"], r["arm"], r["status"]) == ("gbsg", "mst", 1.0, arm, "ok")
        ]
        for arm in ("whole", "task")
    }
    mean = {arm: sum(values) / len(values) for arm, values in tstr.items()}  # seeds are averaged before the pairing
    assert line["tstr_diff"] == pytest.approx(mean["whole"] - mean["task"])
    assert line["columns_whole"] == 10 and line["columns_task"] == 9
    # a retried run supersedes its earlier line
    first = next(r for r in rows if r["status"] == "ok" and r["method"] == "mst")
    retried = {**first, "status": "failed", "error": "later failure"}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(first) + "\n" + json.dumps(retried) + "\n", encoding="utf-8")
    assert [r["status"] for r in study.read_rows(path)] == ["failed"]
