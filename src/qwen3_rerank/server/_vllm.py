"""vLLM's faces: ``/score`` and ``/v1/score``, ``/classify`` with token ids, ``/tokenize``,
``/detokenize`` and ``GET /v1/models``.

``/score`` takes ``{model, text_1, text_2}`` (a string and a list: one query against many; two
lists of one length: pairs) and answers vLLM's ``{id, object, created, model, data: [{index,
object: "score", score}], usage}`` in ``text_2``'s order. The vLLM-Ascend tutorial's
pre-formatted ``text_1``/``text_2`` are recognised (:mod:`._inputs`).

``/classify`` scores complete token sequences as they are, the way this library's own
``RemoteEngine`` sends them (``{"input": [[ids...]], "use_activation": false}`` gives the raw
log-odds in ``probs``): the server cannot change what is scored, so its answers equal the
embedded engine's exactly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from .._scores import probability
from ._batching import IdsJob
from ._errors import ApiError
from ._inputs import Texts, prepare
from ._state import ServerState, parse_body, rerank_texts, run_job, state_of

__all__ = ["classify", "detokenize", "models", "score", "tokenize"]


class ScoreBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    text_1: StrictStr | list[StrictStr]
    text_2: StrictStr | list[StrictStr]
    truncate_prompt_tokens: int | None = None
    instruction: StrictStr | None = None


class ClassifyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: list[list[StrictInt]] | list[StrictInt] | StrictStr | list[StrictStr]
    add_special_tokens: bool | None = None
    use_activation: bool | None = None
    truncate_prompt_tokens: int | None = None


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: StrictStr
    add_special_tokens: bool | None = None


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[StrictInt]


def _envelope(kind: str, model: str, data: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
    return {
        "id": f"{kind}-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }


def _no_truncate(value: int | None) -> None:
    if value is not None:
        raise ApiError(
            400,
            "truncate_prompt_tokens is not supported: vLLM keeps the last N tokens and would cut the "
            "prompt's start; this server cuts documents itself to its max_length (--max-length)",
        )


async def score(request: Request, data: Any) -> dict[str, Any]:
    """``POST /score`` and ``/v1/score``."""
    request.state.dialect = "openai"
    body = parse_body(ScoreBody, data)
    _no_truncate(body.truncate_prompt_tokens)
    state = state_of(request)
    firsts = [body.text_1] if isinstance(body.text_1, str) else list(body.text_1)
    seconds = [body.text_2] if isinstance(body.text_2, str) else list(body.text_2)
    if len(firsts) == 1:
        firsts = firsts * len(seconds)
    elif len(firsts) != len(seconds):
        raise ApiError(
            400, f"text_1 has {len(firsts)} items and text_2 {len(seconds)}: send one text_1, or as many as text_2"
        )
    if len(seconds) > state.limits.max_documents:
        limit = state.limits.max_documents
        raise ApiError(
            422,
            f"{len(seconds)} text_2 items in one request; this server takes at most {limit} "
            "(max_documents, --max-documents): split the request",
        )
    state.require_ready()
    # One job per distinct query (after unwrapping), its documents in text_2's order.
    groups: dict[tuple[str, str | None], tuple[Texts, list[int]]] = {}
    for i, (q, d) in enumerate(zip(firsts, seconds, strict=True)):
        texts = prepare(q, [d], body.instruction, state.limits, what="text_2 items")
        key = (texts.query, texts.instruction)
        if key in groups:
            groups[key][0].documents.append(texts.documents[0])
            groups[key][1].append(i)
        else:
            groups[key] = (texts, [i])
    rankings = await asyncio.gather(*(rerank_texts(request, t) for t, _ in groups.values()))
    scores: list[float] = [0.0] * len(seconds)
    tokens = 0
    for ranking, (_t, where) in zip(rankings, groups.values(), strict=True):
        for r in ranking:
            scores[where[r.index]] = r.score
            tokens += r.num_tokens
    data_out = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    return _envelope("score", body.model or state.model_name, data_out, tokens)


def _vocabulary_size(state: ServerState) -> int | None:
    assert state.reranker is not None
    control = state.reranker.engine.tokenizer.control_token_ids
    return max(control) + 1 if control else None  # Qwen3's added tokens are its last ids


async def classify(request: Request, data: Any) -> dict[str, Any]:
    """``POST /classify`` with token-id input: each sequence scored exactly as sent."""
    request.state.dialect = "openai"
    body = parse_body(ClassifyBody, data)
    _no_truncate(body.truncate_prompt_tokens)
    state = state_of(request)
    reranker = state.require_ready()
    raw = body.input
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], str)):
        raise ApiError(
            400,
            'this server\'s /classify takes token ids ({"input": [[ids...]]}), built with the '
            "Qwen3-Reranker prompt; for text use /v1/rerank, /rerank or /score",
        )
    sequences: list[list[int]] = [raw] if raw and isinstance(raw[0], int) else raw  # type: ignore[assignment]
    if not sequences:
        raise ApiError(400, "input is empty: send at least one token-id sequence")
    if len(sequences) > state.limits.max_documents:
        limit = state.limits.max_documents
        raise ApiError(
            400, f"{len(sequences)} sequences in one request; at most {limit} (max_documents, --max-documents)"
        )
    limit = reranker.max_length
    vocab = _vocabulary_size(state)
    for i, ids in enumerate(sequences):
        if not ids:
            raise ApiError(400, f"input[{i}] is empty: a sequence needs at least one token id")
        if len(ids) > limit:
            raise ApiError(400, f"input[{i}] has {len(ids)} tokens; this server's max_model_len is {limit}")
        bad = next((t for t in ids if t < 0 or (vocab is not None and t >= vocab)), None)
        if bad is not None:
            raise ApiError(400, f"input[{i}] holds the token id {bad}, outside the vocabulary [0, {vocab})")
    logits: list[float] = await run_job(request, IdsJob([list(s) for s in sequences]))
    raw_logits = body.use_activation is False
    out = [
        {"index": i, "label": "LABEL_0", "probs": [v if raw_logits else probability(v)], "num_classes": 1,
         "object": "classification"}
        for i, v in enumerate(logits)
    ]  # fmt: skip
    tokens = sum(len(s) for s in sequences)
    state.metrics.pairs.inc(len(sequences))
    state.metrics.tokens.inc(tokens)
    return _envelope("classify", body.model or state.model_name, out, tokens)


async def tokenize(request: Request, data: Any) -> dict[str, Any]:
    """``POST /tokenize {prompt}``: control-token strings are recognised (vLLM's behaviour)."""
    request.state.dialect = "openai"
    body = parse_body(TokenizeBody, data)
    reranker = state_of(request).require_ready()
    tokens = reranker.engine.tokenizer.encode_template(body.prompt)
    return {"count": len(tokens), "max_model_len": reranker.max_length, "tokens": tokens, "token_strs": None}


async def detokenize(request: Request, data: Any) -> dict[str, Any]:
    """``POST /detokenize {tokens}``."""
    request.state.dialect = "openai"
    body = parse_body(DetokenizeBody, data)
    state = state_of(request)
    reranker = state.require_ready()
    vocab = _vocabulary_size(state)
    bad = next((t for t in body.tokens if t < 0 or (vocab is not None and t >= vocab)), None)
    if bad is not None:
        raise ApiError(400, f"the token id {bad} is outside the vocabulary [0, {vocab})")
    return {"prompt": reranker.engine.tokenizer.decode(body.tokens)}


def models(state: ServerState) -> dict[str, Any]:
    """``GET /v1/models``: the served model with its ``max_model_len`` (the OpenAI list shape)."""
    reranker = state.reranker
    return {
        "object": "list",
        "data": [
            {
                "id": state.model_name,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "qwen3-rerank",
                "root": reranker.engine.model_name if reranker is not None else None,
                "parent": None,
                "max_model_len": reranker.max_length if reranker is not None else None,
                "permission": [],
            }
        ],
    }
