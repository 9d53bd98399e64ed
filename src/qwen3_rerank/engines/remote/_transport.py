"""How bytes move: what one attempt sends and gets back, read within its deadline and size budget.

:class:`Send`/:class:`Sleep`/:class:`Answer` are what a request plan and its drivers exchange.
:class:`BodyReader` collects a streamed answer and stops at its size budget or deadline;
:func:`bound_reads` makes every socket read of an ``httpx.HTTPTransport`` end by the deadline of
the request in progress (:data:`DEADLINE`), so a server that drips its answer (headers or body)
a byte at a time cannot hold a call past ``total_timeout``. URL helpers keep credentials out of
what is shown.
"""

from __future__ import annotations

import contextvars
import json
import logging
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..._exceptions import RemoteError, RemoteTimeoutError
from . import _protocol as proto

logger = logging.getLogger("qwen3_rerank.engines.remote")

DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("qwen3_rerank_deadline", default=None)
"""``time.monotonic()`` by which the request in progress on this thread must be complete."""


@dataclass(frozen=True, slots=True)
class Send:
    method: str
    url: str  # the real URL (may hold credentials): never shown
    shown: str  # the same, redacted: what messages say
    content: bytes | None
    timeout: float  # read/write budget of this attempt
    connect: float
    deadline: float  # time.monotonic() by which the whole answer must be in
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)
class Answer:
    """What a driver sends back into the plan for a :class:`Send`."""

    status: int
    text: str
    headers: dict[str, str]
    json: Any = None
    json_error: str | None = None


def join_url(base: str, path: str) -> str:
    """``base``'s path + ``path``, keeping ``base``'s query (e.g. a gateway's ``?token=``)."""
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path + path, parts.query, ""))


def normalise_base_url(url: str) -> str:
    """Trailing ``/`` and ``/v1`` dropped from the path; the query string kept."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class BodyReader:
    """Collects an answer's bytes within its size budget and its deadline."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.parts: list[bytes] = []
        self.size = 0

    def start(self, response: Any) -> None:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.send.max_bytes:
            self.too_large(int(length))

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.send.max_bytes:
            self.too_large(self.size)
        self.parts.append(chunk)
        if time.monotonic() > self.send.deadline:
            raise RemoteTimeoutError(
                f"{self.send.shown} did not send its whole answer within the total_timeout", url=self.send.shown
            )

    def too_large(self, size: int) -> None:
        raise RemoteError(
            f"the answer of {self.send.shown} is too large ({size} bytes or more; at most "
            f"{self.send.max_bytes} are read for this request); is base_url a vLLM reranking server?",
            url=self.send.shown,
        )

    def answer(self, response: Any) -> Answer:
        raw = b"".join(self.parts)
        headers = {k.lower(): v for k, v in response.headers.items()}
        answer = Answer(response.status_code, raw.decode(response.encoding or "utf-8", errors="replace"), headers)
        if response.status_code < 400:
            try:
                answer.json = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                answer.json_error = f"{type(exc).__name__}: {proto.short(exc)}"
        return answer


def url_secrets(url: str) -> list[str]:
    """The password and query values of a URL, as written and decoded (short ones are skipped:
    replacing "1" everywhere would garble messages, and they are redacted in URLs anyway)."""
    parts = urllib.parse.urlsplit(url)
    raw = [parts.password or ""] + [p.partition("=")[2] for p in parts.query.split("&")]
    found = raw + [urllib.parse.unquote_plus(v) for v in raw]
    return [s for s in found if len(s) >= 3]


def tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def bound_reads(transport: Any) -> None:
    """Make every socket read/write of ``transport`` end by the current request's deadline.

    httpx's timeouts are per read: a server dripping a byte every few seconds would keep a call
    alive forever. The deadline (a context variable set by the sync driver) caps each
    socket operation's timeout. Uses httpcore's connection pool backend (httpx 0.2x).
    """
    import httpcore

    pool: Any = getattr(transport, "_pool", None)
    backend: Any = getattr(pool, "_network_backend", None)
    if backend is None:  # pragma: no cover - another httpx layout: the per-chunk check remains
        logger.debug("remote engine: cannot bound socket reads of %r", transport)
        return

    def clamp(timeout: float | None) -> float | None:
        deadline = DEADLINE.get()
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("total_timeout reached")
        return left if timeout is None else min(timeout, left)

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            data: bytes = self._inner.read(max_bytes, clamp(timeout))
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, clamp(timeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            return Stream(self._inner.start_tls(ssl_context, server_hostname, clamp(timeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            return Stream(backend.connect_tcp(host, port, clamp(timeout), local_address, socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            return Stream(backend.connect_unix_socket(path, clamp(timeout), socket_options))

        def sleep(self, seconds: float) -> None:
            backend.sleep(seconds)

    pool._network_backend = Backend()
