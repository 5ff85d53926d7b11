"""Run metadata: every benchmark result says which commit, command, machine and packages produced it."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from privsynth.bench.run_info import record_run, run_metadata, sidecar_path, with_run, write_run_sidecar

REPO = Path(__file__).resolve().parents[2]


def test_run_metadata_records_the_commit_command_date_machine_and_versions() -> None:
    info = run_metadata(["benchmarks/x.py", "--rows", "1 000"])
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert info["commit"] == head.strip()
    assert isinstance(info["dirty"], bool)
    assert info["command"] == "benchmarks/x.py --rows '1 000'"
    age = datetime.now(UTC) - datetime.fromisoformat(info["date"])
    assert 0 <= age.total_seconds() < 60
    assert info["machine"]["cpus"] >= 1 and info["machine"]["memory_gib"] > 0
    assert info["packages"]["numpy"] == np.__version__
    assert "privsynth" in info["packages"]
    json.dumps(info, allow_nan=False)


def test_run_metadata_outside_a_git_work_tree_has_no_commit_and_raises_nothing(tmp_path: Path) -> None:
    info = run_metadata(["x"], repo=tmp_path)
    assert info["commit"] is None and info["dirty"] is None
    assert info["packages"]["numpy"] == np.__version__


def test_with_run_puts_the_run_first_and_replaces_an_old_one() -> None:
    result = with_run({"run": {"recorded": False}, "rows": 3}, ["x"])
    assert list(result) == ["run", "rows"] and result["run"]["recorded"] is True


def test_a_sidecar_sits_beside_a_text_result_and_the_bench_log_keeps_every_invocation(tmp_path: Path) -> None:
    written = write_run_sidecar(tmp_path / "bounds.txt", ["a"])
    assert written == sidecar_path(tmp_path / "bounds.txt") == tmp_path / "bounds.txt.run.json"
    assert json.loads(written.read_text())["command"] == "a"
    record_run(tmp_path, ["first"])
    record_run(tmp_path, ["second", "--resume"])
    runs = json.loads((tmp_path / "run.json").read_text())["runs"]
    assert [r["command"] for r in runs] == ["first", "second --resume"]


def test_bench_run_records_each_invocation_beside_its_results(tmp_path: Path) -> None:
    from privsynth.bench.harness import run_bench

    run_bench(["nafld1"], ["copula"], seeds=1, out_dir=tmp_path, limit=300)
    run_bench(["nafld1"], ["copula"], seeds=1, out_dir=tmp_path, limit=300, resume=True)
    runs = json.loads((tmp_path / "run.json").read_text())["runs"]
    assert len(runs) == 2 and all(r["commit"] and r["packages"]["privsynth"] for r in runs)
