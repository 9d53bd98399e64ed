"""How bytes move: what one attempt sends and gets back, read within its deadline and size budget.

:class:`Send`/:class:`Sleep`/:class:`Answer` are what a request plan and its drivers exchange.
:class:`BodyReader` collects a streamed answer and stops at its size budget or deadline;
:func:`deadline_transport` is an ``httpx`` transport whose every socket read ends by the deadline
of the request in progress (:data:`DEADLINE`), so a server that drips its answer (headers or
body) a byte at a time cannot hold a call past ``total_timeout``. :func:`env_proxy` is the one
proxy rule of both clients. URL helpers keep credentials out of what is shown.
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

from ..._exceptions import ConfigurationError, RemoteError, RemoteTimeoutError, missing_dependency
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


class IncompleteAnswer(Exception):
    """The answer's body ended before its end (shorter than its Content-Length, a cut chunk)."""


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


def env_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    lower case too, minus ``NO_PROXY``), by the standard library's rules; ``None``: go direct.

    The one rule of both the sync and the async client (httpx applies environment proxies only to
    clients without an explicit transport, which left the sync path direct and the async path
    proxied): the clients this engine builds route each base URL alike.
    """
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # public, not in typeshed
    if not proxies or bypass(netloc, proxies):
        return None
    return proxies.get(parts.scheme.lower()) or proxies.get("all")


def proxy_mounts(base_urls: tuple[str, ...], make: Any) -> dict[str, Any]:
    """``httpx`` mounts sending each proxied base URL through ``make(proxy_url)``."""
    mounts: dict[str, Any] = {}
    for base in base_urls:
        proxy = env_proxy(base)
        if proxy is not None:
            parts = urllib.parse.urlsplit(base)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
            mounts[f"{parts.scheme.lower()}://{host}:{port}"] = make(proxy)
    return mounts


def _clamp(timeout: float | None) -> float | None:
    import httpcore

    deadline = DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("total_timeout reached")
    return left if timeout is None else min(timeout, left)


def deadline_transport(*, limits: Any, proxy: str | None = None) -> Any:
    """An ``httpx`` transport whose every socket read/write ends by the current request's deadline.

    httpx's timeouts are per read: a server dripping a byte every few seconds would keep a call
    alive forever. This transport runs httpx's requests on an ``httpcore`` connection pool (or
    HTTP/SOCKS proxy) built with a network backend that caps each socket operation's timeout by
    :data:`DEADLINE` (set by the sync driver): public httpcore API, httpcore's exceptions mapped
    to httpx's as ``httpx.HTTPTransport`` maps them.
    """
    import httpcore
    import httpx

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            data: bytes = self._inner.read(max_bytes, _clamp(timeout))
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _clamp(timeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            return Stream(self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            return Stream(self._inner.connect_tcp(host, port, _clamp(timeout), local_address, socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            return Stream(self._inner.connect_unix_socket(path, _clamp(timeout), socket_options))

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    def core_url(url: Any) -> Any:
        return httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)

    common = {
        "ssl_context": httpx.create_ssl_context(),
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "network_backend": Backend(),
    }
    if proxy is None:
        pool: Any = httpcore.ConnectionPool(**common)
    else:
        spec = httpx.Proxy(proxy)
        scheme = spec.url.scheme
        if scheme in ("http", "https"):
            pool = httpcore.HTTPProxy(
                proxy_url=core_url(spec.url), proxy_auth=spec.raw_auth, proxy_headers=spec.headers.raw,
                proxy_ssl_context=spec.ssl_context, **common,
            )  # fmt: skip
        elif scheme in ("socks5", "socks5h"):
            socks_available()
            pool = httpcore.SOCKSProxy(proxy_url=core_url(spec.url), proxy_auth=spec.raw_auth, **common)
        else:
            raise ConfigurationError(
                f"the proxy {proto.redact_url(proxy)!r} has the scheme {scheme!r}; use http://, https://, "
                "socks5:// or socks5h:// (or unset the proxy variable, or list the server in NO_PROXY)"
            )
    errors = {
        httpcore.ConnectTimeout: httpx.ConnectTimeout, httpcore.ReadTimeout: httpx.ReadTimeout,
        httpcore.WriteTimeout: httpx.WriteTimeout, httpcore.PoolTimeout: httpx.PoolTimeout,
        httpcore.TimeoutException: httpx.TimeoutException, httpcore.ConnectError: httpx.ConnectError,
        httpcore.ReadError: httpx.ReadError, httpcore.WriteError: httpx.WriteError,
        httpcore.NetworkError: httpx.NetworkError, httpcore.ProxyError: httpx.ProxyError,
        httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
        httpcore.LocalProtocolError: httpx.LocalProtocolError,
        httpcore.RemoteProtocolError: httpx.RemoteProtocolError, httpcore.ProtocolError: httpx.ProtocolError,
    }  # fmt: skip  # most specific first: the first match is used

    def mapped(exc: Exception) -> Exception:
        for core, ours in errors.items():
            if isinstance(exc, core):
                return ours(str(exc))
        return exc

    class Body(httpx.SyncByteStream):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __iter__(self) -> Any:
            try:
                yield from self._inner
            except Exception as exc:
                new = mapped(exc)
                if new is exc:
                    raise
                raise new from exc

        def close(self) -> None:
            self._inner.close()

    class Transport(httpx.BaseTransport):
        def handle_request(self, request: Any) -> Any:
            core = httpcore.Request(
                method=request.method, url=core_url(request.url), headers=request.headers.raw,
                content=request.stream, extensions=request.extensions,
            )  # fmt: skip
            try:
                resp = pool.handle_request(core)
            except Exception as exc:
                new = mapped(exc)
                if new is exc:
                    raise
                raise new from exc
            return httpx.Response(
                resp.status, headers=resp.headers, stream=Body(resp.stream), extensions=resp.extensions
            )

        def close(self) -> None:
            pool.close()

    return Transport()


def socks_available() -> None:
    """Raise :class:`~qwen3_rerank.MissingDependencyError` when a SOCKS proxy cannot be used."""
    import importlib.util

    if importlib.util.find_spec("socksio") is None:
        raise missing_dependency("socksio (for a socks5:// proxy)", "socks")
