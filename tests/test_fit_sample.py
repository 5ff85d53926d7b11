"""A non-DP method on a source larger than fit_rows fits on a uniform sample drawn by the engine; the card says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import validate

from privsynth.data.datasets import load_dataset
from privsynth.data.sources import frame_source
from privsynth.errors import ParameterError
from privsynth.pipeline import synthesize
from privsynth.provenance.card import card_schema


def test_a_large_source_is_fitted_on_a_sample_and_the_card_says_so(tmp_path: Path) -> None:
    nass = load_dataset("nassCDS", "all")
    release = synthesize(frame_source(nass), "copula", 500, fit_rows=4_000, seed=1, ledger=False, registry=False)
    assert len(release.data) == 500
    written = release.write(tmp_path / "synthetic.csv")
    card = json.loads(written.with_name("synthetic.card.json").read_text())
    assert card["source"]["fit_sample"] == {
        "rows": 4_000,
        "of_rows": len(nass),
        "how": "uniform random sample drawn by the source's engine",
    }
    validate(card, card_schema())
    assert "a uniform sample of 4000 of the source" in written.with_name("synthetic.card.html").read_text()


def test_a_source_within_fit_rows_is_fitted_whole(tmp_path: Path) -> None:
    release = synthesize(load_dataset("nafld1"), "copula", 100, seed=1, ledger=False, registry=False)
    assert release.fit_sample is None


def test_fit_rows_is_checked_and_refused_for_dp_methods() -> None:
    nafld = load_dataset("nafld1")
    with pytest.raises(ParameterError, match="fit_rows must be a positive integer"):
        synthesize(nafld, "copula", 10, fit_rows=0, ledger=False, registry=False)
    with pytest.raises(ParameterError, match="fit_rows applies to non-DP methods"):
        synthesize(nafld, "mst", 10, epsilon=1.0, fit_rows=1_000, ledger=False, registry=False)


def test_generate_fit_rows_option(tmp_path: Path) -> None:
    from cli_support import run_cli

    path = tmp_path / "nass.parquet"
    load_dataset("nassCDS", "all").to_parquet(path)
    out = tmp_path / "out.csv"
    done = run_cli(
        "generate", str(path), "--method", "copula", "--rows", "50", "--fit-rows", "3000", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    card = json.loads(out.with_name("out.card.json").read_text())
    assert card["source"]["fit_sample"]["rows"] == 3_000
