"""Dynamic batching: concurrent requests coalesced into one engine call.

Two schedulers share one interface (:meth:`submit` returns a future of the job's answer):

* :class:`Batcher`, for engines that score one call at a time (``transformers``, ``remote``): a
  bounded queue and one loop. The loop takes the waiting jobs (after a wait of a few ms when it
  was idle) up to ``max_batch_pairs`` pairs, and scores them in one ``Reranker.arerank_many``
  per distinct instruction (token-id jobs in one ``engine.ascore``); each job gets its own slice.
  While a batch runs the next one fills up, so batches grow with the load by themselves.
* :class:`DirectScheduler`, for an engine that batches continuously itself (``vllm``): every job
  is its own ``arerank_many``, called concurrently, at most ``max_pairs_in_flight`` pairs at once
  (a second queue in front of vLLM's scheduler would only add latency).

Every job is validated by its route before it is submitted, so one request's bad input cannot
fail another's. A job whose client disconnected before its batch started is dropped unscored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._reranker import Reranker
from .._types import EncodedPair, Ranking
from ..engines._base import validate_output
from ._config import BatchingConfig
from ._errors import ApiError
from ._metrics import Metrics

__all__ = ["Batcher", "DirectScheduler", "IdsJob", "Job", "RerankJob", "Scheduler", "make_scheduler"]

logger = logging.getLogger("qwen3_rerank.server")


@dataclass(eq=False)
class RerankJob:
    """One query and its documents; the answer is the :class:`Ranking` of every document."""

    query: str
    documents: list[str]
    instruction: str | None
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def pairs(self) -> int:
        return len(self.documents)


@dataclass(eq=False)
class IdsJob:
    """Complete token sequences (``/classify``); the answer is their log-odds, in order."""

    sequences: list[list[int]]
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def pairs(self) -> int:
        return len(self.sequences)


Job = RerankJob | IdsJob


class Scheduler:
    """What the routes call: :meth:`submit` a validated job, await its future."""

    def __init__(self, reranker: Reranker, config: BatchingConfig, metrics: Metrics) -> None:
        self.reranker = reranker
        self.config = config
        self.metrics = metrics

    def submit(self, job: Job) -> asyncio.Future[Any]:
        raise NotImplementedError

    async def drain(self) -> None:
        """Finish every accepted job, then stop."""
        raise NotImplementedError

    def _busy(self) -> ApiError:
        return ApiError(
            429,
            f"the server is busy: {self.config.max_queued_requests} requests are already waiting "
            "(max_queued_requests, --max-queued-requests); retry after the Retry-After seconds",
            headers={"Retry-After": str(self.config.retry_after_s)},
        )

    async def _run(self, jobs: Sequence[Job]) -> None:
        """Score ``jobs`` together and settle each one's future (errors go to every job they hit)."""
        self.metrics.batch_pairs.observe(sum(j.pairs for j in jobs))
        self.metrics.batch_requests.observe(len(jobs))
        groups: dict[str | None, list[RerankJob]] = {}
        ids_jobs: list[IdsJob] = []
        for job in jobs:
            if isinstance(job, IdsJob):
                ids_jobs.append(job)
            else:
                groups.setdefault(job.instruction, []).append(job)
        parts = [self._rerank_group(instruction, group) for instruction, group in groups.items()]
        if ids_jobs:
            parts.append(self._score_ids(ids_jobs))
        await asyncio.gather(*parts)

    async def _rerank_group(self, instruction: str | None, jobs: list[RerankJob]) -> None:
        try:
            rankings = await self.reranker.arerank_many(
                [j.query for j in jobs],
                [j.documents for j in jobs],
                instruction=instruction,
                top_n=max(j.pairs for j in jobs),  # every result: each request cuts its own top_n
            )
        except Exception as exc:
            _fail(jobs, exc)
            return
        for job, ranking in zip(jobs, rankings, strict=True):
            _settle(job, ranking)

    async def _score_ids(self, jobs: list[IdsJob]) -> None:
        pairs = [EncodedPair(input_ids=ids, query_length=0) for j in jobs for ids in j.sequences]
        engine = self.reranker.engine
        try:
            output = await engine.ascore(pairs)
            logits = validate_output(output, len(pairs), engine.name)
        except Exception as exc:
            _fail(jobs, exc)
            return
        start = 0
        for job in jobs:
            _settle(job, logits[start : start + job.pairs])
            start += job.pairs


