"""Data cards: JSON valid against the committed schema, an offline HTML page, no private values, `card show`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from typer.testing import CliRunner

import privsynth as ps
import privsynth.cli.provenance  # registers `card`, `mix`, `collapse` on the app
from privsynth.cli import app
from privsynth.errors import DataError, ParameterError
from privsynth.evaluate import evaluate
from privsynth.provenance import datasheet
from privsynth.provenance.card import card_schema, read_card
from privsynth.provenance.datasheet import QUESTIONS

REPO = Path(__file__).resolve().parents[2]


def validate(card: dict[str, object]) -> None:
    jsonschema.Draft202012Validator(card_schema(), format_checker=jsonschema.FormatChecker()).validate(card)


@pytest.fixture(scope="module")
def covid_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A covid_testing release with an evaluation report and one user answer, written as CSV with its card."""
    real = ps.load_dataset("covid_testing").head(1500)
    out = tmp_path_factory.mktemp("card")
    release = ps.synthesize(
        real,
        "copula",
        rows=400,
        seed=3,
        registry=out / "ledger.sqlite",
        datasheet={"motivation.creators": "Test team, privsynth CI"},
    )
    release.attach_report(evaluate(real, release.data, schema=release.schema, seed=0))
    return release.write(out / "covid.csv"), real


def test_card_validates_against_the_committed_schema(covid_release: tuple[Path, pd.DataFrame]) -> None:
    path, real = covid_release
    card = read_card(path)
    validate(card)
    assert card["privsynth_card"] == 2 and card["kind"] == "synthetic"
    assert card["rows"] == 400 and card["generation"] == 1 and card["parents"] == []
    assert card["generator"]["method"] == "copula" and card["generator"]["seed"] == 3
    assert card["generator"]["parameters"] == {"quantiles": 1000}
    assert card["generator"]["chosen"] == "user" and "method_reason" not in card["generator"]
    assert card["source"]["fingerprint_sha256"] == ps.load_source(real).fingerprint()
    assert card["retention"] == {"policy": "keep", "model_file": None, "note": "the fitted model was not saved to disk"}
    assert card["privacy"]["differentially_private"] is False
    summary = card["metrics"]["summary"]
    assert 0 < summary["fidelity.tvd_2way"] < 0.3 and 0 < summary["fidelity.tvd_1way"] <= summary["fidelity.tvd_2way"]
    assert card["metrics"]["evaluated_rows"] == {"real_rows": 1500, "synthetic_rows": 400, "holdout_rows": None}
    answers = {e["id"]: e for section in card["datasheet"].values() for e in section}
    assert set(answers) == set(QUESTIONS)
    assert answers["motivation.creators"] == {
        "id": "motivation.creators",
        "question": QUESTIONS["motivation.creators"],
        "answer": "Test team, privsynth CI",
        "provided_by": "user",
    }
    assert "fake_first_name" in answers["composition.missing"]["answer"]
    assert "2-way TVD" in answers["limitations.fidelity"]["answer"]


def test_the_python_api_default_is_the_copula_on_every_machine_and_the_card_says_so(tmp_path: Path) -> None:
    """synthesize() without a method runs the copula (unlike `privsynth generate`, which takes the best installed),
    recorded on the card as a default with its reason."""
    release = ps.synthesize(ps.load_dataset("nafld1").head(300), rows=20, seed=0, registry=False)
    written = release.write(tmp_path / "d.csv")
    card = read_card(written)
    validate(card)
    assert (card["generator"]["method"], card["generator"]["chosen"]) == ("copula", "default")
    reason = "default of the Python API, the same on every machine; method='deep' for the deep synthesizer"
    assert card["generator"]["method_reason"] == reason
    assert reason in written.with_name("d.card.html").read_text().replace("&#39;", "'")


def test_cards_hold_no_private_category_values(covid_release: tuple[Path, pd.DataFrame]) -> None:
    path, real = covid_release
    texts = {
        "json": path.with_name("covid.card.json").read_text(),
        "html": path.with_name("covid.card.html").read_text(),
    }
    names = set(real["fake_first_name"]) | set(real["fake_last_name"])
    private = {str(v) for v in names if len(str(v)) >= 5} | {str(v) for v in real["clinic_name"] if len(str(v)) >= 8}
    own_words = set(re.findall(r"[a-z]+", Path(datasheet.__file__).read_text().lower()))  # e.g. "small"
    private -= own_words
    assert len(private) > 100
    for kind, text in texts.items():
        leaked = [v for v in private if re.search(rf"\b{re.escape(v)}\b", text, re.IGNORECASE)]
        assert leaked == [], f"{kind} card leaks {leaked[:5]}"
    card = json.loads(texts["json"])
    clinic = next(c for c in card["schema"]["columns"] if c["name"] == "clinic_name")
    assert clinic == {
        "name": "clinic_name",
        "kind": "categorical",
        "dtype": clinic["dtype"],
        "nullable": False,
        "categories_count": real["clinic_name"].nunique(),
        "public": False,
        "pii": False,
        "synthesize": True,
    }


def test_html_card_is_self_contained_and_shows_the_key_fields(covid_release: tuple[Path, pd.DataFrame]) -> None:
    path, _ = covid_release
    card = read_card(path)
    html = path.with_name("covid.card.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert "<script" not in html
    for field in (card["release_id"], card["release_sha256"], card["source"]["fingerprint_sha256"], "copula"):
        assert field in html
    assert "Test team, privsynth CI" in html and "Not differentially private" in html
    assert "For what purpose was the dataset created?" in html
    assert "fidelity.tvd_2way" in html and "categories (not public: redacted)" in html


def test_schema_rejects_a_card_that_shows_a_private_domain(covid_release: tuple[Path, pd.DataFrame]) -> None:
    card = read_card(covid_release[0])
    column = next(c for c in card["schema"]["columns"] if c["name"] == "clinic_name")
    column["categories"] = ["emergency dept"]
    with pytest.raises(jsonschema.ValidationError):
        validate(card)


def test_docs_schema_is_the_shipped_schema() -> None:
    assert json.loads((REPO / "docs" / "card.schema.json").read_text()) == card_schema()


def test_unknown_datasheet_question_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"unknown datasheet question\(s\) \['motivation.why'\]"):
        ps.synthesize(ps.load_dataset("nafld1").head(300), rows=10, registry=False, datasheet={"motivation.why": "x"})


def test_card_show_prints_the_card_and_checks_the_file(covid_release: tuple[Path, pd.DataFrame]) -> None:
    path, _ = covid_release
    card = read_card(path)
    result = CliRunner().invoke(app, ["card", "show", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"data card: {path.name}" in result.output
    assert card["release_id"] in result.output and "covid.csv matches the card (sha256)" in result.output
    assert "Test team, privsynth CI" in result.output and "not differentially private" in result.output
    shown = CliRunner().invoke(app, ["card", "show", str(path.with_name("covid.card.json")), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["release_id"] == card["release_id"]


def test_read_card_names_the_missing_card(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no data card at '.*other\.card\.json'"):
        read_card(tmp_path / "other.csv")
