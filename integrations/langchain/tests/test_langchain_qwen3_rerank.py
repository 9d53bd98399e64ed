"""Tests of langchain-qwen3-rerank.

Our own logic (copies, guards, top_n, thresholds, which engine method runs, one call per batch)
runs on a recording fake engine behind the real core ``Reranker``; the chains run end to end on
each real engine (transformers, in-process vLLM, a vLLM server) with the tiny model. Only the
embeddings are fakes.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.load import dumpd, dumps
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import SecretStr, ValidationError

import langchain_qwen3_rerank
from langchain_qwen3_rerank import STATS_EVENT, Qwen3Rerank
from qwen3_rerank import Reranker
from qwen3_rerank.settings import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL
from tests_support.integration_contract import *  # noqa: F403  (the settings contract's tests run here)
from tests_support.integration_contract import Integration

REPO = Path(__file__).resolve().parents[3]

ENGINES = [
    "transformers",
    pytest.param("vllm", marks=pytest.mark.vllm),
    pytest.param("remote", marks=pytest.mark.remote),
]


def _docs() -> list[Document]:
    return [
        Document(page_content="low [score=0.2]", metadata={"n": 0, "tags": ["a"]}, id="d0"),
        Document(page_content="best [score=0.9]", metadata={"n": 1, "nested": {"k": [1, 2]}}, id="d1"),
        Document(page_content="mid [score=0.6]", metadata={"n": 2}, id="d2"),
        Document(page_content="good [score=0.8]", metadata={"n": 3}, id="d3"),
    ]


def _snapshot(docs: list[Document]) -> list[dict[str, Any]]:
    return [copy.deepcopy(d.model_dump()) for d in docs]


class _Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


# -- the class is what LangChain expects ------------------------------------------------------
def test_public_api() -> None:
    assert langchain_qwen3_rerank.__all__ == sorted(langchain_qwen3_rerank.__all__)
    assert langchain_qwen3_rerank.__all__ == ["Qwen3Rerank", "RerankInput", "STATS_EVENT"]


def test_old_class_name_is_a_deprecated_alias() -> None:
    with pytest.warns(DeprecationWarning, match="Qwen3Reranker is deprecated: import Qwen3Rerank"):
        from langchain_qwen3_rerank import Qwen3Reranker
    assert Qwen3Reranker is Qwen3Rerank
    with pytest.warns(DeprecationWarning, match="Qwen3Reranker is deprecated"):
        from langchain_qwen3_rerank.rerank import Qwen3Reranker as from_module
    assert from_module is Qwen3Rerank
    with pytest.raises(AttributeError):
        langchain_qwen3_rerank.Qwen3Rerankr  # noqa: B018


def test_modules_stay_small_and_use_no_private_langchain_api() -> None:
    package = Path(langchain_qwen3_rerank.__file__).parent
    for module in package.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        assert text.count("\n") < 300, module.name
        assert "_with_config" not in text and "langchain_core._" not in text, module.name


def test_is_a_document_compressor_and_a_runnable(fake_reranker: Reranker) -> None:
    reranker = Qwen3Rerank(reranker=fake_reranker)
    assert isinstance(reranker, BaseDocumentCompressor)
    assert isinstance(reranker, Runnable)
    assert reranker.top_n == 3
    assert reranker.get_name() == "Qwen3Rerank"
    assert set(reranker.get_input_jsonschema()["$defs"]["RerankInput"]["required"]) == {"query", "documents"}


def test_fields_are_validated(fake_reranker: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="extra"):
        Qwen3Rerank(topn=3)
    with pytest.raises(ValidationError, match="use None for all"):
        Qwen3Rerank(top_n=0)
    with pytest.raises(ValidationError, match="positive int"):
        Qwen3Rerank(top_n=-1)
    with pytest.raises(ValidationError):
        Qwen3Rerank(score_threshold=1.5)
    with pytest.raises(ValidationError, match="either reranker= or engine settings"):
        Qwen3Rerank(reranker=fake_reranker, model="x")
    with pytest.raises(ValidationError, match="engine='remote'"):
        Qwen3Rerank(base_url="http://127.0.0.1:1")
    with pytest.raises(ValidationError, match="needs base_url"):
        Qwen3Rerank(engine="remote")
    monkeypatch.setenv("QWEN3_RERANK_API_KEY", "sk-secret")
    r = Qwen3Rerank(engine="remote", base_url="http://127.0.0.1:1")
    assert isinstance(r.api_key, SecretStr) and r.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(r)


def test_engine_is_built_lazily_from_settings(tiny_model: Path) -> None:
    r = Qwen3Rerank(model=str(tiny_model), engine_options={"device": "cpu", "dtype": "float32"}, top_n=1)
    assert r._slot.current is None  # nothing loaded until the first call
    assert r.compress_documents([], "q") == []
    assert r._slot.current is None
    out = r.compress_documents([Document(page_content="a"), Document(page_content="b")], "q")
    assert len(out) == 1 and r._slot.current is not None and r.client.engine.name == "transformers"
    r.close()
    assert r._slot.current is None


# -- settings from the environment, checked when configured -----------------------------------
@pytest.fixture()
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (ENV_MODEL, ENV_BASE_URL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)


def test_remote_engine_from_the_environment_contacts_nothing(_no_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    httpx = pytest.importorskip("httpx")
    requests: list[Any] = []

    def handler(request: Any) -> Any:
        requests.append(request)
        return httpx.Response(500)

    monkeypatch.setenv(ENV_BASE_URL, "http://10.0.0.5:8000")
    monkeypatch.setenv(ENV_MODEL, "org/served")
    monkeypatch.setenv(ENV_API_KEY, "sk-env")
    built = Qwen3Rerank(
        engine="remote", engine_options={"max_model_len": 512, "transport": httpx.MockTransport(handler)}
    )
    engine = built.client.engine
    try:
        assert engine.base_urls == ("http://10.0.0.5:8000",)
        assert engine.model == "org/served"
        assert engine._requester.headers().get("Authorization") == "Bearer sk-env"
    finally:
        built.close()
    assert requests == []
    monkeypatch.setenv(ENV_BASE_URL, "localhost:8000")
    with pytest.raises(ValidationError, match=r"from \$QWEN3_RERANK_BASE_URL"):
        Qwen3Rerank(engine="remote")


def test_local_model_from_the_environment(_no_env: None, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    monkeypatch.setenv(ENV_MODEL, str(tiny_model))
    built = Qwen3Rerank(engine_options={"device": "cpu", "dtype": "float32"})
    try:
        assert built.client.engine.model_name == str(tiny_model)
    finally:
        built.close()


# -- guards, copies, top_n, threshold -----------------------------------------------------------
async def test_empty_input_returns_empty_without_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Rerank(reranker=fake_reranker)
    assert r.compress_documents([], "q") == []
    assert await r.acompress_documents([], "q") == []
    assert r.invoke({"query": "q", "documents": []}) == []
    assert r.batch([{"query": "q", "documents": []}, {"query": "p", "documents": []}]) == [[], []]
    assert await r.abatch([{"query": "q", "documents": []}]) == [[]]
    assert fake_engine.calls == []


def test_missing_query_says_what_to_pass(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Rerank(reranker=fake_reranker)
    with pytest.raises(ValueError, match="pass the search query"):
        r.compress_documents(_docs(), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'query': str, 'documents'"):
        r.invoke(["not", "a", "dict"])  # type: ignore[arg-type]
    assert fake_engine.calls == []


async def test_returns_scored_copies_and_never_mutates_input(fake_reranker: Reranker) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=None)
    docs = _docs()
    before = _snapshot(docs)
    for out in (r.compress_documents(docs, "q"), await r.acompress_documents(docs, "q")):
        assert _snapshot(docs) == before
        assert [d.id for d in out] == ["d1", "d3", "d2", "d0"]
        assert [d.metadata["relevance_score"] for d in out] == pytest.approx([0.9, 0.8, 0.6, 0.2])
        assert all(d.metadata["rerank_truncated"] is False for d in out)
        assert not any(o is d or o.metadata is d.metadata for o in out for d in docs)
        # The copies own their metadata dict (values are shared: shallow copies).
        out[0].metadata["extra"] = 1
        out[0].metadata.pop("n")
        assert _snapshot(docs) == before
        assert "relevance_score" not in docs[1].metadata


async def test_metadata_values_are_shared_never_copied(fake_reranker: Reranker) -> None:
    # A lock (or a client, a file handle) cannot be deep-copied or pickled; it must not fail the call.
    lock, client = threading.Lock(), object()
    docs = [
        Document(page_content=f"doc [score=0.{i + 1}]", metadata={"lock": lock, "client": client}) for i in range(3)
    ]
    r = Qwen3Rerank(reranker=fake_reranker, top_n=2)
    outs = [
        r.compress_documents(docs, "q"),
        await r.acompress_documents(docs, "q"),
        r.invoke({"query": "q", "documents": docs}),
        (await r.abatch([{"query": "q", "documents": docs}]))[0],
    ]
    for out in outs:
        assert [d.page_content for d in out] == ["doc [score=0.3]", "doc [score=0.2]"]
        assert all(d.metadata["lock"] is lock and d.metadata["client"] is client for d in out)
    assert all(set(d.metadata) == {"lock", "client"} for d in docs)


def test_top_n_and_score_threshold(fake_reranker: Reranker) -> None:
    docs = _docs()
    assert [d.id for d in Qwen3Rerank(reranker=fake_reranker).compress_documents(docs, "q")] == ["d1", "d3", "d2"]
    assert [d.id for d in Qwen3Rerank(reranker=fake_reranker, top_n=1).compress_documents(docs, "q")] == ["d1"]
    assert len(Qwen3Rerank(reranker=fake_reranker, top_n=None).compress_documents(docs, "q")) == 4
    kept = Qwen3Rerank(reranker=fake_reranker, top_n=None, score_threshold=0.6).compress_documents(docs, "q")
    assert [d.id for d in kept] == ["d1", "d3", "d2"]
    kept = Qwen3Rerank(reranker=fake_reranker, top_n=1, score_threshold=0.95).compress_documents(docs, "q")
    assert kept == []


def test_top_n_none_means_all_even_if_the_reranker_has_a_default(fake_engine: Any) -> None:
    out = Qwen3Rerank(reranker=Reranker(fake_engine, top_n=1), top_n=None).compress_documents(_docs(), "q")
    assert len(out) == 4


def test_instruction_reaches_the_prompt(fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any) -> None:
    Qwen3Rerank(reranker=fake_reranker, instruction="Find the zebra facts").compress_documents(_docs(), "q")
    assert "Find the zebra facts" in tiny_tokenizer.decode(fake_engine.seen[-1][0])


async def test_async_path_uses_the_async_engine_only(fake_reranker: Reranker, fake_engine: Any) -> None:
    def forbidden(pairs: Any) -> Any:
        raise AssertionError("the sync engine method was called on the async path")

    fake_engine.score = forbidden
    r = Qwen3Rerank(reranker=fake_reranker)
    out = await r.acompress_documents(_docs(), "q")
    assert [d.id for d in out] == ["d1", "d3", "d2"]
    await r.ainvoke({"query": "q", "documents": _docs()})
    await r.abatch([{"query": "q", "documents": _docs()}, {"query": "p", "documents": _docs()[:2]}])
    assert fake_engine.calls == ["ascore", "ascore", "ascore"]


# -- rerank(): the CohereRerank.rerank form ------------------------------------------------------
async def test_rerank_returns_index_and_relevance_score_best_first(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=2)
    mixed = ["low [score=0.2]", Document(page_content="best [score=0.9]"), {"text": "mid [score=0.6]", "id": 7}]
    for rerank in (r.rerank, r.arerank):
        got = rerank(mixed, "q")
        got = await got if not isinstance(got, list) else got
        assert [g["index"] for g in got] == [1, 2] and set(got[0]) == {"index", "relevance_score"}
        assert [g["relevance_score"] for g in got] == pytest.approx([0.9, 0.6])
    assert [g["index"] for g in r.rerank(mixed, "q", top_n=None)] == [1, 2, 0]  # None: all, as Cohere's
    assert [g["index"] for g in await r.arerank(mixed, "q", top_n=1)] == [1]
    # The same order as compress_documents.
    docs = _docs()
    assert [docs[g["index"]].id for g in r.rerank(docs, "q")] == [d.id for d in r.compress_documents(docs, "q")]
    assert fake_engine.calls == ["score", "ascore", "score", "ascore", "score", "score"]
    assert r.rerank([], "q") == [] and await r.arerank([], "q") == [] and len(fake_engine.calls) == 6
    with pytest.raises(TypeError, match="document 0 must be a langchain Document, a str or a dict with a 'text'"):
        r.rerank([{"body": "x"}], "q")
    with pytest.raises(ValueError, match="use None for all"):
        r.rerank(docs, "q", top_n=0)


# -- per-call options ------------------------------------------------------------------------------
async def test_per_call_top_n_and_instruction(fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=3, instruction="Default task")
    docs = _docs()
    assert [d.id for d in r.compress_documents(docs, "q", top_n=1, instruction="Find zebras")] == ["d1"]
    assert "Find zebras" in tiny_tokenizer.decode(fake_engine.seen[-1][0])
    assert len(await r.acompress_documents(docs, "q", top_n=None)) == 4
    assert "Default task" in tiny_tokenizer.decode(fake_engine.seen[-1][0])
    assert [d.id for d in r.invoke({"query": "q", "documents": docs, "top_n": 2})] == ["d1", "d3"]
    assert len(await r.ainvoke({"query": "q", "documents": docs, "top_n": None})) == 4
    assert r.top_n == 3 and r.instruction == "Default task"  # the constructor's options stay the defaults
    with pytest.raises(ValueError, match="use None for all"):
        r.compress_documents(docs, "q", top_n=0)
    with pytest.raises(ValueError, match="use None for all"):
        r.invoke({"query": "q", "documents": docs, "top_n": 0})


def test_batch_per_input_options_one_engine_call_per_instruction(
    fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any
) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=2)
    inputs = [
        {"query": "a", "documents": _docs(), "top_n": 1},
        {"query": "b", "documents": _docs(), "top_n": None},
        {"query": "c", "documents": _docs()},
        {"query": "d", "documents": _docs(), "instruction": "Find zebras"},
        {"query": "e", "documents": _docs(), "top_n": 0},
    ]
    out = r.batch(inputs, return_exceptions=True)
    assert [[d.id for d in o] for o in out[:4]] == [["d1"], ["d1", "d3", "d2", "d0"], ["d1", "d3"], ["d1", "d3"]]
    assert isinstance(out[4], ValueError) and "use None for all" in str(out[4])
    assert fake_engine.calls == ["score", "score"]  # the default instruction, then "Find zebras"
    assert [len(s) for s in fake_engine.seen] == [12, 4]
    assert "Find zebras" in tiny_tokenizer.decode(fake_engine.seen[1][0])


# -- metadata -------------------------------------------------------------------------------------
def test_metadata_holds_score_logit_and_truncation(fake_engine: Any) -> None:
    long_docs = [Document(page_content="[score=0.9] " + "word " * 200), Document(page_content="short [score=0.3]")]
    out = Qwen3Rerank(reranker=Reranker(fake_engine, max_length=96), top_n=None).compress_documents(long_docs, "q")
    assert [d.metadata["rerank_truncated"] for d in out] == [True, False]
    for d, p in zip(out, (0.9, 0.3), strict=True):
        assert d.metadata["relevance_score"] == pytest.approx(p)
        assert d.metadata["rerank_logit"] == pytest.approx(math.log(p / (1 - p)))
        assert "rerank_window" not in d.metadata and "rerank_num_windows" not in d.metadata


async def test_window_mode_metadata(fake_engine: Any) -> None:
    windowed = Reranker(fake_engine, max_length=96, long_documents="window", window_overlap=4)
    long_docs = [Document(page_content="word " * 200 + "[score=0.9]"), Document(page_content="short [score=0.3]")]
    r = Qwen3Rerank(reranker=windowed, top_n=None)
    for out in (r.compress_documents(long_docs, "q"), await r.acompress_documents(long_docs, "q")):
        first, second = out
        assert first.metadata["relevance_score"] == pytest.approx(0.9) and first.metadata["rerank_truncated"] is False
        assert first.metadata["rerank_num_windows"] > 1
        assert first.metadata["rerank_window"] == first.metadata["rerank_num_windows"] - 1  # the marker is at the end
        assert second.metadata["rerank_window"] is None and second.metadata["rerank_num_windows"] == 1


# -- Runnable: batch = one engine call ------------------------------------------------------------
def test_batch_of_queries_is_one_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=2)
    inputs = [
        {"query": "q1", "documents": _docs()},
        {"query": "q2", "documents": []},
        {"query": "q3", "documents": ["plain [score=0.7]", "text [score=0.1]"]},
    ]
    before = copy.deepcopy(inputs[0]["documents"][0].model_dump())
    out = r.batch(inputs)
    assert fake_engine.calls == ["score"]
    assert len(fake_engine.seen[0]) == 4 + 2  # every pair of every query in that one call
    assert [d.id for d in out[0]] == ["d1", "d3"]
    assert out[1] == []
    assert [d.page_content for d in out[2]] == ["plain [score=0.7]", "text [score=0.1]"]
    assert inputs[0]["documents"][0].model_dump() == before
    # The same answers as one query at a time.
    assert [d.id for d in r.invoke(inputs[0])] == ["d1", "d3"]


async def test_lcel_chain_batch_is_one_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    fake_retriever = RunnableLambda(lambda query: _docs())
    chain = {"query": RunnablePassthrough(), "documents": fake_retriever} | Qwen3Rerank(reranker=fake_reranker, top_n=1)
    assert [[d.id for d in out] for out in chain.batch(["a", "b", "c"])] == [["d1"]] * 3
    assert [[d.id for d in out] for out in await chain.abatch(["a", "b", "c"])] == [["d1"]] * 3
    assert fake_engine.calls == ["score", "ascore"] and [len(s) for s in fake_engine.seen] == [12, 12]


async def test_abatch_of_queries_is_one_async_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=1)
    out = await r.abatch([{"query": f"q{i}", "documents": _docs()} for i in range(5)])
    assert fake_engine.calls == ["ascore"] and len(fake_engine.seen[0]) == 20
    assert [[d.id for d in o] for o in out] == [["d1"]] * 5


def test_batch_return_exceptions_keeps_good_inputs(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=1)
    out = r.batch([{"query": None, "documents": _docs()}, {"query": "q", "documents": _docs()}], return_exceptions=True)
    assert isinstance(out[0], ValueError) and [d.id for d in out[1]] == ["d1"]
    assert fake_engine.calls == ["score"]
    with pytest.raises(ValueError, match="search query"):
        r.batch([{"query": None, "documents": _docs()}, {"query": "q", "documents": _docs()}])


async def test_an_engine_failure_fails_only_the_inputs_of_its_call(
    fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any
) -> None:
    by_marker = fake_engine.score_fn

    def score_fn(ids: Any) -> float:
        if "Find zebras" in tiny_tokenizer.decode(ids):
            raise RuntimeError("the engine went down")
        return float(by_marker(ids))

    fake_engine.score_fn = score_fn
    r = Qwen3Rerank(reranker=fake_reranker, top_n=1)
    inputs = [
        {"query": "a", "documents": _docs()},
        {"query": "b", "documents": _docs(), "instruction": "Find zebras"},
        {"query": "c", "documents": _docs(), "instruction": "Find zebras"},
    ]
    for out in (r.batch(inputs, return_exceptions=True), await r.abatch(inputs, return_exceptions=True)):
        assert [d.id for d in out[0]] == ["d1"]
        assert all(isinstance(o, RuntimeError) and "went down" in str(o) for o in out[1:])
    assert fake_engine.calls == ["score", "score", "ascore", "ascore"]  # one call per instruction
    with pytest.raises(RuntimeError, match="went down"):
        r.invoke(inputs[1])
    with pytest.raises(RuntimeError, match="went down"):
        await r.acompress_documents(_docs(), "q", instruction="Find zebras")


def test_batch_gives_each_input_its_own_run(fake_reranker: Reranker) -> None:
    class Runs(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            self.seen.append(f"start:{kwargs.get('name')}")

        def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
            self.seen.append("end")

        def on_chain_error(self, error: BaseException, **kwargs: Any) -> None:
            self.seen.append(f"error:{type(error).__name__}")

    runs = Runs()
    r = Qwen3Rerank(reranker=fake_reranker)
    inputs = [{"query": "a", "documents": _docs()}, {"query": None, "documents": _docs()}]
    r.batch(inputs, {"callbacks": [runs], "run_name": "rerank"}, return_exceptions=True)
    # One run per input, opened and closed as Runnable.batch does (its threads decide the interleaving).
    assert sorted(runs.seen) == ["end", "error:ValueError", "start:rerank", "start:rerank"]


# -- stats through callbacks ------------------------------------------------------------------
def test_stats_event_reaches_callbacks(fake_reranker: Reranker) -> None:
    r = Qwen3Rerank(reranker=fake_reranker, top_n=2)
    handler = _Events()
    r.invoke({"query": "q", "documents": _docs()}, {"callbacks": [handler]})
    r.batch([{"query": "a", "documents": _docs()}, {"query": "b", "documents": _docs()[:1]}], {"callbacks": [handler]})
    assert [name for name, _ in handler.events] == [STATS_EVENT] * 3
    data = handler.events[0][1]
    assert data["pairs"] == 4 and data["tokens"] > 0 and data["engine"] == "fake"
    assert data["documents"] == 4 and data["returned"] == 2 and data["truncated"] == 0 and data["seconds"] >= 0
    assert handler.events[2][1]["pairs"] == 1
    # A bare direct call has no run to report to: no error, no event.
    r.compress_documents(_docs(), "q")
    assert len(handler.events) == 3


async def test_stats_event_in_astream_events(fake_reranker: Reranker) -> None:
    r = Qwen3Rerank(reranker=fake_reranker)
    events = [e async for e in r.astream_events({"query": "q", "documents": _docs()}, version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == [STATS_EVENT] and custom[0]["data"]["pairs"] == 4


# -- real chains, each engine -------------------------------------------------------------------
PASSAGES = [
    "BM25 is a bag-of-words ranking function used by search engines.",
    "Paris is the capital and most populous city of France.",
    "A cross-encoder reads the query and the document together and outputs a relevance score.",
    "The Qwen3 reranker judges whether a document meets the requirements of a query.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "vLLM is a high-throughput inference engine for large language models.",
    "The Great Wall of China is thousands of kilometres long.",
    "Dense retrieval embeds queries and passages into the same vector space.",
]


@pytest.fixture
def retriever() -> Any:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(page_content=p, metadata={"source": i}) for i, p in enumerate(PASSAGES)])
    return store.as_retriever(search_kwargs={"k": 6})


@pytest.mark.parametrize("any_engine", ENGINES, indirect=True)
async def test_contextual_compression_retriever_end_to_end(any_engine: Any, retriever: Any) -> None:
    ccr_module = pytest.importorskip("langchain_classic.retrievers", reason="pip install langchain-classic")
    core = Reranker(any_engine)
    reranker = Qwen3Rerank(reranker=core, top_n=3)
    ccr = ccr_module.ContextualCompressionRetriever(base_compressor=reranker, base_retriever=retriever)
    query = "how do rerankers score documents?"
    handler = _Events()
    docs = ccr.invoke(query, config={"callbacks": [handler]})
    adocs = await ccr.ainvoke(query, config={"callbacks": [handler]})

    candidates = retriever.invoke(query)
    expected = core.rerank(query, [d.page_content for d in candidates], top_n=3)
    assert [d.page_content for d in docs] == [r.document for r in expected]
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([r.score for r in expected], abs=1e-5)
    assert [d.page_content for d in adocs] == [d.page_content for d in docs]
    assert [d.metadata["relevance_score"] for d in adocs] == pytest.approx(
        [d.metadata["relevance_score"] for d in docs], abs=1e-5
    )
    assert all(0.0 <= d.metadata["relevance_score"] <= 1.0 for d in docs)
    assert [name for name, _ in handler.events] == [STATS_EVENT, STATS_EVENT]  # sync and async runs
    assert all(data["pairs"] == 6 and data["engine"] == any_engine.name for _, data in handler.events)


@pytest.mark.parametrize("any_engine", ENGINES, indirect=True)
async def test_lcel_chain_end_to_end(any_engine: Any, retriever: Any) -> None:
    core = Reranker(any_engine)
    reranker = Qwen3Rerank(reranker=core, top_n=2)
    chain = (
        {"query": RunnablePassthrough(), "documents": retriever}
        | reranker
        | RunnableLambda(lambda docs: [(d.page_content, round(d.metadata["relevance_score"], 4)) for d in docs])
    )
    queries = ["what is BM25?", "capital of France", "fast LLM inference"]
    one = chain.invoke(queries[0])
    many = chain.batch(queries)
    amany = await chain.abatch(queries)
    assert len(one) == 2 and [t for t, _ in many[0]] == [t for t, _ in one]
    for got, query in zip(many, queries, strict=True):
        candidates = retriever.invoke(query)
        expected = core.rerank(query, [d.page_content for d in candidates], top_n=2)
        assert [text for text, _ in got] == [r.document for r in expected]
        assert [s for _, s in got] == pytest.approx([r.score for r in expected], abs=1e-3)
    assert [[t for t, _ in g] for g in amany] == [[t for t, _ in g] for g in many]


# -- the example ------------------------------------------------------------------------------
def test_example_runs_offline() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "langchain_rag.py"), "--engine", "transformers", "--top-n", "3"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOM weights" in result.stdout
    assert result.stdout.count("relevance_score=") >= 3


# -- installation -------------------------------------------------------------------------------
def test_readme_install_lines_install_what_the_snippets_import() -> None:
    from tests_support.readme_installs import missing_installs

    package = REPO / "integrations" / "langchain"
    assert missing_installs(package / "README.md", package / "pyproject.toml", "langchain_qwen3_rerank") == []


def test_engine_extras_match_the_core() -> None:
    import tomllib

    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ours = tomllib.loads((REPO / "integrations" / "langchain" / "pyproject.toml").read_text())["project"]
    for extra in ("torch", "vllm", "http", "all"):
        assert extra in core and ours["optional-dependencies"][extra] == [f"qwen3-rerank[{extra}]>=0.1.0"]


# -- the settings contract both integrations keep (tests_support/integration_contract.py) ---------


@pytest.fixture()
def integration() -> Integration:
    return Integration(
        cls=Qwen3Rerank,
        rank=lambda obj, texts, q: [r["index"] for r in obj.rerank(texts, q)],
        serialised=lambda obj: [str(obj.model_dump()), obj.model_dump_json(), dumps(obj), str(dumpd(obj))],
        reranker_of=lambda obj: obj.client,
        built=lambda obj: obj._slot.current,
    )


def test_cross_encoder_reranker_users_swap_only_the_model(fake_reranker: Reranker, fake_engine: Any) -> None:
    # Issue 25 item 26: CrossEncoderReranker(model=HuggingFaceCrossEncoder(...)) -> model=Qwen3Rerank(...).
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker

    model = Qwen3Rerank(reranker=fake_reranker)
    out = CrossEncoderReranker(model=model, top_n=2).compress_documents(_docs(), "q")
    assert [d.id for d in out] == ["d1", "d3"] and fake_engine.calls == ["score"]
    assert model.score([("q", "a [score=0.3]"), ("p", "b [score=0.7]")]) == pytest.approx([0.3, 0.7])
