"""The server's settings: request limits and dynamic-batching knobs (frozen, keyword-only)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["BatchingConfig", "ServerLimits"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerLimits:
    """What one request may hold; beyond it the server answers 413 or 422 naming the limit.

    Attributes:
        max_body_bytes: Most bytes in a request body (413; ``--max-body-bytes``). The default,
            8 MiB, holds 1,000 documents of 8,000 characters.
        max_documents: Most documents (or ``text_2`` items, or token-id sequences) in one request
            (422; ``--max-documents``). Cohere's API takes up to 1,000.
        max_document_chars: Most characters in one document, and in the query (422;
            ``--max-document-chars``). The scored part is cut to ``max_length`` tokens anyway;
            this only bounds what a request makes the server tokenize.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_documents: int = 1000
    max_document_chars: int = 100_000

    def __post_init__(self) -> None:
        _positive(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchingConfig:
    """How concurrent requests are coalesced into engine calls.

    Attributes:
        max_batch_pairs: Most (query, document) pairs in one engine call (``--max-batch-pairs``);
            a single request larger than this runs alone, in one call.
        max_wait_ms: How long the first request of a batch waits for others (``--batch-wait-ms``).
        max_queued_requests: Requests waiting for the engine at most; one more is answered 429
            with ``Retry-After`` (``--max-queued-requests``).
        max_pairs_in_flight: For an engine that batches continuously itself (vLLM): most pairs
            submitted to it at once; requests beyond wait in the bounded queue
            (``--max-pairs-in-flight``).
        retry_after_s: The ``Retry-After`` of a 429 or 503 answer, in seconds.
    """

    max_batch_pairs: int = 256
    max_wait_ms: float = 5.0
    max_queued_requests: int = 256
    max_pairs_in_flight: int = 4096
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        _positive(self, allow_zero=("max_wait_ms",))


def _positive(obj: object, allow_zero: tuple[str, ...] = ()) -> None:
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        low = 0 if f.name in allow_zero else 1
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise ValueError(f"{type(obj).__name__}.{f.name} must be a number >= {low}, got {value!r}")
