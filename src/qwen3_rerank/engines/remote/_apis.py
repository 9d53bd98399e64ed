"""The API shapes of a reranking server, one object each: paths, request body, answer parser, probe.

An :class:`ApiShape` says everything that differs between ``/classify``, ``/score`` and
``/rerank``; the engine, the chunker and the probe only ask it. The lists of APIs
(:data:`SHAPES`, :data:`AUTO_ORDER`, :data:`APIS`, :data:`PATHS`) are derived from the objects,
so a fourth shape is one more subclass instance in :data:`SHAPES` (tried by ``api="auto"`` in
that order) and nothing else.

Everything here is pure: no I/O, shared by the sync and async paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..._exceptions import InvalidScoreError, RemoteError, TemplateMismatchError
from ..._scores import log_odds
from ..._types import EncodedPair
from ._protocol import HF_OVERRIDES_HINT, TextRenderer, excerpt, parse_float

__all__ = ["APIS", "AUTO_ORDER", "PATHS", "SHAPES", "ApiShape", "Parsed", "derive", "shape_of"]


@dataclass(frozen=True, slots=True)
class Parsed:
    logits: list[float]
    prompt_tokens: int | None


class ApiShape:
    """One API of a reranking server. Subclasses set the class attributes and :meth:`body`."""

    name: ClassVar[str]
    paths: ClassVar[tuple[str, ...]]
    """Paths tried in order (a 404/405 moves to the next one)."""
    sends_text: ClassVar[bool]
    """The request carries text (rendered by :class:`TextRenderer`), not token ids."""
    one_query: ClassVar[bool] = False
    """A request holds pairs of one query only (the chunker cuts runs of one query)."""
    items_key: ClassVar[str] = "data"
    score_key: ClassVar[str]
    scores_are_logits: ClassVar[bool] = False
    """The answer holds raw log-odds (else probabilities in [0, 1])."""

    def body(self, pairs: Sequence[EncodedPair], renderer: TextRenderer | None) -> dict[str, Any]:
        raise NotImplementedError

    def text_body(self, first: str | list[str], seconds: list[str]) -> dict[str, Any]:
        """A text API's body: one query part (or one per document) and the document parts."""
        raise NotImplementedError

    def probe_body(self, documents: int = 1) -> dict[str, Any]:
        """A tiny request proving the endpoint scores (``documents`` copies of one document)."""
        return self.text_body("a", ["b"] * documents)

    def raw_score(self, item: dict[str, Any], bad: Any) -> Any:
        return item.get(self.score_key)

    def mismatch_fix(self) -> str:
        return (
            "The server does not score the prompt this client built: it applies a template of its "
            "own (restart `vllm serve` without --chat-template: this client sends the complete "
            "Qwen3-Reranker prompt itself), or it tokenizes with another tokenizer (pass "
            "tokenizer=/model= matching the served model). api='classify' sends token ids and "
            "avoids both."
        )

    def __repr__(self) -> str:
        return f"<api {self.name!r} {'/'.join(self.paths)}>"


class Classify(ApiShape):
    """``POST /classify`` with token ids (vLLM); the raw ``W_yes - W_no`` logit comes back."""

    name = "classify"
    paths = ("/classify",)
    sends_text = False
    score_key = "probs"
    scores_are_logits = True

    def body(self, pairs: Sequence[EncodedPair], renderer: TextRenderer | None) -> dict[str, Any]:
        # use_activation=false: the raw logit, exact even where P(yes) rounds to 1.
        return {"input": [list(p.input_ids) for p in pairs], "add_special_tokens": False, "use_activation": False}

    def probe_body(self, documents: int = 1) -> dict[str, Any]:
        return {"input": [[0]] * documents, "add_special_tokens": False, "use_activation": False}

    def raw_score(self, item: dict[str, Any], bad: Any) -> Any:
        probs = item.get("probs")
        if not isinstance(probs, list) or len(probs) != 1:
            raise bad(f"'probs' should hold one value (a one-label reranker head), got {probs!r}; {HF_OVERRIDES_HINT}")
        return probs[0]

    def mismatch_fix(self) -> str:
        return (
            "The server scored other token ids than were sent; check that it serves the model "
            "this client tokenizes for (pass tokenizer=/model= matching the served model)."
        )


