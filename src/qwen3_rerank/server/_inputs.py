"""What every route does to its texts before they are queued: recognise pre-formatted prompts,
apply the limits, and validate, so that a bad request fails alone with a 413/422.

Pre-formatted prompts. The vLLM-Ascend tutorial (``docs/source/tutorials/Qwen3_reranker.md``)
sends the model card's prompt already built::

    query_template = "{prefix}<Instruct>: {instruction}\\n<Query>: {query}\\n"
    document_template = "<Document>: {doc}{suffix}"

with ``prefix``/``suffix`` the model card's system prefix and assistant suffix. Such a query is
taken apart into its instruction and query, and such documents into their text, and the pair is
scored exactly as a plain request (token-exact template, no double prompt). This client's own
``RemoteEngine(api="score")`` sends the same shape with control-token strings in user text
neutralised by a ZERO WIDTH SPACE; that is undone here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import prompts
from .._encoding import validate_texts
from ..engines.remote._protocol import CONTROL_TOKENS, NEUTRALISER
from ._config import ServerLimits
from ._errors import ApiError

__all__ = ["Texts", "check_limits", "document_text", "prepare", "unwrap_document", "unwrap_query"]

_QUERY_BODY = re.compile(r"<Instruct>: (?P<instruction>.*?)\n<Query>: (?P<query>.*)\n", re.DOTALL)
_DOCUMENT_HEAD = prompts.DOCUMENT_HEADER + " "
_NEUTRALISED = re.compile(
    "|".join(re.escape(t[0] + NEUTRALISER + t[1:]) for t in sorted(CONTROL_TOKENS, key=len, reverse=True))
)


@dataclass(frozen=True, slots=True)
class Texts:
    """A request's texts, ready to queue."""

    query: str
    documents: list[str]
    instruction: str | None
    preformatted: bool = False


def _restore(text: str) -> str:
    return _NEUTRALISED.sub(lambda m: m.group(0).replace(NEUTRALISER, "", 1), text)


def unwrap_query(text: str) -> tuple[str, str] | None:
    """``(query, instruction)`` of a query built with the tutorial's ``query_template``, else ``None``."""
    if not text.startswith(prompts.SYSTEM_PREFIX):
        return None
    m = _QUERY_BODY.fullmatch(text, len(prompts.SYSTEM_PREFIX))
    if m is None:
        return None
    return _restore(m.group("query")), _restore(m.group("instruction"))


def unwrap_document(text: str) -> str | None:
    """The document inside the tutorial's ``document_template``, else ``None``."""
    if text.startswith(_DOCUMENT_HEAD) and text.endswith(prompts.ASSISTANT_SUFFIX):
        return _restore(text[len(_DOCUMENT_HEAD) : len(text) - len(prompts.ASSISTANT_SUFFIX)])
    return None


def document_text(doc: Any, index: int, rank_fields: Sequence[str] | None = None) -> str:
    """A document of a Cohere/Jina body: a string, ``{"text": ...}``, or a record whose
    ``rank_fields`` are joined as ``"field: value"`` lines (Cohere's semi-structured documents)."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict):
        if rank_fields:
            lines = []
            for name in rank_fields:
                if name not in doc:
                    raise ApiError(422, f"documents[{index}] has no field {name!r} named in rank_fields")
                lines.append(f"{name}: {doc[name]}")
            return "\n".join(lines)
        text = doc.get("text")
        if isinstance(text, str):
            return text
        raise ApiError(
            422, f"documents[{index}] is an object without a string 'text' field; send a string or {{\"text\": ...}}"
        )
    raise ApiError(422, f"documents[{index}] must be a string or an object with 'text', got {type(doc).__name__}")


def check_limits(query: str, documents: Sequence[str], limits: ServerLimits, what: str = "documents") -> None:
    """Refuse too many documents or too long a text (422, naming the limit and its setting)."""
    if len(documents) > limits.max_documents:
        raise ApiError(
            422,
            f"{len(documents)} {what} in one request; this server takes at most {limits.max_documents} "
            "(max_documents, --max-documents): split the request",
        )
    longest = max([len(query), *(len(d) for d in documents)])
    if longest > limits.max_document_chars:
        which = "the query" if len(query) == longest else "a document"
        raise ApiError(
            422,
            f"{which} has {longest} characters; this server takes at most {limits.max_document_chars} "
            "a text (max_document_chars, --max-document-chars): shorten it",
        )


def prepare(
    query: str, documents: Sequence[str], instruction: str | None, limits: ServerLimits, what: str = "documents"
) -> Texts:
    """Unwrap pre-formatted prompts, apply the limits and validate the Unicode of every text."""
    check_limits(query, documents, limits, what)
    docs = list(documents)
    preformatted = False
    unwrapped = unwrap_query(query)
    if unwrapped is not None:
        query, instruction = unwrapped
        preformatted = True
        for i, d in enumerate(docs):
            inner = unwrap_document(d)
            if inner is not None:
                docs[i] = inner
    try:
        validate_texts([query], [docs], instruction)
    except (TypeError, ValueError) as exc:
        raise ApiError(422, str(exc)) from None
    return Texts(query=query, documents=docs, instruction=instruction, preformatted=preformatted)
