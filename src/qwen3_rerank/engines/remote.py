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
    the seed's request. vLLM tokenizes ``text_1 + text_2`` as one string with nothing between.
``"rerank"``
    ``POST /v1/rerank`` (then ``/rerank``) with ``{"model", "query", "documents", "top_n"}``
    (Jina/Cohere style); ``query``/``documents`` are the templated parts, as for ``/score``.
``"auto"``
    Probes ``classify``, ``score``, ``rerank`` once with a one-token request and caches the first
    that works.

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

Transport: ``httpx.Client`` and a real ``httpx.AsyncClient`` drive one shared request plan (a
generator that yields "send this" / "sleep that long" and does everything else: payloads,
round-robin and failover over several base URLs, retries with exponential backoff and jitter on
connection errors and 408/429/502/503/504 honouring ``Retry-After``, the total time bound,
response parsing). Large inputs are cut into chunks of ``max_batch_size`` sequences sent
concurrently (at most ``max_concurrency`` at a time) and put back in order; one failed chunk fails
the call: a partial result is never returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import itertools
import logging
import math
import os
import random
import re
import threading
import time
import unicodedata
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from typing_extensions import Self

from .. import prompts
from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    InvalidScoreError,
    RemoteError,
    RemoteTimeoutError,
    TemplateMismatchError,
    missing_dependency,
)
from .._scores import log_odds
from .._tokenizer import Qwen3Tokenizer
from .._types import EncodedPair, EngineOutput
from ..settings import ENV_API_KEY as API_KEY_ENV
from ._base import Engine

__all__ = ["API_KEY_ENV", "RemoteEngine"]

logger = logging.getLogger(__name__)

Api = Literal["auto", "classify", "score", "rerank"]
_APIS = ("auto", "classify", "score", "rerank")
# Paths tried in order for each protocol (a 404/405 moves to the next one).
_PATHS: dict[str, tuple[str, ...]] = {
    "classify": ("/classify",),
    "score": ("/score", "/v1/score"),
    "rerank": ("/v1/rerank", "/rerank"),
}
_AUTO_ORDER = ("classify", "score", "rerank")

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
"""Statuses worth another attempt (the server is busy, restarting or behind a proxy that is)."""
# Answers that mean "this endpoint is not offered here" while probing.
_UNAVAILABLE = frozenset({400, 404, 405, 422, 500, 501})

# Qwen3's added tokens (ids 151643-151668): every one must stay plain text inside user text.
CONTROL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
_CONTROL_RE = re.compile("|".join(re.escape(t) for t in sorted(CONTROL_TOKENS, key=len, reverse=True)))
NEUTRALISER = "\u200b"
"""ZERO WIDTH SPACE, inserted after the first character of a control-token string in user text."""

# Qwen2/2.5/3's pre-tokenizer split (the BPE never merges across these pieces).
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


# ------------------------------------------------------------------------------------------------
# Pure helpers (no I/O): payloads, parsing, retry policy. Shared by the sync and async paths.
# ------------------------------------------------------------------------------------------------
def neutralise(text: str) -> str:
    """Make every control-token string in user text plain text for a text endpoint.

    Inserts :data:`NEUTRALISER` after the first character of each occurrence, repeating until
    none is left (an insertion can never create a new one, the loop is a safety net).

    Example:
        >>> neutralise("a <|im_end|> b") == "a <\\u200b|im_end|> b"
        True
    """
    while True:
        new = _CONTROL_RE.sub(lambda m: m.group(0)[0] + NEUTRALISER + m.group(0)[1:], text)
        if new == text or not _CONTROL_RE.search(new):
            return new
        text = new


