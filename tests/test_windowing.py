"""``long_documents="window"`` on the embedded engine, checked against the official formula.

An over-budget document is split into overlapping token windows, every window of every document
goes to the engine in ONE call, the document's score is its best window's, and the result says
which window won. Each window's score equals the model card's formula on that window alone.
"""

from __future__ import annotations

import pytest

from qwen3_rerank import ConfigurationError, Reranker, prompts
from qwen3_rerank.engines import Engine
from qwen3_rerank.testing import reference_scores

MAX_LENGTH = 160
OVERLAP = 24
QUERY = "when was the printing press invented?"
LONG = " ".join(
    f"Paragraph {i}: movable type, ink and the screw press were combined by Gutenberg around 1440." for i in range(40)
)
SHORT = "Gutenberg's press printed the Bible in the 1450s."


class RecordingEngine(Engine):
    """Delegates to a real engine and records every call's sequences."""

    name = "recording"

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.calls: list[list[list[int]]] = []

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    def score(self, pairs):
        self.calls.append([list(p.input_ids) for p in pairs])
        return self.inner.score(pairs)

    async def ascore(self, pairs):
        self.calls.append([list(p.input_ids) for p in pairs])
        return await self.inner.ascore(pairs)


@pytest.fixture()
def recording(transformers_engine) -> RecordingEngine:
    return RecordingEngine(transformers_engine)


def _expected_windows(tok, query: str, document: str, max_length: int, overlap: int) -> list[list[int]]:
    """The windows, rebuilt from the tokenizer alone (independently of the encoder)."""
    prefix = tok.encode_template(prompts.SYSTEM_PREFIX)
    suffix = tok.encode_template(prompts.ASSISTANT_SUFFIX)
    q = tok.encode_plain([prompts.format_query(query)])[0]
    header = tok.encode_plain([prompts.DOCUMENT_HEADER])[0]
    body = tok.encode_plain([prompts.format_document(document)])[0][len(header) :]
    room = max_length - len(prefix) - len(q) - len(suffix) - len(header)
    stride = room - overlap
    windows, start = [], 0
    while True:
        windows.append(prefix + q + header + body[start : start + room] + suffix)
        if start + room >= len(body):
            return windows
        start += stride


def test_long_document_is_split_into_overlapping_windows_scored_in_one_call(recording, tiny_model):
    reranker = Reranker(recording, max_length=MAX_LENGTH, long_documents="window", window_overlap=OVERLAP)
    ranking = reranker.rerank(QUERY, [SHORT, LONG])

    assert len(recording.calls) == 1, "every window of every document must go to the engine in one call"
    sent = recording.calls[0]
    expected = _expected_windows(recording.tokenizer, QUERY, LONG, MAX_LENGTH, OVERLAP)
    assert len(expected) > 2
    assert sent[1:] == expected  # document 0 fits in one sequence, document 1 is all windows
    assert all(len(ids) <= MAX_LENGTH for ids in sent)

    # The windows overlap by exactly window_overlap tokens and together cover the whole body.
    tok = recording.tokenizer
    header = tok.encode_plain([prompts.DOCUMENT_HEADER])[0]
    body = tok.encode_plain([prompts.format_document(LONG)])[0][len(header) :]
    n_prefix = len(tok.encode_template(prompts.SYSTEM_PREFIX)) + len(tok.encode_plain([prompts.format_query(QUERY)])[0])
    n_suffix = len(tok.encode_template(prompts.ASSISTANT_SUFFIX))
    bodies = [ids[n_prefix + len(header) : len(ids) - n_suffix] for ids in expected]
    for a, b in zip(bodies, bodies[1:], strict=False):
        assert a[-OVERLAP:] == b[:OVERLAP]
    rebuilt = bodies[0] + [t for b in bodies[1:] for t in b[OVERLAP:]]
    assert rebuilt == body

    # Each window scored alone with the official formula; the document gets the best.
    ref = reference_scores(tiny_model, expected)
    by_index = {r.index: r for r in ranking}
    long_result = by_index[1]
    assert long_result.num_windows == len(expected)
    assert long_result.window == max(range(len(ref)), key=lambda k: ref[k])
    assert long_result.score == pytest.approx(max(ref), abs=1e-5)
    assert long_result.truncated is False
    assert long_result.num_tokens == len(expected[long_result.window])
    assert long_result.document == LONG

    short_result = by_index[0]
    assert short_result.num_windows == 1 and short_result.window is None
    assert short_result.score == pytest.approx(reference_scores(tiny_model, [sent[0]])[0], abs=1e-5)

    assert ranking.stats.pairs == 1 + len(expected)
    assert ranking.stats.truncated == 0
    assert ranking.stats.tokens == sum(len(s) for s in sent)