class _TextShape(ApiShape):
    sends_text = True

    def body(self, pairs: Sequence[EncodedPair], renderer: TextRenderer | None) -> dict[str, Any]:
        if renderer is None:
            raise ValueError(f"api {self.name!r} sends text: pass a TextRenderer")
        texts = [renderer.texts(p) for p in pairs]
        firsts = [t[0] for t in texts]
        first: str | list[str] = firsts[0] if all(f == firsts[0] for f in firsts) else firsts
        return self.text_body(first, [t[1] for t in texts])


class Score(_TextShape):
    """``POST /score {"text_1", "text_2"}`` (vLLM; the vLLM-Ascend tutorial's request)."""

    name = "score"
    paths = ("/score", "/v1/score")
    score_key = "score"

    def text_body(self, first: str | list[str], seconds: list[str]) -> dict[str, Any]:
        return {"text_1": first, "text_2": seconds}


class Rerank(_TextShape):
    """``POST /rerank {"query", "documents", "top_n"}`` (Jina/Cohere style)."""

    name = "rerank"
    paths = ("/rerank", "/v1/rerank")
    one_query = True
    items_key = "results"
    score_key = "relevance_score"

    def text_body(self, first: str | list[str], seconds: list[str]) -> dict[str, Any]:
        if not isinstance(first, str):  # pragma: no cover - guarded by the chunker
            raise ValueError("a rerank request holds one query")
        return {"query": first, "documents": seconds, "top_n": len(seconds)}


def derive(shapes: Sequence[ApiShape]) -> tuple[dict[str, ApiShape], tuple[str, ...], tuple[str, ...]]:
    """The lookup by name, the ``auto`` order and the ``api=`` values of ``shapes``."""
    by_name = {s.name: s for s in shapes}
    if len(by_name) != len(shapes) or "auto" in by_name:
        raise ValueError(f"API names must be unique and not 'auto': {[s.name for s in shapes]}")
    return by_name, tuple(by_name), ("auto", *by_name)


SHAPES: tuple[ApiShape, ...] = (Classify(), Score(), Rerank())
"""Every API, in the order ``api="auto"`` tries them (token ids first: no template drift)."""
_BY_NAME, AUTO_ORDER, APIS = derive(SHAPES)
"""``APIS``: the values of ``RemoteEngine(api=...)``."""
PATHS = {s.name: s.paths for s in SHAPES}


def shape_of(name: str) -> ApiShape:
    """The shape called ``name`` (``KeyError`` for an unknown one: the engine checks ``api=``)."""
    return _BY_NAME[name]


def build_payload(
    shape: ApiShape, pairs: Sequence[EncodedPair], model: str | None, renderer: TextRenderer | None = None
) -> dict[str, Any]:
    """The JSON body for one chunk of ``pairs`` (a one-query shape's chunk holds one query)."""
    body: dict[str, Any] = {} if model is None else {"model": model}
    body.update(shape.body(pairs, renderer))
    return body


def probe_payload(shape: ApiShape, model: str | None, documents: int = 1) -> dict[str, Any]:
    body = shape.probe_body(documents)
    if model is not None:
        body["model"] = model
    return body


def expected_tokens(
    shape: ApiShape, pairs: Sequence[EncodedPair], tokenizer: Any, renderer: TextRenderer | None
) -> int:
    """Tokens a correct server counts for the chunk: exactly ours for ids, a re-count for text."""
    if not shape.sends_text or renderer is None:
        return sum(len(p.input_ids) for p in pairs)
    texts = [a + b for a, b in (renderer.texts(p) for p in pairs)]
    batch = getattr(tokenizer, "count_template_batch", None)
    if batch is not None:
        return sum(batch(texts))
    return sum(len(tokenizer.encode_template(t)) for t in texts)


