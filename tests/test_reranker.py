"""The core Reranker's own logic, with a fake engine (no model run)."""

from __future__ import annotations

import copy
import logging
import math

import pytest

from qwen3_rerank import (
    ConfigurationError,
    EngineError,
    InvalidScoreError,
    Qwen3Tokenizer,
    Ranking,
    Reranker,
    RerankPlan,
    RerankResult,
)
from tests.fakes import CountingTokenizer, FakeEngine, PositionalEngine


@pytest.fixture(scope="module")
def tok(tiny_model):
    return Qwen3Tokenizer.from_pretrained(tiny_model)


def make(tok, scores=None, **kw):
    engine = FakeEngine(tok, scores=scores)
    return Reranker(engine, **kw), engine


def test_sorted_desc_ties_in_input_order(tok):
    r, _ = make(tok, scores=[0.2, 0.9, 0.2, 0.9, 0.5])
    out = r.rerank("q", ["a", "b", "c", "d", "e"])
    assert isinstance(out, Ranking) and all(isinstance(x, RerankResult) for x in out)
    assert [x.index for x in out] == [1, 3, 4, 0, 2]
    assert [x.document for x in out] == ["b", "d", "e", "a", "c"]
    assert out[0].logit == pytest.approx(math.log(0.9 / 0.1))


def test_top_n_threshold_and_defaults(tok):
    r, _ = make(tok, scores=[0.2, 0.9, 0.6], top_n=2)
    assert [x.index for x in r.rerank("q", ["a", "b", "c"])] == [1, 2]
    assert [x.index for x in r.rerank("q", ["a", "b", "c"], top_n=1)] == [1]
    assert [x.index for x in r.rerank("q", ["a", "b", "c"], top_n=3, score_threshold=0.5)] == [1, 2]


def test_empty_documents_return_empty_without_engine_call(tok):
    r, engine = make(tok)
    out = r.rerank("q", [])
    assert out == [] and isinstance(out, Ranking) and engine.calls == []


async def test_empty_documents_async(tok):
    r, engine = make(tok)
    assert await r.arerank("q", []) == [] and engine.calls == []


def test_empty_string_documents_are_scored(tok):
    r, engine = make(tok, scores=[0.3, 0.4])
    out = r.rerank("q", ["", "x"])
    assert len(out) == 2 and engine.calls == ["score"] and {x.document for x in out} == {"", "x"}


@pytest.mark.parametrize("bad,index", [(["a", 3], 1), ([None], 0), (["a", "b", b"c"], 2)])
def test_non_string_document_names_its_index(tok, bad, index):
    r, engine = make(tok)
    with pytest.raises(TypeError, match=f"document {index} must be a str"):
        r.rerank("q", bad)
    assert engine.calls == []


def test_documents_as_a_single_string_is_refused(tok):
    r, _ = make(tok)
    with pytest.raises(TypeError, match="documents must be a list of str"):
        r.rerank("q", "just one string")


@pytest.mark.parametrize("top_n", [0, -1, 1.5, True])
def test_bad_top_n(tok, top_n):
    r, _ = make(tok, scores=[0.5])
    with pytest.raises(ValueError, match="top_n must be a positive int"):
        r.rerank("q", ["a"], top_n=top_n)
    with pytest.raises(ValueError, match="top_n"):
        Reranker(FakeEngine(tok), top_n=top_n)


def test_missing_query_says_what_to_pass(tok):
    r, _ = make(tok)
    with pytest.raises(ValueError, match="query is missing"):
        r.rerank(None, ["a"])
    with pytest.raises(TypeError, match="query 0 must be a str"):
        r.rerank(3, ["a"])


@pytest.mark.parametrize("bad", [float("nan"), "0.5", None, True])
def test_invalid_engine_scores_raise(tok, bad):
    r, _ = make(tok, scores=[0.5, bad])  # the fake passes a non-probability through as the log-odds
    with pytest.raises(InvalidScoreError, match="sequence 1"):
        r.rerank("q", ["a", "b"])


