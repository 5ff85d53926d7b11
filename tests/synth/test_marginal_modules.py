"""MST and AIM as modules of their own: the old import path, model files saved before the split, the registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from privsynth import load_dataset
from privsynth.data.schema import Schema
from privsynth.synth import Synthesizer, aim, create, marginal, mst


def test_the_old_module_and_the_registry_name_the_new_classes() -> None:
    assert marginal.MST is mst.MST and marginal.AIM is aim.AIM
    assert (mst.MST.__module__, aim.AIM.__module__) == ("privsynth.synth.mst", "privsynth.synth.aim")
    assert type(create("mst")) is mst.MST and type(create("aim")) is aim.AIM


def test_a_model_file_naming_the_old_module_loads_and_samples_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = load_dataset("nassCDS")[["dead", "sex", "injSeverity"]]
    schema = Schema([dataclasses.replace(c, public=True) for c in Schema.infer(frame).synthesized()])
    model = mst.MST(numeric_bins="uniform", iters=100).fit(frame, schema, epsilon=1.0, ledger=False)
    path = tmp_path / "before-the-split.model"
    with monkeypatch.context() as patch:
        patch.setattr(mst.MST, "__module__", "privsynth.synth.marginal")  # how files written before the split name it
        model.save(path)
    data = path.read_bytes()
    assert b"privsynth.synth.marginal" in data and b"privsynth.synth.mst" not in data
    loaded = Synthesizer.load(path)
    assert type(loaded) is mst.MST
    pd.testing.assert_frame_equal(loaded.sample(500, seed=3), model.sample(500, seed=3))
