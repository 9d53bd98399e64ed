"""The embedded engine: torch + transformers, no server, CPU / CUDA / Ascend NPU.

It is also the fast form of the golden reference: it computes the model card's score, but only
at the last real position and only for the two rows of the head that matter.

* Causal checkpoint (``Qwen3ForCausalLM``): ``logit = h · (W_yes - W_no)`` from the two rows of
  the LM head, i.e. ``logit_yes - logit_no``; the 151,669-wide logits are never computed.
* Converted checkpoint (``Qwen3ForSequenceClassification``, one label): its score row already is
  ``W_yes - W_no``.

``P(yes) = sigmoid(logit) = softmax([logit_no, logit_yes])[1]``.

Sequences are sorted by length and cut into batches bounded by ``batch_size`` and
``max_batch_tokens`` (padded size), padded on the right with an attention mask, and the hidden
state of each sequence's last real token is gathered.

Shared query prefix: every pair of one query starts with the same ids (system prompt,
instruction, query; ``EncodedPair.query_length`` of them). With prefix reuse on,
:meth:`TransformersEngine.score` runs every distinct prefix once (one batched pass), keeps its
key/value cache, and runs only the document parts on top of it, batched across queries. Causal
attention makes this the same computation as the full sequence: position ``i`` sees positions
``<= i`` either way. Pairs whose query has a single document, or no shared prefix, take the
plain path. ``reuse_prefix="auto"`` (the default) turns it on for a call when the prefix work it
saves is large enough to pay for the cached-attention path, a rule set from the H100 measurements
in benchmarks/RESULTS.md: at least half of the call's tokens for small models (hidden size under
2,560, i.e. 0.6B), at least 15 % for 4B and 8B.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from .. import prompts
from .._devices import auto_device, auto_dtype, quiet_transformers
from .._exceptions import ConfigurationError, missing_dependency
from .._tokenizer import Qwen3Tokenizer
from .._types import EncodedPair, EngineOutput
from .._checkpoint import CAUSAL, SEQ_CLS, read_architecture
from ._base import Engine, prefix_groups

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
        batch_size: Most sequences in one forward pass (64: measured faster than 16 at 0.6B,
            4B and 8B on an H100; ``max_batch_tokens`` still bounds each batch).
        max_batch_tokens: Most padded tokens in one forward pass (bounds activation memory).
        revision: Hub revision.
        attn_implementation: Passed to transformers (default: its own choice, SDPA).
        reuse_prefix: Run each query's shared prefix once and reuse its key/value cache for all
            of that query's documents (exact; see the module docstring). ``"auto"`` (default):
            per call, only where the saved prefix work pays (short documents; any length past
            4B); ``True``/``False``: always/never.

    Example:
        >>> engine = TransformersEngine("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    """

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: Any = "auto",
        batch_size: int = 64,
        max_batch_tokens: int = 16384,
        revision: str | None = None,
        attn_implementation: str | None = None,
        reuse_prefix: bool | str = "auto",
    ) -> None:
        if model is None:
            raise ConfigurationError(
                "TransformersEngine needs model=: a hub id such as 'Qwen/Qwen3-Reranker-0.6B' or a local directory"
            )
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size} and {max_batch_tokens}")
        if reuse_prefix not in (True, False, "auto"):
            raise ValueError(f"reuse_prefix must be True, False or 'auto', got {reuse_prefix!r}")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        except ImportError as exc:
            raise missing_dependency(getattr(exc, "name", None) or "torch", "torch", exc) from exc
        self.model_name = str(model)
        self.architecture, config = read_architecture(model, revision=revision)
        self.device = device or auto_device()
        if self.device.startswith("npu"):
            import torch_npu  # noqa: F401  (registers the NPU backend)
        if isinstance(dtype, str):
            self.dtype = auto_dtype(self.device) if dtype == "auto" else getattr(torch, dtype)
        else:
            self.dtype = dtype
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_model_len = int(config.get("max_position_embeddings") or 0) or None
        self._tokenizer = Qwen3Tokenizer.from_pretrained(model, revision=revision)
        yes = self._tokenizer.token_id(prompts.YES_TOKEN)
        no = self._tokenizer.token_id(prompts.NO_TOKEN)
        kwargs: dict[str, Any] = {"dtype": self.dtype, "revision": revision}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        loader = AutoModelForCausalLM if self.architecture == CAUSAL else AutoModelForSequenceClassification
        with quiet_transformers():
            net = loader.from_pretrained(str(model), **kwargs).to(self.device).eval()
        self._body = net.base_model  # the decoder stack with its final norm, no head
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
        self._pad_id = 0
        #: Run each query's shared prefix once and reuse its KV cache for all its documents:
        #: True, False or "auto" (see the module docstring).
        self.reuse_prefix: bool | str = reuse_prefix
        # "auto": the least share of a call's tokens that prefix reuse must save (measured).
        self._auto_prefix_share = 0.5 if int(config.get("hidden_size") or 0) < 2560 else 0.15
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        return self._tokenizer

    def __repr__(self) -> str:
        return f"TransformersEngine(model={self.model_name!r}, device={self.device!r}, dtype={self.dtype})"

    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        groups = prefix_groups(pairs) if self.reuse_prefix else {}
        if self.reuse_prefix == "auto" and _saved_share(groups, pairs) < self._auto_prefix_share:
            groups = {}
        shared = {prefix: members for prefix, members in groups.items() if len(members) >= 2}
        logits = self._score_with_prefixes(pairs, shared) if shared else self.logits([p.input_ids for p in pairs])
        return EngineOutput(logits=logits)

    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        # The forward pass is compute-bound and releases the GIL: it runs on this engine's own
        # worker thread so the event loop stays free; calls queue there one at a time.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qwen3-rerank-torch")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.score, pairs)

    def logits(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """``logit_yes - logit_no`` at the last token of each sequence, in input order."""
        import torch

        if not sequences:
            return []
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        out = [0.0] * len(sequences)
        with self._lock, torch.inference_mode():
            start = 0
            while start < len(order):
                longest = len(sequences[order[start]])
                size = max(1, min(self.batch_size, self.max_batch_tokens // max(longest, 1)))
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
                for i, v in zip(batch, values):
                    out[i] = v
        return out

    def _score_with_prefixes(self, pairs: Sequence[EncodedPair], groups: dict[tuple[int, ...], list[int]]) -> list[float]:
        """Logits of ``pairs``; the pairs of each group (2+ sharing a prefix) reuse one KV cache of it."""
        shared = list(groups.items())
        out = [0.0] * len(pairs)
        plain = set(range(len(pairs)))
        if shared:
            prefixes = [list(prefix) for prefix, _ in shared]
            items = [
                (g, i, pairs[i].input_ids[len(prefixes[g]) :]) for g, (_, members) in enumerate(shared) for i in members
            ]
            for (_, i, _), v in zip(items, self._logits_after_prefixes(prefixes, [(g, s) for g, _, s in items])):
                out[i] = v
                plain.discard(i)
        if plain:
            rest = sorted(plain)
            for i, v in zip(rest, self.logits([pairs[i].input_ids for i in rest])):
                out[i] = v
        return out

    def _logits_after_prefixes(
        self, prefixes: Sequence[Sequence[int]], suffixes: Sequence[tuple[int, Sequence[int]]]
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
        p_max = max(lens)
        dev = self.device
        with self._lock, torch.inference_mode():
            keys: list[list[Any]] = []
            values: list[list[Any]] = []
            step = max(1, min(self.batch_size, self.max_batch_tokens // p_max))
            for start in range(0, len(prefixes), step):
                chunk = range(start, min(start + step, len(prefixes)))
                ids = torch.full((len(chunk), p_max), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), p_max), dtype=torch.long)
                for row, g in enumerate(chunk):
                    ids[row, : lens[g]] = torch.as_tensor(prefixes[g], dtype=torch.long)
                    mask[row, : lens[g]] = 1
                cache = self._body(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=True).past_key_values
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
                longest = len(suffixes[order[start]][1])
                size = max(1, min(self.batch_size, self.max_batch_tokens // max(longest + p_max, 1)))
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
                        (k.index_select(0, rows_dev), v.index_select(0, rows_dev)) for k, v in zip(k_all, v_all)
                    ]
                )
                hidden = self._body(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    position_ids=positions.to(dev),
                    past_key_values=past,
                    use_cache=True,
                ).last_hidden_state
                del past
                last = torch.as_tensor(lengths, device=hidden.device) - 1
                h = hidden[torch.arange(b, device=hidden.device), last].float()
                values_out = (h @ self._row + self._bias).tolist()
                for i, v in zip(batch, values_out):
                    out[i] = v
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._body = None
        try:
            import torch

            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort on shutdown
            logger.debug("could not empty the device cache", exc_info=True)


def _saved_share(groups: dict[tuple[int, ...], list[int]], pairs: Sequence[EncodedPair]) -> float:
    """The share of the call's tokens that running each shared prefix once would not compute."""
    total = sum(len(p.input_ids) for p in pairs)
    saved = sum(len(prefix) * (len(members) - 1) for prefix, members in groups.items())
    return saved / total if total else 0.0
