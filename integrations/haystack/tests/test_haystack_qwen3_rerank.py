"""Tests of haystack-qwen3-rerank.

Our own logic (guards, copies, top_k, thresholds, dedup, meta fields, which engine method runs,
serialisation) runs on a recording fake engine behind the real core ``Reranker``; the scores are
proved equal to ``Reranker.rerank`` on the tiny model, and the component runs in a real Haystack
``Pipeline`` (InMemoryDocumentStore + InMemoryBM25Retriever), sync and async.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # before haystack is imported: no posthog thread

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.core.errors import DeserializationError
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import Secret

import haystack_qwen3_rerank
from haystack_qwen3_rerank import Qwen3Ranker
from qwen3_rerank import Reranker
from qwen3_rerank.settings import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

# Haystack 3's forms the README uses: Pipeline.run_async and Pipeline.loads(allowed_modules=...).
HAYSTACK_3 = hasattr(Pipeline, "run_async") and "allowed_modules" in inspect.signature(Pipeline.loads).parameters
try:  # Haystack 2.x has a separate AsyncPipeline; Haystack 3 merged it into Pipeline.run_async.
    from haystack import AsyncPipeline
except ImportError:
    AsyncPipeline = Pipeline

LOCAL = {"device": "cpu", "dtype": "float32"}
ENGINES = [
    "transformers",
    pytest.param("vllm", marks=pytest.mark.vllm),
    pytest.param("remote", marks=pytest.mark.remote),
]


def _docs() -> list[Document]:
    return [
        Document(id="d0", content="low [score=0.2]", meta={"n": 0, "tags": ["a"]}),
        Document(id="d1", content="best [score=0.9]", meta={"n": 1, "nested": {"k": [1, 2]}}),
        Document(id="d2", content="mid [score=0.6]", meta={"n": 2}),
        Document(id="d3", content="good [score=0.8]", meta={"n": 3}, score=12.5),  # a retriever's score
    ]


def _snapshot(docs: list[Document]) -> list[dict[str, Any]]:
    return [copy.deepcopy(dataclasses.asdict(d)) for d in docs]


def _ids(result: dict[str, list[Document]]) -> list[str]:
    return [d.id for d in result["documents"]]


@pytest.fixture()
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (ENV_MODEL, ENV_BASE_URL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)


# -- the component is what Haystack expects --------------------------------------------------------
def test_public_api_and_size() -> None:
    assert haystack_qwen3_rerank.__all__ == ["Qwen3Ranker"]
    source = Path(haystack_qwen3_rerank.__file__).with_name("ranker.py").read_text(encoding="utf-8")
    docstrings = {
        line
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and (first := node.body[0]) and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        for line in range(first.lineno, (first.end_lineno or first.lineno) + 1)
    }  # fmt: skip
    code = [
        n for n, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#") and n not in docstrings
    ]  # fmt: skip
    assert len(code) < 250, len(code)  # the size of Haystack's own rankers (135-170 lines of code)
    assert "haystack.utils.misc" not in source and "from haystack.core" not in source  # no private Haystack API


def test_sockets_are_a_rankers(fake_reranker: Reranker) -> None:
    ranker = Qwen3Ranker(reranker=fake_reranker)
    inputs = ranker.__haystack_input__._sockets_dict  # type: ignore[attr-defined]
    assert list(inputs) == ["query", "documents", "top_k", "score_threshold", "instruction"]
    assert [n for n, s in inputs.items() if s.is_mandatory] == ["query", "documents"]
    assert list(ranker.__haystack_output__._sockets_dict) == ["documents"]  # type: ignore[attr-defined]


def test_settings_are_checked_when_created(_no_env: None, fake_reranker: Reranker) -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="top_k must be a positive int"):
            Qwen3Ranker(reranker=fake_reranker, top_k=bad)
    with pytest.raises(ValueError, match=r"score_threshold must be a probability in \[0, 1\]"):
        Qwen3Ranker(reranker=fake_reranker, score_threshold=1.5)
    with pytest.raises(ValueError, match="either reranker= or engine settings"):
        Qwen3Ranker(reranker=fake_reranker, model="x")
    with pytest.raises(ValueError, match="either reranker= or engine settings"):
        Qwen3Ranker(reranker=fake_reranker, engine="remote")
    with pytest.raises(
        ValueError, match=r"either reranker= or engine settings, not both \(got reranker and \['api_key'\]"
    ):
        Qwen3Ranker(reranker=fake_reranker, api_key=Secret.from_token("sk-tok"))
    with pytest.raises(ValueError, match="api_key is used by the remote engine only, not by 'transformers'"):
        Qwen3Ranker(api_key=Secret.from_env_var("OTHER_KEY"))
    Qwen3Ranker(api_key=Secret.from_env_var(ENV_API_KEY, strict=False))  # the default, built anew: no choice
    Qwen3Ranker.from_dict(Qwen3Ranker().to_dict())
    with pytest.raises(TypeError, match="must be a qwen3_rerank.Reranker"):
        Qwen3Ranker(reranker="transformers")  # type: ignore[arg-type]
    # Nothing loads: the checks read the engines' signatures.
    with pytest.raises(ValueError, match="did you mean 'dtype'"):
        Qwen3Ranker(engine_options={"dtyp": "float32"})
    with pytest.raises(ValueError, match="unknown engine 'bogus'"):
        Qwen3Ranker(engine="bogus")
    with pytest.raises(ValueError, match="needs base_url"):
        Qwen3Ranker(engine="remote")
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        Qwen3Ranker(engine="remote", base_url="localhost:8000")
    with pytest.raises(ValueError, match="used by the remote engine only"):
        Qwen3Ranker(base_url="http://127.0.0.1:1")
    with pytest.raises(TypeError, match="api_key must be a haystack Secret") as err:
        Qwen3Ranker(engine="remote", base_url="http://127.0.0.1:1", api_key="sk-plain")  # type: ignore[arg-type]
    assert "sk-plain" not in str(err.value)
    Qwen3Ranker(engine_options={"max_length": 512, "dtype": "float32"})  # Reranker and engine options mix


# -- the README's python blocks run, the tiny model standing in ---------------------------------------
README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def test_readme_blocks_run(tiny_model: Path, _no_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    blocks = [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _FENCE.finditer(text)]
    assert len(blocks) == 5
    namespace: dict[str, Any] = {"__name__": "__main__"}  # one namespace: later blocks use earlier names
    for line, code in blocks:
        compiled = compile(code.replace("Qwen/Qwen3-Reranker-0.6B", str(tiny_model)), f"README.md:{line}", "exec")
        # The remote block needs a vllm serve; Haystack 3 forms (Pipeline.run_async, allowed_modules)
        # cannot run on Haystack 2: compiled only.
        if not code.startswith("# needs:") and (HAYSTACK_3 or not code.startswith("# requires: haystack 3")):
            exec(compiled, namespace)  # noqa: S102 - our own README
    printed = capsys.readouterr().out
    assert "BM25 ranks documents by term frequency." in printed
    for name in ("pipeline", "ranker"):
        getattr(namespace[name], "close", lambda: None)()  # Pipeline.close is Haystack 3's


# -- guards --------------------------------------------------------------------------------------
async def test_empty_documents_touch_no_engine(fake_reranker: Reranker, fake_engine: Any, _no_env: None) -> None:
    ranker = Qwen3Ranker(reranker=fake_reranker)
    assert ranker.run(query="q", documents=[]) == {"documents": []}
    assert await ranker.run_async(query="q", documents=[]) == {"documents": []}
    assert fake_engine.calls == []
    unbuilt = Qwen3Ranker()
    assert unbuilt.run(query="q", documents=[]) == {"documents": []}
    assert await unbuilt.run_async(query="q", documents=[]) == {"documents": []}
    assert unbuilt._reranker is None  # no model was loaded


async def test_bad_input_fails_clearly_before_the_engine(fake_reranker: Reranker, fake_engine: Any) -> None:
    ranker = Qwen3Ranker(reranker=fake_reranker)
    for run in (ranker.run, ranker.run_async):
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"query": None, "documents": _docs()}, ValueError, "query is missing: pass the search query"),
            ({"query": 3, "documents": _docs()}, TypeError, "query must be a str, got int"),
            ({"query": "q", "documents": None}, ValueError, "documents is missing"),
            ({"query": "q", "documents": "text"}, TypeError, "must be a list of haystack Document"),
            ({"query": "q", "documents": [_docs()[0], "x"]}, TypeError, r"documents\[1\] must be a haystack Document"),
            ({"query": "q", "documents": _docs(), "top_k": 0}, ValueError, "top_k must be a positive int"),
            ({"query": "q", "documents": [], "top_k": -2}, ValueError, "top_k must be a positive int"),
            ({"query": "q", "documents": [], "score_threshold": 2}, ValueError, "score_threshold must be"),
            ({"query": None, "documents": []}, ValueError, "query is missing"),
        ]
        for kwargs, kind, message in cases:
            with pytest.raises(kind, match=message):
                out = run(**kwargs)
                if not isinstance(out, dict):
                    await out
    assert fake_engine.calls == []


# -- copies, order, top_k, threshold, instruction ----------------------------------------------------
async def test_returns_scored_copies_and_never_mutates_input(fake_reranker: Reranker) -> None:
    ranker = Qwen3Ranker(reranker=fake_reranker, top_k=None)
    docs = _docs()
    before = _snapshot(docs)
    for result in (ranker.run(query="q", documents=docs), await ranker.run_async(query="q", documents=docs)):
        assert _snapshot(docs) == before
        assert _ids(result) == ["d1", "d3", "d2", "d0"]
        assert [d.score for d in result["documents"]] == pytest.approx([0.9, 0.8, 0.6, 0.2])
        assert [d.content for d in result["documents"]] == ["best [score=0.9]", "good [score=0.8]", "mid [score=0.6]",
                                                            "low [score=0.2]"]  # fmt: skip
        assert not any(o is d or o.meta is d.meta for o in result["documents"] for d in docs)
        result["documents"][0].meta["extra"] = 1  # the copy's meta is its own dict
        assert _snapshot(docs) == before
    assert docs[3].score == 12.5 and docs[1].score is None


def test_top_k_and_score_threshold(fake_reranker: Reranker, fake_engine: Any) -> None:
    docs = _docs()
    assert _ids(Qwen3Ranker(reranker=fake_reranker).run(query="q", documents=docs)) == ["d1", "d3", "d2", "d0"]
    ranker = Qwen3Ranker(reranker=fake_reranker, top_k=2, score_threshold=0.5)
    assert _ids(ranker.run(query="q", documents=docs)) == ["d1", "d3"]
    assert _ids(ranker.run(query="q", documents=docs, top_k=3)) == ["d1", "d3", "d2"]
    assert _ids(ranker.run(query="q", documents=docs, top_k=4)) == ["d1", "d3", "d2"]  # 0.2 is below 0.5
    assert _ids(ranker.run(query="q", documents=docs, top_k=4, score_threshold=0.0)) == ["d1", "d3", "d2", "d0"]
    assert ranker.run(query="q", documents=docs, score_threshold=0.95) == {"documents": []}
    assert ranker.top_k == 2 and ranker.score_threshold == 0.5  # per-run values do not stick
    # top_k=None is all documents, even when the injected Reranker has a default top_n of its own.
    assert len(Qwen3Ranker(reranker=Reranker(fake_engine, top_n=1), top_k=None).run(query="q", documents=docs)[
        "documents"]) == 4  # fmt: skip


def test_instruction_reaches_the_prompt(fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any) -> None:
    ranker = Qwen3Ranker(reranker=fake_reranker, instruction="Default zebra task")
    ranker.run(query="q", documents=_docs())
    assert "Default zebra task" in tiny_tokenizer.decode(fake_engine.seen[-1][0])
    ranker.run(query="q", documents=_docs(), instruction="Find okapi facts")
    assert "Find okapi facts" in tiny_tokenizer.decode(fake_engine.seen[-1][0])
    assert "zebra" not in tiny_tokenizer.decode(fake_engine.seen[-1][0])


def test_duplicates_by_id_are_ranked_once_keeping_the_best_scored(fake_reranker: Reranker, fake_engine: Any) -> None:
    first = Document(id="same", content="a [score=0.3]", score=1.0)
    better = Document(id="same", content="b [score=0.7]", score=2.0)
    other = Document(id="other", content="c [score=0.5]")
    result = Qwen3Ranker(reranker=fake_reranker).run(query="q", documents=[first, other, better])
    assert _ids(result) == ["same", "other"]
    assert result["documents"][0].content == "b [score=0.7]" and result["documents"][0].score == pytest.approx(0.7)
    assert len(fake_engine.seen[-1]) == 2


def test_meta_fields_are_scored_in_front_of_the_content(
    fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any
) -> None:
    docs = [
        Document(id="a", content="plain text", meta={"title": "Zebra guide [score=0.9]", "year": 2024}),
        Document(id="b", content="other text [score=0.4]", meta={"title": None}),
        Document(id="c", content=None, meta={"title": "only a title [score=0.6]"}),
    ]
    ranker = Qwen3Ranker(reranker=fake_reranker, meta_fields_to_embed=["title", "year"], embedding_separator=" | ")
    result = ranker.run(query="q", documents=docs)
    assert _ids(result) == ["a", "c", "b"]
    assert result["documents"][0].content == "plain text"  # the copy keeps its own content
    seen = [tiny_tokenizer.decode(ids) for ids in fake_engine.seen[-1]]
    assert "Zebra guide [score=0.9] | 2024 | plain text" in seen[0]
    assert "None" not in seen[1] and "other text [score=0.4]" in seen[1]
    assert "only a title [score=0.6] | " in seen[2]


async def test_async_run_uses_the_async_engine_only(fake_reranker: Reranker, fake_engine: Any) -> None:
    def forbidden(pairs: Any) -> Any:
        raise AssertionError("the sync engine method was called on the async path")

    fake_engine.score = forbidden
    result = await Qwen3Ranker(reranker=fake_reranker, top_k=1).run_async(query="q", documents=_docs())
    assert _ids(result) == ["d1"] and fake_engine.calls == ["ascore"]


# -- serialisation and secrets ---------------------------------------------------------------------
def test_to_dict_from_dict_round_trip_keeps_the_key_out(_no_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API_KEY, "sk-secret-123")
    ranker = Qwen3Ranker(
        engine="remote", base_url="http://127.0.0.1:1", engine_options={"max_retries": 0}, top_k=3,
        score_threshold=0.1, instruction="Find definitions", meta_fields_to_embed=["title"], embedding_separator=" ",
    )  # fmt: skip
    data = ranker.to_dict()
    assert data["type"] == "haystack_qwen3_rerank.ranker.Qwen3Ranker"
    assert data["init_parameters"]["api_key"] == {"type": "env_var", "env_vars": [ENV_API_KEY], "strict": False}
    assert "sk-secret" not in repr(data) and "sk-secret" not in repr(ranker)
    frozen = copy.deepcopy(data)
    again = Qwen3Ranker.from_dict(data)
    assert data == frozen  # from_dict does not modify what it reads
    assert again.to_dict() == data
    assert isinstance(again.api_key, Secret) and again.api_key.resolve_value() == "sk-secret-123"
    # In a pipeline file (YAML) too.
    pipeline = Pipeline()
    pipeline.add_component("ranker", ranker)
    text = pipeline.dumps()
    assert "sk-secret" not in text
    # Haystack 3 loads classes only from trusted modules (haystack, haystack_integrations, ...).
    trusted = {"allowed_modules": ["haystack_qwen3_rerank"]} if HAYSTACK_3 else {}
    if trusted:
        with pytest.raises(DeserializationError, match="not on the trusted-module allowlist"):
            Pipeline.loads(text)
    loaded = Pipeline.loads(text, **trusted).get_component("ranker")
    assert isinstance(loaded, Qwen3Ranker) and loaded.to_dict() == data


def test_to_dict_refuses_what_it_cannot_write_safely(_no_env: None, fake_reranker: Reranker) -> None:
    with pytest.raises(ValueError, match="Cannot serialize token-based secret"):
        Qwen3Ranker(engine="remote", base_url="http://127.0.0.1:1", api_key=Secret.from_token("sk-tok")).to_dict()
    for url in ("http://user:pw-777@127.0.0.1:1", ["http://a:1", "http://127.0.0.1:1/v1?token=tk-777"]):
        with pytest.raises(ValueError, match="base_url holds a password or query values") as err:
            Qwen3Ranker(engine="remote", base_url=url).to_dict()
        assert "777" not in str(err.value)
    with pytest.raises(ValueError, match="built with reranker= cannot be serialised"):
        Qwen3Ranker(reranker=fake_reranker).to_dict()
    with pytest.raises(ValueError, match="remote engine only"):
        Qwen3Ranker(api_key=Secret.from_token("sk-tok"), base_url="http://127.0.0.1:1")


def test_remote_key_is_resolved_from_the_secret_at_warm_up(_no_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    httpx = pytest.importorskip("httpx")
    requests: list[Any] = []
    transport = httpx.MockTransport(lambda request: requests.append(request) or httpx.Response(500))
    options = {"max_model_len": 512, "transport": transport}
    ranker = Qwen3Ranker(engine="remote", base_url="http://10.0.0.5:8000", model="org/served", engine_options=options)
    monkeypatch.setenv(ENV_API_KEY, "sk-env")  # read when the engine is built, not when configured
    ranker.warm_up()
    try:
        engine = ranker._get().engine
        assert engine._requester.headers().get("Authorization") == "Bearer sk-env"  # type: ignore[attr-defined]
    finally:
        ranker.close()
    assert requests == []  # building contacts nothing


# -- the engine's lifetime ---------------------------------------------------------------------------
async def test_warm_up_builds_once_and_close_releases(
    tiny_model: Path, fake_reranker: Reranker, fake_engine: Any
) -> None:
    ranker = Qwen3Ranker(model=str(tiny_model), engine_options=LOCAL)
    assert ranker._reranker is None
    ranker.warm_up()
    built = ranker._reranker
    assert built is not None and built.engine.name == "transformers"
    ranker.warm_up()
    await ranker.warm_up_async()
    assert ranker._reranker is built
    ranker.close()
    assert ranker._reranker is None
    with pytest.raises(Exception, match="closed"):
        built.rerank("q", ["a"])
    await ranker.warm_up_async()  # a closed component warms up again
    assert ranker._reranker is not None and ranker._reranker is not built
    await ranker.close_async()
    assert ranker._reranker is None
    injected = Qwen3Ranker(reranker=fake_reranker)
    injected.close()
    await injected.close_async()
    assert injected.run(query="q", documents=_docs()[:1])["documents"] and fake_engine.closed == 0


# -- real model: the same scores as the core ----------------------------------------------------------
async def test_scores_equal_the_cores_on_the_tiny_model(transformers_engine: Any, tiny_model: Path) -> None:
    texts = ["BM25 ranks documents by term frequency.", "Paris is the capital of France.", "", "bm25 " * 40]
    docs = [Document(content=t) for t in texts]
    core = Reranker(transformers_engine)
    expected = {r.index: r.score for r in core.rerank("what is BM25?", texts)}
    order = [r.index for r in core.rerank("what is BM25?", texts)]
    built = Qwen3Ranker(model=str(tiny_model), engine_options=LOCAL, top_k=None)
    try:
        for ranker in (Qwen3Ranker(reranker=core, top_k=None), built):
            for result in (ranker.run(query="what is BM25?", documents=docs),
                           await ranker.run_async(query="what is BM25?", documents=docs)):  # fmt: skip
                got = result["documents"]
                assert [d.id for d in got] == [docs[i].id for i in order]
                for d in got:
                    assert abs(d.score - expected[texts.index(d.content)]) <= 1e-6
    finally:
        built.close()


# -- in a real Haystack pipeline ---------------------------------------------------------------------
def _store() -> InMemoryDocumentStore:
    store = InMemoryDocumentStore()
    store.write_documents(
        [
            Document(id="bm25", content="BM25 ranks documents by term frequency [score=0.7]."),
            Document(id="tfidf", content="TF-IDF weighs term frequency by rarity [score=0.9]."),
            Document(id="paris", content="Paris is the capital of France; no term frequency here [score=0.1]."),
            Document(id="dune", content="Dune is a novel by Frank Herbert."),
        ]
    )
    return store


def _pipeline(cls: type, ranker: Qwen3Ranker, store: InMemoryDocumentStore) -> Any:
    pipeline = cls()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=3))
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def test_in_a_pipeline(fake_reranker: Reranker, fake_engine: Any) -> None:
    store = _store()
    stored = _snapshot(store.filter_documents())
    query = "term frequency"
    data = {"retriever": {"query": query}, "ranker": {"query": query, "top_k": 2}}
    result = _pipeline(Pipeline, Qwen3Ranker(reranker=fake_reranker), store).run(data)
    assert _ids(result["ranker"]) == ["tfidf", "bm25"]
    assert [d.score for d in result["ranker"]["documents"]] == pytest.approx([0.9, 0.7])
    assert fake_engine.calls == ["score"] and len(fake_engine.seen[-1]) == 3  # the retriever's top_k
    assert _snapshot(store.filter_documents()) == stored


async def test_in_an_async_pipeline(fake_reranker: Reranker, fake_engine: Any) -> None:
    store = _store()
    query = "term frequency"
    data = {"retriever": {"query": query}, "ranker": {"query": query, "top_k": 2}}
    result = await _pipeline(AsyncPipeline, Qwen3Ranker(reranker=fake_reranker), store).run_async(data)
    assert _ids(result["ranker"]) == ["tfidf", "bm25"]
    assert fake_engine.calls == ["ascore"]  # the pipeline awaited run_async, not run in a thread


def _expected(core: Reranker, store: InMemoryDocumentStore, query: str) -> list[tuple[str, float]]:
    retrieved = InMemoryBM25Retriever(document_store=store, top_k=3).run(query=query)["documents"]
    return [(retrieved[r.index].id, r.score) for r in core.rerank(query, [d.content for d in retrieved])]


def _check(got: list[Document], expected: list[tuple[str, float]]) -> None:
    assert [d.id for d in got] == [i for i, _ in expected]
    # The same engine scored both: equal up to vLLM's batch-composition noise.
    assert [d.score for d in got] == pytest.approx([s for _, s in expected], abs=1e-5)


@pytest.mark.parametrize("any_engine", ENGINES, indirect=True)
def test_in_a_pipeline_on_each_engine(any_engine: Any) -> None:
    core, store, query = Reranker(any_engine), _store(), "what is term frequency?"
    pipeline = _pipeline(Pipeline, Qwen3Ranker(reranker=core, top_k=None), store)
    result = pipeline.run({"retriever": {"query": query}, "ranker": {"query": query}})
    _check(result["ranker"]["documents"], _expected(core, store, query))


@pytest.mark.parametrize("any_engine", ENGINES, indirect=True)
async def test_in_an_async_pipeline_on_each_engine(any_engine: Any) -> None:
    core, store, query = Reranker(any_engine), _store(), "what is term frequency?"
    pipeline = _pipeline(AsyncPipeline, Qwen3Ranker(reranker=core, top_k=None), store)
    result = await pipeline.run_async({"retriever": {"query": query}, "ranker": {"query": query}})
    _check(result["ranker"]["documents"], _expected(core, store, query))
