"""Cohere v1 / Jina (``POST /v1/rerank``, ``POST /rerank``) and Cohere v2 (``POST /v2/rerank``).

Bodies, as the real clients send them (see ``docs/server.md``):

* ``cohere.Client(base_url=B)``: ``B/v1/rerank`` ``{model, query, documents, top_n,
  return_documents?, rank_fields?}``; Dify's Cohere plugin sets ``return_documents: true`` and
  reads ``results[].document.text``.
* ``cohere.ClientV2``, LangChain and LlamaIndex ``CohereRerank(base_url=B)``: ``B/v2/rerank``
  ``{model, query, documents: [str], top_n, max_tokens_per_doc?}`` (LangChain sends ``null``).
* Jina, Open WebUI, Dify and RAGFlow "OpenAI-API-compatible", vLLM ``/rerank``: ``{model, query,
  documents, top_n}``.

``top_n``: ``null``, absent, ``0`` (vLLM's "all") or more than the documents: all of them.
Results are always sorted best first (LangChain, LlamaIndex and Dify keep the server's order).
``model`` may be any name: the answer echoes it (or the served model name when absent).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from .._types import Ranking
from ._errors import ApiError
from ._inputs import Texts, document_text, prepare
from ._state import parse_body, rerank_texts, state_of

__all__ = ["CohereV1Body", "CohereV2Body", "cut_top_n", "rerank_v1", "rerank_v2"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore")

    documents: list[Any]
    """Strings, or records (``{"text": ...}``, or fields named by ``rank_fields``)."""
    model: str | None = None
    """Any name: echoed back."""
    query: StrictStr
    top_n: StrictInt | None = None
    instruction: StrictStr | None = None
    """This server's extension: the task instruction for this request (default: the server's)."""


class CohereV1Body(_Base):
    """Cohere v1 / Jina / vLLM ``/rerank``: documents are strings or ``{"text": ...}`` records."""

    return_documents: StrictBool | None = None
    rank_fields: list[str] | None = None


class CohereV2Body(_Base):
    """Cohere v2: documents are strings (records are accepted as in v1)."""

    max_tokens_per_doc: StrictInt | None = None


def cut_top_n(ranking: Ranking, top_n: int | None) -> Ranking:
    """The best ``top_n`` (``None``/``0``: all); a negative ``top_n`` is a 422."""
    if top_n is None or top_n == 0:
        return ranking
    if top_n < 0:
        raise ApiError(422, f"top_n must be a positive integer, or null/0 for all documents; got {top_n}")
    return Ranking(ranking[:top_n], ranking.stats)


def _usage(ranking: Ranking) -> int:
    return sum(r.num_tokens for r in ranking)


def _cut(docs: list[str], max_tokens: int, request: Request) -> list[str]:
    """Each document cut to its first ``max_tokens`` tokens (Cohere v2's ``max_tokens_per_doc``)."""
    tokenizer = state_of(request).require_ready().engine.tokenizer
    encoded = tokenizer.encode_plain(docs)
    pairs = zip(docs, encoded, strict=True)
    return [d if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]) for d, ids in pairs]


async def _score(request: Request, body: _Base, max_tokens: int | None = None) -> tuple[Ranking, list[str], int]:
    state = state_of(request)
    rank_fields = getattr(body, "rank_fields", None)
    docs = [document_text(d, i, rank_fields) for i, d in enumerate(body.documents)]
    texts = prepare(body.query, docs, body.instruction, state.limits)
    if max_tokens is not None:
        texts = Texts(texts.query, _cut(texts.documents, max_tokens, request), texts.instruction, texts.preformatted)
    ranking = await rerank_texts(request, texts)
    return ranking, docs, _usage(ranking)


async def rerank_v1(request: Request, data: Any) -> dict[str, Any]:
    """``POST /v1/rerank`` and the Cohere/Jina body of ``POST /rerank``."""
    body = parse_body(CohereV1Body, data)
    ranking, docs, tokens = await _score(request, body)
    show = body.return_documents is not False  # Jina's and vLLM's default; Cohere clients ignore it
    results = []
    for r in cut_top_n(ranking, body.top_n):
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if show:
            item["document"] = {"text": docs[r.index]}
        results.append(item)
    return {
        "id": str(uuid.uuid4()),
        "model": body.model or state_of(request).model_name,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
        "created": int(time.time()),
    }


async def rerank_v2(request: Request, data: Any) -> dict[str, Any]:
    """``POST /v2/rerank``: Cohere v2 (documents are not returned, as in Cohere's API)."""
    body = parse_body(CohereV2Body, data)
    if body.max_tokens_per_doc is not None and body.max_tokens_per_doc <= 0:
        raise ApiError(422, f"max_tokens_per_doc must be a positive integer or null, got {body.max_tokens_per_doc}")
    ranking, _docs, tokens = await _score(request, body, body.max_tokens_per_doc)
    results = [{"index": r.index, "relevance_score": r.score} for r in cut_top_n(ranking, body.top_n)]
    return {
        "id": str(uuid.uuid4()),
        "model": body.model or state_of(request).model_name,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": 1},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
        },
    }
