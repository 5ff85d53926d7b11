"""The release boundary of the private text methods (pe, dp-lora): nothing a user gets back from a DP fit holds a
value of a private text, the exact number of texts, or a hash of the input.

A canary text with a unique token and a unique number, carrying a label outside the declared set, is appended to
42 real tweets (43 texts). The fit must neither fail on it nor report it; the rows, the card (JSON and HTML), the
saved model file (its bytes and every value in it), every log record and every error a DP path raises are then
searched for the canary's token, number and label, for the corpus size as a number, and for the input's hashes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("opendp")
pytest.importorskip("opacus")

from cli_support import run_cli
from privsynth.data.datasets import load_dataset
from privsynth.data.sources import load_source
from privsynth.errors import PrivsynthError
from privsynth.pipeline import TextModel, synthesize_text
from privsynth.provenance.card import card_html_path, card_path, file_sha256
from privsynth.provenance.lineage import frame_fingerprint
from privsynth.threads import torch_threads

LABELS = ["Twitter for Android", "Twitter for iPhone"]
CANARY_TEXT = "zqxcanary 8675309 is the code"
CANARY_LABEL = "zqxcanarylabel"
SECRETS = ("zqxcanary", "8675309", CANARY_LABEL)
SIZE = 43
PARAMS: dict[str, dict[str, Any]] = {
    "pe": {"iterations": 2, "population": 4, "max_tokens": 16},
    "dp-lora": {"rank": 4, "batch_size": 8, "max_length": 32, "physical_batch_size": 8},
}
EPSILON = {"pe": 0.02, "dp-lora": 8.0}  # pe: noise far above the votes, so the noise warning is logged too


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with torch_threads():
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """The corpus file (42 tweets and the canary) and the hashes of its content a leak could show."""
    tweets = load_dataset("trump_tweets")
    tweets = tweets[tweets["source"].isin(LABELS)].head(SIZE - 1)[["text", "source"]]
    frame = pd.concat([tweets, pd.DataFrame({"text": [CANARY_TEXT], "source": [CANARY_LABEL]})], ignore_index=True)
    assert len(frame) == SIZE
    path = tmp_path_factory.mktemp("corpus") / "tweets.csv"
    frame.to_csv(path, index=False)
    hashes = {file_sha256(path), load_source(path).fingerprint(), frame_fingerprint(frame)}
    hashes |= {frame_fingerprint(frame[["text"]]), frame_fingerprint(pd.read_csv(path))}
    return path, hashes


def leaks(text: str, hashes: set[str], numbers: bool = True) -> list[str]:
    """What of the canary, the corpus size (unless not ``numbers``: binary data holds any digit pair by chance)
    and the input's hashes (or their first 16 characters) ``text`` holds."""
    found = [secret for secret in SECRETS if secret.lower() in text.lower()]
    if numbers and re.search(rf"(?<![\w.:+-]){SIZE}(?![\w.:])", text):
        found.append(f"the corpus size {SIZE}")
    found += [f"hash {digest[:16]}" for digest in hashes if digest[:16] in text]
    return found


