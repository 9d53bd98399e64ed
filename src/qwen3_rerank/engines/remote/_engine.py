"""RemoteEngine: scores on a ``vllm serve`` through :class:`~._requester.Requester`."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from typing_extensions import Self

from ..._exceptions import (
    AuthenticationError,
    ConfigurationError,
    EngineError,
    InvalidScoreError,
    RemoteError,
    missing_dependency,
)
from ..._tokenizer import Qwen3Tokenizer, Tokenizer
from ..._types import EncodedPair, EngineOutput
from .._base import Engine
from . import _apis as apis
from . import _protocol as proto
from ._apis import ApiShape, Parsed
from ._probe import ANY_ERROR, resolve_plan
from ._protocol import TextRenderer
from ._requester import API_KEY_ENV, Plan, Requester, clean_api_key
from ._server_tokenizer import ServerTokenizer
from ._transport import normalise_base_url

__all__ = ["RemoteEngine"]

logger = logging.getLogger("qwen3_rerank.engines.remote")

_ANY_ERROR = ANY_ERROR
_SOFT_DIAGNOSTIC = _ANY_ERROR - proto.RETRY_STATUSES  # busy answers are still retried


@dataclass
class _Chunk:
    start: int
    pairs: Sequence[EncodedPair]


class RemoteEngine(Engine):
    """Score on a remote ``vllm serve`` (or any Jina/Cohere-style ``/rerank`` server).

    Creating the engine contacts no server; the first call (or reading :attr:`max_model_len`
    or :attr:`tokenizer` when they must come from the server) does.

    Args:
        base_url: The server, e.g. ``"http://10.0.0.5:8000"``, or several replicas for round-robin
            and failover. A trailing ``/v1`` is ignored; a path is kept (a gateway's prefix), and
            so is a query string (``?token=…``): request paths are added to the path, the query
            is sent with every request and never shown in messages or logs.
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
        api_key: Sent as ``Authorization: Bearer …`` (default: ``$QWEN3_RERANK_API_KEY``);
            surrounding whitespace is removed (a key read from a file ends with a newline); never
            logged or shown in ``repr`` or errors.
        timeout: Seconds one attempt may wait between two pieces of its answer.
        connect_timeout: Seconds to open a connection (a dead replica is left quickly).
        total_timeout: Seconds one call may take in all: every request of it (probes, chunks,
            retries, waits, ``/tokenize``, ``/v1/models``), each answer's body included.
        max_retries: Further attempts per request after a retryable failure.
        backoff: First retry delay in seconds; doubles per attempt (with jitter) up to
            ``max_backoff``. A ``Retry-After`` header is honoured up to 30 seconds
            (:data:`MAX_RETRY_AFTER`), for the wait and for how long a busy replica is left
            alone; a wait that would pass ``total_timeout`` fails the call at once.
        max_backoff: Longest computed delay between two attempts.
        max_batch_size: Most sequences in one request.
        max_concurrency: Most requests of one call in flight at once.
        max_connections: Size of the connection pool.
        verify_template: Compare the server's ``usage.prompt_tokens`` with our own count and
            raise :class:`TemplateMismatchError` when they differ (a server that reports no
            count is warned about once).
        max_model_len: The server's context length (default: read from ``GET /v1/models``).
        client: An ``httpx.Client`` to use (not closed by this engine).
        async_client: An ``httpx.AsyncClient`` to use (not closed by this engine).
        transport: An ``httpx`` transport for the clients this engine creates (tests:
            ``httpx.MockTransport``).
        async_transport: Async transport (default: ``transport``).

    Answers are read up to a size derived from the request (about 1 MiB plus 4 KiB a result);
    a larger one fails the call. Redirects are not followed.

    Example:
        >>> from qwen3_rerank import Reranker
        >>> from qwen3_rerank.engines import RemoteEngine
        >>> engine = RemoteEngine("http://localhost:8000", model="Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
        >>> Reranker(engine).rerank("what is BM25?", ["BM25 is a ranking function.", "Paris"])  # doctest: +SKIP
    """

    name: ClassVar[str] = "remote"
    extra: ClassVar[str] = "http"
    packages: ClassVar[tuple[str, ...]] = ("httpx",)
    uses_server: ClassVar[bool] = True
    option_choices: ClassVar[dict[str, tuple[Any, ...]]] = {"api": apis.APIS}
    #: The server's dtype is not known to the client.
    dtype: str | None = None

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        *,
        model: str | os.PathLike[str] | None = None,
        served_model_name: str | None = None,
        tokenizer: Any = None,
        api: str = "auto",
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
            import httpx  # noqa: F401
        except ImportError as exc:
            raise missing_dependency("httpx", "http", exc) from exc
        if base_url is None:
            raise ConfigurationError(
                "RemoteEngine needs base_url=: the address of your `vllm serve`, e.g. "
                "'http://localhost:8000' (or a list of replicas)"
            )
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigurationError("base_url must be one or more http(s):// URLs, got none")
        for u in urls:
            _check_url(u)
        if api not in apis.APIS:
            raise ConfigurationError(f"api must be one of {apis.APIS}, got {api!r}")
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
        self.base_urls: tuple[str, ...] = tuple(normalise_base_url(u) for u in urls)
        self.api = api
        self.model = None if model is None else str(model)
        self.served_model_name = served_model_name
        self.total_timeout = float(total_timeout)
        self.max_batch_size = max_batch_size
        self.max_concurrency = max_concurrency
        self.verify_template = verify_template
        key = clean_api_key(api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None)
        self._requester = Requester(
            self.base_urls, timeout=float(timeout), connect_timeout=float(connect_timeout),
            total_timeout=self.total_timeout, max_retries=max_retries, backoff=float(backoff),
            max_backoff=float(max_backoff), max_concurrency=max_concurrency, max_connections=max_connections,
            api_key=key, client=client, async_client=async_client, transport=transport,
            async_transport=async_transport,
        )  # fmt: skip
        self._tokenizer_arg = tokenizer
        self._tokenizer: Any = None
        self._max_model_len = max_model_len
        self._discovered: dict[str, Any] | None = None
        self._resolved: tuple[ApiShape, str] | None = None  # (api, path)
        self._lock = threading.RLock()
        self._resolve_lock = threading.Lock()
        self._async_resolve: tuple[Any, asyncio.Lock] | None = None
        self._text_renderer: TextRenderer | None = None
        self._warned_no_usage = False
        self._closed = False

    # -- Engine interface ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        """The local :class:`~qwen3_rerank.Qwen3Tokenizer`, or a :class:`ServerTokenizer` that
        tokenizes through the server when none can be loaded."""
        if self._tokenizer is None:
            with self._lock:
                self._check_open()
                if self._tokenizer is None:
                    self._tokenizer = self._load_tokenizer()
        tokenizer: Tokenizer = self._tokenizer
        return tokenizer

    @property
    def model_name(self) -> str:  # type: ignore[override]  # read-only view of Engine's attribute
        """The served model's name as far as known without asking the server ("" if unknown)."""
        info = self._discovered or {}
        return self.served_model_name or self.model or info.get("id") or ""

    @property
    def max_model_len(self) -> int | None:  # type: ignore[override]  # read-only view of Engine's attribute
        """The server's context length (``GET /v1/models`` on first read), or the value passed in."""
        if self._max_model_len is None and not self._closed:
            info = self._discover()
            value = info.get("max_model_len") if info else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                self._max_model_len = value
        return self._max_model_len

    @property
    def plan_may_block(self) -> bool:  # type: ignore[override]  # read-only view of Engine's attribute
        """Always with the server's ``/tokenize``; until it is loaded for a tokenizer that must be
        fetched (hub, disk, ``/v1/models``); until ``max_model_len`` is known when it was not
        passed (``GET /v1/models``); else never."""
        if self._max_model_len is None and self._discovered is None:
            return True  # reading max_model_len asks the server (GET /v1/models)
        if self._tokenizer is not None:
            return isinstance(self._tokenizer, ServerTokenizer)
        arg = self._tokenizer_arg
        return arg is None or isinstance(arg, (str, os.PathLike, ServerTokenizer))

    @property
    def resolved_api(self) -> str | None:
        """The protocol in use once known (``"classify"``, ``"score"``, ``"rerank"``)."""
        return None if self._resolved is None else self._resolved[0].name

    def request_json(
        self, method: str, path: str, payload: Any = None, *, seconds: float | None = None
    ) -> tuple[int, Any, str]:
        """One request through this engine's transport, for diagnostics (``qwen3-rerank check``).

        Replicas, retries, the API key and ``total_timeout`` apply as for scoring; ``seconds``
        bounds this request further (a caller's overall time limit). Returns ``(HTTP status,
        parsed JSON or None, body excerpt)``; an error status (404, 400 …) is returned, not
        raised. Connection failures and timeouts raise :class:`~qwen3_rerank.RemoteError`.
        """
        self._check_open()
        _url, answer = self._requester.call(method, path, payload, soft=_SOFT_DIAGNOSTIC, seconds=seconds)
        return answer.status, answer.json, self._requester.scrub(proto.excerpt(answer.text))

    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        self._check_open()
        if not pairs:
            return EngineOutput(logits=[], prompt_tokens=0)
        deadline = time.monotonic() + self.total_timeout
        if self._resolved is None:
            with self._resolve_lock:  # one probe, however many threads start at once
                if self._resolved is None:
                    self._requester.run(self._resolve_plan(deadline))
        api, path = cast("tuple[ApiShape, str]", self._resolved)  # set by _resolve_plan
        chunks = self._chunks(api, pairs)
        plans = [self._chunk_plan(api, path, c, deadline, self._prepare(api, c)) for c in chunks]
        results = self._requester.run_many(plans)
        return self._assemble(api, results, len(pairs), len(chunks))

    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        self._check_open()
        if not pairs:
            return EngineOutput(logits=[], prompt_tokens=0)
        deadline = time.monotonic() + self.total_timeout
        if self._resolved is None:
            async with self._probe_lock():
                if self._resolved is None:
                    await self._requester.arun(self._resolve_plan(deadline))
        api, path = cast("tuple[ApiShape, str]", self._resolved)  # set by _resolve_plan
        chunks = self._chunks(api, pairs)
        gate = asyncio.Semaphore(self.max_concurrency)
        # Rendering text through the server's tokenizer (/detokenize, /tokenize) is sync HTTP:
        # done on a worker thread, never on the caller's event loop.
        blocking = api.sends_text and isinstance(self.tokenizer, ServerTokenizer)

        async def one(chunk: _Chunk) -> Parsed:
            async with gate:
                prepared = await asyncio.to_thread(self._prepare, api, chunk) if blocking else self._prepare(api, chunk)
                parsed: Parsed = await self._requester.arun(self._chunk_plan(api, path, chunk, deadline, prepared))
                return parsed

        tasks = [asyncio.ensure_future(one(c)) for c in chunks]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:  # one failure fails the call: stop the rest, never return part
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return self._assemble(api, list(results), len(pairs), len(chunks))

    def _probe_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._lock:  # an asyncio.Lock belongs to one loop: a new loop gets a new one
            if self._async_resolve is None or self._async_resolve[0] is not loop:
                self._async_resolve = (loop, asyncio.Lock())
            return self._async_resolve[1]

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"{self!r} is closed; create a new RemoteEngine")

    def close(self) -> None:
        """Release the connections, threads and clients this engine created (idempotent); any
        later call raises :class:`~qwen3_rerank.EngineError`. Injected clients stay open."""
        self._closed = True
        self._requester.close()

    async def aclose(self) -> None:
        self._closed = True
        await self._requester.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        shown = self._requester.shown_urls
        urls = shown[0] if len(shown) == 1 else list(shown)
        return (
            f"RemoteEngine(base_url={urls!r}, model={self.model!r}, api={self.api!r}, "
            f"api_key={self._requester._api_key!r})"
        )

    # -- chunking and reassembly -----------------------------------------------------------------
    def _chunks(self, api: ApiShape, pairs: Sequence[EncodedPair]) -> list[_Chunk]:
        """Consecutive runs of at most ``max_batch_size`` pairs (of one query for a one-query API)."""
        chunks: list[_Chunk] = []
        start = 0
        n = len(pairs)
        while start < n:
            end = min(start + self.max_batch_size, n)
            if api.one_query:
                first = pairs[start].input_ids[: pairs[start].query_length]
                stop = start + 1
                while stop < end and pairs[stop].input_ids[: pairs[stop].query_length] == first:
                    stop += 1
                end = stop
            chunks.append(_Chunk(start, pairs[start:end]))
            start = end
        return chunks

    @staticmethod
    def _assemble(api: ApiShape, results: Sequence[Parsed], n: int, requests: int) -> EngineOutput:
        logits = [v for r in results for v in r.logits]
        tokens = [r.prompt_tokens for r in results]
        total = sum(t for t in tokens if t is not None) if all(t is not None for t in tokens) else None
        if len(logits) != n:  # pragma: no cover - each chunk is checked already
            raise InvalidScoreError(f"got {len(logits)} scores for {n} sequences")
        return EngineOutput(logits=logits, prompt_tokens=total, extra={"api": api.name, "requests": requests})

    # -- the plans -------------------------------------------------------------------------------
    def _renderer(self) -> TextRenderer:
        if self._text_renderer is None:
            self._text_renderer = TextRenderer(self.tokenizer)
        return self._text_renderer

    def _payload_model(self) -> str | None:
        return self.served_model_name or self.model or (self._discovered or {}).get("id")

    def _prepare(self, api: ApiShape, chunk: _Chunk) -> tuple[dict[str, Any], int | None]:
        """A chunk's body and the tokens a correct server counts for it (may ask ``/tokenize``)."""
        renderer = self._renderer() if api.sends_text else None
        payload = apis.build_payload(api, chunk.pairs, self._payload_model(), renderer)
        tokenizer = self.tokenizer if api.sends_text else None  # token ids are counted as they are
        expected = apis.expected_tokens(api, chunk.pairs, tokenizer, renderer) if self.verify_template else None
        return payload, expected

    def _chunk_plan(
        self, api: ApiShape, path: str, chunk: _Chunk, deadline: float, prepared: tuple[dict[str, Any], int | None]
    ) -> Plan:
        payload, expected = prepared
        url, answer = yield from self._requester.request("POST", path, payload, deadline, results=len(chunk.pairs))
        if answer.json_error is not None:
            raise RemoteError(
                f"{url} answered HTTP {answer.status} with a body that is not JSON ({answer.json_error}); "
                "is base_url a vLLM server (and not a proxy's error page)?",
                status_code=answer.status,
                url=url,
                body=proto.excerpt(answer.text),
            )
        parsed = apis.parse_response(api, answer.json, len(chunk.pairs), url)
        if expected is not None:
            if parsed.prompt_tokens is None:
                self._warn_no_usage(url)
            else:
                apis.check_tokens(parsed, expected, url, api)
        return parsed

    def _warn_no_usage(self, url: str) -> None:
        if not self._warned_no_usage:
            self._warned_no_usage = True
            logger.warning(
                "remote engine: %s sent no usable usage.prompt_tokens, so the template check could not "
                "run (a server adding its own template would go unnoticed); this is said once",
                url,
            )

    def _resolve_plan(self, deadline: float) -> Plan:
        """Find the protocol once (``api="auto"`` probes; an explicit api only finds its path)."""
        names = apis.AUTO_ORDER if self.api == "auto" else (self.api,)
        found = yield from resolve_plan(self._requester, names, self._payload_model(), deadline, self.verify_template)
        self._resolved = found
        return found

    # -- discovery and tokenizer -------------------------------------------------------------------
    def _discover(self) -> dict[str, Any] | None:
        """``GET /v1/models`` once: the served model's id and ``max_model_len``."""
        if self._discovered is not None:
            return self._discovered
        try:
            _url, answer = self._requester.call("GET", "/v1/models", None, soft=proto.UNAVAILABLE, seconds=30.0)
        except AuthenticationError:
            raise
        except RemoteError as exc:
            logger.warning("remote engine: could not read /v1/models (%s); context length unknown", proto.short(exc))
            return None
        info: dict[str, Any] = {}
        data = answer.json.get("data") if isinstance(answer.json, dict) else None
        if answer.status < 300 and isinstance(data, list) and data:
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
            return ServerTokenizer(self._requester)
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
        return ServerTokenizer(self._requester)


def _check_url(url: Any) -> None:
    """A base URL must parse and be http(s) with a host (the scheme in any case: RFC 3986)."""
    import urllib.parse

    if not isinstance(url, str):
        raise ConfigurationError(
            f"base_url must be a string URL such as 'http://host:8000', got a {type(url).__name__}"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check ("http://h:x", "http://h:99999")
    except ValueError as exc:
        raise ConfigurationError(
            f"base_url is not a valid URL ({exc}); write it as http://host:port, an IPv6 host in "
            "brackets: http://[::1]:8000 (the URL is not shown: it may hold a password)"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        what = f"the scheme {parts.scheme!r}" if parts.scheme not in ("http", "https") else "no host"
        raise ConfigurationError(
            f"base_url must be an http:// or https:// URL with a host, e.g. 'http://10.0.0.5:8000'; this "
            f"one has {what} (the URL is not shown: it may hold a password)"
        )
