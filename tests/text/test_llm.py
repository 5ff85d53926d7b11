import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from privsynth.errors import ParameterError, SourceError
from privsynth.text.llm import (
    Embedder,
    LlamaCppGenerator,
    OpenAIGenerator,
    TextGenerator,
    TransformersGenerator,
    local_generator,
)
from privsynth.text.model_files import package_dir, smollm2_gguf

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")


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


# ---- generation backends ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> TextGenerator:
    return local_generator()


class _ChatServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat server answering with the local SmolLM2 (a real model behind HTTP)."""

    model: TextGenerator
    requests: ClassVar[list[tuple[dict[str, Any], str | None]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((body, self.headers.get("Authorization")))
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "no such route"}')
            return
        text = self.model.generate(
            [body["messages"][-1]["content"]],
            max_tokens=body["max_tokens"],
            temperature=body["temperature"],
            seed=body["seed"],
        )[0]
        reply = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(local: TextGenerator) -> Iterator[str]:
    _ChatServer.model = local
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_local_generator_writes_text_reproducibly(local: TextGenerator) -> None:
    prompts = ["Write one sentence about the sea.", "Name a colour."]
    first = local.generate(prompts, max_tokens=8, temperature=0.8, seed=3)
    again = local.generate(prompts, max_tokens=8, temperature=0.8, seed=3)
    assert len(first) == 2
    assert all(len(text) > 3 for text in first)
    assert first == again


@needs_llama_cpp
def test_long_prompts_are_cut_to_the_context_window_and_counted() -> None:
    generator = LlamaCppGenerator(context_window=128)
    long_prompt = "Summarise this. " + "The committee met again and talked at length. " * 200
    (text,) = generator.generate([long_prompt], max_tokens=4, temperature=0.0, seed=0)
    assert generator.truncated == 1
    assert isinstance(text, str)


@needs_llama_cpp
def test_generation_parameters_are_checked() -> None:
    generator = LlamaCppGenerator(context_window=256)
    with pytest.raises(ParameterError, match="max_tokens=200 leaves too little"):
        generator.generate(["hi"], max_tokens=200, temperature=1.0, seed=0)
    with pytest.raises(ParameterError, match="not one string"):
        generator.generate("hi", max_tokens=8, temperature=1.0, seed=0)
    with pytest.raises(ParameterError, match="item 1 is int"):
        generator.generate(["hi", 3], max_tokens=8, temperature=1.0, seed=0)  # type: ignore[list-item]
    with pytest.raises(ParameterError, match="temperature"):
        generator.generate(["hi"], max_tokens=8, temperature=-1.0, seed=0)


def test_openai_backend_talks_to_a_chat_completions_server(server: str) -> None:
    _ChatServer.requests.clear()
    remote = OpenAIGenerator(server, "smollm2", api_key="secret-key")
    texts = remote.generate(["Write one sentence about rain.", "Name a fruit."], max_tokens=8, temperature=0.7, seed=5)
    assert len(texts) == 2
    assert all(len(text) > 0 for text in texts)
    bodies = [body for body, _ in _ChatServer.requests]
    assert [body["seed"] for body in bodies] == [5, 6]
    assert bodies[0]["model"] == "smollm2"
    assert bodies[0]["messages"] == [{"role": "user", "content": "Write one sentence about rain."}]
    assert {auth for _, auth in _ChatServer.requests} == {"Bearer secret-key"}
    assert "secret-key" not in repr(remote)


def test_openai_backend_reports_server_errors(server: str) -> None:
    remote = OpenAIGenerator(server + "/wrong", "smollm2")
    with pytest.raises(SourceError, match="answered 404"):
        remote.generate(["hi"], max_tokens=4, temperature=0.0, seed=0)
    with pytest.raises(SourceError, match="cannot reach"):
        OpenAIGenerator("http://127.0.0.1:9", "m", timeout=5).generate(["hi"], max_tokens=4, temperature=0, seed=0)
    with pytest.raises(ParameterError, match="http"):
        OpenAIGenerator("localhost:8000", "m")


@pytest.mark.slow
def test_transformers_backend_writes_text() -> None:
    generator = TransformersGenerator(batch_size=2)
    prompts = ["Write one sentence about the sea.", "Name a colour."]
    texts = generator.generate(prompts, max_tokens=12, temperature=0.8, seed=1)
    assert len(texts) == 2
    assert all(len(text) > 3 for text in texts)
    assert texts == generator.generate(prompts, max_tokens=12, temperature=0.8, seed=1)


def test_local_generator_prefers_batched_transformers_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Batched transformers writes ~200 tokens/s on 2 cores against llama.cpp's ~20 one prompt at a time, so it is
    # the default whenever it is installed, llama.cpp or not.
    assert isinstance(local_generator(), TransformersGenerator)
    assert isinstance(local_generator(backend="transformers"), TransformersGenerator)
    with pytest.raises(ParameterError, match="backend must be"):
        local_generator(backend="gpu")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    missing = ("transformers", "llama_cpp")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real_find_spec(name, *a)
    )
    with pytest.raises(ParameterError, match=r"needs `transformers`.*or `llama-cpp-python`"):
        local_generator()
    with pytest.raises(ParameterError, match=r"llama\.cpp backend needs `llama-cpp-python`"):
        local_generator(backend="llama.cpp")
