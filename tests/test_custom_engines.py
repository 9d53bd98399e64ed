"""Custom engines that break the interface get typed errors that say what to return (issue 25, item 19)."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from qwen3_rerank import EngineError, EngineOutput, InvalidScoreError, Qwen3Tokenizer, Reranker
from qwen3_rerank.engines import Engine


@pytest.fixture(scope="module")
def tok(tiny_model):
    return Qwen3Tokenizer.from_pretrained(tiny_model)


class Returning(Engine):
    """An engine whose score() and ascore() return ``make(pairs)`` as it is."""

    name = "custom"

    def __init__(self, tokenizer, make):
        self._tokenizer, self.make = tokenizer, make

    @property
    def tokenizer(self):
        return self._tokenizer

    def score(self, pairs):
        return self.make(pairs)

    async def ascore(self, pairs):
        return self.make(pairs)


DOCS = ["a", "b", "c"]
BAD_OUTPUTS = [
    pytest.param(lambda pairs: EngineOutput(logits={0: 0.1, 1: 0.2, 2: 0.3}), "logits=<a dict>", id="dict-logits"),
    pytest.param(
        lambda pairs: EngineOutput(logits=(0.1 * i for i in range(len(pairs)))), "a generator", id="generator"
    ),
    pytest.param(lambda pairs: EngineOutput(logits=None), "logits=<None>", id="none-logits"),
    pytest.param(lambda pairs: EngineOutput(logits="0.1"), "logits=<a str>", id="str-logits"),
    pytest.param(lambda pairs: None, "returned None, not an EngineOutput", id="none"),
    pytest.param(lambda pairs: [0.1] * len(pairs), "returned a list, not an EngineOutput", id="list"),
    pytest.param(lambda pairs: {"logits": [0.1] * len(pairs)}, "returned a dict, not an EngineOutput", id="dict"),
    pytest.param(lambda pairs: (0.1 for _ in pairs), "returned a generator, not an EngineOutput", id="gen"),
]


@pytest.mark.parametrize(("make", "fragment"), BAD_OUTPUTS)
def test_a_malformed_output_is_an_invalid_score_error(tok, make, fragment):
    reranker = Reranker(Returning(tok, make))
    with pytest.raises(InvalidScoreError, match="EngineOutput") as sync:
        reranker.rerank("q", DOCS)
    assert fragment in str(sync.value)
    with pytest.raises(InvalidScoreError) as not_sync:
        asyncio.run(reranker.arerank("q", DOCS))
    assert fragment in str(not_sync.value)


def test_the_good_forms_still_pass(tok):
    numpy = pytest.importorskip("numpy")
    for make in (
        lambda pairs: EngineOutput(logits=[0.5, -1.0, 2.0]),
        lambda pairs: EngineOutput(logits=(0.5, -1.0, 2.0)),
        lambda pairs: EngineOutput(logits=numpy.array([0.5, -1.0, 2.0], dtype="float32")),
    ):
        assert [r.index for r in Reranker(Returning(tok, make)).rerank("q", DOCS)] == [2, 0, 1]


class SyncAscore(Returning):
    def ascore(self, pairs):  # type: ignore[override]  # the mistake under test
        return EngineOutput(logits=[0.0] * len(pairs))


class AsyncScore(Returning):
    async def score(self, pairs):  # type: ignore[override]  # the mistake under test
        return EngineOutput(logits=[0.0] * len(pairs))


def test_a_sync_ascore_is_an_engine_error(tok):
    reranker = Reranker(SyncAscore(tok, None))
    with pytest.raises(EngineError, match=r"ascore\(\) returned an EngineOutput, not an awaitable.*async def ascore"):
        asyncio.run(reranker.arerank("q", DOCS))


def test_an_async_score_is_an_engine_error_without_a_never_awaited_warning(tok):
    reranker = Reranker(AsyncScore(tok, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be a RuntimeWarning
        with pytest.raises(EngineError, match=r"score\(\) returned a coroutine"):
            reranker.rerank("q", DOCS)
