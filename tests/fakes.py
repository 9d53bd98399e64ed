"""A fake engine for unit tests of the core's own logic (sorting, validation, plumbing)."""

from __future__ import annotations

import math

from qwen3_rerank import EngineOutput
from qwen3_rerank._scores import log_odds
from qwen3_rerank.engines import Engine


class FakeEngine(Engine):
    """Scores (P(yes)) by a caller-given function of the input ids; records every call."""

    name = "fake"

    def __init__(self, tokenizer, score_fn=None, *, scores=None):
        self._tokenizer = tokenizer
        self.score_fn = score_fn or (lambda ids: 1.0 / (1.0 + math.exp(-(len(ids) % 7 - 3))))
        self.fixed = scores
        self.calls: list[str] = []
        self.seen: list[list[list[int]]] = []

    @property
    def tokenizer(self):
        return self._tokenizer

    def _out(self, pairs):
        self.seen.append([list(p.input_ids) for p in pairs])
        scores = list(self.fixed) if self.fixed is not None else [self.score_fn(p.input_ids) for p in pairs]
        return EngineOutput(logits=[log_odds(s) if isinstance(s, float) and 0.0 <= s <= 1.0 else s for s in scores])

    def score(self, pairs):
        self.calls.append("score")
        return self._out(pairs)

    async def ascore(self, pairs):
        self.calls.append("ascore")
        return self._out(pairs)
