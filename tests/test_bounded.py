"""A long document is tokenized only as far as it is kept, with exactly the whole text's ids (issue 25, item 11)."""

from __future__ import annotations

import random

import pytest

from qwen3_rerank import Qwen3Tokenizer, prompts
from qwen3_rerank import _bounded as bounded
from qwen3_rerank._encoding import PairEncoder


@pytest.fixture(scope="module")
def tok(tiny_model):
    return Qwen3Tokenizer.from_pretrained(tiny_model)


def _corpus() -> list[str]:
    """Texts that stress the pre-tokenizer: whitespace runs, code, CJK, contractions, marks, digits, emoji."""
    rng = random.Random(7)
    words = [
        "the", "printing", "press", "it's", "we'll", "Gutenberg", "1440", "3.14159", "naïve", "café",
        "e\u0301", "Ǆ", "ﬁ", "抹茶是一种日本绿茶粉", "北京。", "，", "、", "「引用」", "Ümlaut", "straße",
        "x=1;", "def f(a, b):", "    return a + b", "\t\t", "\r\n", "\n\n\n", "   ", "--", "...", "—",
        "’s", "don’t", "🙂", "👩‍💻", "\u200b", "\u00a0", "Ⅻ", "½", "٣٤", "Ελληνικά", "русский", "<think>",
        "<|im_end|>", "_under_score_", "ALLCAPS", "a" * 40, "9" * 12, "http://example.com/a?b=c",
    ]  # fmt: skip
    texts = []
    for _ in range(12):
        parts = [rng.choice(words) for _ in range(rng.randint(50, 400))]
        seps = [rng.choice([" ", "", "\n", "  ", "\t", "。", ", "]) for _ in parts]
        texts.append("".join(p + s for p, s in zip(parts, seps, strict=True)))
    return texts


def test_the_pieces_at_every_safe_cut_join_to_the_whole_texts_ids(tok):
    checked = 0
    for text in _corpus():
        whole = tok.encode_plain([text])[0]
        cuts = {bounded.safe_cut(text, p) for p in range(1, len(text))} - {len(text)}
        assert cuts, "the corpus must offer cuts"
        heads = tok.encode_plain([text[:i] for i in sorted(cuts)])
        tails = tok.encode_plain([text[i:] for i in sorted(cuts)])
        for i, head, tail in zip(sorted(cuts), heads, tails, strict=True):
            assert head + tail == whole, (i, text[max(0, i - 10) : i + 10])
            checked += 1
    assert checked > 500


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few hundred characters: the bounded path runs on texts the tests can tokenize whole."""
    monkeypatch.setattr(bounded, "CHUNK_CHARS", 256)
    monkeypatch.setattr(bounded, "CHARS_PER_TOKEN", 1)


@pytest.mark.parametrize("long_documents", ["truncate", "window"])
@pytest.mark.parametrize("max_length", [128, 300, 2048])
def test_plans_are_token_identical_to_whole_text_tokenization(tok, monkeypatch, long_documents, max_length):
    docs = [*_corpus(), " ".join(_corpus()), "short one", "", "Beijing is the capital of China."]
    queries = ["what is this about?", "抹茶"]
    options = {"max_length": max_length, "long_documents": long_documents, "window_overlap": 16}
    monkeypatch.setattr(bounded, "CHUNK_CHARS", 1 << 40)  # every text whole: what was done before
    expected = PairEncoder(tok).plan(queries, [docs, docs[:5]], **options)
    monkeypatch.setattr(bounded, "CHUNK_CHARS", 256)
    monkeypatch.setattr(bounded, "CHARS_PER_TOKEN", 1)
    got = PairEncoder(tok).plan(queries, [docs, docs[:5]], **options)
    assert [p.input_ids for p in got.pairs] == [p.input_ids for p in expected.pairs]
    assert got.queries == expected.queries  # the same truncation flags, windows and query cuts
    if long_documents == "truncate":
        assert any(p.truncated for p in got.queries[0].planned) and not got.queries[0].planned[-1].truncated
    else:
        assert any(len(p.sequences) > 1 for p in got.queries[0].planned)


class CharCounting:
    """A tokenizer that counts the characters it is asked to tokenize."""

    def __init__(self, inner):
        self.inner, self.chars, self.longest = inner, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_plain(self, texts):
        self.chars += sum(len(t) for t in texts)
        self.longest = max([self.longest, *(len(t) for t in texts)])
        return self.inner.encode_plain(texts)


def test_a_10_mb_document_is_tokenized_only_as_far_as_it_is_kept(tok):
    sentence = "The printing press spread movable type across Europe and changed how knowledge was read. "
    huge = sentence * (10_000_000 // len(sentence))
    counting = CharCounting(tok)
    plan = PairEncoder(counting).plan(["history of printing"], [[huge, "short"]], max_length=8192)
    assert counting.chars < 200_000  # 10 MB before: 1.6 GB of tokenizer memory
    (doc, short) = plan.queries[0].planned
    assert doc.truncated and not short.truncated
    assert len(plan.pairs[doc.sequences[0]].input_ids) == 8192
    # Exactly the whole text's ids: checked on a 1 MB prefix, which the test can tokenize whole.
    one_mb = huge[:1_000_000]
    cut = PairEncoder(tok).plan(["history of printing"], [[one_mb]], max_length=8192).pairs[0].input_ids
    whole = tok.encode_plain([prompts.format_document(one_mb)])[0]
    encoder = PairEncoder(tok)
    start = _head_length(encoder, cut)
    doc_part = cut[start : len(cut) - len(encoder.suffix_ids)]
    assert len(doc_part) > 8000 and doc_part == whole[: len(doc_part)]


def _head_length(encoder, pair):
    """Tokens before the document part of ``pair`` (prefix, instruction and query)."""
    return next(i for i in range(len(pair)) if pair[i : i + len(encoder.header_ids)] == encoder.header_ids)


def test_window_mode_tokenizes_in_pieces_with_the_same_windows(tok, monkeypatch):
    text = " ".join(_corpus()) * 6  # about 100k characters
    assert len(text) > bounded.CHUNK_CHARS
    counting = CharCounting(tok)
    got = PairEncoder(counting).plan(["q"], [[text]], max_length=2048, long_documents="window")
    assert counting.longest <= bounded.CHUNK_CHARS + 200  # no call tokenized the whole text
    monkeypatch.setattr(bounded, "CHUNK_CHARS", 1 << 40)
    expected = PairEncoder(tok).plan(["q"], [[text]], max_length=2048, long_documents="window")
    assert [p.input_ids for p in got.pairs] == [p.input_ids for p in expected.pairs]
    assert len(got.pairs) > 3