def test_numpy_logits_are_accepted_and_numpy_nan_is_refused(tok):
    np = pytest.importorskip("numpy")
    r, _ = make(tok, scores=[np.float32(2.0), np.float64(-1.0)])
    ranking = r.rerank("q", ["a", "b"])
    assert [x.index for x in ranking] == [0, 1] and type(ranking[0].logit) is float
    r, _ = make(tok, scores=[np.float32(2.0), np.float32("nan")])
    with pytest.raises(InvalidScoreError, match="sequence 1"):
        r.rerank("q", ["a", "b"])


def test_infinite_log_odds_are_probabilities_zero_and_one(tok):
    r, _ = make(tok, scores=[float("inf"), float("-inf")])
    assert [x.score for x in r.rerank("q", ["a", "b"])] == [1.0, 0.0]


def test_wrong_score_count_raises(tok):
    r, _ = make(tok, scores=[0.5])
    with pytest.raises(InvalidScoreError, match="1 scores for 2 sequences"):
        r.rerank("q", ["a", "b"])


def test_inputs_are_not_mutated(tok):
    r, _ = make(tok, scores=[0.1, 0.7, 0.4])
    docs = ["a", "b", "c"]
    before = copy.deepcopy(docs)
    r.rerank("q", docs)
    assert docs == before


def test_rerank_many_one_engine_call_in_query_order(tok):
    r, engine = make(tok, scores=[0.1, 0.9, 0.8, 0.2, 0.3])
    out = r.rerank_many(["q1", "q2", "q3"], [["a", "b"], [], ["c", "d", "e"]])
    assert engine.calls == ["score"] and len(engine.seen[0]) == 5
    assert [x.index for x in out[0]] == [1, 0]
    assert out[1] == []
    assert [x.index for x in out[2]] == [0, 2, 1]
    assert out[0].stats.pairs == 2 and out[2].stats.pairs == 3 and out[1].stats.pairs == 0


def test_rerank_many_length_mismatch(tok):
    r, _ = make(tok)
    with pytest.raises(ValueError, match="one list of documents per query"):
        r.rerank_many(["q1", "q2"], [["a"]])


async def test_async_uses_async_engine_path_only(tok):
    r, engine = make(tok, scores=[0.4, 0.6])
    out = await r.arerank("q", ["a", "b"])
    assert [x.index for x in out] == [1, 0] and engine.calls == ["ascore"]
    many = await r.arerank_many(["q"], [["a", "b"]])
    assert [x.index for x in many[0]] == [1, 0] and engine.calls == ["ascore", "ascore"]


def test_instruction_per_reranker_and_per_call(tok):
    r, engine = make(tok, scores=[0.5], instruction="Reranker-level")
    r.rerank("q", ["a"])
    r.rerank("q", ["a"], instruction="Call-level")
    texts = [tok.decode(seen[0]) for seen in engine.seen]
    assert "<Instruct>: Reranker-level\n" in texts[0] and "<Instruct>: Call-level\n" in texts[1]


def test_stats_and_truncated_flag(tok):
    r, _ = make(tok, scores=[0.5, 0.6], max_length=200)
    out = r.rerank("q", ["short", "long " * 1000])
    by_index = {x.index: x for x in out}
    assert by_index[1].truncated and not by_index[0].truncated
    assert by_index[1].num_tokens == 200
    assert out.stats.truncated == 1 and out.stats.pairs == 2 and out.stats.engine == "fake"
    assert out.stats.tokens == sum(x.num_tokens for x in out) and out.stats.seconds >= 0


def test_window_mode_takes_the_best_window(tok):
    engine = FakeEngine(tok)
    calls = []

    def score_fn(ids):
        calls.append(ids)
        return 0.9 if len(calls) == 3 else 0.1  # the third sequence: document 1's second window

    engine.score_fn = score_fn
    r = Reranker(engine, max_length=200, long_documents="window", window_overlap=16)
    out = r.rerank("q", ["short", " ".join(f"w{i}" for i in range(400))])
    best = out[0]
    assert best.index == 1 and best.window == 1 and best.num_windows > 2 and not best.truncated
    assert engine.calls == ["score"]


