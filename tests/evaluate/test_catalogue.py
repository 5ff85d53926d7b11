"""The metric catalogue: it knows every metric the reports compute, and each number reads the same everywhere."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from markupsafe import escape
from sklearn.feature_extraction.text import HashingVectorizer

import privsynth as ps
from privsynth.bench.leaderboard import leaderboard_table, render_leaderboard
from privsynth.cli import _app
from privsynth.cli.bench import _print_leaderboard
from privsynth.cli.generate import _report_lines
from privsynth.evaluate import Report, evaluate, evaluate_text
from privsynth.evaluate.catalogue import (
    BENCH_CLI,
    CANARY,
    CARD,
    CATALOGUE,
    DEMO,
    DETECTION,
    LEADERBOARD,
    SUMMARY,
    TEXT_CARD,
    UTILITY,
    format_metric,
    format_number,
    shown_in,
)
from privsynth.evaluate.html import render
from privsynth.provenance.card import read_card, render_card_html

Released = tuple[dict[str, Any], Report]  # a release's card and its evaluation report


class WordEmbedder:
    """Hashed word and bigram counts, unit length: a real (if plain) text embedding, deterministic and fast."""

    model_name = "hashing-256"

    def __init__(self) -> None:
        self._vectorizer = HashingVectorizer(n_features=256, ngram_range=(1, 2), alternate_sign=False)

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._vectorizer.transform(texts).toarray(), dtype=np.float64) + 1e-6


@pytest.fixture(scope="module")
def nass() -> dict[str, pd.DataFrame]:
    train = ps.load_dataset("nassCDS")
    order = np.random.default_rng(0).permutation(len(train))
    return {
        "real": train.iloc[order[:800]].reset_index(drop=True),
        "holdout": ps.load_dataset("nassCDS", "holdout").sample(800, random_state=0).reset_index(drop=True),
    }


@pytest.fixture(scope="module")
def release_and_report(nass: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Released:
    """A copula release of 800 nassCDS rows with its evaluation attached, and its card as a dict."""
    out = tmp_path_factory.mktemp("catalogue")
    release = ps.synthesize(nass["real"], "copula", rows=600, seed=1, registry=out / "registry.sqlite")
    report = evaluate(nass["real"], release.data, nass["holdout"], target="dead", sensitive="sex", seed=0)
    release.attach_report(report)
    return read_card(release.write(out / "nass.csv")), report


@pytest.fixture(scope="module")
def text_report() -> Report:
    train, holdout = ps.load_dataset("trump_tweets", "train"), ps.load_dataset("trump_tweets", "holdout")
    return evaluate_text(
        train["text"][:300].tolist(),
        train["text"][300:500].tolist(),
        holdout["text"][:200].tolist(),
        real_labels=train["source"][:300].tolist(),
        synthetic_labels=train["source"][300:500].tolist(),
        holdout_labels=holdout["source"][:200].tolist(),
        canary_exposure=[0.5, 1.5, 3.0],
        embedder=WordEmbedder(),
    )


def test_every_metric_the_reports_compute_has_one_entry_with_its_direction(
    release_and_report: Released, text_report: Report
) -> None:
    _, table = release_and_report
    computed = {**table.metrics, **text_report.metrics}
    assert len(table.metrics) == 32 and len(text_report.metrics) == 28
    assert set(computed) == set(CATALOGUE), "every computed metric has an entry, and no entry is stale"
    for key, metric in computed.items():
        assert CATALOGUE[key].better == metric.better, key
    for key in (*text_report.metrics, *table.metrics):
        reference = CATALOGUE[key].reference
        assert reference is None or reference in computed, key


def test_the_places_list_what_they_listed_before() -> None:
    assert len(shown_in(CARD)) == 18 and len(shown_in(TEXT_CARD)) == 13 and len(shown_in(LEADERBOARD)) == 12
    assert shown_in(BENCH_CLI) == ("fidelity.tvd_3way", "fidelity.detection_auc", "utility.tstr")
    assert set(shown_in(DEMO)) == {
        "fidelity.tvd_2way",
        "fidelity.detection_auc",
        "utility.tstr",
        "utility.trtr",
        "privacy.dcr_train_share",
        "privacy.mia_auc",
    }
    with pytest.raises(ValueError, match="unknown place"):
        shown_in("poster")


def test_one_rule_writes_every_number() -> None:
    assert format_number(0.123456) == "0.123" and format_number(0.5) == "0.500" and format_number(1.0) == "1"
    assert format_number(12_345) == "12,345" and format_number(np.int64(42)) == "42"
    assert format_number(0.00012) == "0.00012" and format_number(None) == "-" and format_number(math.nan) == "-"
    assert format_number("n/a") == "n/a" and format_number(True) == "True"
    assert format_metric("privacy.exact_copy_rate", 0.012345) == "1.2%"
    assert format_metric("privacy.exact_copy_rate", 1.0) == "100.0%"
    assert format_metric("privacy.exact_copy_rate", 0.0) == "0.0%"
    assert format_metric("privacy.exact_copy_rate", 0.00004) == "0.004%"
    assert format_metric("privacy.canary_exposure_max", 3.14159) == "3.1"
    assert format_metric("not.a.metric", 0.123456) == "0.123"


def test_thresholds_are_inclusive_on_the_good_side() -> None:
    assert [DETECTION.level(v) for v in (0.5, 0.6, 0.61, 0.8, 0.81)] == ["good", "good", "fair", "fair", "poor"]
    assert [UTILITY.level(v) for v in (1.0, 0.9, 0.89, 0.7, 0.69)] == ["good", "good", "fair", "fair", "poor"]
    assert [CANARY.level(v) for v in (0.5, 0.05, 0.01, 0.001, 0.0009)] == ["good", "good", "fair", "fair", "poor"]


def test_card_leaderboard_cli_demo_and_report_write_the_same_number(
    release_and_report: Released,
) -> None:
    card, report = release_and_report
    values = report.values()
    card_page = render_card_html(card)
    row = {"dataset": "nassCDS", "method": "copula", "epsilon": None, "seed": 0, "status": "ok", "metrics": values}
    row |= {"fit_seconds": 1.23456, "sample_seconds": 0.5, "evaluate_seconds": 2.0, "total_seconds": 3.73456}
    board_page = render_leaderboard([row])
    with _app.console.capture() as captured:
        _print_leaderboard(leaderboard_table([row]))
    terminal = captured.get()
    demo = _report_lines({"deep": report})
    summary = report.summary()
    seen = 0
    for key, value in values.items():
        if value is None:
            continue
        written = format_metric(key, value)
        places = CATALOGUE[key].places
        if CARD in places:
            assert f"<td>{key}</td><td>{escape(written)}</td>" in card_page, key
        if LEADERBOARD in places:
            assert f'<td class="num">{written}</td>' in board_page, key
        if BENCH_CLI in places:
            assert f" {written} " in terminal, key
        if DEMO in places:
            assert f"| {written} |" in demo, key
        if SUMMARY in places:
            info = CATALOGUE[key]
            assert f"{'  ' + info.aside if info.aside else info.label:<24} {written} " in summary, key
        seen += 1
    assert seen >= 20
    assert "1.235" in board_page  # a timing through the same formatter


def test_verdict_is_in_the_json_and_is_what_the_page_shows(release_and_report: Released) -> None:
    _, report = release_and_report
    verdict = json.loads(report.to_json())["verdict"]
    assert verdict["level"] in ("good", "fair", "poor")
    assert [p["title"] for p in verdict["panels"]] == [
        "Fidelity",
        "Utility",
        "Privacy (empirical)",
        "Differential privacy",
    ]
    assert {c["label"] for c in verdict["checks"]} >= {"DCR train share", "membership attack AUC"}
    page = render(report)
    assert f'<div class="verdict {verdict["level"]}">{escape(verdict["headline"])}</div>' in page
    for panel in verdict["panels"]:
        assert escape(panel["verdict"]) in page


def test_report_json_keeps_its_sections(release_and_report: Released) -> None:
    _, report = release_and_report
    data = report.to_dict()
    assert list(data) == ["report", "fidelity", "diversity", "utility", "equity", "privacy", "details", "verdict"]
