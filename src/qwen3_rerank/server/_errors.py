"""Errors over HTTP, each rendered in the shape its dialect's clients parse.

* Cohere (``/v1/rerank``, ``/v2/rerank``; the cohere SDK, LangChain, LlamaIndex, Dify):
  ``{"message": ...}``.
* text-embeddings-inference (``/rerank`` with ``texts``, ``/info``; Dify's and RAGFlow's TEI
  providers): ``{"error": ..., "error_type": ...}``.
* vLLM / OpenAI (``/score``, ``/classify``, ``/tokenize``, ``/v1/models``): ``{"error":
  {"message", "type", "code"}}``.

``/rerank`` serves Cohere/Jina and TEI bodies: an error found before the body says which (auth,
body size, malformed JSON) carries both ``message`` and TEI's ``error``/``error_type``, so either
client reads it.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["ApiError", "Dialect", "dialect_of_path", "error_body"]

Dialect = Literal["cohere", "tei", "openai", "either"]

_TEI_TYPES = {400: "validation", 401: "unauthorized", 404: "not_found", 413: "payload_too_large",
              422: "validation", 429: "overloaded", 503: "unhealthy"}  # fmt: skip
_OPENAI_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
                 405: "MethodNotAllowed", 413: "BadRequestError", 422: "BadRequestError",
                 429: "RateLimitError", 503: "ServiceUnavailableError"}  # fmt: skip


class ApiError(Exception):
    """An answer other than 200: its status, a message that names the problem and the fix.

    Attributes:
        status: The HTTP status.
        message: One sentence for the client (never a key, never a traceback).
        headers: Extra response headers (``Retry-After``).
    """

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def dialect_of_path(path: str) -> Dialect:
    """The error shape a path's clients expect before its body is read."""
    if path in ("/v1/rerank", "/v2/rerank"):
        return "cohere"
    if path == "/rerank":
        return "either"
    if path == "/info":
        return "tei"
    return "openai"


def error_body(dialect: Dialect, status: int, message: str) -> dict[str, Any]:
    """The JSON body of an error answer in ``dialect``'s shape."""
    if dialect == "cohere":
        return {"message": message}
    tei_type = _TEI_TYPES.get(status, "backend" if status >= 500 else "validation")
    if dialect == "tei":
        return {"error": message, "error_type": tei_type}
    if dialect == "either":
        return {"message": message, "error": message, "error_type": tei_type}
    kind = _OPENAI_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}
