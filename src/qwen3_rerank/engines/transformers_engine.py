"""The embedded engine: torch + transformers, no server, CPU / CUDA / Ascend NPU.

It is also the fast form of the golden reference: it computes the model card's score, but only
at the last real position and only for the two rows of the head that matter.

* Causal checkpoint (``Qwen3ForCausalLM``): ``logit = h · (W_yes - W_no)`` from the two rows of
  the LM head, i.e. ``logit_yes - logit_no``; the 151,669-wide logits are never computed.
* Converted checkpoint (``Qwen3ForSequenceClassification``, one label): its score row already is
  ``W_yes - W_no``.

``P(yes) = sigmoid(logit) = softmax([logit_no, logit_yes])[1]``.

Sequences are sorted by length and cut into batches bounded by ``batch_size`` and
``max_batch_tokens``. On CUDA in bfloat16 / float16 (``packed="auto"``) a batch is packed: its
sequences laid end to end with no padding, through the engine's own loop over the model's weights
with variable-length FlashAttention (:mod:`qwen3_rerank.engines._packed`). Otherwise (CPU,
float32, ``packed=False``) a batch is padded on the right with an attention mask and runs through
transformers' decoder. Either way the hidden state of each sequence's last real token is gathered.
On CUDA the packed path is also compiled by default (``compile="auto"``: ``torch.compile`` fuses
each layer's element-wise work; the first calls spend seconds compiling).

Shared query prefix: every pair of one query starts with the same ids (system prompt,
instruction, query; ``EncodedPair.query_length`` of them). With prefix reuse on,
:meth:`TransformersEngine.score` runs every distinct prefix once (one batched pass), keeps its
key/value cache, and runs only the document parts on top of it, batched across queries. Causal
attention makes this the same computation as the full sequence: position ``i`` sees positions
``<= i`` either way. Pairs whose query has a single document, or no shared prefix, take the
plain path. ``reuse_prefix="auto"`` (the default) turns it on for a call when the prefix work it
saves is large enough to pay for the cached-attention path: at least half of the call's tokens
for small models (hidden size under 2,560, i.e. 0.6B) on a GPU or NPU, at least 15 % for 4B and
8B and for every model on the CPU (the rule and the measurements behind it:
benchmarks/RESULTS.md).

The prefix path passes the key/value cache under the name the installed transformers uses
(``cache`` from 5.24 on, ``past_key_values`` before), read from the model's ``forward`` signature,
so no deprecation warning shows on either.

Async calls and cancellation: :meth:`TransformersEngine.ascore` runs on the engine's own worker
thread (one call at a time). Cancelling the awaiting task sets a flag that the worker checks
before every batch, so a cancelled call stops after the batch in flight and the next call does
not wait behind the rest of it. A sync :meth:`~TransformersEngine.score` on the main thread stops
on ``KeyboardInterrupt`` after the batch in flight and releases the engine.

Closing: :meth:`TransformersEngine.close` waits for the call in flight, stops the worker thread and
drops the model; it is idempotent, and any later call raises :class:`~qwen3_rerank.EngineError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from .. import prompts
from .._checkpoint import CAUSAL, SEQ_CLS, read_architecture
from .._devices import auto_device, auto_dtype, prepare_device, quiet_transformers
from .._exceptions import ConfigurationError, EngineError, missing_dependency
from .._tokenizer import Qwen3Tokenizer
from .._types import EncodedPair, EngineOutput
from ._base import Engine, prefix_groups
from ._packed import PackedDecoder, choose_packed

# CAUSAL, SEQ_CLS and read_architecture are re-exported for older imports (they live in _checkpoint).
__all__ = ["CAUSAL", "SEQ_CLS", "TransformersEngine", "read_architecture"]

logger = logging.getLogger(__name__)


class TransformersEngine(Engine):
    """Score in-process with PyTorch and transformers.

    Args:
        model: Hub id or local directory of a Qwen3-Reranker checkpoint (original or seq-cls).
        device: ``"cuda"``, ``"cuda:1"``, ``"npu"``, ``"cpu"`` … (default: CUDA, then Ascend
            NPU, then CPU).
        dtype: ``"auto"`` (bfloat16 on accelerators, float32 on CPU), or a torch dtype / its name.
        batch_size: Most sequences in one forward pass (``max_batch_tokens`` still bounds each
            batch). Default: 64 for padded batches (why 64: benchmarks/RESULTS.md); packed
            batches, which carry no padding, are bounded by ``max_batch_tokens`` alone.
        max_batch_tokens: Most tokens in one forward pass, padding included (bounds activation
            memory).
        revision: Hub revision.
        attn_implementation: Passed to transformers (default: its own choice, SDPA).
        reuse_prefix: Run each query's shared prefix once and reuse its key/value cache for all
            of that query's documents (exact; see the module docstring). ``"auto"`` (default):
            per call, only where the saved prefix work pays (short documents; any length past
            4B); ``True``/``False``: always/never.
        packed: Run the decoder over sequences laid end to end, with no padding, variable-length
            attention and fused projections (``qwen3_rerank.engines._packed``; same arithmetic as
            transformers' Qwen3 but for the attention kernel). ``"auto"`` (default): on CUDA in
            bfloat16 / float16 when the installed torch has variable-length FlashAttention
            (2.10 and later) and no ``attn_implementation`` is given; ``True`` also on CPU and in
            float32 (one causal attention call per sequence); ``False``: transformers' decoder
            on padded batches.
        compile: With the packed path, fuse each layer's element-wise work with
            ``torch.compile``: 1.15x-1.96x the uncompiled speed on an H200
            (benchmarks/RESULTS.md), after 9-15 s of compiling in the first calls (0.6B shape).
            ``"auto"`` (default): on when the packed path runs on CUDA in bfloat16 / float16 and
            Triton is installed; if the compiler fails, the engine logs why once and runs
            uncompiled. ``True``: always with the packed path (a compiler failure raises);
            ``False``: never (no first-call delay).

    Example:
        >>> engine = TransformersEngine("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    """

    name = "transformers"
    extra = "torch"
    packages = ("torch", "transformers")
    uses_device = True
    option_choices = {
        "reuse_prefix": (True, False, "auto"), "packed": (True, False, "auto"), "compile": (True, False, "auto"),
    }  # fmt: skip

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: Any = "auto",
        batch_size: int | None = None,
        max_batch_tokens: int = 16384,
        revision: str | None = None,
        attn_implementation: str | None = None,
        reuse_prefix: bool | str = "auto",
        packed: bool | str = "auto",
        compile: bool | str = "auto",
    ) -> None:
        if model is None:
            raise ConfigurationError(
                "TransformersEngine needs model=: a hub id such as 'Qwen/Qwen3-Reranker-0.6B' or a local directory"
            )
        if (batch_size is not None and batch_size < 1) or max_batch_tokens < 1:
            raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size} and {max_batch_tokens}")
        if reuse_prefix not in (True, False, "auto"):
            raise ValueError(f"reuse_prefix must be True, False or 'auto', got {reuse_prefix!r}")
        if packed not in (True, False, "auto"):
            raise ValueError(f"packed must be True, False or 'auto', got {packed!r}")
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        except ImportError as exc:
            raise missing_dependency(getattr(exc, "name", None) or "torch", "torch", exc) from exc
        self.model_name = str(model)
        self.architecture, config = read_architecture(model, revision=revision)
        self.device = device or auto_device()
        prepare_device(self.device)  # on "npu": imports torch_npu before anything moves there
        if isinstance(dtype, str):
            torch_dtype = auto_dtype(self.device) if dtype == "auto" else getattr(torch, dtype)
        else:
            torch_dtype = dtype
        #: The weights' dtype by name ("float32", "bfloat16", "float16").
        self.dtype: str | None = str(torch_dtype).removeprefix("torch.")
        #: Most sequences in one forward pass (None: 64 padded, ``max_batch_tokens`` alone packed).
        self.batch_size: int | None = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_model_len = int(config.get("max_position_embeddings") or 0) or None
        self._tokenizer = Qwen3Tokenizer.from_pretrained(model, revision=revision)
        yes = self._tokenizer.token_id(prompts.YES_TOKEN)
        no = self._tokenizer.token_id(prompts.NO_TOKEN)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "revision": revision}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        loader = AutoModelForCausalLM if self.architecture == CAUSAL else AutoModelForSequenceClassification
        with quiet_transformers():
            # transformers types PreTrainedModel.to as @wraps(torch.nn.Module.to): a device string is refused.
            net = loader.from_pretrained(str(model), **kwargs).to(self.device).eval()  # type: ignore[arg-type]
        self._body = net.base_model  # the decoder stack with its final norm, no head
        self._cache_name = _cache_argument(self._body)
        packed, compile = choose_packed(self._body.config, self.model_name, packed, compile, device=self.device,
                                        dtype=torch_dtype, attn_implementation=attn_implementation)  # fmt: skip
        #: Whether calls run the packed decoder (no padding; see ``packed``).
        self.packed: bool = bool(packed)
        fallback = compile == "auto"  # chose to compile: a compiler failure runs uncompiled
        self._packed = PackedDecoder(self._body, compile=bool(compile), fallback=fallback) if packed else None
        with torch.no_grad():
            if self.architecture == CAUSAL:
                head = net.get_output_embeddings().weight
                row = head[yes].float() - head[no].float()
                bias = 0.0
            else:
                row = net.score.weight[0].float()
                b = getattr(net.score, "bias", None)
                bias = float(b[0]) if b is not None else 0.0
        # Keep only the decoder and one row: the LM head's 151k rows are not needed for scoring.
        self._row = row.detach().to(self.device).clone()
        self._bias = bias
        del net
        if self._packed is not None:
            self._body = None  # the packed decoder holds what it needs; the rest is freed
        self._pad_id = 0
        #: Run each query's shared prefix once and reuse its KV cache for all its documents:
        #: True, False or "auto" (see the module docstring).
        self.reuse_prefix: bool | str = reuse_prefix
        # "auto": the least share of a call's tokens that prefix reuse must save (measured). On an
        # accelerator a small model's prefix path costs more than its saved tokens below half; on
        # the CPU, where the matrix products dominate, the saving pays from 15 % on, as at 4B / 8B.
        small = int(config.get("hidden_size") or 0) < 2560
        self._auto_prefix_share = 0.5 if small and not str(self.device).startswith("cpu") else 0.15
        self._lock = threading.Lock()  # one forward pass at a time
        self._state = threading.Lock()  # guards _closed and _executor
        self._closed = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        return self._tokenizer

    def __repr__(self) -> str:
        return f"TransformersEngine(model={self.model_name!r}, device={self.device!r}, dtype={self.dtype!r})"

    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        self._check_open()
        return self._score(pairs, None)

    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        # The forward pass is compute-bound and releases the GIL: it runs on this engine's own
        # worker thread so the event loop stays free; calls queue there one at a time.
        with self._state:
            self._check_open()  # a closed engine starts no thread
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qwen3-rerank-torch")
            cancel = threading.Event()
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._score, pairs, cancel)
        try:
            return await future
        except asyncio.CancelledError:
            cancel.set()  # the worker stops before its next batch
            raise

    def logits(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """``logit_yes - logit_no`` at the last token of each sequence, in input order."""
        self._check_open()
        return self._logits(sequences, None)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"{self!r} is closed; create a new TransformersEngine to score again")

    def _score(self, pairs: Sequence[EncodedPair], cancel: threading.Event | None) -> EngineOutput:
        groups = prefix_groups(pairs) if self.reuse_prefix else {}
        if self.reuse_prefix == "auto" and _saved_share(groups, pairs) < self._auto_prefix_share:
            groups = {}
        shared = {prefix: members for prefix, members in groups.items() if len(members) >= 2}
        if shared:
            logits = self._score_with_prefixes(pairs, shared, cancel)
        else:
            logits = self._logits([p.input_ids for p in pairs], cancel)
        return EngineOutput(logits=logits)

    def _next_batch(self, cancel: threading.Event | None) -> None:
        """Called before every forward pass, holding the compute lock."""
        if cancel is not None and cancel.is_set():
            raise _Cancelled("the call was cancelled")
        self._check_open()

    def _logits(self, sequences: Sequence[Sequence[int]], cancel: threading.Event | None) -> list[float]:
        import torch

        if not sequences:
            return []
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        out = [0.0] * len(sequences)
        if self._packed is not None:
            with self._lock, torch.inference_mode():
                for batch in self._packed_batches(order, [len(s) for s in sequences], cancel):
                    h = self._packed.last_hidden([sequences[i] for i in batch])
                    for i, v in zip(batch, self._head(h), strict=True):
                        out[i] = v
            return out
        with self._lock, torch.inference_mode():
            start = 0
            while start < len(order):
                self._next_batch(cancel)
                longest = len(sequences[order[start]])
                size = max(1, min(self._rows(), self.max_batch_tokens // max(longest, 1)))
                batch = order[start : start + size]
                start += size
                ids = torch.full((len(batch), longest), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, i in enumerate(batch):
                    seq = sequences[i]
                    ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
                    mask[row, : len(seq)] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                # use_cache=False: no KV cache is built (and copied) for a single forward pass.
                hidden = self._body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                last = mask.sum(dim=1) - 1
                h = hidden[torch.arange(len(batch), device=hidden.device), last].float()
                values = (h @ self._row + self._bias).tolist()
                for i, v in zip(batch, values, strict=True):
                    out[i] = v
        return out

    def _score_with_prefixes(
        self, pairs: Sequence[EncodedPair], groups: dict[tuple[int, ...], list[int]], cancel: threading.Event | None
    ) -> list[float]:
        """Logits of ``pairs``; the pairs of each group (2+ sharing a prefix) reuse one KV cache of it."""
        shared = list(groups.items())
        out = [0.0] * len(pairs)
        plain = set(range(len(pairs)))
        if shared:
            prefixes = [list(prefix) for prefix, _ in shared]
            items = [
                (g, i, pairs[i].input_ids[len(prefixes[g]) :]) for g, (_, members) in enumerate(shared) for i in members
            ]
            logits = self._logits_after_prefixes(prefixes, [(g, s) for g, _, s in items], cancel)
            for (_, i, _), v in zip(items, logits, strict=True):
                out[i] = v
                plain.discard(i)
        if plain:
            rest = sorted(plain)
            for i, v in zip(rest, self._logits([pairs[i].input_ids for i in rest], cancel), strict=True):
                out[i] = v
        return out

    def _logits_after_prefixes(
        self,
        prefixes: Sequence[Sequence[int]],
        suffixes: Sequence[tuple[int, Sequence[int]]],
        cancel: threading.Event | None = None,
    ) -> list[float]:
        """``logit_yes - logit_no`` of ``prefixes[g] + suffix`` for each ``(g, suffix)``.

        Every prefix runs once (one batched forward pass, padded on the right to the longest
        prefix ``P``). Suffixes of all prefixes are then sorted by length and batched together:
        row ``r`` attends to its own prefix's cached keys/values (positions ``< len(prefix)``;
        the padding up to ``P`` is masked out) and to its own suffix causally, with rotary
        positions continuing from its prefix's length. Same computation as the full sequence.
        """
        import torch
        from transformers import DynamicCache

        out = [0.0] * len(suffixes)
        lens = [len(p) for p in prefixes]
        if self._packed is not None:
            order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i][1]), reverse=True)
            # A row's tokens in the budget: its suffix and the prefix keys/values it attends to.
            cost = [len(s) + lens[g] for g, s in suffixes]
            with self._lock, torch.inference_mode():
                self._next_batch(cancel)  # before the prefix pass; _packed_batches checks before each batch
                batches = self._packed_batches(order, cost, cancel)
                hidden = self._packed.last_hidden_after_prefixes(prefixes, suffixes, batches, self.max_batch_tokens)
                for batch, h in hidden:
                    for i, v in zip(batch, self._head(h), strict=True):
                        out[i] = v
            return out
        p_max = max(lens)
        dev = self.device
        with self._lock, torch.inference_mode():
            keys: list[list[Any]] = []
            values: list[list[Any]] = []
            step = max(1, min(self._rows(), self.max_batch_tokens // p_max))
            for start in range(0, len(prefixes), step):
                self._next_batch(cancel)
                chunk = range(start, min(start + step, len(prefixes)))
                ids = torch.full((len(chunk), p_max), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), p_max), dtype=torch.long)
                for row, g in enumerate(chunk):
                    ids[row, : lens[g]] = torch.as_tensor(prefixes[g], dtype=torch.long)
                    mask[row, : lens[g]] = 1
                output = self._body(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=True)
                cache = getattr(output, self._cache_name)
                del output
                for layer, entry in enumerate(cache.layers):
                    if start == 0:
                        keys.append([])
                        values.append([])
                    keys[layer].append(entry.keys)
                    values[layer].append(entry.values)
                del cache
            k_all = [torch.cat(k) if len(k) > 1 else k[0] for k in keys]
            v_all = [torch.cat(v) if len(v) > 1 else v[0] for v in values]
            del keys, values
            prefix_mask = torch.zeros((len(prefixes), p_max), dtype=torch.long)
            for g, n in enumerate(lens):
                prefix_mask[g, :n] = 1
            lens_t = torch.as_tensor(lens, dtype=torch.long)

            order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i][1]), reverse=True)
            start = 0
            while start < len(order):
                self._next_batch(cancel)
                longest = len(suffixes[order[start]][1])
                size = max(1, min(self._rows(), self.max_batch_tokens // max(longest + p_max, 1)))
                batch = order[start : start + size]
                start += size
                b = len(batch)
                rows = torch.as_tensor([suffixes[i][0] for i in batch], dtype=torch.long)
                ids = torch.full((b, longest), self._pad_id, dtype=torch.long)
                mask = torch.zeros((b, p_max + longest), dtype=torch.long)
                mask[:, :p_max] = prefix_mask[rows]
                lengths = []
                for row, i in enumerate(batch):
                    seq = suffixes[i][1]
                    ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
                    mask[row, p_max : p_max + len(seq)] = 1
                    lengths.append(len(seq))
                positions = lens_t[rows].unsqueeze(1) + torch.arange(longest).unsqueeze(0)
                rows_dev = rows.to(dev)
                # A fresh cache per batch (the forward appends to it), holding each row's prefix.
                past = DynamicCache(
                    ddp_cache_data=[
                        (k.index_select(0, rows_dev), v.index_select(0, rows_dev))
                        for k, v in zip(k_all, v_all, strict=True)
                    ]
                )
                hidden = self._body(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    position_ids=positions.to(dev),
                    use_cache=True,
                    **{self._cache_name: past},
                ).last_hidden_state
                del past
                last = torch.as_tensor(lengths, device=hidden.device) - 1
                h = hidden[torch.arange(b, device=hidden.device), last].float()
                values_out = (h @ self._row + self._bias).tolist()
                for i, v in zip(batch, values_out, strict=True):
                    out[i] = v
        return out

    def _packed_batches(
        self, order: Sequence[int], cost: Sequence[int], cancel: threading.Event | None
    ) -> Iterator[list[int]]:
        """Consecutive runs of ``order``: at most ``batch_size`` rows (if set) and ``max_batch_tokens`` tokens each."""
        batch: list[int] = []
        tokens = 0
        rows = self.batch_size or len(order)
        for i in order:
            if batch and (len(batch) >= rows or tokens + cost[i] > self.max_batch_tokens):
                self._next_batch(cancel)
                yield batch
                batch, tokens = [], 0
            batch.append(i)
            tokens += cost[i]
        if batch:
            self._next_batch(cancel)
            yield batch

    def _rows(self) -> int:
        """The padded path's row bound: ``batch_size``, 64 when unset (benchmarks/RESULTS.md)."""
        return self.batch_size or 64

    def _head(self, hidden: Any) -> list[float]:
        """``logit_yes - logit_no`` from final-norm hidden states ``[n, hidden]``."""
        values: list[float] = (hidden.float() @ self._row + self._bias).tolist()
        return values

    def close(self) -> None:
        """Wait for the call in flight, stop the worker thread and drop the model; idempotent."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:  # a sync call in flight on another thread finishes first
            self._body = None
            self._packed = None
            self._row = None
        try:
            import torch

            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            elif self.device.startswith("npu"):
                torch.npu.empty_cache()  # type: ignore[attr-defined]  # added by torch_npu
        except Exception:  # pragma: no cover - best effort on shutdown
            logger.debug("could not empty the device cache", exc_info=True)


class _Cancelled(Exception):
    """Raised on the worker thread to stop a cancelled call between batches (nobody awaits it)."""


def _cache_argument(body: Any) -> str:
    """The name under which this transformers version passes and returns the KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes in
    5.40); older versions know only ``past_key_values``.
    """
    import inspect

    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _saved_share(groups: dict[tuple[int, ...], list[int]], pairs: Sequence[EncodedPair]) -> float:
    """The share of the call's tokens that running each shared prefix once would not compute."""
    total = sum(len(p.input_ids) for p in pairs)
    saved = sum(len(prefix) * (len(members) - 1) for prefix, members in groups.items())
    return saved / total if total else 0.0
