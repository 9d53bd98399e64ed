"""What one app holds (on ``app.state.qwen3_rerank``, never in module globals) and what every
route does with it: authorise, read the body within its limit, parse it, queue the job."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from .._exceptions import ConfigurationError, EngineError, RemoteError
from .._reranker import Reranker
from .._types import Ranking
from ._auth import ApiKeys
from ._batching import Job, RerankJob, Scheduler
from ._config import BatchingConfig, ServerLimits
from ._errors import ApiError, Dialect
from ._inputs import Texts
from ._metrics import Metrics

__all__ = ["ServerState", "authorize", "parse_body", "read_json", "rerank_texts", "run_job", "state_of"]

logger = logging.getLogger("qwen3_rerank.server")

M = TypeVar("M", bound=BaseModel)


@dataclass
class ServerState:
    """The app's reranker (once loaded), scheduler, metrics, keys and limits."""

    load: Callable[[ServerState], Coroutine[Any, Any, None]]
    factory: Callable[[], Reranker] | None
    reranker: Reranker | None
    owns_reranker: bool
    served_model_name: str | None
    keys: ApiKeys
    limits: ServerLimits
    batching: BatchingConfig
    metrics: Metrics = field(default_factory=Metrics)
    scheduler: Scheduler | None = None
    load_error: str | None = None
    loader: asyncio.Task[None] | None = None

    def start_loading(self) -> asyncio.Task[None]:
        """Start loading on the running loop, once (the lifespan does; a mounted app whose parent
        does not run sub-app lifespans starts on its first request)."""
        if self.loader is None:
            self.loader = asyncio.get_running_loop().create_task(self.load(self), name="qwen3-rerank-load")
        return self.loader

    @property
    def ready(self) -> bool:
        return self.scheduler is not None

    @property
    def model_name(self) -> str:
        """The served model name: ``served_model_name``, else the engine's model, else a fixed name."""
        if self.served_model_name:
            return self.served_model_name
        if self.reranker is not None and self.reranker.engine.model_name:
            return self.reranker.engine.model_name
        return "qwen3-reranker"

    def require_ready(self) -> Reranker:
        if self.scheduler is None or self.reranker is None:
            why = f"the engine failed to load: {self.load_error}" if self.load_error else "the engine is loading"
            raise ApiError(503, f"not ready: {why}; retry shortly (GET /health says when)",
                           headers={"Retry-After": str(self.batching.retry_after_s)})  # fmt: skip
        return self.reranker


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.qwen3_rerank
    return state


async def authorize(request: Request) -> None:
    """The dependency on every route but ``/health``: ``Authorization: Bearer <key>``; it also
    starts loading when the lifespan did not (then the first request waits for the engine)."""
    state = state_of(request)
    if not state.keys.check(request.headers.get("authorization")):
        raise ApiError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>' with a key this server was "
            "started with ($QWEN3_RERANK_SERVER_API_KEY or --api-key-file)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if state.loader is None:
        await asyncio.shield(state.start_loading())


async def read_json(request: Request, dialect: Dialect) -> Any:
    """The body as JSON, refused with 413 past ``max_body_bytes`` (before it is all read)."""
    request.state.dialect = dialect
    limit = state_of(request).limits.max_body_bytes
    too_large = ApiError(413, f"the request body is larger than {limit} bytes (max_body_bytes, --max-body-bytes)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError(400, "the request has no body: send a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 JSON") from None
    except ValueError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None


def parse_body(model: type[M], data: Any) -> M:
    """``data`` validated as ``model``; 422 naming the first bad field."""
    if not isinstance(data, dict):
        raise ApiError(422, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            problems.append(f"{where}: {err.get('msg')}")
        raise ApiError(422, "invalid request: " + "; ".join(problems)) from None


async def run_job(request: Request, job: Job) -> Any:
    """Queue ``job`` and wait for its answer; a client that leaves first drops the job."""
    state = state_of(request)
    state.require_ready()
    assert state.scheduler is not None  # checked by require_ready
    future = state.scheduler.submit(job)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not future.done():  # the client left: a queued job is skipped, a running one discarded
        future.cancel()
        raise ApiError(499, "the client closed the connection")
    try:
        return future.result()
    except ApiError:
        raise
    except (TypeError, ValueError) as exc:  # ConfigurationError is a ValueError too
        status = 500 if isinstance(exc, ConfigurationError) else 422
        raise ApiError(status, str(exc)) from None
    except RemoteError as exc:
        raise ApiError(502, f"the upstream server failed: {exc}") from None
    except EngineError as exc:
        raise ApiError(500, f"the engine failed: {exc}") from None


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read already: the next message is the end)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def rerank_texts(request: Request, texts: Texts) -> Ranking:
    """Every document of ``texts`` scored, best first (no engine call for no documents)."""
    state = state_of(request)
    state.require_ready()
    if not texts.documents:
        return Ranking([])
    ranking: Ranking = await run_job(request, RerankJob(texts.query, texts.documents, texts.instruction))
    state.metrics.pairs.inc(len(texts.documents))
    state.metrics.tokens.inc(sum(r.num_tokens for r in ranking))
    return ranking