def test_engine_by_unknown_name(tok):
    with pytest.raises(ConfigurationError, match="unknown engine 'nope'"):
        Reranker("nope")


def test_engine_options_with_instance_refused(tok):
    with pytest.raises(TypeError, match="engine's constructor"):
        Reranker(FakeEngine(tok), model="x")


def test_bad_max_length_and_long_documents(tok):
    with pytest.raises(ValueError, match="max_length"):
        Reranker(FakeEngine(tok), max_length=0)
    with pytest.raises(ValueError, match="long_documents"):
        Reranker(FakeEngine(tok), long_documents="split")
    r = Reranker(FakeEngine(tok), max_length=20)
    with pytest.raises(ConfigurationError, match="max_length=20"):
        r.rerank("q", ["a"])


# -- every argument is checked before any tokenization or engine work -------------------------
@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"top_n": 0}, ValueError, "top_n must be a positive int"),
        ({"top_n": "3"}, ValueError, "top_n must be a positive int"),
        ({"score_threshold": 1.5}, ValueError, "score_threshold must be a probability"),
        ({"score_threshold": "0.5"}, ValueError, "score_threshold must be a probability"),
        ({"instruction": 3}, TypeError, "instruction must be a str"),
        ({"documents": ["ok", 3]}, TypeError, "document 1 must be a str"),
        ({"documents": ["ok", "broken \ud800 json"]}, ValueError, "document 1 contains a lone surrogate"),
        ({"query": "q\udc00"}, ValueError, "the query contains a lone surrogate"),
        ({"instruction": "find \ud800"}, ValueError, "the instruction contains a lone surrogate"),
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_bad_arguments_are_refused_before_tokenizing_or_scoring(tok, kwargs, error, message, mode):
    counting = CountingTokenizer(tok)
    engine = FakeEngine(counting, scores=[0.5, 0.6])
    r = Reranker(engine)
    call = {"query": "q", "documents": ["a", "b"], **kwargs}
    with pytest.raises(error, match=message):
        if mode == "sync":
            r.rerank(call.pop("query"), call.pop("documents"), **call)
        else:
            await r.arerank(call.pop("query"), call.pop("documents"), **call)
    assert engine.calls == [] and counting.calls == 0


def test_lone_surrogate_message_says_how_to_fix(tok):
    r, _ = make(tok)
    with pytest.raises(ValueError, match=r"document 3 contains a lone surrogate '\\ud800' at character 2") as info:
        r.rerank("q", ["a", "b", "c", "ab\ud800"])
    assert "broken JSON escape" in str(info.value) and "text.encode('utf-8', 'replace').decode()" in str(info.value)
    with pytest.raises(ValueError, match="document 0 of query 1 contains a lone surrogate"):
        r.rerank_many(["q", "r"], [["a"], ["\udfff"]])


# -- equal sequences are scored once and share the score ---------------------------------------
def test_identical_documents_share_one_score_and_keep_input_order(tok):
    engine = PositionalEngine(tok)  # a later row scores higher: different scores for equal rows
    r = Reranker(engine)
    out = r.rerank("q", ["short duplicate"] * 2)
    assert [x.index for x in out] == [0, 1] and out[0].score == out[1].score
    assert len(engine.seen[0]) == 1
    assert out.stats.pairs == 1 and out.stats.duplicates == 1 and out.stats.tokens == out[0].num_tokens


async def test_identical_sequences_across_queries_are_sent_once(tok):
    engine = PositionalEngine(tok)
    r = Reranker(engine)
    out = await r.arerank_many(["q", "q", "p"], [["a", "b"], ["b", "a", "a"], ["a"]])
    assert len(engine.seen[0]) == 3  # (q, a), (q, b), (p, a)
    assert [x.index for x in out[0]] == [1, 0] and [x.index for x in out[1]] == [0, 1, 2]
    assert {x.document: x.score for x in out[0]} == {x.document: x.score for x in out[1]}
    assert [o.stats.pairs for o in out] == [2, 0, 1] and [o.stats.duplicates for o in out] == [0, 3, 0]
    assert sum(o.stats.tokens for o in out) == sum(len(ids) for ids in engine.seen[0])


