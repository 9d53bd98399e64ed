"""Tests of llama-index-postprocessor-qwen3-rerank.

Our own logic (copies, guards, top_n, thresholds, events, which engine method runs) runs on a
recording fake engine behind the real core ``Reranker``; the query engines run end to end on each
real engine (transformers, in-process vLLM, a vLLM server) with the tiny model. Only the LLM and
the embeddings are mocks (MockLLM echoes its prompt, MockEmbedding is constant).
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import llama_index.postprocessor.qwen3_rerank as package
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.qwen3_rerank import RETRIEVAL_SCORE_KEY, STATS_PAYLOAD_KEY, Qwen3Rerank
from pydantic import Field, ValidationError

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


def _nodes() -> list[NodeWithScore]:
    texts = ["low [score=0.2]", "best [score=0.9]", "mid [score=0.6]", "good [score=0.8]"]
    return [
        NodeWithScore(
            node=TextNode(text=t, id_=f"n{i}", metadata={"author": f"a{i}", "nested": {"k": [i]}}),
            score=0.1 * (i + 1),
        )
        for i, t in enumerate(texts)
    ]


def _snapshot(nodes: list[NodeWithScore]) -> list[Any]:
    return [(copy.deepcopy(n.node.model_dump()), n.score) for n in nodes]


class _Events(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "_Events"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
            self.events.append(event)


@pytest.fixture
def instrumentation_events() -> Any:
    root = get_dispatcher()
    handler = _Events(events=[])
    root.add_event_handler(handler)
    yield handler.events
    root.event_handlers.remove(handler)


# -- the class is what LlamaIndex expects -------------------------------------------------------
def test_public_api() -> None:
    assert package.__all__ == sorted(package.__all__) == ["Qwen3Rerank", "RETRIEVAL_SCORE_KEY", "STATS_PAYLOAD_KEY"]


def test_namespace_package_layout() -> None:
    root = REPO / "integrations" / "llama-index" / "llama_index"
    assert not (root / "__init__.py").exists() and not (root / "postprocessor" / "__init__.py").exists()


def test_is_a_node_postprocessor(fake_reranker: Reranker) -> None:
    rerank = Qwen3Rerank(reranker=fake_reranker)
    assert isinstance(rerank, BaseNodePostprocessor)
    assert Qwen3Rerank.class_name() == "Qwen3Rerank" and Qwen3Rerank().to_dict()["class_name"] == "Qwen3Rerank"
    assert rerank.top_n == 3 and rerank.metadata_mode == MetadataMode.EMBED and rerank.keep_retrieval_score is False
    assert rerank.reranker is fake_reranker


def test_fields_are_validated(fake_reranker: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Qwen3Rerank(topn=3)
    with pytest.raises(ValidationError, match="use None for all"):
        Qwen3Rerank(top_n=0)
    with pytest.raises(ValidationError):
        Qwen3Rerank(score_threshold=-0.1)
    with pytest.raises(ValueError, match="either reranker= or engine settings"):
        Qwen3Rerank(reranker=fake_reranker, model="x")
    with pytest.raises(ValidationError, match="engine='remote'"):
        Qwen3Rerank(base_url="http://127.0.0.1:1")
    with pytest.raises(ValidationError, match="needs base_url"):
        Qwen3Rerank(engine="remote")
    monkeypatch.setenv("QWEN3_RERANK_API_KEY", "sk-secret")
    rerank = Qwen3Rerank(engine="remote", base_url="http://127.0.0.1:1")
    assert rerank.api_key is not None and rerank.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(rerank) and "sk-secret" not in rerank.to_json()


def test_engine_is_built_lazily_from_settings(tiny_model: Path) -> None:
    rerank = Qwen3Rerank(model=str(tiny_model), engine_options={"device": "cpu", "dtype": "float32"}, top_n=1)
    assert rerank._slot.current is None
    assert rerank.postprocess_nodes([], query_str="q") == []
    assert rerank._slot.current is None
    assert len(rerank.postprocess_nodes(_nodes(), query_str="q")) == 1
    assert rerank.reranker.engine.name == "transformers"
    rerank.close()
    assert rerank._slot.current is None


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
    engine = built.reranker.engine
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
    assert built._model_name == str(tiny_model) and built._slot.current is None  # the events name it unbuilt
    try:
        assert built.reranker.engine.model_name == str(tiny_model)
    finally:
        built.close()


# -- guards, copies, top_n, threshold -----------------------------------------------------------
async def test_empty_input_returns_empty_without_engine_call(fake_reranker: Reranker, fake_engine: Any) -> None:
    rerank = Qwen3Rerank(reranker=fake_reranker)
    assert rerank.postprocess_nodes([], query_str="q") == []
    assert await rerank.apostprocess_nodes([], query_str="q") == []
    assert fake_engine.calls == []


async def test_missing_query_says_what_to_pass(fake_reranker: Reranker, fake_engine: Any) -> None:
    rerank = Qwen3Rerank(reranker=fake_reranker)
    with pytest.raises(ValueError, match="query_str="):
        rerank.postprocess_nodes(_nodes())
    with pytest.raises(ValueError, match="query_str="):
        await rerank.apostprocess_nodes(_nodes())
    assert fake_engine.calls == []


async def test_returns_new_nodes_and_never_mutates_input(fake_reranker: Reranker) -> None:
    rerank = Qwen3Rerank(reranker=fake_reranker, top_n=None, keep_retrieval_score=True)
    nodes = _nodes()
    before = _snapshot(nodes)
    for out in (rerank.postprocess_nodes(nodes, query_str="q"), await rerank.apostprocess_nodes(nodes, query_str="q")):
        assert _snapshot(nodes) == before
        assert [n.node.node_id for n in out] == ["n1", "n3", "n2", "n0"]
        assert [n.score for n in out] == pytest.approx([0.9, 0.8, 0.6, 0.2])
        assert not any(o is n or o.node is n.node or o.node.metadata is n.node.metadata for o in out for n in nodes)
        # The copies own their metadata dict and exclusion lists (metadata values are shared).
        out[0].node.metadata["author"] = "changed"
        out[0].node.excluded_llm_metadata_keys.append("author")
        out[0].score = 0.0
        assert _snapshot(nodes) == before


def test_keep_retrieval_score_stays_out_of_llm_and_embedding_text(fake_reranker: Reranker) -> None:
    nodes = _nodes()
    out = Qwen3Rerank(reranker=fake_reranker, top_n=1, keep_retrieval_score=True).postprocess_nodes(
        nodes, query_str="q"
    )
    [best] = out
    assert best.node.metadata[RETRIEVAL_SCORE_KEY] == pytest.approx(0.2)  # n1's retriever score
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        text = best.node.get_content(metadata_mode=mode)
        assert "author: a1" in text and RETRIEVAL_SCORE_KEY not in text
    assert RETRIEVAL_SCORE_KEY in best.node.get_content(metadata_mode=MetadataMode.ALL)
    assert RETRIEVAL_SCORE_KEY not in nodes[1].node.metadata
    plain = Qwen3Rerank(reranker=fake_reranker, top_n=1).postprocess_nodes(nodes, query_str="q")
    assert RETRIEVAL_SCORE_KEY not in plain[0].node.metadata


def test_metadata_mode_chooses_the_text_the_model_reads(
    fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any
) -> None:
    nodes = _nodes()
    nodes[0].node.excluded_embed_metadata_keys = ["nested"]
    Qwen3Rerank(reranker=fake_reranker).postprocess_nodes(nodes[:1], query_str="q")
    Qwen3Rerank(reranker=fake_reranker, metadata_mode=MetadataMode.NONE).postprocess_nodes(nodes[:1], query_str="q")
    embed_text, none_text = (tiny_tokenizer.decode(call[0]) for call in fake_engine.seen)
    assert "author: a0" in embed_text and "nested" not in embed_text
    assert "author" not in none_text and "low [score=0.2]" in none_text


def test_top_n_and_score_threshold(fake_reranker: Reranker, fake_engine: Any) -> None:
    def ids(**kw: Any) -> list[str]:
        return [
            n.node.node_id for n in Qwen3Rerank(reranker=fake_reranker, **kw).postprocess_nodes(_nodes(), query_str="q")
        ]

    assert ids() == ["n1", "n3", "n2"]
    assert ids(top_n=1) == ["n1"]
    assert ids(top_n=None) == ["n1", "n3", "n2", "n0"]
    assert ids(top_n=None, score_threshold=0.6) == ["n1", "n3", "n2"]
    assert ids(score_threshold=0.95) == []
    # top_n=None is "all" even when the injected Reranker has its own default.
    assert (
        len(Qwen3Rerank(reranker=Reranker(fake_engine, top_n=1), top_n=None).postprocess_nodes(_nodes(), query_str="q"))
        == 4
    )


def test_instruction_reaches_the_prompt(fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any) -> None:
    Qwen3Rerank(reranker=fake_reranker, instruction="Find the zebra facts").postprocess_nodes(_nodes(), query_str="q")
    assert "Find the zebra facts" in tiny_tokenizer.decode(fake_engine.seen[-1][0])


async def test_async_path_uses_the_async_engine_only(fake_reranker: Reranker, fake_engine: Any) -> None:
    def forbidden(pairs: Any) -> Any:
        raise AssertionError("the sync engine method was called on the async path")

    fake_engine.score = forbidden
    out = await Qwen3Rerank(reranker=fake_reranker).apostprocess_nodes(_nodes(), query_bundle=QueryBundle("q"))
    assert [n.node.node_id for n in out] == ["n1", "n3", "n2"]
    assert fake_engine.calls == ["ascore"]


async def test_metadata_values_are_shared_never_copied(fake_reranker: Reranker) -> None:
    # A lock (or a client, a file handle) cannot be deep-copied or pickled; it must not fail the call.
    lock = threading.Lock()
    nodes = [
        NodeWithScore(node=TextNode(text=f"doc [score=0.{i + 1}]", metadata={"lock": lock}), score=0.5)
        for i in range(3)
    ]
    for node in nodes:
        node.node.excluded_embed_metadata_keys = ["lock"]
    before = [(n.node.metadata.copy(), list(n.node.excluded_llm_metadata_keys), n.score) for n in nodes]
    rerank = Qwen3Rerank(reranker=fake_reranker, top_n=2)
    for out in (rerank.postprocess_nodes(nodes, query_str="q"), await rerank.apostprocess_nodes(nodes, query_str="q")):
        assert [n.node.get_content() for n in out] == ["doc [score=0.3]", "doc [score=0.2]"]
        assert all(n.node.metadata["lock"] is lock for n in out)
    assert [(n.node.metadata, n.node.excluded_llm_metadata_keys, n.score) for n in nodes] == before


def test_metadata_holds_logit_and_truncation_out_of_llm_text(fake_engine: Any) -> None:
    nodes = [
        NodeWithScore(node=TextNode(text="[score=0.9] " + "word " * 200, id_="long"), score=0.5),
        NodeWithScore(node=TextNode(text="short [score=0.3]", id_="short"), score=0.5),
    ]
    out = Qwen3Rerank(reranker=Reranker(fake_engine, max_length=96), top_n=None).postprocess_nodes(nodes, query_str="q")
    assert [n.node.metadata["rerank_truncated"] for n in out] == [True, False]
    for n, p in zip(out, (0.9, 0.3), strict=True):
        assert n.score == pytest.approx(p)
        assert n.node.metadata["rerank_logit"] == pytest.approx(math.log(p / (1 - p)))
        assert "rerank_window" not in n.node.metadata
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            assert "rerank_" not in n.node.get_content(metadata_mode=mode)


async def test_window_mode_metadata(fake_engine: Any) -> None:
    windowed = Reranker(fake_engine, max_length=96, long_documents="window", window_overlap=4)
    nodes = [
        NodeWithScore(node=TextNode(text="word " * 200 + "[score=0.9]"), score=0.5),
        NodeWithScore(node=TextNode(text="short [score=0.3]"), score=0.5),
    ]
    rerank = Qwen3Rerank(reranker=windowed, top_n=None, metadata_mode=MetadataMode.NONE)
    for first, second in (
        rerank.postprocess_nodes(nodes, query_str="q"),
        await rerank.apostprocess_nodes(nodes, query_str="q"),
    ):
        assert first.score == pytest.approx(0.9) and first.node.metadata["rerank_num_windows"] > 1
        assert first.node.metadata["rerank_window"] == first.node.metadata["rerank_num_windows"] - 1
        assert second.node.metadata["rerank_window"] is None and second.node.metadata["rerank_num_windows"] == 1


def test_long_metadata_cannot_push_the_content_out(fake_engine: Any, tiny_tokenizer: Any) -> None:
    # The model reads content first: cut to max_length, the metadata goes, not the content.
    long_metadata = {"summary": "background " * 300}
    nodes = [
        NodeWithScore(node=TextNode(text=f"passage [score={p}]", metadata=long_metadata), score=0.5)
        for p in (0.2, 0.9, 0.6)
    ]
    out = Qwen3Rerank(reranker=Reranker(fake_engine, max_length=128), top_n=None).postprocess_nodes(
        nodes, query_str="q"
    )
    assert [n.score for n in out] == pytest.approx([0.9, 0.6, 0.2])  # distinct: each content was scored
    assert all(n.node.metadata["rerank_truncated"] for n in out)
    seen = tiny_tokenizer.decode(fake_engine.seen[-1][0])
    assert seen.index("passage [score=0.2]") < seen.index("summary: background")


# -- per-call options ------------------------------------------------------------------------------
async def test_per_call_top_n_and_instruction(fake_reranker: Reranker, fake_engine: Any, tiny_tokenizer: Any) -> None:
    rerank = Qwen3Rerank(reranker=fake_reranker, top_n=3, instruction="Default task")
    out = rerank.postprocess_nodes(_nodes(), query_str="q", top_n=1, instruction="Find zebras")
    assert [n.node.node_id for n in out] == ["n1"]
    assert "Find zebras" in tiny_tokenizer.decode(fake_engine.seen[-1][0])
    out = await rerank.apostprocess_nodes(_nodes(), query_bundle=QueryBundle("q"), top_n=None)
    assert len(out) == 4 and "Default task" in tiny_tokenizer.decode(fake_engine.seen[-1][0])
    assert len(rerank.postprocess_nodes(_nodes(), query_str="q")) == 3  # the constructor's options stay the defaults
    with pytest.raises(ValueError, match="use None for all"):
        rerank.postprocess_nodes(_nodes(), query_str="q", top_n=0)
    with pytest.raises(ValueError, match="Cannot specify both"):
        rerank.postprocess_nodes(_nodes(), query_bundle=QueryBundle("q"), query_str="q")


# -- settings ---------------------------------------------------------------------------------------
def test_api_key_parameter_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API_KEY, "sk-env")
    rerank = Qwen3Rerank(engine="remote", base_url="http://127.0.0.1:1", api_key="sk-param")
    assert rerank.api_key is not None and rerank.api_key.get_secret_value() == "sk-param"
    monkeypatch.delenv(ENV_API_KEY)
    assert Qwen3Rerank(engine="remote", base_url="http://127.0.0.1:1").api_key is None


def test_serialisation_round_trip_and_refusal(fake_reranker: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_API_KEY, raising=False)
    rerank = Qwen3Rerank(
        engine="remote", base_url="http://127.0.0.1:1", model="org/served", top_n=5, instruction="Find zebras",
        metadata_mode=MetadataMode.LLM, engine_options={"max_retries": 0}, api_key="sk-secret",
    )  # fmt: skip
    fields = ("engine", "base_url", "model", "top_n", "instruction", "metadata_mode", "engine_options")
    for copy_ in (Qwen3Rerank.from_dict(rerank.to_dict()), Qwen3Rerank.from_json(rerank.to_json())):
        assert {f: getattr(copy_, f) for f in fields} == {f: getattr(rerank, f) for f in fields}
        assert copy_.api_key is None  # never serialised: it comes back from the environment
    assert "sk-secret" not in rerank.to_json()
    injected = Qwen3Rerank(reranker=fake_reranker)
    for serialise in (injected.to_dict, injected.to_json, lambda: pickle.dumps(injected)):
        with pytest.raises(TypeError, match="built with reranker=.*Build it from settings"):
            serialise()


# -- events -------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_async", [False, True])
async def test_instrumentation_and_callback_events(
    fake_reranker: Reranker, instrumentation_events: list[BaseEvent], use_async: bool
) -> None:
    debug = LlamaDebugHandler()
    rerank = Qwen3Rerank(reranker=fake_reranker, top_n=2, callback_manager=CallbackManager([debug]))
    nodes = _nodes()
    if use_async:
        out = await rerank.apostprocess_nodes(nodes, query_str="q")
    else:
        out = rerank.postprocess_nodes(nodes, query_str="q")

    start, end = instrumentation_events
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    # Both paths emit their events inside the postprocessor's own span.
    method = "_apostprocess_nodes" if use_async else "_postprocess_nodes"
    assert start.span_id is not None and start.span_id.startswith(f"Qwen3Rerank.{method}-")
    assert end.span_id == start.span_id
    assert start.query.query_str == "q" and start.nodes == nodes and start.top_n == 2 and start.model_name
    assert end.nodes == out

    [(cb_start, cb_end)] = debug.get_event_pairs(CBEventType.RERANKING)
    assert cb_start.payload[EventPayload.QUERY_STR] == "q" and cb_start.payload[EventPayload.TOP_K] == 2
    assert cb_end.payload[EventPayload.NODES] == out
    stats = cb_end.payload[STATS_PAYLOAD_KEY]
    assert stats["pairs"] == 4 and stats["tokens"] > 0 and stats["engine"] == "fake" and stats["documents"] == 4
    assert stats["truncated"] == 0 and stats["seconds"] >= 0


# -- real query engines, each engine -------------------------------------------------------------
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
def index() -> VectorStoreIndex:
    nodes = [TextNode(text=p, id_=f"p{i}", metadata={"source": f"s{i}"}) for i, p in enumerate(PASSAGES)]
    return VectorStoreIndex(nodes=nodes, embed_model=MockEmbedding(embed_dim=8))


@pytest.mark.parametrize("any_engine", ENGINES, indirect=True)
async def test_query_engines_end_to_end(any_engine: Any, index: VectorStoreIndex) -> None:
    core = Reranker(any_engine)
    rerank = Qwen3Rerank(reranker=core, top_n=3, keep_retrieval_score=True)
    query = "how do rerankers score documents?"
    retriever = index.as_retriever(similarity_top_k=6)
    candidates = retriever.retrieve(query)
    before = _snapshot(candidates)
    # The model reads the content, then the metadata.
    texts = [f"{n.node.get_content()}\n\n{n.node.get_metadata_str(MetadataMode.EMBED)}" for n in candidates]
    expected = core.rerank(query, texts, top_n=3)
    expected_ids = [candidates[r.index].node.node_id for r in expected]

    engines = {
        "VectorStoreIndex.as_query_engine": index.as_query_engine(
            llm=MockLLM(), similarity_top_k=6, node_postprocessors=[rerank]
        ),
        "RetrieverQueryEngine": RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[rerank]),
    }
    for name, query_engine in engines.items():
        for response in (query_engine.query(query), await query_engine.aquery(query)):
            got = response.source_nodes
            assert [n.node.node_id for n in got] == expected_ids, name
            assert [n.score for n in got] == pytest.approx([r.score for r in expected], abs=1e-5), name
            assert all(RETRIEVAL_SCORE_KEY in n.node.metadata for n in got)
            # MockLLM echoes its prompt: the reranked passages reached it, the retrieval score did not.
            assert candidates[expected[0].index].node.get_content() in str(response)
            assert RETRIEVAL_SCORE_KEY not in str(response)
    assert _snapshot(candidates) == before


# -- the example ------------------------------------------------------------------------------
def test_example_runs_offline() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "llamaindex_rag.py"), "--engine", "transformers", "--top-n", "3"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOM weights" in result.stdout
    assert result.stdout.count("score=") >= 3


# -- installation -------------------------------------------------------------------------------
def test_readme_install_lines_install_what_the_snippets_import() -> None:
    from tests_support.readme_installs import missing_installs

    package = REPO / "integrations" / "llama-index"
    module = "llama_index.postprocessor.qwen3_rerank"
    assert missing_installs(package / "README.md", package / "pyproject.toml", module) == []


def test_engine_extras_match_the_core() -> None:
    import tomllib

    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ours = tomllib.loads((REPO / "integrations" / "llama-index" / "pyproject.toml").read_text())["project"]
    for extra in ("torch", "vllm", "http", "all"):
        assert extra in core and ours["optional-dependencies"][extra] == [f"qwen3-rerank[{extra}]>=0.1.0"]


def test_modules_stay_small() -> None:
    for module in Path(package.__file__).parent.glob("*.py"):
        assert module.read_text(encoding="utf-8").count("\n") < 300, module.name


# -- the settings contract both integrations keep (tests_support/integration_contract.py) ---------


def _rank_texts(rerank: Qwen3Rerank, texts: list[str], query: str) -> list[int]:
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(texts)]
    return [int(n.node.node_id) for n in rerank.postprocess_nodes(nodes, query_str=query)]


@pytest.fixture()
def integration() -> Integration:
    return Integration(
        cls=Qwen3Rerank,
        rank=_rank_texts,
        serialised=lambda obj: [str(obj.model_dump()), obj.model_dump_json(), obj.to_json(), str(obj.to_dict())],
        reranker_of=lambda obj: obj.reranker,
        built=lambda obj: obj._slot.current,
    )
