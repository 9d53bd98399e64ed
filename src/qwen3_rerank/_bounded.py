"""Tokenizing a long text only as far as it is kept, exactly.

A document longer than the room ``max_length`` leaves it is cut anyway: tokenizing all of a 10 MB
document to keep 8,000 tokens of it costs gigabytes. :func:`encode_bounded` tokenizes a long text
in pieces cut where Qwen3's tokenizer itself starts a new piece (:func:`safe_cut`), so the
pieces' ids, joined, are exactly the whole text's ids, and stops once it has the ids it keeps.
Texts that are short enough are tokenized whole, in one batch call, as before.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from ._tokenizer import Tokenizer

__all__ = ["CHARS_PER_TOKEN", "CHUNK_CHARS", "encode_bounded", "safe_cut"]

CHARS_PER_TOKEN = 8
"""Characters per token assumed for the first piece of a truncated document: generous (Qwen3
averages about 4 in English), so that one piece is usually enough; exactness never depends on it."""
CHUNK_CHARS = 1 << 16
"""Characters per piece when every token is needed (``long_documents="window"``), and the least per piece."""

# A whitespace character (ASCII) or a non-ASCII punctuation character (checked by category),
# right after a letter or digit.
_AFTER_ALNUM_SPACE = re.compile(r"(?<=[^\W_])[ \t\n\r]")
_AFTER_ALNUM_OTHER = re.compile(r"(?<=[^\W_])[^\x00-\x7f\w\s]")


def encode_bounded(tokenizer: Tokenizer, texts: Sequence[str], max_tokens: int | None) -> list[list[int]]:
    """The plain ids of every text, at most ``max_tokens`` of each (``None``: all).

    A text longer than a piece (``max_tokens * CHARS_PER_TOKEN`` characters, at least
    ``CHUNK_CHARS // 16``; ``CHUNK_CHARS`` when every id is kept) is tokenized piece by piece,
    until ``max_tokens`` ids are known; the first ``max_tokens`` ids are those of the whole text.
    """
    piece = CHUNK_CHARS if max_tokens is None else max(CHUNK_CHARS // 16, max_tokens * CHARS_PER_TOKEN)
    short = [i for i, t in enumerate(texts) if len(t) <= piece]
    encoded: list[list[int]] = [[] for _ in texts]
    for i, ids in zip(short, tokenizer.encode_plain([texts[i] for i in short]), strict=True):
        encoded[i] = ids if max_tokens is None else ids[:max_tokens]
    for i, text in enumerate(texts):
        if len(text) > piece:
            encoded[i] = _encode_long(tokenizer, text, piece, max_tokens)
    return encoded


def _encode_long(tokenizer: Tokenizer, text: str, piece: int, max_tokens: int | None) -> list[int]:
    ids: list[int] = []
    start = 0
    while start < len(text):
        end = len(text) if len(text) - start <= piece else safe_cut(text, start + piece)
        ids.extend(tokenizer.encode_plain([text[start:end]])[0])
        start = end
        if max_tokens is not None and len(ids) >= max_tokens:
            return ids[:max_tokens]
    return ids


def safe_cut(text: str, position: int) -> int:
    """The first index at or after ``position`` where Qwen3's tokenizer must start a new piece, or ``len(text)``.

    That is before an ASCII whitespace character, or a non-ASCII punctuation character (``。``,
    ``，``), that follows a letter or a digit. Qwen's pre-tokenizer regex ends every piece holding a
    letter or a digit there (letter runs, single digits and contractions end at a non-letter; no
    alternative lets a letter or digit run into whitespace or punctuation), the BPE never merges
    across pieces, and NFC never composes such a character with what comes before it. So the ids
    of ``text[:i]`` followed by those of ``text[i:]`` are the ids of ``text``; the plain tokenizer
    has no added tokens that a cut could split. A text without such a place (say, one long run of
    letters) is not cut.
    """
    space = _AFTER_ALNUM_SPACE.search(text, position)
    end = space.start() if space else len(text)
    for match in _AFTER_ALNUM_OTHER.finditer(text, position, end):
        if unicodedata.category(match.group()).startswith("P"):
            return match.start()
    return end
