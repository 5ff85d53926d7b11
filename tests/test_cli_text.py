"""`privsynth text generate` run as a user runs it, on a slice of the bundled tweets (real model, real ledger)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("sentence_transformers")

from privsynth.data.datasets import load_dataset
from privsynth.privacy import Ledger

LABELS = "Twitter for Android,Twitter for iPhone"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    code = "from privsynth.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False, env=env
    )


@pytest.fixture
def tweets(tmp_path: Path) -> Path:
    train = load_dataset("trump_tweets")
    train = train[train["source"].isin(LABELS.split(","))].head(60)
    train[["text", "source"]].to_csv(tmp_path / "tweets.csv", index=False)
    return tmp_path / "tweets.csv"


def test_text_generate_writes_texts_card_and_ledger_rows(tmp_path: Path, tweets: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    args = ["text", "generate", "tweets.csv", "--text-column", "text", "--label-column", "source", "--labels", LABELS]
    tiny = ["--param", "iterations=1", "--param", "population=6", "--param", "max_tokens=16", "--no-report"]
    result = run(*args, *tiny, "--epsilon", "4", "--rows", "4", "--ledger", str(ledger), "-o", "syn.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    synthetic = pd.read_csv(tmp_path / "syn.csv")
    assert 1 <= len(synthetic) <= 4
    assert set(synthetic["source"]) <= set(LABELS.split(","))
    card = json.loads((tmp_path / "syn.card.json").read_text())
    assert card["generator"]["method"] == "pe"
    assert card["filters"]["used_private_data"] is False
    assert card["filters"]["input"] == card["filters"]["kept"] + sum(card["filters"]["removed"].values())
    spent = sum(s["rho"] for s in card["privacy"]["spends"])
    (record,) = Ledger(ledger).datasets()
    assert record.spent_rho == pytest.approx(spent, rel=1e-9)


def test_text_generate_refuses_a_label_column_without_its_public_labels(tmp_path: Path, tweets: Path) -> None:
    args = ["text", "generate", "tweets.csv", "--text-column", "text", "--label-column", "source"]
    result = run(*args, "--epsilon", "4", "--rows", "4", "-o", "syn.csv", cwd=tmp_path)
    assert result.returncode != 0
    assert "declare the public label set of 'source'" in result.stderr
    assert not (tmp_path / "syn.csv").exists()


def test_text_generate_refuses_a_table(tmp_path: Path) -> None:
    result = run("text", "generate", "nassCDS", "--epsilon", "1", "--rows", "4", "-o", "t.csv", cwd=tmp_path)
    assert "'nassCDS' is a table" in result.stderr
