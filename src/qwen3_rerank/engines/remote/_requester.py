"""How requests reach the server: one request plan shared by a sync and an async driver.

A plan is a generator that yields :class:`Send` ("send this") or :class:`Sleep` ("wait that
long") and does everything else: failover over base URLs, retries with exponential backoff and
jitter, ``Retry-After`` (capped), the wall-clock deadline, and the error mapping. The drivers
(:meth:`Requester.run`, :meth:`Requester.arun`) are the only code that differs between sync and
async. The engine and the server tokenizer both use one :class:`Requester`.

The deadline bounds the whole request, body included: answers are streamed and the deadline is
checked between chunks; the async driver wraps each attempt in ``asyncio`` timeouts, the sync
driver lowers every socket read's timeout to the time left (for the connections it creates). An
answer larger than its budget (:func:`~._protocol.answer_budget`) is not read further.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from ..._config import ENV_API_KEY
from ..._exceptions import ConfigurationError, EngineError, RemoteError, RemoteTimeoutError
from . import _protocol as proto
from ._transport import (
    DEADLINE,
    Answer,
    BodyReader,
    Send,
    Sleep,
    bound_reads,
    join_url,
    tls_failure,
    url_secrets,
)

__all__ = ["API_KEY_ENV", "Requester"]

logger = logging.getLogger("qwen3_rerank.engines.remote")

API_KEY_ENV = ENV_API_KEY  # the one definition is in qwen3_rerank._config
"""Environment variable read for the API key when ``api_key`` is not passed."""

Plan = Generator[Any, Any, Any]


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')" if self._value else "None"

    __str__ = __repr__


def clean_api_key(value: str | None) -> str | None:
    """The key without surrounding whitespace (a key read from a file ends with a newline)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"api_key must be a string, got a {type(value).__name__}")
    value = value.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or not value.isascii():
        raise ConfigurationError(
            "the API key holds a control character or a non-ASCII character, which no HTTP header "
            f"can carry; check the value of api_key= or ${API_KEY_ENV} (not shown here)"
        )
    return value or None


@dataclass
class _Health:
    down_until: dict[str, float] = field(default_factory=dict)


