"""Text evaluation on the bundled trump_tweets corpus: real samples score like the holdout, word salad and copies
do not, labels carry signal, and the report renders as one self-contained page.

The embedding model loads once for the module; a small wrapper keeps each text's vector so the reports below
(which share their private and holdout texts) embed every text once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from privsynth.data.datasets import load_dataset
from privsynth.errors import ParameterError
from privsynth.evaluate import Report, write_report
from privsynth.evaluate.html import render
from privsynth.evaluate.text import canary_p_values, evaluate_text
from privsynth.evaluate.verdicts import headline, privacy_checks, summary_panels
from privsynth.text.llm import Embedder

PRIVATE, OTHERS = 600, 200


class CachedEmbedder:
    """all-MiniLM-L6-v2 with a memory of the texts it has embedded."""

    model_name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self._embedder = Embedder()
        self._vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._embedder.embed(missing), strict=True))
        return np.array([self._vectors[t] for t in texts])


@pytest.fixture(scope="module")
def embedder() -> CachedEmbedder:
    return CachedEmbedder()


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[str]]:
    """Seeded samples: private and fresh tweets from the train split, holdout tweets, and word salad."""
    train, holdout = load_dataset("trump_tweets", "train"), load_dataset("trump_tweets", "holdout")
    rng = np.random.default_rng(0)
    order, held = rng.permutation(len(train)), rng.permutation(len(holdout))[:OTHERS]
    private, fresh = order[:PRIVATE], order[PRIVATE : PRIVATE + OTHERS]
    shuffler = random.Random(0)
    words = [w for t in train["text"].to_numpy()[fresh] for w in t.split()]
    shuffler.shuffle(words)
    salad, start = [], 0
    for text in train["text"].to_numpy()[fresh]:  # the fresh tweets' words, shuffled across tweets
        salad.append(" ".join(words[start : start + len(text.split())]))
        start += len(text.split())
    return {
        "private": train["text"].to_numpy()[private].tolist(),
        "private_labels": train["source"].to_numpy()[private].tolist(),
        "fresh": train["text"].to_numpy()[fresh].tolist(),
        "fresh_labels": train["source"].to_numpy()[fresh].tolist(),
        "holdout": holdout["text"].to_numpy()[held].tolist(),
        "holdout_labels": holdout["source"].to_numpy()[held].tolist(),
        "salad": salad,
    }


def _evaluate(corpus: dict[str, list[str]], embedder: CachedEmbedder, synthetic: list[str], **kwargs: object) -> Report:
    return evaluate_text(corpus["private"], synthetic, corpus["holdout"], embedder=embedder, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fresh(corpus: dict[str, list[str]], embedder: CachedEmbedder) -> Report:
    """Real tweets the 'generator' never saw, scored as synthetic: what a perfect generator would get."""
    return _evaluate(
        corpus,
        embedder,
        corpus["fresh"],
        real_labels=corpus["private_labels"],
        synthetic_labels=corpus["fresh_labels"],
        holdout_labels=corpus["holdout_labels"],
    )


@pytest.fixture(scope="module")
def salad(corpus: dict[str, list[str]], embedder: CachedEmbedder) -> Report:
    return _evaluate(corpus, embedder, corpus["salad"])


@pytest.fixture(scope="module")
def copies(corpus: dict[str, list[str]], embedder: CachedEmbedder) -> Report:
    return _evaluate(corpus, embedder, corpus["private"][:OTHERS], canary_exposure=[21.5, 19.0, 23.2, 20.1])


def test_fresh_real_tweets_score_like_the_holdout_floor(fresh: Report) -> None:
    assert fresh["fidelity.frechet_distance"] == pytest.approx(fresh["fidelity.frechet_distance_holdout"], rel=0.1)
    assert abs(fresh["fidelity.kernel_distance"]) < 0.05  # x1000: about 0 for one distribution
    assert abs(fresh["fidelity.kernel_distance_holdout"]) < 0.05
    for name in ("precision", "recall"):
        value, floor = fresh[f"fidelity.embedding_{name}"], fresh[f"fidelity.embedding_{name}_holdout"]
        assert value > 0.75 and abs(value - floor) < 0.1
    assert abs(fresh["fidelity.detection_auc"] - 0.5) < 0.1
    assert fresh["fidelity.length_ks"] < 0.15
    assert fresh["diversity.near_duplicate_rate"] < 0.03
    assert fresh["diversity.distinct_bigrams"] == pytest.approx(fresh["diversity.distinct_bigrams_holdout"], abs=0.03)
    assert fresh["privacy.exact_copy_rate"] == 0.0
    assert fresh["privacy.near_copy_rate"] < 0.03
    assert 0.4 < fresh["privacy.dcr_train_share"] < 0.6
    assert abs(fresh["privacy.mia_auc"] - 0.5) < 0.07
    panels = summary_panels(fresh, privacy_checks(fresh))
    assert [panels[0].level, panels[2].level] == ["good", "good"]  # fidelity and privacy


def test_word_salad_is_far_from_the_real_tweets(fresh: Report, salad: Report) -> None:
    # The same words shuffled across tweets: the kernel distance, unbiased, sees it clearly; the Frechet
    # distance on 200 texts in 384 dimensions is mostly sample-size bias, so it moves less.
    assert salad["fidelity.kernel_distance"] > max(0.1, 10 * salad["fidelity.kernel_distance_holdout"])
    assert salad["fidelity.frechet_distance"] > 1.2 * salad["fidelity.frechet_distance_holdout"]
    assert salad["fidelity.embedding_precision"] < fresh["fidelity.embedding_precision"] - 0.08  # 0.73 against 0.83
    assert salad["fidelity.embedding_recall"] < fresh["fidelity.embedding_recall"] - 0.15  # 0.61 against 0.79
    assert salad["fidelity.detection_auc"] > 0.85
    panels = summary_panels(salad, privacy_checks(salad))
    assert panels[0].level == "poor"
    assert salad["fidelity.length_ks"] < 0.15  # same lengths: only the content changed
    assert salad["utility.tstr"] is None and "needs labels" in salad.metrics["utility.tstr"].note


def test_copies_of_private_tweets_read_as_memorised(copies: Report) -> None:
    assert copies["privacy.exact_copy_rate"] == 1.0
    assert copies["privacy.substring_copy_rate"] == 1.0
    assert copies["privacy.near_copy_rate"] == 1.0
    assert copies["privacy.exact_copy_rate_baseline"] < 0.02
    assert copies["privacy.near_copy_rate_baseline"] < 0.03
    assert copies["privacy.substring_copy_rate_baseline"] < 0.05
    assert copies["privacy.dcr_train_share"] > 0.95
    checks = {c.label: c.level for c in privacy_checks(copies)}
    assert checks["exact copies of private texts"] == "poor"
    assert checks["near copies (cosine \u2265 0.95)"] == "poor"
    assert checks["canary exposure (4 canaries)"] == "poor"
    level, text = headline(summary_panels(copies, privacy_checks(copies)))
    assert level == "poor" and text.startswith("Do not release")
    closest = copies.details["privacy"]["closest"]
    assert closest[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert closest[0]["synthetic"] == closest[0]["private"]


def test_a_classifier_on_synthetic_labels_beats_chance_and_shuffled_labels_do_not(
    corpus: dict[str, list[str]], embedder: CachedEmbedder, fresh: Report
) -> None:
    assert fresh["utility.trtr"] > 0.7
    assert fresh["utility.tstr"] > 0.7  # fresh real tweets as 'synthetic': as useful as the private ones
    assert fresh.details["utility"]["scored_classes"][:2] == ["Twitter Web Client", "Twitter for Android"]
    assert fresh["utility.tstr_accuracy"] > fresh.details["utility"]["majority_share"] - 0.05
    labels = list(corpus["fresh_labels"])
    random.Random(1).shuffle(labels)
    shuffled = _evaluate(
        corpus,
        embedder,
        corpus["fresh"],
        real_labels=corpus["private_labels"],
        synthetic_labels=labels,
        holdout_labels=corpus["holdout_labels"],
    )
    assert shuffled["utility.tstr"] < min(0.65, fresh["utility.tstr"] - 0.08)  # 0.61 against 0.72
    assert shuffled["utility.trtr"] == fresh["utility.trtr"]


def test_a_label_with_hundreds_of_values_is_named_and_skipped(
    corpus: dict[str, list[str]], embedder: CachedEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="privsynth.evaluate.text"):
        report = _evaluate(
            corpus,
            embedder,
            corpus["fresh"],
            real_labels=corpus["private"],  # the text itself as a label: 600 values
            synthetic_labels=corpus["fresh"],
            holdout_labels=corpus["holdout"],
        )
    assert "real_labels has 600 distinct values" in caplog.text and "distinct values (e.g. " in caplog.text
    assert report["utility.tstr"] is None
    assert "more than 100: not a classification target" in report.metrics["utility.tstr"].note
    assert report["fidelity.kernel_distance"] is not None


def test_bad_inputs_name_the_argument_and_the_value(corpus: dict[str, list[str]]) -> None:
    private, holdout = corpus["private"][:20], corpus["holdout"][:20]
    with pytest.raises(ParameterError, match=r"synthetic_texts\[1\] is float \(nan\), not a string"):
        evaluate_text(private, ["fine", math.nan], holdout)  # type: ignore[list-item]
    with pytest.raises(ParameterError, match=r"synthetic_texts has 2 empty text\(s\) \(first at position 0\)"):
        evaluate_text(private, ["", "fine", "  "], holdout)
    with pytest.raises(ParameterError, match="real_texts has 1 text"):
        evaluate_text(private[:1], ["a b", "c d"], holdout)
    with pytest.raises(ParameterError, match="holdout_labels is missing"):
        evaluate_text(private, private, holdout, real_labels=["a"] * 20, synthetic_labels=["a"] * 20)
    with pytest.raises(ParameterError, match="synthetic_labels has 3 labels for 20 texts"):
        evaluate_text(
            private, private, holdout, real_labels=["a"] * 20, synthetic_labels=["a"] * 3, holdout_labels=["a"] * 20
        )
    labels = ["a", "b", None] + ["a"] * 17
    with pytest.raises(ParameterError, match=r"real_labels\[2\] is missing \(None\)"):
        evaluate_text(
            private, private, holdout, real_labels=labels, synthetic_labels=["a"] * 20, holdout_labels=["a"] * 20
        )
    with pytest.raises(ParameterError, match=r"canary_exposure\[1\] is -1"):
        evaluate_text(private, private, holdout, canary_exposure=[1.0, -1])


def test_canary_p_values_follow_the_no_memorisation_law() -> None:
    rng = np.random.default_rng(0)
    candidates = 2**20
    ranks = rng.integers(1, candidates + 1, size=(400, 8))  # 400 audits of 8 canaries nobody memorised
    exposures = math.log2(candidates) - np.log2(ranks)
    p_max = np.array([canary_p_values(e)[0] for e in exposures])
    p_mean = np.array([canary_p_values(e)[1] for e in exposures])
    assert exposures.mean() == pytest.approx(1 / math.log(2), rel=0.05)
    assert (p_max < 0.05).mean() == pytest.approx(0.05, abs=0.03)  # false alarms at the 5% level
    assert (p_mean < 0.05).mean() == pytest.approx(0.05, abs=0.03)
    assert canary_p_values(np.array([20.0, 18.0]))[0] < 1e-5


def test_text_report_is_one_self_contained_page_with_plots_and_json(
    copies: Report, fresh: Report, tmp_path: Path
) -> None:
    html, data = write_report(fresh, tmp_path / "report.html")
    page = html.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 4  # projection, lengths, utility, similarity
    assert "http://" not in page.split("<body>")[0] and "<script" not in page
    for heading in ('id="fidelity"', 'id="diversity"', 'id="utility"', 'id="privacy"', 'id="metrics"'):
        assert heading in page
    assert "real 600 texts" in page and "all-MiniLM-L6-v2" in page
    assert "kernel distance x1000" in page
    loaded = json.loads(data.read_text(encoding="utf-8"))
    assert loaded["report"]["kind"] == "text"
    assert loaded["fidelity"]["kernel_distance"]["value"] == pytest.approx(fresh["fidelity.kernel_distance"])
    assert loaded["utility"]["tstr"]["better"] == "higher"
    page = render(copies)
    assert "Canary exposure" in page and "These rows quote private texts" in page
    summary = copies.summary()
    assert summary.startswith("privsynth evaluation: real 600 texts, synthetic 200, holdout 200")
    assert "largest canary exposure" in summary


def _chromium() -> str | None:
    named = os.environ.get("PRIVSYNTH_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def test_text_report_opens_in_chromium_without_errors(copies: Report, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set PRIVSYNTH_CHROMIUM)")
    html, _ = write_report(copies, tmp_path / "report.html")
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(html.as_uri(), wait_until="load")
            widths = page.evaluate("() => Array.from(document.images, i => i.complete ? i.naturalWidth : 0)")
            verdict = page.inner_text(".verdict")
        finally:
            browser.close()
    assert errors == []
    assert len(widths) == 3 and min(widths) > 300  # no labels: projection, lengths, similarity
    assert verdict.startswith("Do not release")