def test_default_stays_truncate(recording, tiny_model):
    reranker = Reranker(recording, max_length=MAX_LENGTH)
    assert reranker.long_documents == "truncate"
    ranking = reranker.rerank(QUERY, [LONG])
    assert len(recording.calls) == 1 and len(recording.calls[0]) == 1
    (result,) = ranking
    assert result.truncated is True and result.num_windows == 1 and result.window is None
    ids = recording.calls[0][0]
    assert len(ids) == MAX_LENGTH
    suffix = recording.tokenizer.encode_template(prompts.ASSISTANT_SUFFIX)
    assert ids[-len(suffix) :] == suffix
    # The truncated sequence is exactly the first window.
    assert ids == _expected_windows(recording.tokenizer, QUERY, LONG, MAX_LENGTH, OVERLAP)[0]
    assert result.score == pytest.approx(reference_scores(tiny_model, [ids])[0], abs=1e-5)
    assert ranking.stats.truncated == 1


def test_windows_of_several_queries_and_documents_in_one_call(recording, tiny_model):
    reranker = Reranker(recording, max_length=MAX_LENGTH, long_documents="window", window_overlap=OVERLAP)
    other = " ".join(f"Sentence {i} about paper, ink and books in early modern Europe." for i in range(50))
    rankings = reranker.rerank_many([QUERY, "who printed the first bible?"], [[LONG, SHORT], [other, LONG, SHORT]])
    assert len(recording.calls) == 1
    sent = recording.calls[0]
    ref = reference_scores(tiny_model, sent)
    assert [len(r) for r in rankings] == [2, 3]
    # The sequences are laid out query by query, document by document, windows in order.
    k = 0
    for ranking in rankings:
        by_index = {r.index: r for r in ranking}
        for i in range(len(ranking)):
            r = by_index[i]
            span = ref[k : k + r.num_windows]
            k += r.num_windows
            assert r.score == pytest.approx(max(span), abs=1e-5)
            if r.num_windows > 1:
                assert r.window == span.index(max(span))
            else:
                assert r.window is None
        scores = [r.score for r in ranking]
        assert scores == sorted(scores, reverse=True)
    assert k == len(sent)
    assert sum(r.num_windows > 1 for ranking in rankings for r in ranking) == 3


async def test_async_windowing_equals_sync(recording):
    reranker = Reranker(recording, max_length=MAX_LENGTH, long_documents="window", window_overlap=OVERLAP)
    sync = reranker.rerank(QUERY, [SHORT, LONG])
    asynchronous = await reranker.arerank(QUERY, [SHORT, LONG])
    assert len(recording.calls) == 2 and recording.calls[0] == recording.calls[1]
    assert [(r.index, r.window, r.num_windows) for r in sync] == [
        (r.index, r.window, r.num_windows) for r in asynchronous
    ]
    assert [r.score for r in sync] == pytest.approx([r.score for r in asynchronous], abs=1e-6)


def test_zero_overlap_windows_partition_the_document(recording):
    reranker = Reranker(recording, max_length=MAX_LENGTH, long_documents="window", window_overlap=0)
    (result,) = reranker.rerank(QUERY, [LONG])
    assert recording.calls[0] == _expected_windows(recording.tokenizer, QUERY, LONG, MAX_LENGTH, 0)
    assert result.num_windows == len(recording.calls[0])


@pytest.mark.parametrize("bad", [-1, 1.5, "8", None])
def test_window_overlap_must_be_a_non_negative_int(transformers_engine, bad):
    with pytest.raises(ValueError, match="window_overlap"):
        Reranker(transformers_engine, long_documents="window", window_overlap=bad)


def test_long_documents_must_be_truncate_or_window(transformers_engine):
    with pytest.raises(ValueError, match="long_documents"):
        Reranker(transformers_engine, long_documents="split")


def test_overlap_at_least_the_window_room_is_a_clear_error(transformers_engine):
    reranker = Reranker(transformers_engine, max_length=MAX_LENGTH, long_documents="window", window_overlap=MAX_LENGTH)
    with pytest.raises(ConfigurationError, match="window_overlap=160 must be smaller"):
        reranker.rerank(QUERY, [LONG])
    # A document that fits needs no windows, so the overlap is never used.
    assert len(reranker.rerank(QUERY, [SHORT])) == 1
