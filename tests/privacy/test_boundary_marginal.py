"""The DP release boundary of MST, AIM and PrivBayes: a canary record appended to real data leaves no trace.

The canary holds a category no other row has (``occRole = zqxcanary``) and an extreme value (``ageOFocc =
8675309``). Nothing a user or an analyst can get back (the rows, the card as JSON and HTML, the model file, the
terminal's output, the log, error messages of conditions) may hold the canary's values, the exact row count of
the private data or the SHA-256 of its file. This is the same check as the team's ``canary-check`` tool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

import privsynth as ps
from cli_support import run_cli
from privsynth.data.datasets import load_dataset
from privsynth.data.schema import Column, Schema
from privsynth.errors import ParameterError
from privsynth.provenance.card import card_html_path, card_path
from privsynth.synth.base import Synthesizer

CATEGORY, VALUE = "zqxcanary", 8675309


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """nassCDS's train split plus the canary row as a CSV file: its path, exact row count and SHA-256."""
    train = load_dataset("nassCDS")
    row = train.iloc[[0]].copy()
    row["occRole"], row["ageOFocc"] = CATEGORY, VALUE
    data = pd.concat([train, row], ignore_index=True)
    path = tmp_path_factory.mktemp("canary") / "private.csv"
    data.to_csv(path, index=False)
    return path, len(data), hashlib.sha256(path.read_bytes()).hexdigest()


def leaks(text: str, rows: int, sha: str, released: int | None = None) -> list[str]:
    """The canary's category and value, the file's hash and the exact row count found in ``text``. The count is
    not looked for when ``released``, the fit's noisy row estimate (rounded as the card shows it), equals it:
    MST's and AIM's estimate pools every noisy measurement's total, so on 20,975 rows it lands within a few rows of the
    truth and rounds onto it in some runs: a DP output that coincides, not a leak."""
    found = [needle for needle in (CATEGORY, str(VALUE), sha) if needle in text]
    if released == rows:
        return found
    if re.search(rf"(?<![\d.]){rows}(?![\d.])", text) or re.search(rf"(?<![\d.]){rows:,}(?![\d.])", text):
        found.append(f"the exact row count {rows}")
    return found


def test_an_mst_release_through_the_cli_holds_nothing_of_the_canary(
    canary: tuple[Path, int, str], tmp_path: Path
) -> None:
    """As a custodian runs it (in-process): no schema (storage types), MST at epsilon 1, model saved."""
    path, rows, sha = canary
    command = ["generate", str(path), "--method", "mst", "--epsilon", "1"]
    command += ["--rows", "500", "--ledger", str(tmp_path / "l.db"), "--save-model", str(tmp_path / "m.model")]
    result = run_cli(*command, "-o", str(tmp_path / "out.csv"))
    assert result.returncode == 0, result.stderr
    assert "dataset 'private'" in result.stdout  # the budget is kept under the file's name
    estimate = float(Synthesizer.load(tmp_path / "m.model").rows_estimate_)
    assert estimate != rows  # noisy: never the count itself, only (rarely) rounding onto it
    assert leaks(result.stdout + result.stderr, rows, sha, round(estimate)) == []
    for name in ("out.csv", "out.card.json", "out.card.html", "m.model"):
        content = (tmp_path / name).read_bytes().decode("latin-1")
        assert leaks(content, rows, sha, round(estimate)) == [], name
    condition = [*command[:-4], "--rows", "10", "--ledger", str(tmp_path / "l.db"), "--condition", "occRole=nothere"]
    refused = run_cli(*condition, "-o", str(tmp_path / "c.csv"))
    assert refused.returncode != 0
    message = " ".join(refused.stderr.split())
    assert "outside the model's domain" in message
    assert "driver" not in message and CATEGORY not in message and leaks(message, rows, sha) == []


@pytest.mark.parametrize("method", ["mst", "aim", "privbayes"])
def test_a_marginal_release_holds_nothing_of_the_canary(
    method: str, canary: tuple[Path, int, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the Python API with a reviewed schema (from the data without the canary, domains not public):
    rows, card, model file, log and condition errors."""
    path, rows, sha = canary
    train = load_dataset("nassCDS")
    kept = ["dvcat", "dead", "sex", "occRole", "ageOFocc", "injSeverity"]
    schema = Schema([c if c.name in kept else _left_out(c) for c in Schema.infer(train)])
    params = {"rounds": 6, "iters": 200} if method == "aim" else {}
    caplog.set_level(logging.DEBUG, logger="privsynth")
    release = ps.synthesize(
        path, method, rows=300, schema=schema, epsilon=1.0, params=params, ledger=tmp_path / "l.db", seed=0
    )
    written = release.write(tmp_path / "out.csv")
    release.save_model(tmp_path / "m.model")
    model = release.model
    released = round(float(model.rows_estimate_))
    assert float(model.rows_estimate_) != rows  # noisy: never the count itself, only (rarely) rounding onto it
    for file in (written, card_path(written), card_html_path(written), tmp_path / "m.model"):
        assert leaks(file.read_bytes().decode("latin-1"), rows, sha, released) == [], file.name
    assert leaks(caplog.text, rows, sha, released) == []
    assert not any(c.categories and CATEGORY in map(str, c.categories) for c in model.schema_)
    with pytest.raises(ParameterError) as category:
        model.sample(10, conditions={"occRole": "nothere"}, seed=0)
    with pytest.raises(ParameterError) as number:
        model.sample(10, conditions={"ageOFocc": 10**9}, seed=0)
    for message in (str(category.value), str(number.value)):
        assert "driver" not in message and leaks(message, rows, sha) == []
        # no bound of the released domain either: the only number left is the one asked for
        assert not re.search(r"\d", message.replace(str(10**9), "")), message
    assert "fingerprint_sha256" not in card_path(written).read_text()


def _left_out(column: Column) -> Column:
    return dataclasses.replace(column, synthesize=False, reason="not in this test")
