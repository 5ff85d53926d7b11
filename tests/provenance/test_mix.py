"""`mix`: every real row, synthetic rows never above the cap, each row labelled, and a card of its own."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import privsynth as ps
import privsynth.cli.provenance  # registers the commands
from privsynth.cli import app
from privsynth.errors import ParameterError
from privsynth.provenance.card import card_schema, read_card
from privsynth.provenance.mix import max_synthetic_rows, mix

NASS = ps.load_dataset("nassCDS")


@settings(max_examples=40, deadline=None)
@given(
    real_rows=st.integers(1, 300),
    synthetic_rows=st.lists(st.integers(0, 400), min_size=1, max_size=3),
    share=st.floats(0.0, 1.0, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_mix_never_exceeds_the_share_and_keeps_every_real_row(
    real_rows: int, synthetic_rows: list[int], share: float, seed: int
) -> None:
    real = NASS.iloc[:real_rows]
    synthetic = [NASS.iloc[1000 + 500 * i : 1000 + 500 * i + n] for i, n in enumerate(synthetic_rows)]
    result = mix(real, synthetic, share, seed, registry=False)
    labels = result.data["_provenance"]
    n_synthetic = int((labels != "real").sum())
    assert int((labels == "real").sum()) == real_rows
    assert n_synthetic / len(result.data) <= share
    assert n_synthetic == min(max_synthetic_rows(real_rows, share), sum(synthetic_rows))
    if n_synthetic < sum(synthetic_rows):  # the cap binds: one more synthetic row would pass it
        assert (n_synthetic + 1) / (len(result.data) + 1) > share
    assert set(labels) <= {"real", "synthetic-gen1"}
    pd.testing.assert_frame_equal(
        result.data[labels == "real"]
        .drop(columns="_provenance")
        .sort_values(list(real.columns))
        .reset_index(drop=True),
        real.sort_values(list(real.columns)).reset_index(drop=True),
        check_dtype=False,
    )


def test_max_synthetic_rows_matches_the_share_exactly() -> None:
    assert max_synthetic_rows(700, 0.3) == 300
    assert max_synthetic_rows(42, 0.6) == 63  # 63 / 105 is 0.6 exactly; the float estimate says 62.99...
    assert max_synthetic_rows(7, 0.3) == 3
    assert max_synthetic_rows(10, 0.0) == 0
    assert max_synthetic_rows(1, 0.5) == 1
    assert max_synthetic_rows(20974, 0.3) == 8988  # 8988 / 29962 = 0.29998
    with pytest.raises(ParameterError, match=r"max_synthetic_share must be a number from 0 to 1, not 1\.5"):
        mix(NASS.head(5), [NASS.tail(5)], 1.5, registry=False)


def test_mix_labels_generations_from_lineage_and_writes_a_valid_card(tmp_path: Path) -> None:
    real = NASS.head(2000)
    gen1 = ps.synthesize(real, rows=1500, seed=1)
    gen1_path = gen1.write(tmp_path / "gen1.csv")
    gen2 = ps.synthesize(gen1_path, rows=1500, seed=2)
    gen2.write(tmp_path / "gen2.parquet")
    real.to_csv(tmp_path / "real.csv", index=False)
    result = mix(tmp_path / "real.csv", [gen1_path, gen2], 0.25, seed=0)
    counts = result.data["_provenance"].value_counts().to_dict()
    assert counts["real"] == 2000 and counts["synthetic-gen1"] + counts["synthetic-gen2"] == 666
    assert result.synthetic_share <= 0.25 and result.generation == 2
    written = result.write(tmp_path / "train.csv")
    card = read_card(written)
    jsonschema.Draft202012Validator(card_schema(), format_checker=jsonschema.FormatChecker()).validate(card)
    assert card["kind"] == "mix" and card["generation"] == 2
    assert card["mix"]["real_rows"] == 2000 and card["mix"]["synthetic_rows"] == 666
    assert {(i["label"], i["release_id"]) for i in card["mix"]["synthetic_inputs"]} == {
        ("synthetic-gen1", gen1.release_id),
        ("synthetic-gen2", gen2.release_id),
    }
    assert "synthetic share capped at 25%" in card["datasheet"]["motivation"][0]["answer"]
    # a model fitted on the mix is one generation past its newest synthetic rows, and says how synthetic it was
    child = ps.synthesize(written, rows=100, seed=0)
    assert child.generation == 3 and "_provenance" not in child.data.columns
    assert child.ancestry.synthetic_share == pytest.approx(666 / 2666)
    assert {p.found_by for p in child.ancestry.parents} >= {"registry", "provenance column"}


def test_a_release_passed_as_real_data_is_refused(tmp_path: Path) -> None:
    release = ps.synthesize(NASS.head(500), rows=300, seed=0)
    path = release.write(tmp_path / "syn.csv")
    with pytest.raises(ParameterError, match=r"the real input '.*syn.csv' is a synthetic release \(generation 1"):
        mix(path, [NASS.tail(100)], 0.3)


def test_mix_command_writes_the_training_set_and_its_card(tmp_path: Path) -> None:
    NASS.head(700).to_csv(tmp_path / "real.csv", index=False)
    ps.synthesize(NASS.head(700), rows=600, seed=0).write(tmp_path / "s1.csv")
    ps.synthesize(NASS.head(700), rows=600, seed=1).write(tmp_path / "s2.parquet")
    args = ["mix", "--real", "real.csv", "--synthetic", "s1.csv", "--synthetic", "s2.parquet"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = CliRunner().invoke(app, [*args, "--max-synthetic-share", "0.3", "--seed", "7", "-o", "train.csv"])
        assert result.exit_code == 0, result.output
        assert "wrote 1,000 rows to train.csv: 700 real, 300 synthetic (share 0.3000, cap 0.3)" in result.output
        again = CliRunner().invoke(app, [*args, "-o", "train.csv"])
        assert again.exit_code != 0 and "exists already" in str(again.exception)
    train = pd.read_csv(tmp_path / "train.csv")
    assert train["_provenance"].value_counts().to_dict()["real"] == 700
    card = json.loads((tmp_path / "train.card.json").read_text())
    assert card["mix"]["synthetic_share"] == 0.3 and card["generator"]["seed"] == 7
