"""The shared-instance registry: one set of vLLM instances per (model, options) per process.

A :class:`SharedEngine` owns ``replicas`` ``AsyncLLM`` instances and the private event loop thread
they run on; :func:`acquire` / :func:`release` count its users, and the last release shuts vLLM
down. Routing of a call's pairs between replicas lives here too.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import itertools
import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._exceptions import EngineError
from ._adapter import VLLMAdapter, get_adapter, temporary_environ

__all__ = ["MIN_RUN", "SharedEngine", "VLLMStats", "acquire", "per_instance_options", "registry", "release"]

logger = logging.getLogger(__name__)


# -- the shared engine -------------------------------------------------------------------------
@dataclass
class VLLMStats:
    """What a shared vLLM engine has been asked to do (for monitoring and tests).

    Attributes:
        calls: ``score``/``ascore`` calls submitted.
        requests: vLLM requests submitted (one per scored sequence).
        in_flight: Requests submitted and not finished right now.
        peak_in_flight: The most requests that were inside vLLM at the same time.
        peak_calls_in_flight: The most calls whose requests were inside vLLM at the same time
            (2 or more means concurrent calls were scheduled together).
        replica_requests: Requests sent to each vLLM instance (one entry per replica).
    """

    calls: int = 0
    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    peak_calls_in_flight: int = 0
    replica_requests: list[int] = field(default_factory=lambda: [0])
    _calls_in_flight: int = field(default=0, repr=False)


class _Call:
    """One ``score``/``ascore`` call in flight on the private loop (for the stall watchdog)."""

    __slots__ = ("error", "sequences", "stall_timeout", "submitted", "tasks")

    def __init__(self, sequences: list[list[int]], stall_timeout: float | None, submitted: float) -> None:
        self.sequences = sequences
        self.stall_timeout = stall_timeout
        self.submitted = submitted
        self.tasks: list[asyncio.Future[float]] = []
        self.error: EngineError | None = None


class SharedEngine:
    """``replicas`` ``AsyncLLM`` instances on one private event loop thread, shared by reference count.

    With ``replicas > 1`` every instance gets ``1/replicas`` of the memory share (vLLM reads
    ``gpu_memory_utilization`` per instance) and a call's pairs are routed to them in
    contiguous runs of one query (so each instance's prefix cache still sees each query's
    documents together), each run to the instance with the fewest tokens in flight.
    """

    def __init__(
        self, key: str, model: str, options: dict[str, Any], replicas: int = 1, *, adapter: VLLMAdapter | None = None
    ) -> None:
        self.key = key
        self.options = options  # as passed to vLLM, platform defaults included
        self.replicas = replicas
        self.refs = 0
        self.stats = VLLMStats(replica_requests=[0] * replicas)
        self._adapter = adapter or get_adapter()
        self._ids = itertools.count()
        self._load = [0] * replicas  # tokens in flight per instance
        self._calls: set[_Call] = set()  # calls in flight (touched on the private loop only)
        self._last_done = 0.0  # loop time of the last request that finished, any call's
        self._watchdog: asyncio.Task[None] | None = None
        per_instance = per_instance_options(options, replicas, self._adapter)
        engine_args = self._adapter.engine_args(model, per_instance)  # option errors before any thread
        env = self._adapter.start_environment(options)
        if env:
            logger.info(
                "starting vLLM with %s%s",
                " ".join(f"{k}={v}" for k, v in sorted(env.items())),
                " (CUDA is already initialised in this process: forked engine processes would fail; "
                'the main script needs an `if __name__ == "__main__":` guard)'
                if "VLLM_WORKER_MULTIPROC_METHOD" in env
                else "",
            )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qwen3-rerank-vllm", daemon=True)
        self._thread.start()
        self.llms: list[Any] = []

        async def start() -> Any:
            # Built on the private loop: AsyncLLM starts its output handler on the loop it sees.
            return self._adapter.start(engine_args)

        try:
            # One after the other: each instance profiles the free device memory when it starts.
            # The engine processes inherit the environment they are started with.
            with temporary_environ(env):
                for _ in range(replicas):
                    self.llms.append(asyncio.run_coroutine_threadsafe(start(), self._loop).result())
        except Exception as exc:
            self.shutdown()
            raise EngineError(
                f"vLLM {self._adapter.version} could not start {model!r}"
                + (f" (instance {len(self.llms) + 1} of {replicas})" if replicas > 1 else "")
                + f": {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            self.shutdown()
            raise
        #: vLLM's own max_model_len (the engine may use one token less: VLLMEngine.max_model_len).
        self.max_model_len = self._adapter.max_model_len(self.llms[0])
        self.dtype = self._adapter.dtype(self.llms[0])
        self._params = self._adapter.pooling_params()

    @property
    def llm(self) -> Any:
        return self.llms[0] if self.llms else None

    # Runs on the private loop.
    async def _one(self, replica: int, ids: list[int]) -> float:
        final = None
        request_id = f"qwen3-rerank-{next(self._ids)}"
        self._load[replica] += len(ids)
        try:
            # No clone of the params per request: vLLM's input processor copies them itself.
            async for out in self.llms[replica].encode(self._adapter.prompt(ids), self._params, request_id):
                final = out
        except asyncio.CancelledError:
            raise  # aborted (by its caller or the stall watchdog): not progress
        except BaseException:
            self._last_done = self._loop.time()  # an error is an answer too
            raise
        finally:
            self._load[replica] -= len(ids)
        self._last_done = self._loop.time()
        if final is None:  # pragma: no cover - vLLM always yields the finished output
            raise EngineError(f"vLLM returned no output for request {request_id}")
        return self._adapter.logit(final)

    def _route(self, sequences: list[list[int]], groups: Sequence[list[int]] | None) -> list[int]:
        """The instance of each sequence: runs of one group (query) go to the least loaded one.

        ``groups``: indices of the sequences that share a query prefix (:func:`prefix_groups`);
        sequences in none of them form one more group. ``None``: one group of all.
        """
        n = self.replicas
        if n == 1:
            return [0] * len(sequences)
        runs = list(groups) if groups is not None else []
        covered = {i for members in runs for i in members}
        rest = [i for i in range(len(sequences)) if i not in covered]
        if rest:
            runs.append(rest)
        load = list(self._load)
        out = [0] * len(sequences)
        for members in runs:
            # Split a query's documents over the instances only in runs worth a prefix each.
            size = max(MIN_RUN, math.ceil(len(members) / n))
            for start in range(0, len(members), size):
                run = members[start : start + size]
                target = min(range(n), key=load.__getitem__)
                for i in run:
                    out[i] = target
                    load[target] += len(sequences[i])
        return out

    async def _many(
        self, sequences: list[list[int]], groups: Sequence[list[int]] | None, stall_timeout: float | None
    ) -> list[float]:
        stats = self.stats
        stats.calls += 1
        stats.requests += len(sequences)
        stats.in_flight += len(sequences)
        stats._calls_in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        stats.peak_calls_in_flight = max(stats.peak_calls_in_flight, stats._calls_in_flight)
        targets = self._route(sequences, groups)
        for t in targets:
            stats.replica_requests[t] += 1
        call = _Call(sequences, stall_timeout, self._loop.time())
        self._calls.add(call)
        try:
            # All requests go into vLLM's scheduler(s) at once; it batches them (and those of every
            # other call in flight) under its token budget.
            call.tasks = [asyncio.ensure_future(self._one(t, ids)) for t, ids in zip(targets, sequences, strict=True)]
            if stall_timeout is not None and (self._watchdog is None or self._watchdog.done()):
                self._watchdog = asyncio.ensure_future(self._watch())
            try:
                return list(await asyncio.gather(*call.tasks))
            except BaseException:
                # One request failed, the call was cancelled, or the watchdog gave up on it:
                # abort the rest in vLLM too.
                for task in call.tasks:
                    task.cancel()
                await asyncio.gather(*call.tasks, return_exceptions=True)
                if call.error is not None:
                    raise call.error from None
                raise
        finally:
            self._calls.discard(call)
            stats.in_flight -= len(sequences)
            stats._calls_in_flight -= 1

    async def _watch(self) -> None:
        """The stall watchdog: fails the calls that saw no request finish for their ``stall_timeout``.

        Progress is any request finishing, of any call: an engine busy with other calls is not
        stuck. A call's clock starts when it is submitted (an engine idle for an hour is not stuck
        either). Runs on the private loop while calls with a timeout are in flight.
        """
        while True:
            timeouts = [c.stall_timeout for c in self._calls if c.stall_timeout is not None and c.error is None]
            if not timeouts:
                return
            await asyncio.sleep(min(1.0, max(0.01, min(timeouts) / 10)))
            now = self._loop.time()
            for call in list(self._calls):
                if call.stall_timeout is None or call.error is not None:
                    continue
                idle = now - max(self._last_done, call.submitted)
                if idle >= call.stall_timeout:
                    call.error = self._stall_error(call, idle)
                    logger.error("%s", call.error)
                    for task in call.tasks:
                        task.cancel()  # vLLM aborts a request whose stream is cancelled

    def _stall_error(self, call: _Call, idle: float) -> EngineError:
        stuck = [len(ids) for ids, task in zip(call.sequences, call.tasks, strict=True) if not task.done()]
        lengths = ", ".join(f"{n} tokens x{k}" for n, k in Counter(stuck).most_common(5))
        limit = self.max_model_len
        at_limit = limit is not None and any(n >= limit for n in stuck)
        if at_limit and self._adapter.reserves_pooling_slot:
            cause = (
                f"requests of exactly max_model_len tokens never finish on vLLM {self._adapter.version} "
                "when their prefill is split over steps (its scheduler keeps one slot for a sampled "
                "token; fixed in vLLM 0.32); score sequences at least one token shorter"
            )
        else:
            cause = (
                "the vLLM engine may be stuck or overloaded, or slower than stall_timeout allows; "
                "check vLLM's log, or raise stall_timeout (None turns the watchdog off)"
            )
        return EngineError(
            f"vLLM made no progress for {idle:.0f} s (stall_timeout={call.stall_timeout:g}): "
            f"{len(stuck)} of this call's {len(call.sequences)} requests were still unfinished "
            f"({lengths}; vLLM's max_model_len is {limit}) and were aborted. Likely cause: {cause}."
        )

    def submit(
        self,
        sequences: list[list[int]],
        groups: Sequence[list[int]] | None = None,
        *,
        stall_timeout: float | None = None,
    ) -> concurrent.futures.Future[list[float]]:
        if not self._thread.is_alive():
            raise EngineError("this vLLM engine was closed; create a new VLLMEngine")
        return asyncio.run_coroutine_threadsafe(self._many(sequences, groups, stall_timeout), self._loop)

    def shutdown(self) -> None:
        async def stop(llm: Any) -> None:
            self._adapter.shutdown(llm)

        try:
            for llm in self.llms:
                if self._thread.is_alive():
                    asyncio.run_coroutine_threadsafe(stop(llm), self._loop).result(timeout=120)
        except Exception:  # pragma: no cover - best effort on shutdown
            logger.warning("vLLM did not shut down cleanly", exc_info=True)
        finally:
            self.llms = []
            self._stop_loop()

    def _stop_loop(self) -> None:
        async def stop_watchdog() -> None:
            if self._watchdog is not None and not self._watchdog.done():
                self._watchdog.cancel()
                await asyncio.gather(self._watchdog, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(stop_watchdog(), self._loop).result(timeout=10)
            except Exception:  # pragma: no cover - best effort on shutdown
                logger.debug("could not stop the stall watchdog", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()


# A query's documents are split over replicas only in runs of at least this many pairs: each run
# computes the query prefix once more on its instance.
MIN_RUN = 16


def per_instance_options(options: dict[str, Any], replicas: int, adapter: VLLMAdapter) -> dict[str, Any]:
    """Each of ``replicas`` instances on the same device gets its share of the memory."""
    if replicas == 1:
        return options
    total = options.get("gpu_memory_utilization")
    if total is None:
        total = getattr(adapter.AsyncEngineArgs, "gpu_memory_utilization", None) or 0.9
    return {**options, "gpu_memory_utilization": round(float(total) / replicas, 4)}


registry: dict[str, SharedEngine] = {}
registry_lock = threading.Lock()
_atexit_registered = False


def acquire(model: str, options: dict[str, Any], replicas: int = 1) -> SharedEngine:
    global _atexit_registered
    key = json.dumps({"model": model, "replicas": replicas, **options}, sort_keys=True, default=repr)
    with registry_lock:  # held while starting: a second caller with the same key waits and shares
        shared = registry.get(key)
        if shared is None:
            shared = SharedEngine(key, model, start_options(options), replicas)
            registry[key] = shared
            if not _atexit_registered:
                # Registered after vLLM is imported, so it runs before vLLM's own exit hooks.
                atexit.register(shutdown_all)
                _atexit_registered = True
        shared.refs += 1
        return shared


def release(shared: SharedEngine) -> None:
    with registry_lock:
        shared.refs -= 1
        if shared.refs > 0:
            return
        registry.pop(shared.key, None)
    shared.shutdown()


def shutdown_all() -> None:
    with registry_lock:
        engines = list(registry.values())
        registry.clear()
    for shared in engines:
        shared.shutdown()


def start_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options resolved at start: on CPU, a ``gpu_memory_utilization`` that can start."""
    if (
        "gpu_memory_utilization" not in options
        and get_adapter().device_type == "cpu"
        and not os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    ):
        share = cpu_memory_utilization()
        logger.info("vLLM on CPU: gpu_memory_utilization=%s (half of the memory free now)", share)
        return {**options, "gpu_memory_utilization": share}
    return options


def cpu_memory_utilization() -> float:
    """Half of the memory free now, as vLLM-CPU's share of memory (0.05 to 0.5).

    vLLM-CPU reserves ``gpu_memory_utilization`` x the NUMA node's *total* memory and refuses to
    start if that exceeds what is *available*; half of the available share leaves room for the
    rest of the process and for other programs.
    """
    total, available = get_adapter().cpu_memory()
    if not total:
        return 0.3
    return round(min(0.5, max(0.05, 0.5 * available / total)), 2)
