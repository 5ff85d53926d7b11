"""The collapse lab on a small slice: the runs complete, the numbers are recorded and mean what they say."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import privsynth as ps
import privsynth.cli.provenance  # registers the commands
from privsynth.bench.collapse import measure, run_collapse
from privsynth.cli import app
from privsynth.errors import OutputExistsError

SLICE = ps.load_dataset("nassCDS").head(3000)


def test_measure_of_real_against_itself_is_perfect() -> None:
    schema = ps.Schema.infer(SLICE)
    m = measure(SLICE, SLICE, schema, 0)
    assert m.tvd_1way == 0 and m.tvd_2way == 0 and m.tvd_1way_worst == 0
    assert m.tail_lower == 1 and m.tail_upper == 1 and m.quantile_span == 1 and m.range_span == 1
    assert m.rare_1way_survival == 1 and m.rare_1way_mass == 1 and m.rare_2way_survival == 1
    # injSeverity 5 and 6 and its missing values are rarer than 1% in this slice
    assert m.columns["injSeverity"]["rare_values"] == 3 and m.rare_1way == 3 and m.rare_2way > 20


def test_measure_sees_a_lost_tail_and_a_lost_rare_category() -> None:
    schema = ps.Schema.infer(SLICE)
    q99 = SLICE["ageOFocc"].quantile(0.99)
    thinned = SLICE[(SLICE["ageOFocc"] < q99) & ~SLICE["injSeverity"].isin([5.0, 6.0])]
    m = measure(SLICE, thinned.reset_index(drop=True), schema, 1)
    assert m.columns["ageOFocc"]["tail_upper"] == 0 and m.columns["ageOFocc"]["range_span"] < 0.9
    assert m.columns["injSeverity"]["rare_values_present"] == 1  # only the missing values are left
    assert m.rare_1way_survival == pytest.approx(1 / 3)


@pytest.mark.parametrize("mode", ["replace", "accumulate"])
def test_collapse_runs_three_generations_and_writes_numbers_and_plot(mode: str, tmp_path: Path) -> None:
    result = run_collapse(SLICE, "copula", 3, mode, seed=0, out_dir=tmp_path)  # type: ignore[arg-type]
    assert [g.generation for g in result.generations] == [1, 2, 3]
    assert [g.training_rows for g in result.generations] == (
        [3000, 3000, 3000] if mode == "replace" else [3000, 6000, 9000]
    )
    assert result.generations[2].training_synthetic_share == pytest.approx(1.0 if mode == "replace" else 2 / 3)
    for g in result.generations:
        assert 0 < g.tvd_1way < g.tvd_2way < 0.2
        assert g.tvd_2way > result.baseline.tvd_2way  # a model is worse than resampling the real rows
        assert g.rare_1way == result.baseline.rare_1way == 3
        assert 0 <= (g.rare_2way_survival or 0) <= 1 and g.tail_lower is not None and g.tail_upper is not None
    saved = json.loads((tmp_path / f"collapse-data-frame-copula-{mode}.json").read_text())
    assert saved["mode"] == mode and len(saved["generations"]) == 3
    assert saved["generations"][0]["tvd_2way"] == pytest.approx(result.generations[0].tvd_2way)
    assert (tmp_path / f"collapse-data-frame-copula-{mode}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError, match="exists already"):
        run_collapse(SLICE, "copula", 1, mode, out_dir=tmp_path)  # type: ignore[arg-type]


def test_collapse_command_prints_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "collapse",
            "--dataset",
            "nafld1",
            "--generations",
            "2",
            "--rows",
            "1500",
            "--mode",
            "accumulate",
            "-o",
            "lab",
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    output = result.output.replace("\n", "")
    assert "resample" in output and "collapse-nafld1-copula-accumulate.json" in output
    saved = json.loads((tmp_path / "lab" / "collapse-nafld1-copula-accumulate.json").read_text())
    assert saved["rows_per_generation"] == 1500 and saved["real_rows"] == len(ps.load_dataset("nafld1"))
    frame = pd.DataFrame(saved["generations"])
    assert list(frame["generation"]) == [1, 2] and list(frame["training_rows"]) == [14039, 15539]
