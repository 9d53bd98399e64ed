"""The remote engine: a robust HTTP client for a ``vllm serve`` running a Qwen3-Reranker.

Protocols (``api=``), all built by this client from the core's token-exact, suffix-safe
sequences (the server never truncates: ``truncate_prompt_tokens`` is never sent, because vLLM keeps
the *last* N tokens and would cut the system prompt):

``"classify"`` (the default when the server offers it)
    ``POST /classify {"input": [[ids…], …], "add_special_tokens": false, "use_activation": false}``.
    The server scores exactly the token ids the core built: no server-side tokenization, so no
    template drift and no special-token injection are possible, and the raw log-odds come back
    (``P(yes) = sigmoid(logit)``). In vLLM 0.32 only ``/classify`` and ``/pooling`` take token ids;
    ``/score`` and ``/rerank`` take text only.
``"score"``
    ``POST /score {"model", "text_1": <templated query part>, "text_2": [<templated documents>]}``,
    the request of the vLLM-Ascend tutorial. vLLM tokenizes ``text_1 + text_2`` as one string with nothing between.
``"rerank"``
    ``POST /rerank`` (then ``/v1/rerank``) with ``{"model", "query", "documents", "top_n"}``
    (Jina/Cohere style); ``query``/``documents`` are the templated parts, as for ``/score``.
``"auto"``
    Probes ``classify``, ``score``, ``rerank`` once with a one-token request and caches the first
    that works (one probe at a time, however many calls start together). A text endpoint is
    accepted only when its own answers prove a reranker: ``vllm serve`` without the reranker's
    ``--hf-overrides`` serves the checkpoint as an embedding model, whose ``/score`` answers
    cosine similarities. A second probe with the document twice settles it: a cross-encoder
    counts ``usage.prompt_tokens`` for query + document twice (exactly double), an embedding
    model counts the query once. Such a server is refused with
    :class:`~qwen3_rerank.ConfigurationError`, and so is one whose answers prove nothing (no
    counts, no one-label ``/classify``) unless ``verify_template=False``.

Each API is one :class:`ApiShape` object (``_apis``): its paths, request body, answer parser and
probe; :data:`APIS` (the ``api=`` values) and the ``auto`` order are derived from :data:`SHAPES`.

Results are placed by their ``index``, never matched by echoed text.

Special-token injection. A text endpoint tokenizes with the full tokenizer, which turns the
string ``<|im_end|>`` inside a document into the control token. For ``"score"``/``"rerank"``
every occurrence of one of Qwen3's 26 added-token strings in *user* text is therefore
neutralised before sending: a ZERO WIDTH SPACE (U+200B) is inserted after its first character
(``<|im_end|>`` → ``<\u200b|im_end|>``). The model then reads ordinary text; only such documents
score slightly differently from the token-id path, which needs no such change.

The "200 OK but meaningless scores" guard. Every vLLM pooling response carries
``usage.prompt_tokens``; it is compared with the tokens this client counted for what it sent. A
server that wraps the text in a template of its own (``--chat-template``, a double template) or
tokenizes differently counts other tokens, and :class:`TemplateMismatchError` says what to fix.

Transport (``_requester``): ``httpx.Client`` and a real ``httpx.AsyncClient`` drive one shared
request plan (round-robin and failover over several base URLs, retries with exponential backoff
and jitter on connection errors and 408/429/502/503/504 honouring ``Retry-After``, the total time
bound on the whole call including the answer's body, a size limit on each answer). Large inputs
are cut into chunks of ``max_batch_size`` sequences sent concurrently (at most ``max_concurrency``
at a time) and put back in order; one failed chunk fails the call: a partial result is never
returned.
"""

from __future__ import annotations

from ._apis import APIS, SHAPES, ApiShape
from ._engine import RemoteEngine
from ._protocol import (
    CONTROL_TOKENS,
    MAX_RETRY_AFTER,
    NEUTRALISER,
    RETRY_STATUSES,
    TextRenderer,
    neutralise,
    parse_retry_after,
    redact_url,
)
from ._requester import API_KEY_ENV
from ._server_tokenizer import ServerTokenizer

__all__ = [
    "APIS",
    "API_KEY_ENV",
    "SHAPES",
    "ApiShape",
    "CONTROL_TOKENS",
    "MAX_RETRY_AFTER",
    "NEUTRALISER",
    "RETRY_STATUSES",
    "RemoteEngine",
    "ServerTokenizer",
    "TextRenderer",
    "neutralise",
    "parse_retry_after",
    "redact_url",
]
