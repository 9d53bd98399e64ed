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

from ..._exceptions import ConfigurationError, EngineError, RemoteError, RemoteTimeoutError
from . import _protocol as proto
from ._clients import Clients
from ._protocol import API_KEY_ENV
from ._transport import (
    DEADLINE,
    Answer,
    BodyReader,
    IncompleteAnswer,
    Send,
    Sleep,
    join_url,
    tls_failure,
    url_secrets,
)

__all__ = ["API_KEY_ENV", "Requester"]

logger = logging.getLogger("qwen3_rerank.engines.remote")


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
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._clients = Clients(
            base_urls, limits=limits, timeout=timeout, client=client, async_client=async_client,
            transport=transport, async_transport=async_transport, check_open=self._check_open,
        )  # fmt: skip
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
            except IncompleteAnswer as exc:  # the server answered, then stopped short: not "unreachable"
                failure = RemoteError(
                    f"{shown} sent an incomplete answer ({self.scrub(str(exc))}): the body ended before its "
                    "Content-Length, the server or a proxy cut it off",
                    url=shown,
                )
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
                answer.text = self.scrub(answer.text)  # what an error or a caller may show
                if answer.status < 300 or answer.status in soft:
                    return shown, answer
                failure = proto.status_error(answer.status, answer.text, shown, answer.headers)
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

    def _step(self, plan: Plan, value: Any, error: BaseException | None) -> Any:
        """Advance the plan; what it raises leaves with every known secret scrubbed (message
        and body: a proxy page may echo the Authorization header)."""
        if self.closed:
            plan.close()
            raise EngineError(f"{self!r} was closed while a call was in flight; create a new RemoteEngine")
        try:
            return plan.throw(error) if error is not None else plan.send(value)
        except RemoteError as exc:
            exc.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in exc.args)
            if exc.body is not None:
                exc.body = self.scrub(exc.body)
            raise

    def _closed_during(self, exc: BaseException) -> EngineError:
        # httpx raises a builtin RuntimeError when its client is closed under a request.
        return EngineError(f"{self!r} was closed while a call was in flight ({exc}); create a new RemoteEngine")

    def run(self, plan: Plan) -> Any:
        """Drive a plan synchronously."""
        self._check_open()
        client = self._sync_client()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = self._step(plan, value, error)
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
                    try:
                        for chunk in response.iter_bytes():  # decoded: a compressed answer counts in full
                            body.add(chunk)
                    except self._httpx.RemoteProtocolError as exc:
                        raise IncompleteAnswer(str(exc)) from exc
                    value = body.answer(response)
                finally:
                    response.close()
            except (self._httpx.RequestError, RemoteError, IncompleteAnswer) as exc:
                error = exc
            except RuntimeError as exc:
                if not self.closed:
                    raise
                plan.close()
                raise self._closed_during(exc) from None
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
                action = self._step(plan, value, error)
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
            except (self._httpx.RequestError, RemoteError, IncompleteAnswer) as exc:
                error = exc
            except RuntimeError as exc:
                if not self.closed and not client.is_closed:
                    raise
                plan.close()
                raise self._closed_during(exc) from None

    async def _asend(self, client: Any, action: Send) -> Answer:
        response = await client.send(self._build(client, action), stream=True)
        try:
            body = BodyReader(action)
            body.start(response)
            try:
                async for chunk in response.aiter_bytes():
                    body.add(chunk)
            except self._httpx.RemoteProtocolError as exc:
                raise IncompleteAnswer(str(exc)) from exc
            return body.answer(response)
        finally:
            await response.aclose()

    def run_many(self, plans: list[Plan]) -> list[Any]:
        """Drive plans on up to ``max_concurrency`` threads; one failure fails them all.

        The threads are daemon threads started for this call: a Ctrl-C returns at once, and the
        process can exit without waiting for requests still in flight (a thread pool's workers
        are joined at exit, up to ``total_timeout``).
        """
        if len(plans) == 1 or self.max_concurrency == 1:
            return [self.run(p) for p in plans]
        self._check_open()
        futures: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in plans]
        todo = list(zip(plans, futures, strict=True))
        todo.reverse()  # popped from the end: in order
        take = threading.Lock()

        def work() -> None:
            while True:
                with take:
                    if not todo:
                        return
                    plan, future = todo.pop()
                if not future.set_running_or_notify_cancel():
                    plan.close()
                    continue
                try:
                    future.set_result(self.run(plan))
                except BaseException as exc:  # handed to the caller's thread
                    future.set_exception(exc)

        for _ in range(min(self.max_concurrency, len(plans))):
            threading.Thread(target=work, name="qwen3-rerank-http", daemon=True).start()
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

    # -- clients ---------------------------------------------------------------------------------
    def _sync_client(self) -> Any:
        return self._clients.sync()

    def _get_async_client(self) -> Any:
        return self._clients.for_this_loop()

    @property
    def async_clients_made(self) -> int:
        return self._clients.async_made

    def close(self) -> None:
        """Release everything owned (idempotent); later requests raise :class:`EngineError`."""
        self.closed = True
        self._clients.close()

    async def aclose(self) -> None:
        self.closed = True
        await self._clients.aclose()