def values(obj: Any, seen: set[int] | None = None) -> Iterator[Any]:
    """Every scalar inside a saved model (dicts, sequences, frames, dataclasses and object attributes; weight
    arrays are skipped: they are the noisy output)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str | int | float | bool) or obj is None:
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from values(key, seen)
            yield from values(value, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for value in obj:
            yield from values(value, seen)
    elif isinstance(obj, pd.DataFrame):
        yield from values(obj.to_dict("list"), seen)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind in "OUSi" and obj.size < 10_000:
            yield from values(obj.tolist(), seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        yield from values(dataclasses.asdict(obj), seen)
    elif hasattr(obj, "__getstate__") and hasattr(obj, "__dict__"):
        yield from values(obj.__getstate__(), seen)


@pytest.mark.parametrize("method", ["pe", "dp-lora"])
def test_nothing_a_user_gets_back_holds_the_canary_the_corpus_size_or_a_hash(
    method: str, corpus: tuple[Path, set[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, hashes = corpus
    caplog.set_level(logging.DEBUG)
    model_path = tmp_path / f"{method}.model"
    release = synthesize_text(
        path,
        text_column="text",
        label_column="source",
        labels=LABELS,
        method=method,
        rows=4,
        epsilon=EPSILON[method],
        ledger=tmp_path / "ledger.sqlite",
        dataset="tweets",
        params=PARAMS[method],
        save_model=model_path,
    )
    written = release.write(tmp_path / "synthetic.csv")
    card = json.loads(card_path(written).read_text())
    assert card["privacy"]["dataset"] == "tweets" and not card["metrics"]  # no report unless attached
    assert set(release.data["source"]) <= set(LABELS)

    errors = []
    for wrong in ({"delta": 0.01}, {"epsilon": -1.0}, {"dataset": "  "}):
        arguments = {"epsilon": EPSILON[method], "dataset": "tweets", **wrong}
        with pytest.raises(PrivsynthError) as error:
            synthesize_text(path, text_column="text", label_column="source", labels=LABELS, method=method, rows=4,
                            ledger=tmp_path / "ledger.sqlite", params=PARAMS[method], **arguments)  # fmt: skip
        errors.append(str(error.value))

    model_bytes = model_path.read_bytes()
    saved = TextModel.load(model_path)
    outputs = {
        "rows": written.read_text(),
        "card json": card_path(written).read_text(),
        "card html": card_html_path(written).read_text(),
        "model file bytes": model_bytes.decode("latin-1"),
        "model file values": "\n".join(repr(value) for value in values(saved.generator) if not isinstance(value, int)),
        "logs": "\n".join(record.getMessage() for record in caplog.records),
        "errors": "\n".join(errors),
    }
    found = {name: leaks(text, hashes, numbers=name != "model file bytes") for name, text in outputs.items()}
    assert found == {name: [] for name in outputs}
    assert SIZE not in [value for value in values(saved.generator) if isinstance(value, int)]
    assert "fingerprint" not in outputs["card json"]


def test_the_search_finds_each_kind_of_leak() -> None:
    """The checks above have teeth: the messages the text methods printed before #17 are found."""
    digest = "0123456789abcdef" * 4
    assert leaks(f"epsilon=0.02 gives noise sigma=500 ({SIZE} private texts over a population of 4)", set())
    assert leaks(f"label '{CANARY_LABEL}' is not among public_labels", set())
    assert leaks(f'"dataset_fingerprint_sha256": "{digest}"', {digest})
    assert not leaks(f"created 2026-12-05T00:{SIZE}:10, sigma=0.{SIZE}1, rank=4", set())


def test_text_generate_keeps_its_report_apart_and_says_so(corpus: tuple[Path, set[str]], tmp_path: Path) -> None:
    """`privsynth text generate` as a user runs it (in-process): the terminal, the rows and the card hold nothing of the
    canary, the size or a hash; the evaluation report, which does hold the exact size, is a separate custodian
    file the terminal names as such."""
    path, hashes = corpus
    args = ["text", "generate", str(path), "--text-column", "text", "--label-column", "source", "--labels"]
    args += [",".join(LABELS), "--param", "iterations=1", "--param", "population=4", "--param", "max_tokens=16"]
    args += ["--epsilon", "1", "--rows", "4", "-o", "synthetic.csv"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "custodian report" in result.stdout and "not covered by the DP guarantee" in result.stdout
    outputs = {
        "terminal": result.stdout + result.stderr,
        "rows": (tmp_path / "synthetic.csv").read_text(),
        "card json": (tmp_path / "synthetic.card.json").read_text(),
        "card html": (tmp_path / "synthetic.card.html").read_text(),
    }
    assert {name: leaks(text, hashes) for name, text in outputs.items()} == {name: [] for name in outputs}
    report = json.loads((tmp_path / "synthetic.report.json").read_text())
    assert report["report"]["real_rows"] == SIZE  # the custodian's file has it; the card does not
    assert json.loads(outputs["card json"])["privacy"]["dataset"] == "tweets"  # the file's stem
