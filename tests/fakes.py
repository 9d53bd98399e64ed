"""Fakes for unit tests of the core's own logic (sorting, validation, plumbing)."""

from __future__ import annotations

import math

from qwen3_rerank import EngineError, EngineOutput
from qwen3_rerank._scores import log_odds
from qwen3_rerank.engines import Engine


class FakeEngine(Engine):
    """Scores (P(yes)) by a caller-given function of the input ids; records every call.

    Follows the closed-engine contract: ``close()`` is idempotent and any later call raises
    :class:`EngineError`.
    """

    name = "fake"

    def __init__(self, tokenizer, score_fn=None, *, scores=None, max_model_len=None):
        self._tokenizer = tokenizer
        self.score_fn = score_fn or (lambda ids: 1.0 / (1.0 + math.exp(-(len(ids) % 7 - 3))))
        self.fixed = scores
        self.max_model_len = max_model_len
        self.calls: list[str] = []
        self.seen: list[list[list[int]]] = []
        self.closed = 0

    @property
    def tokenizer(self):
        return self._tokenizer

    def _out(self, pairs):
        if self.closed:
            raise EngineError("FakeEngine is closed")
        self.seen.append([list(p.input_ids) for p in pairs])
        scores = list(self.fixed) if self.fixed is not None else [self.score_fn(p.input_ids) for p in pairs]
        return EngineOutput(logits=[log_odds(s) if isinstance(s, float) and 0.0 <= s <= 1.0 else s for s in scores])

    def score(self, pairs):
        self.calls.append("score")
        return self._out(pairs)

    async def ascore(self, pairs):
        self.calls.append("ascore")
        return self._out(pairs)

    def close(self):
        self.closed += 1


class PositionalEngine(FakeEngine):
    """Gives each row a score that depends on its position in the call, like batch-row float noise
    on a real engine: the same sequence sent twice would get two different scores."""

    def _out(self, pairs):
        self.seen.append([list(p.input_ids) for p in pairs])
        return EngineOutput(logits=[0.1 * row for row in range(len(pairs))])


class CountingTokenizer:
    """Wraps a :class:`~qwen3_rerank.Qwen3Tokenizer` and counts every call that tokenizes."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name):
        value = getattr(self.inner, name)
        if name in ("encode_plain", "encode_template", "token_id"):

            def counted(*args, **kwargs):
                self.calls += 1
                return value(*args, **kwargs)

            return counted
        return value