class Requester:
    """Sends requests to one of several replicas; owns the HTTP clients it creates."""

    def __init__(
        self,
        base_urls: tuple[str, ...],
        *,
        timeout: float,
        connect_timeout: float,
        total_timeout: float,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        max_concurrency: int,
        max_connections: int,
        api_key: str | None,
        client: Any = None,
        async_client: Any = None,
        transport: Any = None,
        async_transport: Any = None,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.base_urls = base_urls
        self.shown_urls = tuple(proto.redact_url(u) for u in base_urls)
        self.timeout, self.connect_timeout, self.total_timeout = timeout, connect_timeout, total_timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.max_concurrency = max_concurrency
        self._api_key = Secret(api_key)
        found = [api_key or "", *itertools.chain.from_iterable(url_secrets(u) for u in base_urls)]
        self._secrets = sorted({s for s in found if s}, key=len, reverse=True)
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
        self._keeper: asyncio.Task[None] | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.RLock()
        self.closed = False

    def __repr__(self) -> str:
        urls = self.shown_urls[0] if len(self.shown_urls) == 1 else list(self.shown_urls)
        return f"Requester({urls!r}, api_key={self._api_key!r})"

    # -- text that may be shown -------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """``text`` with every secret this requester knows replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def headers(self) -> dict[str, str]:
        from ..._version import __version__

        headers = {"User-Agent": f"qwen3-rerank/{__version__}", "Accept": "application/json"}
        key = self._api_key.get()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # -- the plan ----------------------------------------------------------------------------------
    def deadline(self, seconds: float | None = None) -> float:
        return time.monotonic() + (self.total_timeout if seconds is None else min(seconds, self.total_timeout))

    def request(
        self,
        method: str,
        path: str,
        payload: Any,
        deadline: float,
        *,
        soft: frozenset[int] = frozenset(),
        results: int = 0,
    ) -> Plan:
        """One request with failover, retries and the deadline; returns ``(shown_url, Answer)``.

        ``soft``: statuses returned to the caller instead of raised (probing).
        """
        httpx = self._httpx
        content = None if payload is None else proto.encode_body(payload)
        max_bytes = proto.answer_budget(len(content or b""), results)
        attempt = 0
        tried: set[str] = set()
        while True:
            base = self._pick(tried)
            tried.add(base)
            url, shown = join_url(base, path), proto.redact_url(join_url(base, path))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteTimeoutError(
                    f"no answer from {shown} within total_timeout={self.total_timeout}s", url=shown
                )
            retry_after: float | None = None
            try:
                answer: Answer = yield Send(
                    method, url, shown, content, min(self.timeout, remaining),
                    min(self.connect_timeout, remaining), deadline, max_bytes,
                )  # fmt: skip
            except httpx.TimeoutException as exc:
                failure: RemoteError = RemoteTimeoutError(
                    f"{shown} did not answer in time ({type(exc).__name__}; timeout={self.timeout}s, "
                    f"connect_timeout={self.connect_timeout}s, total_timeout={self.total_timeout}s)",
                    url=shown,
                )
                if isinstance(exc, httpx.ConnectTimeout):
                    self._mark_down(base, None)
            except httpx.LocalProtocolError as exc:  # our own request is malformed: never transient
                raise RemoteError(
                    f"could not send the request to {shown}: {type(exc).__name__}: {self.scrub(str(exc))} "
                    "(a problem on this side; not retried)",
                    url=shown,
                ) from None
            except httpx.TransportError as exc:
                if tls_failure(exc):
                    raise RemoteError(
                        f"the TLS certificate of {shown} was refused ({self.scrub(str(exc))}); not retried. "
                        "Use the server's real name in base_url, or pass client=httpx.Client(verify=...) "
                        "with the CA that signed it.",
                        url=shown,
                    ) from None
                failure = RemoteError(
                    f"could not reach {shown}: {type(exc).__name__}: {self.scrub(str(exc))}", url=shown
                )
                self._mark_down(base, None)
            except httpx.RequestError as exc:  # decoding errors etc.: not transient
                raise RemoteError(
                    f"request to {shown} failed: {type(exc).__name__}: {self.scrub(str(exc))}", url=shown
                ) from None
            else:
                if answer.status < 300 or answer.status in soft:
                    return shown, answer
                failure = proto.status_error(answer.status, self.scrub(answer.text), shown, answer.headers)
                if answer.status not in proto.RETRY_STATUSES:
                    raise failure
                retry_after = proto.parse_retry_after(answer.headers.get("retry-after"))
                if answer.status in (429, 502, 503, 504):
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
                    url=shown,
                    body=failure.body,
                ) from None
            logger.warning(
                "remote engine: %s; retry %d/%d in %.2fs", proto.short(failure), attempt, self.max_retries, delay
            )
            if delay > 0:
                yield Sleep(delay)

    def call(
        self, method: str, path: str, payload: Any, *, soft: frozenset[int] = frozenset(), seconds: float | None = None
    ) -> tuple[str, Answer]:
        """One request now, synchronously, within ``seconds`` (default ``total_timeout``)."""
        answer: tuple[str, Answer] = self.run(self.request(method, path, payload, self.deadline(seconds), soft=soft))
        return answer

    # -- failover and backoff ----------------------------------------------------------------------
    def _pick(self, tried: set[str]) -> str:
        """Round-robin over base URLs, preferring healthy ones not yet tried by this request."""
        n = len(self.base_urls)
        start = next(self._rr)
        order = [self.base_urls[(start + i) % n] for i in range(n)]
        now = time.monotonic()
        down = self._health.down_until
        preferences: tuple[Callable[[str], bool], ...] = (
            lambda u: u not in tried and down.get(u, 0.0) <= now,
            lambda u: down.get(u, 0.0) <= now,
            lambda u: u not in tried,
        )
        for ok in preferences:
            for u in order:
                if ok(u):
                    return u
        return min(order, key=lambda u: down.get(u, 0.0))

    def _mark_down(self, base: str, retry_after: float | None) -> None:
        if len(self.base_urls) > 1:
            seconds = min(max(retry_after or 0.0, 2.0 * self.backoff, 1.0), proto.MAX_RETRY_AFTER)
            self._health.down_until[base] = time.monotonic() + seconds

    def _delay(self, attempt: int, retry_after: float | None, tried: set[str]) -> float:
        now = time.monotonic()
        fresh = [u for u in self.base_urls if u not in tried and self._health.down_until.get(u, 0.0) <= now]
        if fresh:
            return 0.0  # fail over to another replica at once
        computed: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * self._random.uniform(0.5, 1.0)
        return max(computed, retry_after) if retry_after is not None else computed

    # -- drivers -----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise EngineError(f"{self!r} is closed; create a new RemoteEngine")

    def _build(self, client: Any, send: Send) -> Any:
        headers = self.headers()
        if send.content is not None:
            headers["Content-Type"] = "application/json"
        timeout = self._httpx.Timeout(
            send.timeout, connect=send.connect, pool=max(send.deadline - time.monotonic(), 0.001)
        )
        return client.build_request(send.method, send.url, content=send.content, headers=headers, timeout=timeout)

    def run(self, plan: Plan) -> Any:
        """Drive a plan synchronously."""
        self._check_open()
        client = self._sync_client()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = plan.throw(error) if error is not None else plan.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if isinstance(action, Sleep):
                time.sleep(action.seconds)  # the plan only sleeps when the deadline leaves room
                continue
            token = DEADLINE.set(action.deadline)
            try:
                response = client.send(self._build(client, action), stream=True)
                try:
                    body = BodyReader(action)
                    body.start(response)
                    for chunk in response.iter_bytes():  # decoded: a compressed answer counts in full
                        body.add(chunk)
                    value = body.answer(response)
                finally:
                    response.close()
            except (self._httpx.RequestError, RemoteError) as exc:
                error = exc
            finally:
                DEADLINE.reset(token)

    async def arun(self, plan: Plan) -> Any:
        """Drive a plan on the running event loop (never blocking it)."""
        self._check_open()
        client = self._get_async_client()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = plan.throw(error) if error is not None else plan.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)  # the plan only sleeps when the deadline leaves room
                continue
            try:
                value = await asyncio.wait_for(
                    self._asend(client, action), max(action.deadline - time.monotonic(), 0.0)
                )
            except asyncio.TimeoutError:
                error = RemoteTimeoutError(
                    f"{action.shown} did not send its whole answer within total_timeout={self.total_timeout}s",
                    url=action.shown,
                )
            except (self._httpx.RequestError, RemoteError) as exc:
                error = exc

    async def _asend(self, client: Any, action: Send) -> Answer:
        response = await client.send(self._build(client, action), stream=True)
        try:
            body = BodyReader(action)
            body.start(response)
            async for chunk in response.aiter_bytes():
                body.add(chunk)
            return body.answer(response)
        finally:
            await response.aclose()

    def run_many(self, plans: list[Plan]) -> list[Any]:
        """Drive plans on up to ``max_concurrency`` threads; one failure fails them all."""
        if len(plans) == 1 or self.max_concurrency == 1:
            return [self.run(p) for p in plans]
        with self._lock:
            self._check_open()
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.max_concurrency, thread_name_prefix="qwen3-rerank-http"
                )
            futures = [self._pool.submit(self.run, p) for p in plans]
        try:
            return [f.result() for f in futures]
        except Exception:
            for f in futures:  # one failure fails the call: drop what has not started
                f.cancel()
            concurrent.futures.wait(futures)  # the others end by the call's deadline
            raise
        except BaseException:  # Ctrl-C: return at once; requests in flight end by their deadline
            for f in futures:
                f.cancel()
            raise

    # -- clients -----------------------------------------------------------------------------------
    def _sync_client(self) -> Any:
        if self._client is None:
            with self._lock:
                self._check_open()
                if self._client is None:
                    transport = self._transport
                    if transport is None:  # ours: every socket read is bounded by the deadline
                        transport = self._httpx.HTTPTransport(limits=self._limits)
                        bound_reads(transport)
                    self._client = self._httpx.Client(transport=transport, timeout=self.timeout)
        return self._client

    def _get_async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._async_client is None or (self._owns_async_client and self._async_loop is not loop):
            # An AsyncClient's connections belong to one event loop: a new loop gets a new client,
            # and a keeper task closes it when its loop ends (asyncio.run cancels it at the end).
            self._async_client = self._httpx.AsyncClient(
                transport=self._async_transport, limits=self._limits, timeout=self.timeout
            )
            self._async_loop = loop
            if self._owns_async_client:
                self._keeper = loop.create_task(_close_at_loop_end(self._async_client))
        return self._async_client

    def close(self) -> None:
        """Release everything owned (idempotent); later requests raise :class:`EngineError`."""
        with self._lock:
            self.closed = True
            pool, self._pool = self._pool, None
            client, self._client = (self._client, None) if self._owns_client else (None, self._client)
            keeper, self._keeper = self._keeper, None
            loop, self._async_loop = self._async_loop, None
            aclient, self._async_client = (self._async_client, None) if self._owns_async_client else (None, None)
        if pool is not None:  # requests still in flight end by their own deadline
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()
        if aclient is None or aclient.is_closed or loop is None or loop.is_closed():
            return
        # The keeper task closes the client on its own loop when cancelled.
        if keeper is not None and not keeper.done():
            if not loop.is_running():
                keeper.cancel()
                loop.run_until_complete(asyncio.gather(keeper, return_exceptions=True))
            elif _on_loop(loop):  # close() called by sync code on the loop: the keeper ends soon after
                keeper.cancel()
            else:
                asyncio.run_coroutine_threadsafe(_cancel(keeper), loop).result(timeout=10)
        elif not loop.is_running():
            loop.run_until_complete(aclient.aclose())

    async def aclose(self) -> None:
        keeper, client = self._keeper, self._async_client
        self._keeper = None
        if keeper is not None and not keeper.done() and keeper.get_loop() is asyncio.get_running_loop():
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        elif client is not None and self._owns_async_client and not client.is_closed:
            await client.aclose()
        with self._lock:
            if self._owns_async_client:
                self._async_client = None
            self._async_loop = None
        self.close()


def _on_loop(loop: Any) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _close_at_loop_end(client: Any) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        if not client.is_closed:
            await client.aclose()
