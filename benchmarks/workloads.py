"""Deterministic benchmark inputs built from the real Qwen3 vocabulary.

Words are vocabulary entries of the form ``" " + 2-12 lowercase letters`` (about 30k of the
151,669 tokens), so a document of ``n`` words re-encodes to about ``n`` tokens. Every timed
repetition asks for a new ``rep`` and gets documents no earlier repetition has seen (no prefix
cache hits from repeated inputs); queries change with ``rep`` too.

Workloads (tokens per pair counted on the full templated sequence, model card instruction):

=====  =====================  ========================
name   queries x documents    tokens a pair (measured)
=====  =====================  ========================
W1     8 x 100                ~335
W2     8 x 100                ~110
W3     4 x 50                 ~2,000
=====  =====================  ========================

How cost grows (``--sweep`` of bench_transformers.py and bench_vllm.py, :func:`growth_points`):
1 query against 1 / 10 / 100 / 1,000 documents of ~500 tokens (``sweep="docs"``), and 1 query
against documents of ~50 / 500 / 2,000 / 8,000 tokens, 100 / 100 / 50 / 16 of them
(``sweep="tokens"``); the records carry the measured mean document tokens (``doc_tokens``).
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

__all__ = ["WORKLOADS", "Workload", "growth_points", "growth_reps", "make_inputs", "words"]


@dataclass(frozen=True)
class Workload:
    name: str
    queries: int
    docs_per_query: int
    doc_words: int  # words (~tokens) per document body
    query_words: int = 12


# doc_words chosen so the whole templated pair is ~335 / ~110 / ~2,000 tokens (see RESULTS.md
# for the measured means): the template + instruction + a 12-word query is ~72 tokens.
WORKLOADS = {
    "W1": Workload("W1", 8, 100, 250),
    "W2": Workload("W2", 8, 100, 25),
    "W3": Workload("W3", 4, 50, 1915),
}


GROWTH_DOC_WORDS = 500  # the documents of the docs-per-query sweep (~500 tokens)
GROWTH_DOCS = (1, 10, 100, 1000)
# Words (~tokens) per document -> documents for one query: a few seconds a point on one GPU. The
# longest pair (8,000 words + the ~72-token template and query) fits max_length 8192.
GROWTH_TOKENS = {50: 100, 500: 100, 2000: 50, 8000: 16}


def growth_points() -> list[tuple[str, int, Workload]]:
    """(sweep, x, workload) of the growth sweeps, in order: documents per query, then tokens."""
    points = [("docs", n, Workload(f"growth-docs{n}", 1, n, GROWTH_DOC_WORDS)) for n in GROWTH_DOCS]
    points += [("tokens", w, Workload(f"growth-tokens{w}", 1, n, w)) for w, n in GROWTH_TOKENS.items()]
    return points


def growth_reps(w: Workload) -> int:
    """Timed repetitions of a growth point: more where one call is a few milliseconds."""
    return 10 if w.queries * w.docs_per_query <= 10 else 3


@functools.lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    """Word-like tokens of the real Qwen3 vocabulary, in id order (deterministic)."""
    from qwen3_rerank.testing import build_tokenizer

    tok = build_tokenizer()
    pattern = re.compile(r"^ [a-z]{2,12}$")
    out = []
    for i in range(151643):
        text = tok.decode([i])
        if pattern.match(text):
            out.append(text[1:])
    return tuple(out)


def make_inputs(w: Workload, rep: int, *, seed: int = 1234) -> tuple[list[str], list[list[str]]]:
    """Queries and their documents for repetition ``rep`` (same ``rep`` -> same text)."""
    vocab = words()
    rng = random.Random(f"{seed}:{w.name}:{w.queries}:{w.docs_per_query}:{w.doc_words}:{rep}")
    queries = [" ".join(rng.choices(vocab, k=w.query_words)) + "?" for _ in range(w.queries)]
    docs = [[" ".join(rng.choices(vocab, k=w.doc_words)) + "." for _ in range(w.docs_per_query)] for _ in queries]
    return queries, docs


def parse_counts(text: str, names: list[str]) -> dict[str, tuple[int, int]]:
    """``"2x8"`` (every workload) or ``"W1=2x8,W3=1x2"`` -> {workload: (queries, docs per query)}."""
    out: dict[str, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.rpartition("=")
        q, _, d = value.partition("x")
        for name in [key] if key else names:
            out[name] = (int(q), int(d))
    return out


def with_counts(workloads: str, counts: str) -> list[Workload]:
    """The named workloads (``"W1,W2"``), each resized by ``counts`` where it names one (``W1@2x8``)."""
    names = [n for n in workloads.split(",") if n]
    sizes = parse_counts(counts, names)
    out = []
    for name in names:
        wl = WORKLOADS[name]
        if name in sizes:
            q, d = sizes[name]
            wl = Workload(f"{name}@{q}x{d}", q, d, wl.doc_words, wl.query_words)
        out.append(wl)
    return out