def parse_response(shape: ApiShape, payload: Any, n: int, url: str) -> Parsed:
    """Scores in input order from one decoded JSON answer (pure).

    Raises:
        RemoteError: the body is not the expected shape.
        InvalidScoreError: a score is missing, repeated, non-finite or not a probability.
    """

    def bad(why: str) -> RemoteError:
        return RemoteError(
            f"unexpected answer from {url}: {why}. Is this a vLLM pooling server running a "
            f"Qwen3-Reranker (api={shape.name!r})?",
            status_code=200,
            url=url,
            body=excerpt(repr(payload)),
        )

    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object, got {type(payload).__name__}")
    key = shape.items_key
    items = payload.get(key)
    if not isinstance(items, list):
        raise bad(f"no {key!r} list")
    values: list[float | None] = [None] * n
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int):
            raise bad(f"an item of {key!r} has no integer 'index'")
        if not 0 <= index < n:
            raise InvalidScoreError(f"{url} returned a result for index {index}, but only {n} sequences were sent")
        if values[index] is not None:
            raise InvalidScoreError(f"{url} returned two results for index {index}")
        raw = shape.raw_score(item, bad)
        value = parse_float(raw)
        if value is None:
            raise bad(f"the score of index {index} is {excerpt(repr(raw), 60)}, not a number")
        if not math.isfinite(value):
            raise InvalidScoreError(
                f"{url} returned the non-finite score {value!r} for sequence {index}; nothing was "
                "ranked. The server's numerics failed (fp16 overflow: serve with --dtype bfloat16 "
                "or float32)."
            )
        values[index] = value
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise InvalidScoreError(
            f"{url} returned {n - len(missing)} results for {n} sequences (missing indices "
            f"{missing[:10]}); nothing was ranked rather than rank a partial result"
        )
    usage = payload.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    prompt_tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None
    vals = [float(v) for v in values if v is not None]  # none is missing (checked above)
    if shape.scores_are_logits:
        return Parsed(vals, prompt_tokens)
    for i, v in enumerate(vals):
        if not 0.0 <= v <= 1.0:
            raise InvalidScoreError(
                f"{url} returned score {v!r} for sequence {i}, not a probability in [0, 1]; is the "
                f"server a Qwen3-Reranker? If not: {HF_OVERRIDES_HINT}"
            )
    return Parsed([log_odds(v) for v in vals], prompt_tokens)


def check_tokens(parsed: Parsed, expected: int, url: str, shape: ApiShape) -> None:
    """The "200 OK but meaningless scores" guard (a missing count is the caller's to report)."""
    if parsed.prompt_tokens is None or parsed.prompt_tokens == expected:
        return
    raise TemplateMismatchError(
        f"{url} counted {parsed.prompt_tokens} prompt tokens for a request this client counts as "
        f"{expected} (api={shape.name!r}); its scores would be meaningless. {shape.mismatch_fix()} "
        "(verify_template=False skips this check.)",
        status_code=200,
        url=url,
    )


def cross_encoder_proof(one: Parsed, two: Parsed) -> bool | None:
    """Whether two probe answers prove a cross-encoder (``None``: they carry no token counts).

    ``one`` scored the pair (q, d), ``two`` the same query with the document twice. A
    cross-encoder (the reranker) scores each pair as one sequence, so it counts ``q + d`` twice:
    exactly double. An embedding model (``vllm serve`` without the reranker's overrides) embeds
    the query once and each document once, so it counts ``q + 2d``, less than double, whatever
    its tokenizer or template.
    """
    if one.prompt_tokens is None or two.prompt_tokens is None or one.prompt_tokens <= 0:
        return None
    return two.prompt_tokens == 2 * one.prompt_tokens
