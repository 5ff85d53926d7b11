import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from privsynth.errors import ParameterError
from privsynth.text.llm import Embedder, package_dir, smollm2_gguf


def test_embedder_puts_paraphrases_closer_than_unrelated_texts() -> None:
    vectors = Embedder().embed(
        ["The flight was delayed by three hours.", "My plane left three hours late.", "I love pasta with basil."]
    )
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5
    assert unrelated < 0.2


def test_embedder_rejects_non_strings() -> None:
    with pytest.raises(ParameterError, match="item 1 is int"):
        Embedder().embed(["fine", 3])  # type: ignore[list-item]


def test_missing_package_names_the_pip_install() -> None:
    with pytest.raises(ParameterError, match="pip install no-such-model"):
        package_dir("no_such_model_pkg", "no-such-model")


def test_smollm2_gguf_is_found_without_importing_the_package() -> None:
    path = smollm2_gguf()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