class TextRenderer:
    """Renders a pair's token ids as the (text_1, text_2) a text endpoint takes.

    Only token ids cross the engine boundary; this engine alone sends text. The ids are
    ``prefix + query part + document part + suffix`` (see :class:`~qwen3_rerank.PairEncoder`):
    the template parts are written as the model card writes them, the user parts are decoded
    from their (plain-tokenized) ids and neutralised, so that a server re-tokenizing the text gets
    the same ids and no control token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._prefix = tokenizer.encode_template(prompts.SYSTEM_PREFIX)
        self._suffix = tokenizer.encode_template(prompts.ASSISTANT_SUFFIX)

    def texts(self, pair: EncodedPair) -> tuple[str, str]:
        """(text_1, text_2) of a pair with its user parts neutralised; the template intact."""
        ids, p, s = pair.input_ids, len(self._prefix), len(self._suffix)
        if not (
            list(ids[:p]) == self._prefix
            and list(ids[len(ids) - s :]) == self._suffix
            and p <= pair.query_length <= len(ids) - s
        ):
            raise ConfigurationError(
                "a text endpoint can only send sequences built by Reranker/PairEncoder (Qwen3-Reranker "
                "prefix, query part, document part, suffix); these ids do not have that shape"
            )
        user_q = self._tokenizer.decode(ids[p : pair.query_length])
        user_d = self._tokenizer.decode(ids[pair.query_length : len(ids) - s])
        return prompts.SYSTEM_PREFIX + neutralise(user_q), neutralise(user_d) + prompts.ASSISTANT_SUFFIX


def _build_payload(
    api: str, pairs: Sequence[EncodedPair], model: str | None, renderer: TextRenderer | None = None
) -> dict[str, Any]:
    """The JSON body for one chunk of ``pairs`` (pure; the one place request shapes live).

    ``"rerank"`` chunks must share one query (the chunker guarantees it).
    """
    body: dict[str, Any] = {} if model is None else {"model": model}
    if api == "classify":
        # use_activation=false: the raw W_yes - W_no logit, exact even where P(yes) rounds to 1.
        body.update(input=[list(p.input_ids) for p in pairs], add_special_tokens=False, use_activation=False)
        return body
    if renderer is None:
        raise ValueError(f"api {api!r} sends text: pass a TextRenderer")
    texts = [renderer.texts(p) for p in pairs]
    firsts = [t[0] for t in texts]
    seconds = [t[1] for t in texts]
    if api == "score":
        same = all(f == firsts[0] for f in firsts)
        body.update(text_1=firsts[0] if same else firsts, text_2=seconds)
        return body
    if api == "rerank":
        if any(f != firsts[0] for f in firsts):  # pragma: no cover - guarded by the chunker
            raise ValueError("a rerank request holds one query")
        body.update(query=firsts[0], documents=seconds, top_n=len(seconds))
        return body
    raise ValueError(f"unknown api {api!r}")


def _expected_tokens(api: str, pairs: Sequence[EncodedPair], tokenizer: Any, renderer: TextRenderer) -> int:
    """Tokens a correct server counts for the chunk: exactly ours for ids, a re-count for text."""
    if api == "classify":
        return sum(len(p.input_ids) for p in pairs)
    texts = [a + b for a, b in (renderer.texts(p) for p in pairs)]
    batch = getattr(tokenizer, "count_template_batch", None)
    if batch is not None:
        return sum(batch(texts))
    return sum(len(tokenizer.encode_template(t)) for t in texts)


@dataclass(frozen=True, slots=True)
class _Parsed:
    logits: list[float]
    prompt_tokens: int | None


def _excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _parse_response(api: str, payload: Any, n: int, url: str) -> _Parsed:
    """Scores in input order from one decoded JSON answer (pure).

    Raises:
        RemoteError: the body is not the expected shape.
        InvalidScoreError: a score is missing, repeated, non-finite or not a probability.
    """

    def bad(why: str) -> RemoteError:
        return RemoteError(
            f"unexpected answer from {url}: {why}. Is this a vLLM pooling server running a "
            f"Qwen3-Reranker (api={api!r})?",
            status_code=200,
            url=url,
            body=_excerpt(repr(payload)),
        )

    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object, got {type(payload).__name__}")
    key = "results" if api == "rerank" else "data"
    items = payload.get(key)
    if not isinstance(items, list):
        raise bad(f"no {key!r} list")
    values: list[float | None] = [None] * n
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("index"), int):
            raise bad(f"an item of {key!r} has no integer 'index'")
        i = item["index"]
        if not 0 <= i < n:
            raise InvalidScoreError(f"{url} returned a result for index {i}, but only {n} sequences were sent")
        if values[i] is not None:
            raise InvalidScoreError(f"{url} returned two results for index {i}")
        if api == "classify":
            probs = item.get("probs")
            if not isinstance(probs, list) or len(probs) != 1:
                raise bad(
                    f"'probs' should hold one value (a one-label reranker head), got {probs!r}; serve "
                    "the model with the seed's --hf-overrides (Qwen3ForSequenceClassification, "
                    'classifier_from_token ["no", "yes"], is_original_qwen3_reranker)'
                )
            value = probs[0]
        else:
            value = item.get("relevance_score" if api == "rerank" else "score")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"the score of index {i} is {value!r}, not a number")
        value = float(value)
        if not math.isfinite(value):
            raise InvalidScoreError(
                f"{url} returned the non-finite score {value!r} for sequence {i}; nothing was "
                "ranked. The server's numerics failed (fp16 overflow: serve with --dtype bfloat16 "
                "or float32)."
            )
        values[i] = value
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise InvalidScoreError(
            f"{url} returned {n - len(missing)} results for {n} sequences (missing indices "
            f"{missing[:10]}); nothing was ranked rather than rank a partial result"
        )
    usage = payload.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    prompt_tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None
    vals = [float(v) for v in values]  # type: ignore[arg-type]
    if api == "classify":
        return _Parsed(vals, prompt_tokens)
    for i, v in enumerate(vals):
        if not 0.0 <= v <= 1.0:
            raise InvalidScoreError(
                f"{url} returned score {v!r} for sequence {i}, not a probability in [0, 1]; is "
                "the server a Qwen3-Reranker served with the seed's --hf-overrides?"
            )
    return _Parsed([log_odds(v) for v in vals], prompt_tokens)


def _check_tokens(parsed: _Parsed, expected: int, url: str, api: str) -> None:
    """The "200 OK but meaningless scores" guard."""
    if parsed.prompt_tokens is None or parsed.prompt_tokens == expected:
        return
    if api == "classify":
        fix = (
            "The server scored other token ids than were sent; check that it serves the model "
            "this client tokenizes for (pass tokenizer=/model= matching the served model)."
        )
    else:
        fix = (
            "The server does not score the prompt this client built: it applies a template of its "
            "own (restart `vllm serve` without --chat-template: this client sends the complete "
            "Qwen3-Reranker prompt itself), or it tokenizes with another tokenizer (pass "
            "tokenizer=/model= matching the served model). api='classify' sends token ids and "
            "avoids both."
        )
    raise TemplateMismatchError(
        f"{url} counted {parsed.prompt_tokens} prompt tokens for a request this client counts as "
        f"{expected} (api={api!r}); its scores would be meaningless. {fix} "
        "(verify_template=False skips this check.)",
        status_code=200,
        url=url,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:  # pragma: no cover - older Pythons
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _status_error(status: int, text: str, url: str) -> RemoteError:
    body = _excerpt(text)
    if status in (401, 403):
        return AuthenticationError(
            f"{url} refused the request with HTTP {status}: set the API key (api_key=... or the "
            f"{API_KEY_ENV} environment variable) to the key `vllm serve --api-key` was started "
            f"with. Body: {body}",
            status_code=status,
            url=url,
            body=body,
        )
    hint = ""
    if status == 404 and "model" in text.lower():
        hint = " Pass served_model_name= (or model=) with the name the server serves."
    elif status == 400 and ("max_model_len" in text or "maximum context length" in text or "too long" in text):
        hint = " Lower Reranker(max_length=...) to the server's --max-model-len."
    return RemoteError(f"{url} answered HTTP {status}.{hint} Body: {body}", status_code=status, url=url, body=body)


# ------------------------------------------------------------------------------------------------
# The request plan: one generator shared by the sync and async drivers.
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Send:
    method: str
    url: str
    json: Any
    timeout: float  # read/write budget of this attempt
    connect: float
    pool: float


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(slots=True)
class _Answer:
    """What a driver sends back into the plan for a :class:`_Send`."""

    status: int
    text: str
    headers: dict[str, str]
    json: Any = None
    json_error: str | None = None


Plan = Generator[Any, Any, Any]


class _Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')" if self._value else "None"

    __str__ = __repr__


@dataclass
class _Chunk:
    start: int
    pairs: Sequence[EncodedPair]


@dataclass
class _Health:
    down_until: dict[str, float] = field(default_factory=dict)


class RemoteEngine(Engine):
    """Score on a remote ``vllm serve`` (or any Jina/Cohere-style ``/rerank`` server).

    Args:
        base_url: The server, e.g. ``"http://10.0.0.5:8000"``, or several replicas for round-robin
            and failover. A trailing ``/v1`` is ignored.
        model: Hub id or local directory of the served model: where the tokenizer comes from,
            and the ``"model"`` sent in requests unless ``served_model_name`` is given. ``None``
            asks the server (``GET /v1/models``).
        served_model_name: The name the server serves (``vllm serve --served-model-name``).
        tokenizer: A :class:`~qwen3_rerank.Qwen3Tokenizer`, a ``tokenizers.Tokenizer`` or a
            transformers fast tokenizer, a path/hub id, or ``"server"`` to tokenize through the
            server's ``/tokenize`` (the last resort, also used when nothing else loads; a round
            trip per call).
        api: ``"auto"`` (probe once: token ids through ``/classify`` first, then ``/score``, then
            ``/rerank``), or one of ``"classify"``, ``"score"``, ``"rerank"``.
        api_key: Sent as ``Authorization: Bearer …`` (default: ``$QWEN3_RERANK_API_KEY``); never
            logged or shown in ``repr``.
        timeout: Seconds one attempt may wait for its answer.
        connect_timeout: Seconds to open a connection (a dead replica is left quickly).
        total_timeout: Seconds one :meth:`score` call may take in all (chunks, retries, waits).
        max_retries: Further attempts per request after a retryable failure.
        backoff: First retry delay in seconds; doubles per attempt (with jitter) up to
            ``max_backoff``. A ``Retry-After`` header is honoured.
        max_backoff: Longest computed delay between two attempts.
        max_batch_size: Most sequences in one request.
        max_concurrency: Most requests of one call in flight at once.
        max_connections: Size of the connection pool.
        verify_template: Compare the server's ``usage.prompt_tokens`` with our own count and
            raise :class:`TemplateMismatchError` when they differ.
        max_model_len: The server's context length (default: read from ``GET /v1/models``).
        client: An ``httpx.Client`` to use (not closed by this engine).
        async_client: An ``httpx.AsyncClient`` to use (not closed by this engine).
        transport: An ``httpx`` transport for the clients this engine creates (tests:
            ``httpx.MockTransport``).
        async_transport: Async transport (default: ``transport``).

    Example:
        >>> from qwen3_rerank import Reranker
        >>> from qwen3_rerank.engines import RemoteEngine
        >>> engine = RemoteEngine("http://localhost:8000", model="Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
        >>> Reranker(engine).rerank("what is BM25?", ["BM25 is a ranking function.", "Paris"])  # doctest: +SKIP
    """

    name = "remote"

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        *,
        model: str | os.PathLike[str] | None = None,
        served_model_name: str | None = None,
        tokenizer: Any = None,
        api: Api = "auto",
        api_key: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        total_timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_batch_size: int = 32,
        max_concurrency: int = 8,
        max_connections: int = 100,
        verify_template: bool = True,
        max_model_len: int | None = None,
        client: Any = None,
        async_client: Any = None,
        transport: Any = None,
        async_transport: Any = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise missing_dependency("httpx", "http", exc) from exc
        self._httpx = httpx
        if base_url is None:
            raise ConfigurationError(
                "RemoteEngine needs base_url=: the address of your `vllm serve`, e.g. "
                "'http://localhost:8000' (or a list of replicas)"
            )
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
            raise ConfigurationError(f"base_url must be one or more http(s):// URLs, got {base_url!r}")
        self.base_urls: tuple[str, ...] = tuple(_normalise_url(u) for u in urls)
        if api not in _APIS:
            raise ConfigurationError(f"api must be one of {_APIS}, got {api!r}")
        for label, value, low in (
            ("timeout", timeout, 0), ("connect_timeout", connect_timeout, 0), ("total_timeout", total_timeout, 0),
            ("backoff", backoff, -1), ("max_backoff", max_backoff, -1),
        ):  # fmt: skip
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > low:
                raise ValueError(f"{label} must be a number > {max(low, 0)}, got {value!r}")
        for label, value, low in (
            ("max_retries", max_retries, 0), ("max_batch_size", max_batch_size, 1),
            ("max_concurrency", max_concurrency, 1), ("max_connections", max_connections, 1),
        ):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
        self.api: Api = api
        self.model = None if model is None else str(model)
        self.served_model_name = served_model_name
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.total_timeout = float(total_timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_batch_size = max_batch_size
        self.max_concurrency = max_concurrency
        self.verify_template = verify_template
        self._api_key = _Secret(api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None)
        self._tokenizer_arg = tokenizer
        self._tokenizer: Any = None
        self._max_model_len = max_model_len
        self._discovered: dict[str, Any] | None = None
        self._resolved: tuple[str, str] | None = None  # (api, path)
        self._rr = itertools.count()
        self._health = _Health()
        self._random = random.Random()
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._transport = transport
        self._async_transport = async_transport if async_transport is not None else transport
        self._client = client
        self._owns_client = client is None
        self._async_client = async_client
        self._owns_async_client = async_client is None
        self._async_loop: Any = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.RLock()
        self._text_renderer: TextRenderer | None = None

    # -- Engine interface ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    @property  # type: ignore[override]
    def max_model_len(self) -> int | None:
        """The server's context length (``GET /v1/models``), or the value passed in."""
        if self._max_model_len is None:
            info = self._discover()
            value = info.get("max_model_len") if info else None
            if isinstance(value, int) and value > 0:
                self._max_model_len = value
        return self._max_model_len

    @property  # type: ignore[override]
    def plan_may_block(self) -> bool:
        """Always with the server's ``/tokenize``; until it is loaded for a tokenizer that must be
        fetched (hub, disk, ``/v1/models``); never for a tokenizer object passed in."""
        if self._tokenizer is not None:
            return isinstance(self._tokenizer, ServerTokenizer)
        arg = self._tokenizer_arg
        return arg is None or isinstance(arg, (str, os.PathLike, ServerTokenizer))

    @property
    def resolved_api(self) -> str | None:
        """The protocol in use once known (``"classify"``, ``"score"``, ``"rerank"``)."""
        return None if self._resolved is None else self._resolved[0]

    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        if not pairs:
            return EngineOutput(logits=[], prompt_tokens=0)
        deadline = time.monotonic() + self.total_timeout
        api, path = self._resolved or self._run_sync(self._resolve_plan(deadline))
        chunks = self._chunks(api, pairs)
        plans = [self._chunk_plan(api, path, c, deadline) for c in chunks]
        if len(plans) == 1 or self.max_concurrency == 1:
            results = [self._run_sync(p) for p in plans]
        else:
            results = self._run_sync_concurrently(plans)
        return self._assemble(api, results, len(pairs), len(chunks))

    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        if not pairs:
            return EngineOutput(logits=[], prompt_tokens=0)
        deadline = time.monotonic() + self.total_timeout
        api, path = self._resolved or await self._run_async(self._resolve_plan(deadline))
        chunks = self._chunks(api, pairs)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(chunk: _Chunk) -> _Parsed:
            async with gate:
                return await self._run_async(self._chunk_plan(api, path, chunk, deadline))

        tasks = [asyncio.ensure_future(one(c)) for c in chunks]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:  # one failure fails the call: stop the rest, never return part
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return self._assemble(api, list(results), len(pairs), len(chunks))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None
        if self._async_client is not None and self._owns_async_client:
            # An AsyncClient can only be closed on its loop: aclose() does it; here it is dropped.
            self._async_client = None

    async def aclose(self) -> None:
        if self._async_client is not None and self._owns_async_client:
            await self._async_client.aclose()
            self._async_client = None
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        urls = self.base_urls[0] if len(self.base_urls) == 1 else list(self.base_urls)
        return f"RemoteEngine(base_url={urls!r}, model={self.model!r}, api={self.api!r}, api_key={self._api_key!r})"

    # -- chunking and reassembly -----------------------------------------------------------------
    def _chunks(self, api: str, pairs: Sequence[EncodedPair]) -> list[_Chunk]:
        """Consecutive runs of at most ``max_batch_size`` pairs (one query per run for rerank)."""
        chunks: list[_Chunk] = []
        start = 0
        n = len(pairs)
        while start < n:
            end = min(start + self.max_batch_size, n)
            if api == "rerank":
                first = pairs[start].input_ids[: pairs[start].query_length]
                stop = start + 1
                while stop < end and pairs[stop].input_ids[: pairs[stop].query_length] == first:
                    stop += 1
                end = stop
            chunks.append(_Chunk(start, pairs[start:end]))
            start = end
        return chunks

    @staticmethod
    def _assemble(api: str, results: Sequence[_Parsed], n: int, requests: int) -> EngineOutput:
        logits = [v for r in results for v in r.logits]
        tokens = [r.prompt_tokens for r in results]
        total = sum(t for t in tokens if t is not None) if all(t is not None for t in tokens) else None
        if len(logits) != n:  # pragma: no cover - each chunk is checked already
            raise InvalidScoreError(f"got {len(logits)} scores for {n} sequences")
        return EngineOutput(logits=logits, prompt_tokens=total, extra={"api": api, "requests": requests})

    # -- the shared plans ------------------------------------------------------------------------
    def _renderer(self) -> TextRenderer:
        if self._text_renderer is None:
            self._text_renderer = TextRenderer(self.tokenizer)
        return self._text_renderer

    def _payload_model(self) -> str | None:
        if self.served_model_name is not None:
            return self.served_model_name
        if self.model is not None:
            return self.model
        info = self._discovered
        return info.get("id") if info else None

    def _chunk_plan(self, api: str, path: str, chunk: _Chunk, deadline: float) -> Plan:
        renderer = None if api == "classify" else self._renderer()
        payload = _build_payload(api, chunk.pairs, self._payload_model(), renderer)
        expected = _expected_tokens(api, chunk.pairs, self.tokenizer, renderer) if self.verify_template else None  # type: ignore[arg-type]
        url, answer = yield from self._request("POST", path, payload, deadline)
        if answer.json_error is not None:
            raise RemoteError(
                f"{url} answered HTTP {answer.status} with a body that is not JSON ({answer.json_error}); "
                "is base_url a vLLM server (and not a proxy's error page)?",
                status_code=answer.status,
                url=url,
                body=_excerpt(answer.text),
            )
        parsed = _parse_response(api, answer.json, len(chunk.pairs), url)
        if expected is not None:
            _check_tokens(parsed, expected, url, api)
        return parsed

    def _resolve_plan(self, deadline: float) -> Plan:
        """Find the protocol once (``api="auto"`` probes; an explicit api only finds its path)."""
        candidates = _AUTO_ORDER if self.api == "auto" else (self.api,)
        tried: list[str] = []
        model = self._payload_model()
        for api in candidates:
            for path in _PATHS[api]:
                _url, answer = yield from self._request(
                    "POST", path, _probe_payload(api, model), deadline, soft=_UNAVAILABLE
                )
                tried.append(f"{path} -> HTTP {answer.status}")
                if answer.status < 400 and answer.json_error is None and _probe_ok(api, answer.json):
                    self._resolved = (api, path)
                    logger.info("remote engine: using %s %s", api, path)
                    return self._resolved
                if answer.status in (404, 405):
                    continue  # this path is not here; the next path of the same protocol may be
                break  # the path exists but refuses this protocol: try the next protocol
        raise RemoteError(
            f"{self.base_urls[0]} offers none of the reranking endpoints tried ({'; '.join(tried)}). "
            "Serve the model with `vllm serve MODEL --runner pooling --hf-overrides '{...}'` (see "
            "the README), or pass api= for the endpoint your server has.",
            url=self.base_urls[0],
        )

    def _request(
        self, method: str, path: str, payload: Any, deadline: float, soft: frozenset[int] = frozenset()
    ) -> Plan:
        """One request with failover, retries and the time bound; returns (url, _Answer)."""
        attempt = 0
        tried: set[str] = set()
        while True:
            base = self._pick(tried)
            tried.add(base)
            url = base + path
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteTimeoutError(f"no answer from {url} within total_timeout={self.total_timeout}s", url=url)
            retry_after: float | None = None
            try:
                answer: _Answer = yield _Send(
                    method, url, payload, min(self.timeout, remaining), min(self.connect_timeout, remaining), remaining
                )
            except self._httpx.TimeoutException as exc:
                failure: RemoteError = RemoteTimeoutError(
                    f"{url} did not answer in time ({type(exc).__name__}; timeout={self.timeout}s, "
                    f"connect_timeout={self.connect_timeout}s)",
                    url=url,
                )
                if isinstance(exc, self._httpx.ConnectTimeout):
                    self._mark_down(base, None)
            except self._httpx.TransportError as exc:
                failure = RemoteError(f"could not reach {url}: {type(exc).__name__}: {exc}", url=url)
                self._mark_down(base, None)
            except self._httpx.RequestError as exc:  # decoding errors etc.: not transient
                raise RemoteError(f"request to {url} failed: {type(exc).__name__}: {exc}", url=url) from exc
            else:
                if answer.status < 400 or answer.status in soft:
                    return url, answer
                failure = _status_error(answer.status, answer.text, url)
                if answer.status not in RETRY_STATUSES:
                    raise failure
                retry_after = parse_retry_after(answer.headers.get("retry-after"))
                if answer.status in (502, 503, 504):
                    self._mark_down(base, retry_after)
            attempt += 1
            if attempt > self.max_retries:
                raise failure
            delay = self._delay(attempt, retry_after, tried)
            if time.monotonic() + delay >= deadline:
                if isinstance(failure, RemoteTimeoutError):
                    raise failure
                raise RemoteTimeoutError(
                    f"{failure} — and total_timeout={self.total_timeout}s leaves no time for another attempt",
                    status_code=failure.status_code,
                    url=url,
                    body=failure.body,
                ) from failure
            logger.warning("remote engine: %s; retry %d/%d in %.2fs", _short(failure), attempt, self.max_retries, delay)
            if delay > 0:
                yield _Sleep(delay)

    # -- failover and backoff ----------------------------------------------------------------------
    def _pick(self, tried: set[str]) -> str:
        """Round-robin over base URLs, preferring healthy ones not yet tried by this request."""
        n = len(self.base_urls)
        start = next(self._rr)
        order = [self.base_urls[(start + i) % n] for i in range(n)]
        now = time.monotonic()
        down = self._health.down_until
        for ok in (
            lambda u: u not in tried and down.get(u, 0.0) <= now,
            lambda u: down.get(u, 0.0) <= now,
            lambda u: u not in tried,
        ):
            for u in order:
                if ok(u):
                    return u
        return min(order, key=lambda u: down.get(u, 0.0))

    def _mark_down(self, base: str, retry_after: float | None) -> None:
        if len(self.base_urls) > 1:
            self._health.down_until[base] = time.monotonic() + max(retry_after or 0.0, 2.0 * self.backoff, 1.0)

    def _delay(self, attempt: int, retry_after: float | None, tried: set[str]) -> float:
        now = time.monotonic()
        fresh = [u for u in self.base_urls if u not in tried and self._health.down_until.get(u, 0.0) <= now]
        if fresh:
            return 0.0  # fail over to another replica at once
        computed = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * self._random.uniform(0.5, 1.0)
        return max(computed, retry_after) if retry_after is not None else computed

    # -- drivers: the only code that differs between sync and async --------------------------------
    def _timeout(self, send: _Send) -> Any:
        return self._httpx.Timeout(send.timeout, connect=send.connect, pool=send.pool)

    def _headers(self) -> dict[str, str]:
        from .._version import __version__

        headers = {"User-Agent": f"qwen3-rerank/{__version__}", "Accept": "application/json"}
        key = self._api_key.get()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _answer(self, response: Any) -> _Answer:
        answer = _Answer(response.status_code, response.text, {k.lower(): v for k, v in response.headers.items()})
        if response.status_code < 400:
            try:
                answer.json = response.json()
            except ValueError as exc:
                answer.json_error = f"{type(exc).__name__}: {exc}"
        return answer

    def _run_sync(self, plan: Plan) -> Any:
        client = self._sync_client()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = plan.throw(error) if error is not None else plan.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if isinstance(action, _Sleep):
                time.sleep(action.seconds)
                continue
            try:
                response = client.request(
                    action.method, action.url, json=action.json, headers=self._headers(), timeout=self._timeout(action)
                )
                value = self._answer(response)
            except self._httpx.RequestError as exc:
                error = exc

    async def _run_async(self, plan: Plan) -> Any:
        client = self._get_async_client()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = plan.throw(error) if error is not None else plan.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if isinstance(action, _Sleep):
                await asyncio.sleep(action.seconds)
                continue
            try:
                response = await client.request(
                    action.method, action.url, json=action.json, headers=self._headers(), timeout=self._timeout(action)
                )
                value = self._answer(response)
            except self._httpx.RequestError as exc:
                error = exc

    def _run_sync_concurrently(self, plans: list[Plan]) -> list[_Parsed]:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.max_concurrency, thread_name_prefix="qwen3-rerank-http"
                    )
        futures = [self._pool.submit(self._run_sync, p) for p in plans]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:  # one failure fails the call: drop what has not started
                f.cancel()
            concurrent.futures.wait(futures)
            raise

    def _sync_client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._httpx.Client(
                        transport=self._transport, limits=self._limits, timeout=self.timeout
                    )
        return self._client

    def _get_async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._async_client is None or (self._owns_async_client and self._async_loop is not loop):
            # An AsyncClient's connections belong to one event loop: a new loop gets a new client.
            self._async_client = self._httpx.AsyncClient(
                transport=self._async_transport, limits=self._limits, timeout=self.timeout
            )
            self._async_loop = loop
        return self._async_client

    # -- discovery and tokenizer -------------------------------------------------------------------
    def _discover(self) -> dict[str, Any] | None:
        """``GET /v1/models`` once: the served model's id and ``max_model_len``."""
        if self._discovered is not None:
            return self._discovered
        deadline = time.monotonic() + min(self.total_timeout, 30.0)
        try:
            _url, answer = self._run_sync(self._request("GET", "/v1/models", None, deadline, soft=_UNAVAILABLE))
        except AuthenticationError:
            raise
        except RemoteError as exc:
            logger.warning("remote engine: could not read /v1/models (%s); context length unknown", _short(exc))
            return None
        info: dict[str, Any] = {}
        data = answer.json.get("data") if isinstance(answer.json, dict) else None
        if answer.status < 400 and isinstance(data, list) and data:
            wanted = self.served_model_name or self.model
            entry = next((m for m in data if isinstance(m, dict) and m.get("id") == wanted), None)
            entry = entry or (data[0] if isinstance(data[0], dict) else {})
            info = {"id": entry.get("id"), "max_model_len": entry.get("max_model_len")}
        self._discovered = info
        return info

    def _load_tokenizer(self) -> Any:
        arg = self._tokenizer_arg
        if isinstance(arg, (Qwen3Tokenizer, ServerTokenizer)):
            return arg
        if isinstance(arg, str) and arg == "server":
            return ServerTokenizer(self)
        if isinstance(arg, (str, os.PathLike)):
            return Qwen3Tokenizer.from_pretrained(arg)
        if arg is not None:
            return Qwen3Tokenizer.from_tokenizer(arg)
        if self.model is not None:
            return Qwen3Tokenizer.from_pretrained(self.model)
        info = self._discover() or {}
        served = info.get("id")
        if served:
            try:
                return Qwen3Tokenizer.from_pretrained(served)
            except (ConfigurationError, OSError) as exc:  # no local copy, no hub: use the server's /tokenize
                logger.warning(
                    "remote engine: could not load the tokenizer of %r locally (%s); tokenizing through "
                    "the server's /tokenize (slower). Pass model= or tokenizer= to avoid this.",
                    served,
                    exc,
                )
        else:
            logger.warning("remote engine: no model= given and /v1/models did not say; using the server's /tokenize")
        return ServerTokenizer(self)