class Batcher(Scheduler):
    """A bounded queue and one loop that coalesces waiting jobs (see the module docstring)."""

    def __init__(self, reranker: Reranker, config: BatchingConfig, metrics: Metrics) -> None:
        super().__init__(reranker, config, metrics)
        self._queue: deque[Job] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def submit(self, job: Job) -> asyncio.Future[Any]:
        if len(self._queue) >= self.config.max_queued_requests:
            raise self._busy()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="qwen3-rerank-batcher")
        self._queue.append(job)
        self._idle.clear()
        self.metrics.queue_depth.set(len(self._queue))
        self._wake.set()
        return job.future

    async def drain(self) -> None:
        await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        pairs = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # its client left (the route cancelled the future): costs nothing
                self._queue.popleft()
                self.metrics.dropped.inc()
                continue
            if batch and pairs + job.pairs > self.config.max_batch_pairs:
                break
            batch.append(self._queue.popleft())
            pairs += job.pairs
        self.metrics.queue_depth.set(len(self._queue))
        return batch

    def _pending_pairs(self) -> int:
        return sum(j.pairs for j in self._queue)

    async def _loop(self) -> None:
        wait = self.config.max_wait_ms / 1000.0
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                # Idle until now: give concurrent requests a few ms to join this batch.
                if wait > 0 and self._pending_pairs() < self.config.max_batch_pairs:
                    await asyncio.sleep(wait)
            batch = self._take()
            if not batch:
                continue
            try:
                await self._run(batch)
            except Exception as exc:  # pragma: no cover - _run settles every job itself
                logger.exception("batch failed")
                _fail(batch, exc)


class DirectScheduler(Scheduler):
    """Concurrent calls into an engine that batches continuously, at most ``max_pairs_in_flight``
    pairs at once; jobs waiting for room count against ``max_queued_requests``."""

    def __init__(self, reranker: Reranker, config: BatchingConfig, metrics: Metrics) -> None:
        super().__init__(reranker, config, metrics)
        self._room = asyncio.Condition()
        self._in_flight = 0
        self._waiting = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        if self._waiting >= self.config.max_queued_requests:
            raise self._busy()
        self._waiting += 1
        self.metrics.queue_depth.set(self._waiting)
        task = asyncio.get_running_loop().create_task(self._one(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job.future

    async def _one(self, job: Job) -> None:
        # A request larger than the whole budget runs alone rather than never.
        need = min(job.pairs, self.config.max_pairs_in_flight)
        try:
            async with self._room:
                await self._room.wait_for(lambda: self._in_flight + need <= self.config.max_pairs_in_flight)
                self._in_flight += need
        finally:
            self._waiting -= 1
            self.metrics.queue_depth.set(self._waiting)
        try:
            if job.future.done():
                self.metrics.dropped.inc()
                return
            await self._run([job])
        finally:
            async with self._room:
                self._in_flight -= need
                self._room.notify_all()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def make_scheduler(reranker: Reranker, config: BatchingConfig, metrics: Metrics) -> Scheduler:
    """:class:`DirectScheduler` for the vLLM engine (it batches continuously), :class:`Batcher` otherwise."""
    cls = DirectScheduler if reranker.engine.name == "vllm" else Batcher
    return cls(reranker, config, metrics)


def _settle(job: Job, value: Ranking | list[float]) -> None:
    if not job.future.done():
        job.future.set_result(value)


def _fail(jobs: Sequence[Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
