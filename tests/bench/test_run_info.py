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


def test_an_ignored_folder_inside_a_work_tree_is_not_the_commits_code(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".venv/\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", ".gitignore"], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True
    )
    (tmp_path / ".venv" / "privsynth").mkdir(parents=True)
    assert run_metadata(["x"], repo=tmp_path)["commit"] is not None
    assert run_metadata(["x"], repo=tmp_path / ".venv" / "privsynth")["commit"] is None


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


def _entries(document: dict[str, object]) -> list[object]:
    """A result's entries that may each carry their own run: ``runs`` (a list or a mapping) or ``rows``."""
    runs = document.get("runs", document.get("rows"))
    return list(runs.values()) if isinstance(runs, dict) else list(runs) if isinstance(runs, list) else []


def test_every_committed_benchmark_result_says_how_it_was_run() -> None:
    results = REPO / "benchmarks" / "results"
    undescribed = []
    for path in sorted(results.rglob("*")):
        if path.name == "run.json" or path.name.endswith(".run.json"):
            continue
        if path.suffix == ".json":
            document = json.loads(path.read_text())
            entries = _entries(document)
            described = "run" in document or (entries and all(isinstance(e, dict) and "run" in e for e in entries))
        elif path.name == "results.jsonl":
            described = (path.parent / "run.json").exists()
        elif path.suffix == ".txt":
            described = sidecar_path(path).exists()
        else:  # plots, CSV, HTML and notes are drawn from a result beside them
            continue
        if not described:
            undescribed.append(str(path.relative_to(results)))
    assert undescribed == []


def test_each_table_the_docs_quote_renders_from_the_committed_results() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_tables", REPO / "benchmarks" / "tables.py")
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    import argparse

    options = argparse.Namespace(methods=None, epsilon=1.0)
    rendered = {name: make(options) for name, make in tables.TABLES.items()}
    assert all(text.count("\n") >= 2 for text in rendered.values())
    # the numbers STATUS quotes for DP marginals at epsilon 1 on nassCDS (mean over 3 runs; the holdout floor)
    assert "| nassCDS | privsynth AIM | 0.025 ± 0.005 | 0.047 ± 0.006 |" in rendered["dp_vs_best_peer"]
    assert "| nassCDS | real holdout (floor) | 0.025 | 0.052 | 0.993 | - |" in rendered["dp_vs_best_peer"]
    assert "| AIM | 2,750 | 5,140 | 61 | 1.48 |" in rendered["ten_million"]
