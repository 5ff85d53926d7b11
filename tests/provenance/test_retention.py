"""Retention: "generate, use, delete" removes the fitted model once the release is written, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

import privsynth as ps
from privsynth.errors import ParameterError, PrivsynthError
from privsynth.provenance.card import read_card
from privsynth.synth import Synthesizer

REAL = ps.load_dataset("nafld1").head(2000)


def test_delete_model_removes_the_saved_model_after_writing_and_records_it(tmp_path: Path) -> None:
    model_file = tmp_path / "model.pkl"
    release = ps.synthesize(REAL, rows=300, seed=0, save_model=model_file, retention="delete-model")
    assert model_file.is_file()  # saved right after fitting, usable until the release is written
    assert len(Synthesizer.load(model_file).sample(5, seed=0)) == 5
    release.write(tmp_path / "out.csv")
    assert not model_file.exists()
    with pytest.raises(PrivsynthError, match="not fitted yet"):
        release.model.sample(5)
    retention = read_card(tmp_path / "out.csv")["retention"]
    assert retention["policy"] == "delete-model" and retention["model_file"] == "model.pkl"
    assert retention["deleted_files"] == ["model.pkl"]
    assert retention["deleted_at"] >= release.created
    answer = read_card(tmp_path / "out.csv")["datasheet"]["limitations"][-1]["answer"]
    assert answer.startswith("No: the fitted model and its intermediate files were deleted")
    release.write(tmp_path / "copy.parquet")  # the rows outlive the model
    assert read_card(tmp_path / "copy.parquet")["retention"]["deleted_at"] == retention["deleted_at"]
    with pytest.raises(ParameterError, match="was deleted under retention 'delete-model'"):
        release.save_model(tmp_path / "again.pkl")


def test_delete_model_also_removes_the_synthesizers_intermediate_files(tmp_path: Path) -> None:
    release = ps.synthesize(REAL, rows=100, seed=0, retention="delete-model")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "epoch-1.pt").write_bytes(b"weights")
    release.model.intermediates_ = [checkpoints]  # type: ignore[attr-defined]
    release.write(tmp_path / "out.csv")
    assert not checkpoints.exists()
    assert read_card(tmp_path / "out.csv")["retention"]["deleted_files"] == ["checkpoints"]


def test_keep_leaves_the_model_and_says_where(tmp_path: Path) -> None:
    release = ps.synthesize(REAL, rows=100, seed=0)
    release.save_model(tmp_path / "m.pkl")
    release.write(tmp_path / "out.csv")
    assert (tmp_path / "m.pkl").is_file() and len(release.model.sample(3)) == 3
    retention = read_card(tmp_path / "out.csv")["retention"]
    assert retention == {
        "policy": "keep",
        "model_file": "m.pkl",
        "note": "the fitted model is kept; delete it when the release is final",
    }


def test_unknown_retention_policy_is_refused() -> None:
    with pytest.raises(ParameterError, match="retention must be one of keep, delete-model, not 'forget'"):
        ps.synthesize(REAL, rows=10, retention="forget")  # type: ignore[arg-type]