# ------------------------------------------------------------------------------------------------
# Tokenizing through the server (the last resort).
# ------------------------------------------------------------------------------------------------
class ServerTokenizer:
    """Qwen3Tokenizer's interface over the server's ``/tokenize`` and ``/detokenize``.

    The server's tokenizer turns control-token strings in any text into control tokens, so user
    text is made safe *exactly*: the text is cut inside every control-token string at a boundary
    of Qwen's pre-tokenizer (e.g. ``<|`` | ``im_end|>``), the pieces are joined with the
    ``<|endoftext|>`` token as a separator (a tokenizer encodes the text between two added tokens
    independently), one ``/tokenize`` call encodes everything, and the ids are split at the
    separators again. Because Qwen's BPE never merges across pre-tokenizer pieces, the result is
    the same ids the local plain tokenizer gives: the string ``<|im_end|>`` in a document stays
    ``<|``, ``im``, ``_end``, ``|>``.
    """

    _SEP = "<|endoftext|>"

    def __init__(self, engine: RemoteEngine) -> None:
        from tokenizers import Regex, pre_tokenizers

        self._engine = engine
        self._split = pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated")
        self._cache: dict[str, list[int]] = {}
        self._sep_id = self._tokenize(self._SEP)
        if len(self._sep_id) != 1:
            raise ConfigurationError(f"the server's tokenizer has no {self._SEP!r} token; it is not a Qwen3 tokenizer")
        ids = self._tokenize("".join(CONTROL_TOKENS))
        if len(ids) != len(CONTROL_TOKENS):
            raise ConfigurationError("the server's tokenizer lacks Qwen3's added tokens; it is not a Qwen3 tokenizer")
        self._control_ids = frozenset(ids)

    def __repr__(self) -> str:
        return f"ServerTokenizer({self._engine.base_urls[0]!r})"

    def _tokenize(self, text: str) -> list[int]:
        deadline = time.monotonic() + self._engine.total_timeout
        url, answer = self._engine._run_sync(
            self._engine._request("POST", "/tokenize", {"prompt": text, "add_special_tokens": False}, deadline)
        )
        tokens = answer.json.get("tokens") if isinstance(answer.json, dict) else None
        if not isinstance(tokens, list):
            raise RemoteError(f"{url} did not return 'tokens'", url=url, body=_excerpt(answer.text))
        return [int(t) for t in tokens]

    def _tokenize_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode texts free of control strings in one call, separated by the separator token."""
        if not texts:
            return []
        ids = self._tokenize(self._SEP.join(texts))
        parts: list[list[int]] = [[]]
        for t in ids:
            if t == self._sep_id[0]:
                parts.append([])
            else:
                parts[-1].append(t)
        if len(parts) != len(texts):  # pragma: no cover - would mean a control string slipped in
            raise ConfigurationError("the server's tokenizer split the texts unexpectedly")
        return parts

    def _safe_segments(self, text: str) -> list[str]:
        """Cut ``text`` inside each control-token string, at a pre-tokenizer boundary."""
        text = unicodedata.normalize("NFC", text)  # what Qwen's normalizer does first
        hits = list(_CONTROL_RE.finditer(text))
        if not hits:
            return [text]
        starts = {start for _, (start, _) in self._split.pre_tokenize_str(text)}
        cuts: list[int] = []
        for m in hits:
            inner = [b for b in range(m.start() + 1, m.end()) if b in starts]
            if not inner:  # pragma: no cover - impossible with Qwen's split regex
                raise ConfigurationError(f"cannot neutralise {m.group(0)!r} exactly")
            cuts.append(inner[0])
        bounds = [0, *cuts, len(text)]
        return [text[a:b] for a, b in itertools.pairwise(bounds)]

    # -- Qwen3Tokenizer interface ------------------------------------------------------------------
    def encode_template(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self._tokenize(text)
        return list(self._cache[text])

    def count_template_batch(self, texts: Sequence[str]) -> list[int]:
        """Token counts of trusted texts (control strings recognised) in one call."""
        if any(self._SEP in t for t in texts):
            return [len(self._tokenize(t)) for t in texts]
        return [len(p) for p in self._tokenize_many(texts)]

    def token_id(self, token: str) -> int:
        ids = self.encode_template(token)
        if len(ids) != 1:
            raise ConfigurationError(f"{token!r} is not a single token in the server's tokenizer (got ids {ids})")
        return ids[0]

    @property
    def control_token_ids(self) -> frozenset[int]:
        return self._control_ids

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        segments = [self._safe_segments(t) for t in texts]
        flat = self._tokenize_many([s for segs in segments for s in segs])
        out: list[list[int]] = []
        k = 0
        for segs in segments:
            ids: list[int] = []
            for _ in segs:
                ids.extend(flat[k])
                k += 1
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        deadline = time.monotonic() + self._engine.total_timeout
        url, answer = self._engine._run_sync(
            self._engine._request("POST", "/detokenize", {"tokens": list(ids)}, deadline)
        )
        text = answer.json.get("prompt") if isinstance(answer.json, dict) else None
        if not isinstance(text, str):
            raise RemoteError(f"{url} did not return 'prompt'", url=url, body=_excerpt(answer.text))
        return text


# ------------------------------------------------------------------------------------------------
def _normalise_url(url: str) -> str:
    url = url.rstrip("/")
    url = url.removesuffix("/v1")
    return url


def _probe_payload(api: str, model: str | None) -> dict[str, Any]:
    """A one-token request: cheap, and it proves the endpoint scores with this model."""
    if api == "classify":
        body: dict[str, Any] = {"input": [[0]], "add_special_tokens": False, "use_activation": False}
    elif api == "score":
        body = {"text_1": "a", "text_2": ["b"]}
    else:
        body = {"query": "a", "documents": ["b"], "top_n": 1}
    if model is not None:
        body["model"] = model
    return body


def _probe_ok(api: str, payload: Any) -> bool:
    try:
        _parse_response(api, payload, 1, "probe")
    except (RemoteError, InvalidScoreError):
        return False
    return True


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "…"
