"""Fixtures for the integration tests: the suite's engines, plus a recording fake engine.

The root ``tests/conftest.py`` fixtures are re-exported (pytest only shows a conftest's fixtures
to tests below it). The fake scores by marker words in the document, so tests of our own logic
(order, top_n, thresholds, copies, which engine method ran) know the expected ranking.
"""

from __future__ import annotations

import re

import pytest

from qwen3_rerank import Qwen3Tokenizer, Reranker
from tests.conftest import tiny_model, tiny_seq_cls_model, transformers_engine, vllm_engine, vllm_server  # noqa: F401
from tests.fakes import FakeEngine

_MARKER = re.compile(r"\[score=([0-9.]+)\]")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):  # noqa: F811 (the re-exported fixture)
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
def any_engine(request, tiny_model):  # noqa: F811 (the re-exported fixture)
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
