"""`privsynth text generate` run as a user runs it (in-process, tests/cli_support.py), on a slice of the bundled
tweets (real model, real ledger)."""

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from cli_support import run_cli as run

pytest.importorskip("sentence_transformers")

from privsynth.data.datasets import load_dataset
from privsynth.privacy import Ledger
from privsynth.provenance.card import card_schema

LABELS = "Twitter for Android,Twitter for iPhone"


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
    # the budget is kept under the file's stem, the name the card shows; the default delta is on the card
    assert card["privacy"]["dataset"] == "tweets" and card["privacy"]["delta"] == 1e-6
    assert "fingerprint_sha256" not in card["source"] and "timings_seconds" not in card["generator"]
    assert "budget kept under dataset 'tweets'" in result.stdout


def test_text_generate_refuses_a_label_column_without_its_public_labels(tmp_path: Path, tweets: Path) -> None:
    args = ["text", "generate", "tweets.csv", "--text-column", "text", "--label-column", "source"]
    result = run(*args, "--epsilon", "4", "--rows", "4", "-o", "syn.csv", cwd=tmp_path)
    assert result.returncode != 0
    assert "declare the public label set of 'source'" in result.stderr
    assert not (tmp_path / "syn.csv").exists()


def test_text_generate_refuses_a_table(tmp_path: Path) -> None:
    result = run("text", "generate", "nassCDS", "--epsilon", "1", "--rows", "4", "-o", "t.csv", cwd=tmp_path)
    assert "'nassCDS' is a table" in result.stderr


@pytest.mark.slow  # 300 s on 2 cores (PE on the bundled corpus, then the saved model); `make test-slow` runs it
def test_bundled_corpus_brings_its_label_set_and_a_saved_model_samples_again(tmp_path: Path) -> None:
    """`text generate trump_tweets` needs no --labels (the corpus declares its set); --save-model then
    `text sample` releases more texts, with a card that records the fit's budget, and spends nothing more."""
    ledger = tmp_path / "ledger.sqlite"
    tiny = ["--param", "iterations=1", "--param", "population=6", "--param", "max_tokens=16", "--no-report"]
    fit = ["--epsilon", "4", "--rows", "4", "--ledger", str(ledger), "--save-model", "pe.model", "-o", "syn.csv"]
    result = run("text", "generate", "trump_tweets", *tiny, *fit, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first = pd.read_csv(tmp_path / "syn.csv")
    assert list(first.columns) == ["text", "source"]
    assert set(first["source"]) <= {"Twitter for Android", "Twitter for iPhone", "Twitter Web Client"}
    card = json.loads((tmp_path / "syn.card.json").read_text())
    assert card["schema"]["columns"][1]["categories"] == [
        "Twitter for Android",
        "Twitter for iPhone",
        "Twitter Web Client",
    ]
    (record,) = Ledger(ledger).datasets()
    spent = record.spent_rho

    again = run("text", "sample", "pe.model", "--rows", "3", "--seed", "1", "-o", "more.csv", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "sampling spent nothing" in again.stdout
    assert 1 <= len(pd.read_csv(tmp_path / "more.csv")) <= 3
    more = json.loads((tmp_path / "more.card.json").read_text())
    assert more["generator"]["method"] == "pe"
    assert more["privacy"]["dataset"] == card["privacy"]["dataset"] == "trump_tweets"
    assert more["privacy"]["epsilon"] == card["privacy"]["epsilon"] == 4
    assert Ledger(ledger).datasets()[0].spent_rho == spent
    refused = run("text", "sample", "syn.csv", "--rows", "3", "-o", "x.csv", cwd=tmp_path)
    assert refused.returncode != 0 and "is not a privsynth model" in refused.stderr


@pytest.mark.slow  # 160 s on 2 cores (DP LoRA with canaries); `make test-slow` runs it
def test_dp_lora_canaries_reach_the_card_and_the_custodian_report(tmp_path: Path, tweets: Path) -> None:
    """The evaluation report (exact corpus size, metrics on the private texts) is written apart from the card by
    default, and the terminal says it is custodian-side; the card carries no metrics."""
    args = ["text", "generate", "tweets.csv", "--text-column", "text", "--label-column", "source", "--labels", LABELS]
    lora = ["--method", "dp-lora", "--canaries", "2", "--param", "rank=4", "--param", "batch_size=8"]
    lora += ["--param", "max_length=32", "--param", "physical_batch_size=8"]
    result = run(*args, *lora, "--epsilon", "8", "--rows", "4", "--ledger", "l.sqlite", "-o", "lora.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "lora.card.json").read_text())
    jsonschema.Draft202012Validator(card_schema()).validate(card)
    canaries = card["canaries"]
    assert canaries["inserted"] == 2 and canaries["repeats"] == [1, 1] and canaries["candidates"] == 1000
    assert all(0 <= value <= canaries["max_exposure_bits"] for value in canaries["exposures"])
    assert "Canary exposure" in (tmp_path / "lora.card.html").read_text()
    assert not card["metrics"]
    assert "custodian report" in result.stdout and "not covered by the DP guarantee" in result.stdout
    report = json.loads((tmp_path / "lora.report.json").read_text())
    assert report["privacy"]["canary_exposure_max"]["value"] == pytest.approx(max(canaries["exposures"]), abs=1e-3)
    refused = run(*args, "--canaries", "2", "--epsilon", "4", "--rows", "4", "-o", "pe.csv", cwd=tmp_path)
    assert "use them with method 'dp-lora', not 'pe'" in refused.stderr


def test_attach_report_puts_the_metrics_on_the_card_marked_outside_the_guarantee(tmp_path: Path, tweets: Path) -> None:
    args = ["text", "generate", "tweets.csv", "--text-column", "text", "--label-column", "source", "--labels", LABELS]
    tiny = ["--param", "iterations=1", "--param", "population=6", "--param", "max_tokens=16", "--attach-report"]
    result = run(*args, *tiny, "--epsilon", "4", "--rows", "4", "--dataset", "tweets-60", "-o", "syn.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "syn.card.json").read_text())
    assert card["privacy"]["dataset"] == "tweets-60"
    assert card["metrics"]["outside_the_guarantee"] is True
    assert card["metrics"]["evaluated_rows"]["real_rows"] == 60  # attached on purpose: the exact size is on it
    assert "its summary is on the card, marked outside the guarantee" in result.stdout
    refused = run(*args, "--no-report", "--attach-report", "--epsilon", "4", "--rows", "4", "-o", "x.csv", cwd=tmp_path)
    assert refused.returncode != 0 and "--attach-report needs the report" in refused.stderr
