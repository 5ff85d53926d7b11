"""The DP release boundary of a person-level fit (``contribution_bound=4``): a canary patient leaves no trace.

The canary is one more patient of pbcseq with 4 visits (the bound), each holding a category no other row has
(``sex = zqxcanary``) and an extreme value (``bili = 8675309``). At row level, 4 rows of one value are 4
records and may clear key discovery's threshold; at person level they are one unit, and the mechanisms are
calibrated to it. Nothing a user or an analyst can get back (the rows, the card as JSON and HTML, the model file,
the log) may hold the canary's values, the exact row count of the bounded table or the SHA-256 of its file;
the card shows the unit and k, which are the user's parameters. The same check as
``test_boundary_marginal.py``, at person level.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

import privsynth as ps
from privsynth.data.schema import Schema
from privsynth.provenance.card import card_html_path, card_path
from privsynth.relational.datasets import load_related
from privsynth.relational.person import bound_contributions

CATEGORY, VALUE, K = "zqxcanary", 8675309, 4
COLUMNS = ["status", "trt", "sex", "ascites", "edema", "stage", "bili", "albumin"]


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, Schema]:
    """pbcseq bounded to 4 visits per patient, plus the canary patient's 4 visits, as a CSV file: its path, exact
    row count, SHA-256, and the schema reviewed on the table without the canary (no domain public)."""
    visits = load_related("pbc").tables["pbcseq"]
    sizes = visits.groupby("id").size()
    canary = visits[visits["id"] == sizes[sizes >= K].index[0]].head(K).copy()
    canary["id"], canary["sex"], canary["bili"] = visits["id"].max() + 1, CATEGORY, VALUE
    bounded = bound_contributions(pd.concat([visits, canary], ignore_index=True), "id", K, "day")
    assert (bounded["sex"] == CATEGORY).sum() == K
    data = bounded[COLUMNS]
    path = tmp_path_factory.mktemp("canary") / "visits.csv"
    data.to_csv(path, index=False)
    schema = Schema.infer(bound_contributions(visits, "id", K, "day")[COLUMNS])
    return path, len(data), hashlib.sha256(path.read_bytes()).hexdigest(), schema


def leaks(text: str, rows: int, sha: str) -> list[str]:
    found = [needle for needle in (CATEGORY, str(VALUE), sha) if needle in text]
    if re.search(rf"(?<![\d.]){rows}(?![\d.])", text) or re.search(rf"(?<![\d.]){rows:,}(?![\d.])", text):
        found.append(f"the exact row count {rows}")
    return found


@pytest.mark.parametrize("method", ["mst", "privbayes"])
def test_a_person_level_release_holds_nothing_of_the_canary_patient(
    method: str, canary: tuple[Path, int, str, Schema], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, rows, sha, schema = canary
    caplog.set_level(logging.DEBUG, logger="privsynth")
    release = ps.synthesize(
        path,
        method,
        rows=300,
        schema=schema,
        epsilon=0.5,
        params={"contribution_bound": K, "unit": "patient"},
        ledger=tmp_path / "l.db",
        seed=0,
    )
    written = release.write(tmp_path / "out.csv")
    release.save_model(tmp_path / "m.model")
    for file in (written, card_path(written), card_html_path(written), tmp_path / "m.model"):
        assert leaks(file.read_bytes().decode("latin-1"), rows, sha) == [], file.name
    assert leaks(caplog.text, rows, sha) == []
    assert not any(c.categories and CATEGORY in map(str, c.categories) for c in release.model.schema_)
    privacy = json.loads(card_path(written).read_text())["privacy"]
    assert privacy["unit"] == "patient" and privacy["contribution_bound"] == K
    assert "fingerprint_sha256" not in card_path(written).read_text()
