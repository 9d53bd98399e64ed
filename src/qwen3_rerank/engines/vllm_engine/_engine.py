"""The :class:`VLLMEngine` class and the vLLM options it derives (see the package docstring)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from ..._checkpoint import CAUSAL, max_position_embeddings, read_architecture
from ..._exceptions import ConfigurationError, EngineError
from ..._tokenizer import Qwen3Tokenizer
from ..._types import EncodedPair, EngineOutput
from .._base import Engine, prefix_groups
from ._adapter import get_adapter
from ._registry import SharedEngine, VLLMStats, acquire, release

__all__ = [
    "ORIGINAL_RERANKER_OVERRIDES",
    "VLLMEngine",
    "VLLMStats",
    "usable_max_model_len",
    "vllm_max_model_len",
    "vllm_options",
]

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
            "hf_overrides must be a dict here (the automatic ones are merged into it), "
            f"got {type(user_overrides).__name__}"
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
        # A score through a cached prefix must equal a fresh one, and on Ascend that was not the
        # case: vLLM-Ascend ran every pooling model's attention with an operator that ignores the
        # KV cache, so prefix-cache hits gave wrong Qwen3-Reranker scores (vllm-ascend issue
        # #7145, advice: --no-enable-prefix-caching). PR #7452 (vLLM-Ascend 0.19.1rc1 on) routes
        # causal pooling models through the cache-aware attention, but its INT8 KV-cache attention
        # in 0.23.0 still takes the cache-less path for every pooling model, and no NPU run has
        # shown parity here: off unless the caller turns it on.
        enable_prefix_caching = False
        logger.info(
            "prefix caching is off by default on Ascend NPU for pooling models; "
            "pass enable_prefix_caching=True to turn it on"
        )
    if enable_prefix_caching is not None:
        options["enable_prefix_caching"] = enable_prefix_caching
    if gpu_memory_utilization is not None:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    # On CPU an unset gpu_memory_utilization is chosen when the engine starts (it depends on the
    # memory free then), so that it does not split the registry key.
    # Like vllm.LLM: no periodic throughput logging from an embedded engine.
    options.setdefault("disable_log_stats", True)
    return options


def vllm_max_model_len(requested: int | None, model_limit: int | None, reserves_slot: bool) -> int | None:
    """The ``max_model_len`` to start vLLM with, for a user's ``requested`` one (pure).

    Where vLLM keeps a slot for a sampled token (``reserves_slot``, vLLM < 0.32) a request must
    stay one token under vLLM's limit; asking vLLM for one more than requested keeps the user's
    length, as long as that stays within the model's own limit (``max_position_embeddings``).
    """
    if reserves_slot and requested is not None and model_limit is not None and requested < model_limit:
        return requested + 1
    return requested


def usable_max_model_len(vllm_len: int | None, reserves_slot: bool) -> int | None:
    """The longest sequence the engine sends to a vLLM started with ``vllm_len`` (pure)."""
    if vllm_len is None or not reserves_slot:
        return vllm_len
    return vllm_len - 1


# -- the engine --------------------------------------------------------------------------------
class VLLMEngine(Engine):
    """Score in-process with vLLM (pooling runner, token-id prompts, continuous batching).

    Args:
        model: Hub id or local directory of a Qwen3-Reranker checkpoint: the original
            ``Qwen3ForCausalLM`` or its ``Qwen3ForSequenceClassification`` conversion.
        dtype: ``"auto"`` (the checkpoint's, bfloat16 for Qwen3-Reranker), ``"bfloat16"``,
            ``"float16"`` or ``"float32"``.
        max_model_len: Longest sequence the engine scores (default: the model's, 40,960 for
            Qwen3-Reranker); :attr:`max_model_len` reports it and the reranker's ``max_length``
            is lowered to it. vLLM before 0.32 can never finish a pooling request of exactly its
            own ``max_model_len`` tokens once the prefill is split over steps; on those versions
            the engine starts vLLM one token longer when you ask for less than the model's own
            limit (so you get what you asked for), and otherwise uses one token less than vLLM's
            limit (``options["max_model_len"]`` is what vLLM got).
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
        stall_timeout: Seconds a call may wait without any vLLM request finishing (of this call
            or any other on the same vLLM) before it fails with :class:`~qwen3_rerank.EngineError`
            naming the stuck requests, which are aborted. ``None`` waits forever. A busy engine
            that keeps finishing requests is never stalled.
        **llm_kwargs: Any other ``vllm.LLM``/``vllm.AsyncEngineArgs`` keyword (``quantization``,
            ``max_num_seqs``, ``max_num_batched_tokens``, ``hf_overrides`` …). ``hf_overrides``
            keys you pass win over the automatic ones.

    Raises:
        ConfigurationError: the checkpoint is not a Qwen3-Reranker, or an option is unknown.
        MissingDependencyError: vLLM is not installed.

    On CUDA:
        * If CUDA is already initialised in this process (a :class:`TransformersEngine` on the
          GPU, any torch CUDA call, even ``torch.cuda.is_available()``), vLLM's engine processes
          are started with ``spawn`` (``VLLM_WORKER_MULTIPROC_METHOD=spawn`` while it starts;
          logged at INFO), because a forked one fails with ``CUDA error: initialization
          error``. Spawned processes re-import your main module: a script needs the
          ``if __name__ == "__main__":`` guard (vLLM's CPU build always spawns). A value you set
          yourself is kept.
        * In ``dtype="float32"`` vLLM's Triton attention would run its float32 products in TF32
          (scores off by up to 4e-5); the engine starts vLLM with ``TRITON_F32_DEFAULT=ieee``
          (unless you set it) so float32 scores stay within 1e-5 of the model card's formula,
          as on CPU.

    Example:
        >>> from qwen3_rerank import Reranker
        >>> reranker = Reranker("vllm", model="Qwen/Qwen3-Reranker-0.6B", max_length=4096)  # doctest: +SKIP
        >>> reranker.rerank("what is BM25?", ["BM25 is a ranking function.", "Paris"])[0].index  # doctest: +SKIP
        0
    """

    name = "vllm"
    extra = "vllm"
    packages = ("vllm",)

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
        stall_timeout: float | None = 300.0,
        **llm_kwargs: Any,
    ) -> None:
        if model is None:
            raise ConfigurationError(
                "VLLMEngine needs model=: a hub id such as 'Qwen/Qwen3-Reranker-0.6B' or a local directory"
            )
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
        if stall_timeout is not None and (
            isinstance(stall_timeout, bool)
            or not isinstance(stall_timeout, (int, float))
            or not math.isfinite(stall_timeout)
            or stall_timeout <= 0
        ):
            raise ValueError(f"stall_timeout must be a positive number of seconds or None, got {stall_timeout!r}")
        #: Seconds a call may wait with no vLLM request finishing (``None``: forever).
        self.stall_timeout: float | None = None if stall_timeout is None else float(stall_timeout)
        #: The model id or local path, as given.
        self.model_name: str = str(model)
        # Refuse a wrong checkpoint before paying for vLLM's start.
        self.architecture, config = read_architecture(model, revision=revision)
        adapter = get_adapter()
        reserves = adapter.reserves_pooling_slot
        self.options = vllm_options(
            self.architecture,
            adapter.device_type,
            dtype=dtype,
            max_model_len=vllm_max_model_len(max_model_len, max_position_embeddings(config), reserves),
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
        self._shared: SharedEngine | None = acquire(self.model_name, self.options, replicas)
        #: The longest sequence this engine scores (what :class:`~qwen3_rerank.Reranker` lowers
        #: its ``max_length`` to).
        self.max_model_len: int | None = usable_max_model_len(self._shared.max_model_len, reserves)
        #: The dtype vLLM runs the model in (``"bfloat16"``, ``"float32"`` …), read after start.
        self.dtype: str | None = self._shared.dtype or (None if dtype == "auto" else str(dtype))

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
        return (
            f"VLLMEngine(model={self.model_name!r}, architecture={self.architecture!r}, closed={self._shared is None})"
        )

    def _live(self) -> SharedEngine:
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
        limit = self.max_model_len
        if limit is not None:
            for i, pair in enumerate(pairs):
                if len(pair.input_ids) > limit:
                    # Refused here: vLLM < 0.32 would take one of exactly its own limit and never
                    # finish it.
                    raise EngineError(
                        f"sequence {i} has {len(pair.input_ids)} tokens, more than this engine's "
                        f"max_model_len {limit}; truncate to at most {limit} (Reranker does, via "
                        "max_length) or start the engine with a larger max_model_len"
                    )
        return shared.submit([list(p.input_ids) for p in pairs], groups, stall_timeout=self.stall_timeout)

    def close(self) -> None:
        """Release this engine; the last engine on a shared vLLM shuts it down. Idempotent."""
        shared, self._shared = self._shared, None
        if shared is not None:
            release(shared)


def _output(future: concurrent.futures.Future[list[float]], pairs: Sequence[EncodedPair]) -> EngineOutput:
    try:
        logits = future.result()
    except (EngineError, ConfigurationError):
        raise
    except Exception as exc:
        raise EngineError(f"vLLM failed to score {len(pairs)} sequences: {type(exc).__name__}: {exc}") from exc
    return EngineOutput(logits=logits)
