"""The core Reranker's own logic, with a fake engine (no model run)."""

from __future__ import annotations

import copy
import math

import pytest

from qwen3_rerank import ConfigurationError, InvalidScoreError, Qwen3Tokenizer, Ranking, Reranker, RerankResult
from tests.fakes import FakeEngine


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
