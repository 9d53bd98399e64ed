"""The app factory: :func:`create_app` over a :class:`~qwen3_rerank.Reranker`.

All state lives on the app (``app.state.qwen3_rerank``) and in its lifespan, never in module
globals, so several apps can live in one process, be mounted in a user's ASGI app, or be wrapped
by Ray Serve (``@serve.ingress(app)``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._reranker import Reranker
from .._version import __version__
from . import _cohere, _tei, _vllm
from ._auth import ApiKeys, load_api_keys
from ._batching import make_scheduler
from ._config import BatchingConfig, ServerLimits
from ._errors import ApiError, dialect_of_path, error_body
from ._metrics import CONTENT_TYPE_LATEST
from ._state import ServerState, authorize, read_json, state_of

__all__ = ["ROUTES", "create_app"]

logger = logging.getLogger("qwen3_rerank.server")

ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/rerank"), ("POST", "/v2/rerank"), ("POST", "/rerank"), ("POST", "/score"),
    ("POST", "/v1/score"), ("POST", "/classify"), ("POST", "/tokenize"), ("POST", "/detokenize"),
    ("GET", "/info"), ("GET", "/v1/models"), ("GET", "/health"), ("GET", "/metrics"), ("GET", "/version"),
)  # fmt: skip
"""Every (method, path) the app serves."""
_KNOWN_PATHS = frozenset(p for _, p in ROUTES)


def create_app(
    reranker: Reranker | Callable[[], Reranker],
    *,
    served_model_name: str | None = None,
    api_keys: Iterable[str] | ApiKeys | None = None,
    limits: ServerLimits | None = None,
    batching: BatchingConfig | None = None,
    close_reranker: bool | None = None,
) -> FastAPI:
    """A FastAPI app serving ``reranker`` over the Cohere, Jina, TEI and vLLM rerank APIs.

    Args:
        reranker: The :class:`~qwen3_rerank.Reranker` to serve, or a function that builds one:
            it then runs on a worker thread once the app starts, and ``GET /health`` answers 503
            until it has returned.
        served_model_name: The model name ``/v1/models`` and ``/info`` report, and answers
            echo when a request names none (default: the engine's model).
        api_keys: Accepted bearer tokens (``()``: no auth). ``None`` reads
            ``$QWEN3_RERANK_SERVER_API_KEY``.
        limits: Request limits (:class:`ServerLimits`).
        batching: Dynamic batching (:class:`BatchingConfig`).
        close_reranker: Close the reranker when the app shuts down (default: only one the app
            built from a function).

    Example:
        >>> from qwen3_rerank import Reranker
        >>> from qwen3_rerank.server import create_app
        >>> app = create_app(Reranker("transformers", model="Qwen/Qwen3-Reranker-0.6B"))  # doctest: +SKIP
        >>> # uvicorn.run(app, host="127.0.0.1", port=8000), or mount it in your own ASGI app
    """
    if isinstance(reranker, Reranker):
        factory, instance = None, reranker
    elif callable(reranker):
        factory, instance = reranker, None
    else:
        raise TypeError(f"reranker must be a Reranker or a function returning one, got {type(reranker).__name__}")
    keys = api_keys if isinstance(api_keys, ApiKeys) else load_api_keys() if api_keys is None else ApiKeys(api_keys)
    state = ServerState(
        load=load,
        factory=factory,
        reranker=instance,
        owns_reranker=(factory is not None) if close_reranker is None else close_reranker,
        served_model_name=served_model_name,
        keys=keys,
        limits=limits or ServerLimits(),
        batching=batching or BatchingConfig(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        try:
            yield
        finally:
            await _shutdown(state)

    app = FastAPI(
        title="qwen3-rerank",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.qwen3_rerank = state
    app.include_router(_router())
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(_MetricsMiddleware, state=state)
    return app


async def load(state: ServerState) -> None:
    """Build (from the factory) and warm up the reranker, then start the scheduler."""
    try:
        if state.reranker is None:
            assert state.factory is not None
            state.reranker = await asyncio.to_thread(state.factory)
        reranker = state.reranker
        # Tokenizer and context length now (a remote engine asks its server), not on the first request.
        await asyncio.to_thread(lambda: (reranker.encoder, reranker.max_length))
        state.scheduler = make_scheduler(reranker, state.batching, state.metrics)
        logger.info("ready: engine %s, model %s, max_length %d", reranker.engine.name, state.model_name,
                    reranker.max_length)  # fmt: skip
    except Exception as exc:  # /health reports it; requests get 503 naming it
        state.load_error = " ".join(str(exc).split()) or type(exc).__name__
        logger.error("the engine failed to load: %s", state.load_error)


async def _shutdown(state: ServerState) -> None:
    loader = state.loader
    if loader is not None and not loader.done():
        await asyncio.gather(loader, return_exceptions=True)  # a load in a thread cannot be cut short
    if state.scheduler is not None:
        await state.scheduler.drain()  # every accepted request is answered first
    if state.owns_reranker and state.reranker is not None:
        await state.reranker.aclose()
        logger.info("engine closed")


def _router() -> APIRouter:
    guarded = APIRouter(dependencies=[Depends(authorize)])

    @guarded.post("/v1/rerank")
    async def v1_rerank(request: Request) -> Any:
        return await _cohere.rerank_v1(request, await read_json(request, "cohere"))

    @guarded.post("/v2/rerank")
    async def v2_rerank(request: Request) -> Any:
        return await _cohere.rerank_v2(request, await read_json(request, "cohere"))

    @guarded.post("/rerank")
    async def rerank(request: Request) -> Any:
        data = await read_json(request, "either")
        if isinstance(data, dict) and "texts" in data and "documents" not in data:
            return await _tei.rerank_tei(request, data)
        request.state.dialect = "cohere"
        return await _cohere.rerank_v1(request, data)

    @guarded.post("/score")
    @guarded.post("/v1/score")
    async def score(request: Request) -> Any:
        return await _vllm.score(request, await read_json(request, "openai"))

    @guarded.post("/classify")
    async def classify(request: Request) -> Any:
        return await _vllm.classify(request, await read_json(request, "openai"))

    @guarded.post("/tokenize")
    async def tokenize(request: Request) -> Any:
        return await _vllm.tokenize(request, await read_json(request, "openai"))

    @guarded.post("/detokenize")
    async def detokenize(request: Request) -> Any:
        return await _vllm.detokenize(request, await read_json(request, "openai"))

    @guarded.get("/info")
    async def info(request: Request) -> Any:
        return _tei.info(state_of(request))

    @guarded.get("/v1/models")
    async def models(request: Request) -> Any:
        return _vllm.models(state_of(request))

    @guarded.get("/version")
    async def version(request: Request) -> Any:
        state = state_of(request)
        engine = state.reranker.engine.name if state.reranker is not None else None
        return {"version": __version__, "engine": engine, "model": state.model_name}

    @guarded.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    router = APIRouter()

    @router.get("/health")
    async def health(request: Request) -> Response:
        state = state_of(request)
        state.start_loading()  # mounted in an app that does not run this app's lifespan
        if state.ready:
            return JSONResponse({"status": "ok"})
        body: dict[str, Any] = {"status": "failed" if state.load_error else "loading"}
        if state.load_error:
            body["error"] = state.load_error
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(state.batching.retry_after_s)})

    router.include_router(guarded)
    return router


def route_path(scope: Scope) -> str:
    """The path inside this app (without the prefix it is mounted at)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _dialect(request: Request) -> Any:
    return getattr(request.state, "dialect", None) or dialect_of_path(route_path(request.scope))


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(_dialect(request), exc.status, exc.message), exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        message = f"no route {request.url.path!r}; this server serves " + ", ".join(f"{m} {p}" for m, p in ROUTES)
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse(error_body(_dialect(request), exc.status_code, message), exc.status_code,
                        headers=getattr(exc, "headers", None))  # fmt: skip


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # The routes parse their bodies themselves; this catches anything FastAPI validates on its own.
    return JSONResponse(error_body(_dialect(request), 422, f"invalid request: {exc.errors()[:3]}"), 422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s", request.url.path)
    message = f"internal error: {type(exc).__name__}: {exc}"
    return JSONResponse(error_body(_dialect(request), 500, message), 500)


class _MetricsMiddleware:
    """Counts every answer by route and status and times it (a plain ASGI middleware: it never
    buffers a body and never hides a client's disconnect from the route)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        route = path if path in _KNOWN_PATHS else "other"
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics = self.state.metrics
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)