# -- truncation never loses the query silently ------------------------------------------------
def test_long_instruction_keeps_queries_apart(tok, caplog):
    """A 700-token instruction at max_length=512 used to push out the ``<Query>:`` line: both
    queries got identical sequences and scores with every result saying truncated=False."""
    engine = FakeEngine(tok, lambda ids: (hash(tuple(ids)) % 1000) / 1000)
    r = Reranker(engine, max_length=512, instruction="Judge relevance carefully. " * 175)
    with caplog.at_level(logging.WARNING, logger="qwen3_rerank"):
        a, b = r.rerank_many(["capital of France", "capital of Spain"], [["Paris."], ["Paris."]])
    assert engine.seen[0][0] != engine.seen[0][1] and a[0].score != b[0].score
    assert a.stats.instruction_truncated and not a.stats.query_truncated and not a[0].truncated
    assert "instruction was cut" in caplog.text and "query was cut" not in caplog.text


def test_a_cut_query_is_always_reported(tok, caplog):
    r, _ = make(tok, scores=[0.5], max_length=200)
    with caplog.at_level(logging.WARNING, logger="qwen3_rerank"):
        out = r.rerank("term " * 500, ["doc"])
    assert out.stats.query_truncated and out.stats.instruction_truncated
    assert "query was cut to fit max_length=200" in caplog.text
    short = r.rerank("q", ["doc"])
    assert not short.stats.query_truncated and not short.stats.instruction_truncated


# -- construction does no I/O; close releases what the reranker owns ---------------------------
class _LazyLimitEngine(FakeEngine):
    reads = 0

    @property
    def max_model_len(self):  # a RemoteEngine may ask its server for this
        type(self).reads += 1
        return 150

    @max_model_len.setter
    def max_model_len(self, value):
        pass


def test_max_model_len_is_read_on_first_use_not_in_the_constructor(tok):
    engine = _LazyLimitEngine(tok, scores=[0.5])
    r = Reranker(engine, max_length=512)
    assert _LazyLimitEngine.reads == 0 and "max_length=512" in repr(r)
    assert r.rerank("q", ["x " * 400])[0].num_tokens == 150
    assert r.max_length == 150 and _LazyLimitEngine.reads == 1


def test_close_releases_an_owned_engine_once_and_leaves_an_injected_one(tok, monkeypatch):
    owned = FakeEngine(tok, scores=[0.5])
    monkeypatch.setattr("qwen3_rerank._reranker.create_engine", lambda name, **options: owned)
    r = Reranker("transformers", model="m")
    assert r.rerank("q", ["a"])
    r.close()
    r.close()
    assert owned.closed == 1
    with pytest.raises(EngineError, match="Reranker is closed"):
        r.rerank("q", ["a"])
    injected = FakeEngine(tok, scores=[0.5])
    with Reranker(injected) as r2:
        r2.rerank("q", ["a"])
    assert injected.closed == 0 and injected.score([]) is not None


async def test_async_close_and_context_manager(tok, monkeypatch):
    owned = FakeEngine(tok, scores=[0.5])
    monkeypatch.setattr("qwen3_rerank._reranker.create_engine", lambda name, **options: owned)
    async with Reranker("transformers") as r:
        assert await r.arerank("q", ["a"])
    assert owned.closed == 1
    with pytest.raises(EngineError, match="closed"):
        await r.arerank("q", ["a"])


def test_plan_is_public_and_matches_what_is_scored(tok):
    r, engine = make(tok, scores=[0.5, 0.5], max_length=200, long_documents="window", window_overlap=8)
    plan = r.plan(["q"], [["short", "w " * 400]])
    assert isinstance(plan, RerankPlan) and plan.max_length == 200
    assert [len(d.sequences) for d in plan.queries[0].planned][0] == 1
    engine.fixed = [0.5] * len(plan.pairs)
    r.rerank("q", ["short", "w " * 400])
    assert engine.seen[0] == [p.input_ids for p in plan.pairs]
