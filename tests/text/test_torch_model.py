from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

import torch

from privsynth.errors import ParameterError
from privsynth.text.model_files import smollm2_gguf
from privsynth.text.torch_model import cache_dir, load_causal_lm, model_cache_path
from privsynth.threads import torch_threads


def test_cache_folder_follows_privsynth_cache_and_the_file_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIVSYNTH_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    folder = model_cache_path()
    assert folder.parent == tmp_path / "models"
    assert folder.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert len(folder.name.rsplit("-", 1)[1]) == 16
    other = tmp_path / "copy.gguf"
    other.write_bytes(b"not the same model")
    assert model_cache_path(other).name != folder.name
    with pytest.raises(ParameterError, match="no GGUF model file"):
        model_cache_path(tmp_path / "missing.gguf")


def test_load_causal_lm_gives_a_fresh_working_model_each_call() -> None:
    with torch_threads():
        _check_fresh_working_model()


def _check_fresh_working_model() -> None:
    model, tokenizer = load_causal_lm()
    again, _ = load_causal_lm()
    assert model is not again
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    assert not model.training
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        logits_a = model(**prompt).logits
        logits_b = again(**prompt).logits
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    assert torch.equal(logits_a, logits_b)
    # a change to one model does not reach the other
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(again.parameters()))


@pytest.mark.slow
def test_a_fresh_cache_is_filled_once_and_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference, tokenizer = load_causal_lm()
    monkeypatch.setenv("PRIVSYNTH_CACHE", str(tmp_path))
    model, _ = load_causal_lm(smollm2_gguf())
    folder = model_cache_path()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [folder.name]  # no staging folder left behind
    ids = tokenizer("Hello there", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, reference(**ids).logits)
