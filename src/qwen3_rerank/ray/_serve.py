"""The app of ``qwen3-rerank serve`` on Ray Serve: one engine per replica, failover between them.

Two deployments. Each *replica* builds its own :class:`~qwen3_rerank.Reranker` (on a worker
thread, so it is reported ready only once its engine is loaded) and runs the app of
:func:`qwen3_rerank.server.create_app`, unchanged and with its lifespan, for every request it
gets: the same routes, bodies, error shapes, batching and API keys as the single server. The
*front* (no engine) receives the HTTP requests from Serve's proxy and hands each to a replica
through a deployment handle; when that replica dies while holding the request, the front sends it
to another one (scoring is idempotent), and answers 503 in the route's error shape when none can
take it. (With the app as the replicas' own ``@serve.ingress``, Serve's proxy answers 500 to the
requests a dying replica held.) Serve restarts dead replicas and scales them with
``autoscaling_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_MAX_ONGOING_REQUESTS", "DEFAULT_MAX_QUEUED_REQUESTS", "app_builder", "rerank_app"]

DEFAULT_MAX_ONGOING_REQUESTS = 256
"""Requests one replica holds at once. Ray Serve's default, 5, starves an engine: the server's
own batcher coalesces concurrent requests into engine calls (and for vLLM keeps the engine fed),
so a replica must be given many of them; the batcher answers 429 beyond its own queue."""

DEFAULT_MAX_QUEUED_REQUESTS = 1024
"""Requests waiting for a replica at most; beyond, Ray Serve answers 503 at once instead of
queueing without bound (its default)."""


def rerank_app(
    *,
    model: str | None,
    engine: str = "transformers",
    engine_options: Mapping[str, Any] | None = None,
    instruction: str | None = None,
    served_model_name: str | None = None,
    num_replicas: int | None = 1,
    autoscaling_config: Mapping[str, Any] | None = None,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS,
    limits: Any = None,
    batching: Any = None,
    name: str = "qwen3-rerank",
) -> Any:
    """A Ray Serve application serving the reranker on ``num_replicas`` replicas (or autoscaled).

    Args:
        model: Hub id or local path of the checkpoint (every node must reach it).
        engine: ``"transformers"``, ``"vllm"`` or ``"remote"``.
        engine_options: The engine's and the Reranker's keywords (``dtype``, ``max_length``, ...).
        instruction: The default task instruction (a request's own overrides it).
        served_model_name: The model name the routes report (default: the engine's).
        num_replicas: Replicas (engines); ignored with ``autoscaling_config``.
        autoscaling_config: Ray Serve's autoscaling (``{"min_replicas": 1, "max_replicas": 8,
            "target_ongoing_requests": 64}``) instead of a fixed ``num_replicas``.
        num_gpus: GPUs per replica (``1``: one engine per GPU).
        num_cpus: CPUs reserved per replica (Ray's default when ``None``).
        max_ongoing_requests: Requests a replica holds at once (see
            :data:`DEFAULT_MAX_ONGOING_REQUESTS`).
        max_queued_requests: Requests waiting for a replica before Ray Serve answers 503.
        limits: A :class:`qwen3_rerank.server.ServerLimits`.
        batching: A :class:`qwen3_rerank.server.BatchingConfig` (per replica).
        name: The deployment's name.

    API keys: each replica reads ``$QWEN3_RERANK_SERVER_API_KEY`` (give it to the replicas with
    ``ray_actor_options``' runtime environment or the cluster's), so no key travels in the
    deployment's arguments, which Ray stores.

    Returns:
        The application, for ``serve.run(app, route_prefix="/")``.

    Example:
        >>> from ray import serve
        >>> from qwen3_rerank.ray import rerank_app
        >>> app = rerank_app(model="Qwen/Qwen3-Reranker-0.6B", num_replicas=2, num_gpus=1)  # doctest: +SKIP
        >>> serve.run(app, route_prefix="/")  # POST http://HOST:8000/v2/rerank  # doctest: +SKIP
    """
    from ray import serve

    from ..settings import reranker_kwargs

    options = dict(engine_options or {})
    # Checked here, on the driver: a typo fails now, not in every replica the cluster starts.
    reranker_kwargs(engine, model=model, instruction=instruction, **options)
    if max_ongoing_requests < 1:
        raise ValueError(f"max_ongoing_requests must be a positive integer, got {max_ongoing_requests!r}")
    actor_options: dict[str, Any] = {}
    if num_gpus:
        actor_options["num_gpus"] = num_gpus
    if num_cpus is not None:
        actor_options["num_cpus"] = num_cpus
    scale: dict[str, Any] = (
        {"autoscaling_config": dict(autoscaling_config)}
        if autoscaling_config is not None
        else {"num_replicas": num_replicas}
    )
    backend: Any = serve.deployment(
        _backend_class(),
        name=name,
        ray_actor_options=actor_options,
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests,
        **scale,
    )
    # The entry holds no engine and only awaits the replicas: one, on no CPU of its own.
    front: Any = serve.deployment(
        _front_class(),
        name=f"{name}-front",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=FRONT_MAX_ONGOING_REQUESTS,
    )
    return front.bind(
        backend.bind(
            engine=engine,
            model=model,
            engine_options=options,
            instruction=instruction,
            served_model_name=served_model_name,
            limits=limits,
            batching=batching,
        )
    )


def app_builder(args: Mapping[str, Any]) -> Any:
    """For ``serve run qwen3_rerank.ray:app_builder model=DIR num_replicas=2 num_gpus=1``.

    Every ``KEY=VALUE`` of the command line arrives as a string; numbers are converted, any other
    key goes to the engine (``dtype=bfloat16``).
    """
    own = {"model", "engine", "instruction", "served_model_name", "name"}
    numbers = {"num_replicas": int, "num_gpus": float, "num_cpus": float, "max_ongoing_requests": int,
               "max_queued_requests": int}  # fmt: skip
    kwargs: dict[str, Any] = {}
    engine_options: dict[str, Any] = {}
    for key, value in args.items():
        if key in own:
            kwargs[key] = value
        elif key in numbers:
            kwargs[key] = numbers[key](value)
        else:
            engine_options[key] = _parse(value)
    kwargs.setdefault("model", None)
    return rerank_app(engine_options=engine_options, **kwargs)


def _parse(value: Any) -> Any:
    import json

    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


FRONT_MAX_ONGOING_REQUESTS = 8192
"""Requests the entry deployment holds at once (it only waits on the replicas)."""

FAILOVER_ATTEMPTS = 3
"""Replicas a request is sent to before the front answers 503: scoring is idempotent, so a request
whose replica died is sent again to another one."""


def _asgi_request(app: Any, request: tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes]) -> Any:
    """Run one HTTP request through the ASGI ``app`` in this process; ``(status, headers, body)``."""
    method, path, query, headers, body = request
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query, "headers": headers,
        "client": None, "server": None,
    }  # fmt: skip
    sent = False
    answer: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray()}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the body was read: the client stays connected until the answer is out
            import asyncio

            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    async def run() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        await app(scope, receive, send)
        return answer["status"], answer["headers"], bytes(answer["body"])

    return run()


def _backend_class() -> type:
    """The replica: one engine, the server's app run in-process per request (built on first use,
    so that importing this module imports no Ray)."""

    class RerankReplica:
        async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
            self,
            *,
            engine: str,
            model: str | None,
            engine_options: dict[str, Any],
            instruction: str | None,
            served_model_name: str | None,
            limits: Any,
            batching: Any,
        ) -> None:
            import asyncio

            from uvicorn.config import Config
            from uvicorn.lifespan.on import LifespanOn

            from ..server import create_app
            from ..settings import build_reranker

            # The engine loads on a thread: the replica's event loop keeps answering Serve's
            # health checks meanwhile, and no request reaches it before the engine is there.
            reranker = await asyncio.to_thread(
                build_reranker, engine, model=model, instruction=instruction, **engine_options
            )
            self._app = create_app(
                reranker, served_model_name=served_model_name, limits=limits, batching=batching, close_reranker=True
            )
            # The app's lifespan (its batcher; closing the engine at the end), run the way Serve
            # runs an ingress app's.
            self._lifespan = LifespanOn(Config(self._app, lifespan="on", log_config=None))
            await self._lifespan.startup()
            if self._lifespan.should_exit:
                raise RuntimeError("the reranker app did not start; see the replica's log")

        async def handle(self, request: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            result: tuple[int, list[tuple[bytes, bytes]], bytes] = await _asgi_request(self._app, request)
            return result

        async def __del__(self) -> None:
            await self._lifespan.shutdown()

    return RerankReplica


def _front_class() -> type:
    """The HTTP entry: no engine; it forwards each request to a replica, and to another one when
    that replica dies while holding it (for such a request Serve's proxy itself answers 500)."""

    class RerankFront:
        def __init__(self, backend: Any) -> None:
            self.backend = backend

        async def __call__(self, request: Any) -> Any:
            from ray.exceptions import RayActorError
            from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
            from starlette.responses import JSONResponse, Response

            from ..server._errors import dialect_of_path, error_body

            path = request.url.path
            call = (request.method, path, request.url.query.encode(), list(request.headers.raw), await request.body())
            for _ in range(FAILOVER_ATTEMPTS):
                try:
                    status, headers, body = await self.backend.handle.remote(call)
                except RayActorError:  # the replica died holding it: scoring is idempotent, send it again
                    continue
                except (BackPressureError, DeploymentUnavailableError):  # every replica full, or none up
                    break
                kept = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k.lower() != b"content-length"}
                return Response(body, status_code=status, headers=kept)
            message = "no reranker replica could answer (all busy, or restarting after a failure); retry shortly"
            return JSONResponse(error_body(dialect_of_path(path), 503, message), 503, headers={"Retry-After": "1"})

    return RerankFront
