"""Tests of langchain-qwen3-rerank.

Our own logic (copies, guards, top_n, thresholds, which engine method runs, one call per batch)
runs on a recording fake engine behind the real core ``Reranker``; the chains run end to end on
each real engine (transformers, in-process vLLM, a vLLM server) with the tiny model. Only the
embeddings are fakes.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import langchain_qwen3_rerank
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_qwen3_rerank import STATS_EVENT, Qwen3Reranker
from pydantic import SecretStr, ValidationError

from qwen3_rerank import Reranker
from qwen3_rerank.settings import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

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
    assert langchain_qwen3_rerank.__all__ == ["Qwen3Reranker", "RerankInput", "STATS_EVENT"]


def test_is_a_document_compressor_and_a_runnable(fake_reranker: Reranker) -> None:
    reranker = Qwen3Reranker(reranker=fake_reranker)
    assert isinstance(reranker, BaseDocumentCompressor)
    assert isinstance(reranker, Runnable)
    assert reranker.top_n == 3
    assert reranker.get_name() == "Qwen3Reranker"
    assert set(reranker.get_input_jsonschema()["$defs"]["RerankInput"]["required"]) == {"query", "documents"}


def test_fields_are_validated(fake_reranker: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="extra"):
        Qwen3Reranker(topn=3)
    with pytest.raises(ValidationError):
        Qwen3Reranker(top_n=0)
    with pytest.raises(ValidationError):
        Qwen3Reranker(score_threshold=1.5)
    with pytest.raises(ValidationError, match="either reranker= or engine settings"):
        Qwen3Reranker(reranker=fake_reranker, model="x")
    with pytest.raises(ValidationError, match="engine='remote'"):
        Qwen3Reranker(base_url="http://127.0.0.1:1")
    with pytest.raises(ValidationError, match="needs base_url"):
        Qwen3Reranker(engine="remote")
    monkeypatch.setenv("QWEN3_RERANK_API_KEY", "sk-secret")
    r = Qwen3Reranker(engine="remote", base_url="http://127.0.0.1:1")
    assert isinstance(r.api_key, SecretStr) and r.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(r)


def test_engine_is_built_lazily_from_settings(tiny_model: Path) -> None:
    r = Qwen3Reranker(model=str(tiny_model), engine_options={"device": "cpu", "dtype": "float32"}, top_n=1)
    assert r._built is None  # nothing loaded until the first call
    assert r.compress_documents([], "q") == []
    assert r._built is None
    out = r.compress_documents([Document(page_content="a"), Document(page_content="b")], "q")
    assert len(out) == 1 and r._built is not None and r.client.engine.name == "transformers"
    r.close()
    assert r._built is None


# -- settings from the environment, checked when configured -----------------------------------
@pytest.fixture()
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (ENV_MODEL, ENV_BASE_URL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)


def test_engine_options_are_checked_when_configured(_no_env: None) -> None:
    # Nothing is loaded: the check reads the engine's signature.
    with pytest.raises(ValidationError, match="did you mean 'dtype'"):
        Qwen3Reranker(engine_options={"dtyp": "float32"})
    with pytest.raises(ValidationError, match="did you mean 'enforce_eager'"):
        Qwen3Reranker(engine="vllm", engine_options={"enforce_eagr": True})
    with pytest.raises(ValidationError, match="did you mean 'max_retries'"):
        Qwen3Reranker(engine="remote", base_url="http://127.0.0.1:1", engine_options={"max_retires": 0})
    with pytest.raises(ValidationError, match="must start with http:// or https://"):
        Qwen3Reranker(engine="remote", base_url="localhost:8000")
    Qwen3Reranker(engine_options={"max_length": 512, "dtype": "float32"})  # Reranker and engine options mix


def test_remote_engine_from_the_environment_contacts_nothing(
    _no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpx = pytest.importorskip("httpx")
    requests: list[Any] = []

    def handler(request: Any) -> Any:
        requests.append(request)
        return httpx.Response(500)

    monkeypatch.setenv(ENV_BASE_URL, "http://10.0.0.5:8000")
    monkeypatch.setenv(ENV_MODEL, "org/served")
    monkeypatch.setenv(ENV_API_KEY, "sk-env")
    built = Qwen3Reranker(engine="remote", engine_options={"max_model_len": 512, "transport": httpx.MockTransport(handler)})
    engine = built.client.engine
    try:
        assert engine.base_urls == ("http://10.0.0.5:8000",)
        assert engine.model == "org/served"
        assert engine._api_key.get() == "sk-env"
    finally:
        built.close()
    assert requests == []
    monkeypatch.setenv(ENV_BASE_URL, "localhost:8000")
    with pytest.raises(ValidationError, match=r"from \$QWEN3_RERANK_BASE_URL"):
        Qwen3Reranker(engine="remote")


def test_local_model_from_the_environment(_no_env: None, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    monkeypatch.setenv(ENV_MODEL, str(tiny_model))
    built = Qwen3Reranker(engine_options={"device": "cpu", "dtype": "float32"})
    try:
        assert built.client.engine.model_name == str(tiny_model)
    finally:
        built.close()


# -- guards, copies, top_n, threshold -----------------------------------------------------------
async def test_empty_input_returns_empty_without_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Reranker(reranker=fake_reranker)
    assert r.compress_documents([], "q") == []
    assert await r.acompress_documents([], "q") == []
    assert r.invoke({"query": "q", "documents": []}) == []
    assert r.batch([{"query": "q", "documents": []}, {"query": "p", "documents": []}]) == [[], []]
    assert await r.abatch([{"query": "q", "documents": []}]) == [[]]
    assert fake_engine.calls == []


def test_missing_query_says_what_to_pass(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Reranker(reranker=fake_reranker)
    with pytest.raises(ValueError, match="pass the search query"):
        r.compress_documents(_docs(), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'query': str, 'documents'"):
        r.invoke(["not", "a", "dict"])  # type: ignore[arg-type]
    assert fake_engine.calls == []


async def test_returns_scored_copies_and_never_mutates_input(fake_reranker: Reranker) -> None:
    r = Qwen3Reranker(reranker=fake_reranker, top_n=None)
    docs = _docs()
    before = _snapshot(docs)
    for out in (r.compress_documents(docs, "q"), await r.acompress_documents(docs, "q")):
        assert _snapshot(docs) == before
        assert [d.id for d in out] == ["d1", "d3", "d2", "d0"]
        assert [d.metadata["relevance_score"] for d in out] == pytest.approx([0.9, 0.8, 0.6, 0.2])
        assert all(d.metadata["rerank_truncated"] is False for d in out)
        assert not any(o is d for o in out for d in docs)
        # The copies own their metadata, nested values included.
        out[0].metadata["nested"]["k"].append(3)
        out[0].metadata["extra"] = 1
        assert _snapshot(docs) == before
        assert "relevance_score" not in docs[1].metadata


def test_top_n_and_score_threshold(fake_reranker: Reranker) -> None:
    docs = _docs()
    assert [d.id for d in Qwen3Reranker(reranker=fake_reranker).compress_documents(docs, "q")] == ["d1", "d3", "d2"]
    assert [d.id for d in Qwen3Reranker(reranker=fake_reranker, top_n=1).compress_documents(docs, "q")] == ["d1"]
    assert len(Qwen3Reranker(reranker=fake_reranker, top_n=None).compress_documents(docs, "q")) == 4
    kept = Qwen3Reranker(reranker=fake_reranker, top_n=None, score_threshold=0.6).compress_documents(docs, "q")
    assert [d.id for d in kept] == ["d1", "d3", "d2"]
    kept = Qwen3Reranker(reranker=fake_reranker, top_n=1, score_threshold=0.95).compress_documents(docs, "q")
    assert kept == []


def test_top_n_none_means_all_even_if_the_reranker_has_a_default(fake_engine: Any) -> None:
    out = Qwen3Reranker(reranker=Reranker(fake_engine, top_n=1), top_n=None).compress_documents(_docs(), "q")
    assert len(out) == 4


def test_instruction_reaches_the_prompt(fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any) -> None:
    Qwen3Reranker(reranker=fake_reranker, instruction="Find the zebra facts").compress_documents(_docs(), "q")
    assert "Find the zebra facts" in tiny_tokenizer.decode(fake_engine.seen[-1][0])


async def test_async_path_uses_the_async_engine_only(fake_reranker: Reranker, fake_engine: Any) -> None:
    def forbidden(pairs: Any) -> Any:
        raise AssertionError("the sync engine method was called on the async path")

    fake_engine.score = forbidden
    r = Qwen3Reranker(reranker=fake_reranker)
    out = await r.acompress_documents(_docs(), "q")
    assert [d.id for d in out] == ["d1", "d3", "d2"]
    await r.ainvoke({"query": "q", "documents": _docs()})
    await r.abatch([{"query": "q", "documents": _docs()}, {"query": "p", "documents": _docs()[:2]}])
    assert fake_engine.calls == ["ascore", "ascore", "ascore"]


# -- Runnable: batch = one engine call ------------------------------------------------------------
def test_batch_of_queries_is_one_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Reranker(reranker=fake_reranker, top_n=2)
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
    chain = {"query": RunnablePassthrough(), "documents": fake_retriever} | Qwen3Reranker(
        reranker=fake_reranker, top_n=1
    )
    assert [[d.id for d in out] for out in chain.batch(["a", "b", "c"])] == [["d1"]] * 3
    assert [[d.id for d in out] for out in await chain.abatch(["a", "b", "c"])] == [["d1"]] * 3
    assert fake_engine.calls == ["score", "ascore"] and [len(s) for s in fake_engine.seen] == [12, 12]


async def test_abatch_of_queries_is_one_async_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Reranker(reranker=fake_reranker, top_n=1)
    out = await r.abatch([{"query": f"q{i}", "documents": _docs()} for i in range(5)])
    assert fake_engine.calls == ["ascore"] and len(fake_engine.seen[0]) == 20
    assert [[d.id for d in o] for o in out] == [["d1"]] * 5


def test_batch_return_exceptions_keeps_good_inputs(fake_reranker: Reranker, fake_engine: Any) -> None:
    r = Qwen3Reranker(reranker=fake_reranker, top_n=1)
    out = r.batch([{"query": None, "documents": _docs()}, {"query": "q", "documents": _docs()}], return_exceptions=True)
    assert isinstance(out[0], ValueError) and [d.id for d in out[1]] == ["d1"]
    assert fake_engine.calls == ["score"]
    with pytest.raises(ValueError, match="search query"):
        r.batch([{"query": None, "documents": _docs()}, {"query": "q", "documents": _docs()}])


# -- stats through callbacks ------------------------------------------------------------------
def test_stats_event_reaches_callbacks(fake_reranker: Reranker) -> None:
    r = Qwen3Reranker(reranker=fake_reranker, top_n=2)
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
    r = Qwen3Reranker(reranker=fake_reranker)
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
    reranker = Qwen3Reranker(reranker=core, top_n=3)
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
    reranker = Qwen3Reranker(reranker=core, top_n=2)
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
    for got, query in zip(many, queries):
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
