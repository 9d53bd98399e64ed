"""text-embeddings-inference: ``POST /rerank`` with ``texts``, and ``GET /info``.

Dify's "Text Embedding Inference" provider reads ``GET /info`` when it is saved (it needs
``model_type.reranker``) and then posts ``{query, texts, return_text: true}``; RAGFlow's
"HuggingFace" provider posts ``{query, texts, raw_scores: false, truncate: true}`` with no auth
header. The answer is a bare array ``[{index, score, text?}]``, best first; ``raw_scores: true``
gives the log-odds instead of P(yes).

``truncate``: absent or ``true`` cuts a document that does not fit the server's ``max_length``
(the library's truncation policy); ``false`` refuses such a request with 413, as TEI does.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

from .._version import __version__
from ._errors import ApiError
from ._inputs import prepare
from ._state import ServerState, parse_body, rerank_texts, state_of

__all__ = ["TeiRerankBody", "info", "rerank_tei"]


class TeiRerankBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: StrictStr
    texts: list[StrictStr]
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "right"] = "Right"
    instruction: StrictStr | None = None
    """This server's extension: the task instruction for this request."""


async def rerank_tei(request: Request, data: Any) -> list[dict[str, Any]]:
    """``POST /rerank`` with a text-embeddings-inference body."""
    request.state.dialect = "tei"
    body = parse_body(TeiRerankBody, data)
    state = state_of(request)
    texts = prepare(body.query, body.texts, body.instruction, state.limits, what="texts")
    ranking = await rerank_texts(request, texts)
    if body.truncate is False:
        cut = [r.index for r in ranking if r.truncated]
        if cut:
            raise ApiError(
                413,
                f"texts {sorted(cut)[:10]} do not fit the server's max_length with the prompt; "
                "send truncate: true to score their beginning",
            )
    out = []
    for r in ranking:
        item: dict[str, Any] = {"index": r.index, "score": _finite(r.logit) if body.raw_scores else r.score}
        if body.return_text:
            item["text"] = body.texts[r.index]
        out.append(item)
    return out


def _finite(value: float) -> float:
    # JSON has no infinity: a log-odds of +-inf (P exactly 1 or 0) is sent as the largest float.
    return value if math.isfinite(value) else math.copysign(1.7976931348623157e308, value)


def info(state: ServerState) -> dict[str, Any]:
    """``GET /info`` in TEI's shape (``model_type.reranker`` is what Dify checks)."""
    reranker = state.reranker
    max_length = reranker.max_length if reranker is not None else None
    return {
        "model_id": state.model_name,
        "model_sha": None,
        "model_dtype": (reranker.engine.dtype if reranker is not None else None) or "unknown",
        "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
        "max_concurrent_requests": state.batching.max_queued_requests,
        "max_input_length": max_length,
        "max_batch_tokens": state.batching.max_batch_pairs * (max_length or 1),
        "max_batch_requests": None,
        "max_client_batch_size": state.limits.max_documents,
        "auto_truncate": True,
        "tokenization_workers": 1,
        "version": __version__,
        "sha": None,
        "docker_label": None,
        "engine": reranker.engine.name if reranker is not None else None,
    }
