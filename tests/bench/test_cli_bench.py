"""`privsynth bench run|leaderboard|scaling` and `privsynth bench peers status` from the command line (in-process,
tests/cli_support.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cli_support import run_cli as run
from privsynth.cli.bench import _peer_options
from privsynth.errors import ParameterError


def test_bench_run_then_leaderboard_rewrites_the_page(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["bench", "run", "--datasets", "nafld1", "--methods", "copula", "--limit", "800", "-o", str(out)]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "2 runs ok, 0 failed" in result.stdout
    frame = pd.read_csv(out / "results.csv")
    assert list(frame["method"]) == ["copula", "real-holdout"]
    assert frame.loc[0, "utility.tstr"] > 0.5
    again = run(*args)
    assert again.returncode == 1 and "already exists" in again.stderr
    (out / "leaderboard.html").unlink()
    redone = run("bench", "leaderboard", str(out))
    assert redone.returncode == 0, redone.stderr
    assert "data:image/png;base64," in (out / "leaderboard.html").read_text()
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["method"] == "copula"


def test_bench_rejects_bad_lists_with_a_sentence(tmp_path: Path) -> None:
    result = run("bench", "run", "--methods", "copula", "--epsilon", "one", "-o", str(tmp_path))
    assert result.returncode == 2
    assert "--epsilon takes comma-separated numbers" in result.stderr


def test_peers_status_lists_every_peer_with_its_setup_command(tmp_path: Path) -> None:
    result = run("bench", "peers", "status", env={"PRIVSYNTH_PEERS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    for method in ("sdv-ctgan", "smartnoise-mst", "opendp-aim"):
        assert method in result.stdout
    assert "privsynth bench peers setup smartnoise" in result.stdout


def test_peer_options_are_read_as_json_when_they_parse() -> None:
    parsed = _peer_options(["sdv-ctgan.epochs=100", "sdv-ctgan.verbose=true", "smartnoise-aim.name=x"])
    assert parsed == {"sdv-ctgan": {"epochs": 100, "verbose": True}, "smartnoise-aim": {"name": "x"}}
    with pytest.raises(ParameterError, match=r"METHOD\.KEY=VALUE"):
        _peer_options(["epochs=100"])
