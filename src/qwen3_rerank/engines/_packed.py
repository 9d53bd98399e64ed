"""Qwen3's decoder over packed sequences: no padding tokens, variable-length attention.

:class:`TransformersEngine` pads each batch to its longest sequence and runs transformers' own
decoder. The packed path runs the same weights over sequences laid end to end (one ``[tokens,
hidden]`` tensor per forward pass), so no work is spent on padding and attention needs no mask:

* attention is PyTorch's variable-length FlashAttention (``torch.nn.attention.varlen``) on CUDA
  in bfloat16 / float16; elsewhere (CPU, float32) one causal ``scaled_dot_product_attention`` per
  sequence, which is what the tests check against the model card's formula;
* the query, key and value projections are one matrix product, and so are the MLP's gate and up
  projections (their weights concatenated once, at load);
* the last layer's attention output and MLP, and the final norm, run only at the last position of
  each sequence (the one hidden state that is read);
* with ``compile=True`` the element-wise work around attention (norms, rotary embedding, SiLU,
  residual adds) is fused by ``torch.compile`` into a few kernels per layer; one compiled
  function serves every layer (weights are arguments, token count dynamic). With
  ``fallback=True`` (the engine's ``compile="auto"``) a compiler failure (first calls or a later
  recompile) is logged once and that pass runs again uncompiled, as do all later ones.

Every other operation is transformers' Qwen3 arithmetic, in the same order and dtypes: RMSNorm in
float32 cast back before the weight, rotary cos/sin computed in float32 and cast, SiLU gate.

Shared query prefix (:meth:`PackedDecoder.last_hidden_after_prefixes`): each distinct prefix runs
once and its keys/values are kept; every document part then attends to its own prefix's keys and
values and to itself causally (FlashAttention's causal mask aligns the last query with the last
key, which is exactly "prefix + the suffix so far"), with positions continuing after the prefix.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._exceptions import ConfigurationError

__all__ = ["PackedDecoder", "choose_packed", "compile_available", "packed_support", "varlen_available"]

logger = logging.getLogger(__name__)

# torch.compile's options for the two per-layer functions (the tests swap in a failing backend).
_COMPILE_OPTIONS: dict[str, Any] = {"dynamic": True}


def varlen_available() -> bool:
    """Whether the installed torch has ``torch.nn.attention.varlen.varlen_attn`` (2.10 and later)."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def compile_available() -> bool:
    """Whether ``torch.compile`` can build CUDA kernels here (Triton is installed)."""
    return importlib.util.find_spec("triton") is not None


def _compile_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from torch.compile's compiler (not from the computation itself)."""
    from torch._dynamo.exc import TorchDynamoException  # BackendCompilerFailed among them
    from torch._inductor.exc import InductorError

    module = type(exc).__module__ or ""
    return isinstance(exc, (TorchDynamoException, InductorError)) or module.startswith("triton")


def packed_support(config: Any) -> str | None:
    """Why the packed path cannot run this checkpoint's decoder, or ``None`` if it can."""
    if getattr(config, "model_type", None) != "qwen3":
        return f"model_type {getattr(config, 'model_type', None)!r} (the packed path implements Qwen3)"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} (the packed path implements SiLU)"
    if getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    if getattr(config, "attention_bias", False):
        return "attention biases"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if (rope.get("rope_type") or rope.get("type") or "default") != "default":
        return f"rope_type {rope.get('rope_type')!r} (the packed path implements the default rotary embedding)"
    return None


def choose_packed(
    config: Any,
    model: str,
    packed: bool | str,
    compile: bool | str,
    *,
    device: str,
    dtype: Any,
    attn_implementation: str | None,
) -> tuple[bool, bool | str]:
    """TransformersEngine's ``packed`` and ``compile`` options resolved: ``(packed, compile)``.

    ``packed="auto"``: on CUDA in bfloat16 / float16, with variable-length FlashAttention, for a
    decoder this module implements and no ``attn_implementation``. The returned ``compile`` is
    False, True, or "auto" where ``compile="auto"`` chose to compile (a compiler failure then
    falls back to the uncompiled path). Refuses ``packed=True`` for an unsupported decoder and
    ``compile=True`` without the packed path.
    """
    import torch

    unsupported = packed_support(config)
    on_cuda = str(device).startswith("cuda")
    half = dtype in (torch.bfloat16, torch.float16)
    if packed == "auto":
        packed = unsupported is None and not attn_implementation and on_cuda and half and varlen_available()
    elif packed and unsupported is not None:
        raise ConfigurationError(f"packed=True cannot run {model!r}: {unsupported}; use packed=False")
    if compile is True and not packed:
        raise ConfigurationError(
            "compile=True fuses the packed path, which is off here; pass packed=True "
            "(or leave packed='auto' on CUDA in bfloat16 / float16)"
        )
    if compile == "auto" and not (packed and on_cuda and half and compile_available()):
        compile = False
    return bool(packed), compile


def _rms(x: Any, weight: Any, eps: float) -> Any:
    """transformers' Qwen3RMSNorm: float32 statistics, cast back, then the weight."""
    import torch

    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _attention_inputs(
    x: Any, ln: Any, qkv: Any, q_norm: Any, k_norm: Any, cos: Any, sin: Any, eps: float, heads: int, kv_heads: int
) -> tuple[Any, Any, Any]:
    """Norm, fused q/k/v projection, per-head q/k norms and the rotary embedding of one layer."""
    import torch
    import torch.nn.functional as F

    tokens = x.shape[0]
    dim = q_norm.shape[0]
    sizes = [heads * dim, kv_heads * dim, kv_heads * dim]
    q, k, v = torch.split(F.linear(_rms(x, ln, eps), qkv), sizes, dim=-1)
    q = _rms(q.view(tokens, heads, dim), q_norm, eps)
    k = _rms(k.view(tokens, kv_heads, dim), k_norm, eps)
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    return q, k, v.view(tokens, kv_heads, dim)


def _attention_output(x: Any, attn: Any, o: Any, ln: Any, gate_up: Any, down: Any, eps: float) -> Any:
    """Output projection and residual, then the norm, SiLU MLP and residual of one layer."""
    import torch.nn.functional as F

    x = x + F.linear(attn.reshape(attn.shape[0], -1), o)
    gate, up = F.linear(_rms(x, ln, eps), gate_up).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, down)


class PackedDecoder:
    """The decoder of a loaded transformers Qwen3 model, run over packed sequences.

    Args:
        body: The model's decoder stack (``model.base_model``: embeddings, layers, final norm).
        compile: Fuse the element-wise work of each layer with ``torch.compile`` (the first calls
            compile: 9-15 s at the 0.6B shape on an H200, benchmarks/RESULTS.md).
        fallback: With ``compile``, run uncompiled (and log why, once) if the compiler fails,
            instead of raising.

    The caller checks :func:`packed_support` first. The q/k/v and gate/up weights are
    concatenated copies; every other tensor is the model's own. Drop the transformers model after
    building this to free the originals.
    """

    def __init__(self, body: Any, *, compile: bool = False, fallback: bool = False) -> None:
        import torch

        config = body.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.eps = float(config.rms_norm_eps)
        self.embed = body.embed_tokens.weight
        self.norm = body.norm.weight
        self.dtype = self.embed.dtype
        self.device = self.embed.device
        rotary = body.rotary_emb
        self._inv_freq = rotary.inv_freq.to(torch.float32)
        self._rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.layers: list[tuple[Any, ...]] = []
        with torch.no_grad():
            for layer in body.layers:
                attn, mlp = layer.self_attn, layer.mlp
                qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
                gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
                self.layers.append(
                    (
                        layer.input_layernorm.weight,
                        qkv,
                        attn.q_norm.weight,
                        attn.k_norm.weight,
                        attn.o_proj.weight,
                        layer.post_attention_layernorm.weight,
                        gate_up,
                        mlp.down_proj.weight,
                    )
                )
        self.head_dim = int(self.layers[0][2].shape[0])
        self.scale = self.head_dim**-0.5
        self.flash = self.device.type == "cuda" and self.dtype in (torch.bfloat16, torch.float16) and varlen_available()
        self._inputs: Callable[..., Any] = _attention_inputs
        self._outputs: Callable[..., Any] = _attention_output
        if compile:
            self._inputs = torch.compile(_attention_inputs, **_COMPILE_OPTIONS)
            self._outputs = torch.compile(_attention_output, **_COMPILE_OPTIONS)
        #: Whether the layers run compiled (False from the start, or after a fallback).
        self.compiled = compile
        self._fallback = compile and fallback
        self._varlen_kw = _varlen_keywords() if self.flash else {}

    # -- the two entry points ------------------------------------------------------------------
    def last_hidden(self, sequences: Sequence[Sequence[int]]) -> Any:
        """The final-norm hidden state at the last token of each sequence, ``[n, hidden]``."""
        import torch

        lengths = [len(s) for s in sequences]
        ids = torch.as_tensor([t for s in sequences for t in s], dtype=torch.long)
        positions = torch.cat([torch.arange(n) for n in lengths])
        return self._run(ids, positions, lengths, lengths)

    def last_hidden_after_prefixes(
        self,
        prefixes: Sequence[Sequence[int]],
        suffixes: Sequence[tuple[int, Sequence[int]]],
        batches: Iterator[list[int]],
        max_tokens: int,
    ) -> Iterator[tuple[list[int], Any]]:
        """For each batch of suffix indices: ``(batch, hidden)`` of ``prefixes[g] + suffix``.

        ``suffixes``: ``(g, suffix ids)`` pairs; ``batches`` yields lists of their indices. The
        prefixes run once, in passes of at most ``max_tokens`` tokens; their keys and values are
        kept for every batch.
        """
        import torch

        p_lengths = [len(p) for p in prefixes]
        p_start = [0, *torch.tensor(p_lengths).cumsum(0).tolist()]
        # The prefix pass, in chunks of at most max_tokens tokens; every layer's keys and values kept.
        chunks: list[list[tuple[Any, Any]]] = []
        first = 0
        while first < len(prefixes):
            end, tokens = first + 1, p_lengths[first]
            while end < len(prefixes) and tokens + p_lengths[end] <= max_tokens:
                tokens += p_lengths[end]
                end += 1
            ids = torch.as_tensor([t for p in prefixes[first:end] for t in p], dtype=torch.long)
            chunks.append([])
            lengths = p_lengths[first:end]
            self._run(ids, torch.cat([torch.arange(n) for n in lengths]), lengths, lengths, keep=chunks[-1])
            first = end
        cached = [
            (torch.cat([c[n][0] for c in chunks]), torch.cat([c[n][1] for c in chunks]))
            for n in range(len(self.layers))
        ]
        del chunks
        for batch in batches:
            groups = [suffixes[i][0] for i in batch]
            s_lengths = [len(suffixes[i][1]) for i in batch]
            k_lengths = [p_lengths[g] + n for g, n in zip(groups, s_lengths, strict=True)]
            ids = torch.as_tensor([t for i in batch for t in suffixes[i][1]], dtype=torch.long)
            positions = torch.cat([torch.arange(p_lengths[g], k) for g, k in zip(groups, k_lengths, strict=True)])
            # Row r's keys: its prefix's cached keys, then its own; indices into cat(prefix, suffix).
            index, s_start = [], p_start[-1]
            for g, n in zip(groups, s_lengths, strict=True):
                index.append(torch.arange(p_start[g], p_start[g] + p_lengths[g]))
                index.append(torch.arange(s_start, s_start + n))
                s_start += n
            kv_index = torch.cat(index).to(self.device)
            yield batch, self._run(ids, positions, s_lengths, k_lengths, prefix=(cached, kv_index))

    def _run(
        self,
        ids: Any,
        positions: Any,
        q_lengths: Sequence[int],
        k_lengths: Sequence[int],
        *,
        keep: list[tuple[Any, Any]] | None = None,
        prefix: tuple[list[tuple[Any, Any]], Any] | None = None,
    ) -> Any:
        """The layers over packed ``ids``; the final-norm hidden state at each sequence's last token.

        ``keep``: collect every layer's keys and values (the prefix pass). ``prefix``: every
        layer's kept keys/values and the index that puts each row's prefix before its own keys.
        The last layer computes its attention output and MLP at the last positions only (the
        only hidden states that are read); its keys and values still cover every position.
        """
        try:
            return self._layers(ids, positions, q_lengths, k_lengths, keep=keep, prefix=prefix)
        except Exception as exc:
            if not (self._fallback and _compile_failure(exc)):
                raise
            first = (str(exc).splitlines() or [""])[0]
            logger.warning(
                "torch.compile failed (%s: %s); TransformersEngine runs the packed path uncompiled "
                "(pass compile=False to skip compiling)", type(exc).__name__, first
            )  # fmt: skip
            self._inputs, self._outputs = _attention_inputs, _attention_output
            self.compiled = self._fallback = False
            if keep is not None:
                keep.clear()
            return self._layers(ids, positions, q_lengths, k_lengths, keep=keep, prefix=prefix)

    def _layers(
        self,
        ids: Any,
        positions: Any,
        q_lengths: Sequence[int],
        k_lengths: Sequence[int],
        *,
        keep: list[tuple[Any, Any]] | None,
        prefix: tuple[list[tuple[Any, Any]], Any] | None,
    ) -> Any:
        import torch

        dev = self.device
        q_cu, k_cu = _cumulative(q_lengths).to(dev), _cumulative(k_lengths).to(dev)
        last = q_cu[1:] - 1
        x = torch.nn.functional.embedding(ids.to(dev), self.embed)
        cos, sin = self._rotary(positions.to(dev))
        final = len(self.layers) - 1
        for n, w in enumerate(self.layers):
            q, k, v = self._inputs(x, w[0], w[1], w[2], w[3], cos, sin, self.eps, self.heads, self.kv_heads)
            if keep is not None:
                keep.append((k, v))
                if n == final:
                    return None  # the prefix pass reads no hidden state
            if prefix is not None:
                pk, pv = prefix[0][n]
                k = torch.cat([pk, k]).index_select(0, prefix[1])
                v = torch.cat([pv, v]).index_select(0, prefix[1])
            if n == final:
                x, q = x[last], q[last]
                ones = [1] * len(q_lengths)
                attn = self._attend(q, k, v, _cumulative(ones).to(dev), k_cu, ones, k_lengths)
            else:
                attn = self._attend(q, k, v, q_cu, k_cu, q_lengths, k_lengths)
            x = self._outputs(x, attn, w[4], w[5], w[6], w[7], self.eps)
        return _rms(x, self.norm, self.eps)

    # -- pieces -----------------------------------------------------------------------------------
    def _rotary(self, positions: Any) -> tuple[Any, Any]:
        """transformers' Qwen3RotaryEmbedding for these positions, shaped ``[tokens, 1, dim]``."""
        import torch

        freqs = positions[:, None].to(torch.float32) * self._inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self._rope_scale).to(self.dtype)
        sin = (emb.sin() * self._rope_scale).to(self.dtype)
        return cos[:, None, :], sin[:, None, :]

    def _attend(
        self, q: Any, k: Any, v: Any, q_cu: Any, k_cu: Any, q_lengths: Sequence[int], k_lengths: Sequence[int]
    ) -> Any:
        """Causal attention of each sequence's queries to its keys, the last query aligned with the last key."""
        import torch
        import torch.nn.functional as F

        if self.flash:
            from torch.nn.attention.varlen import varlen_attn

            if not self._varlen_kw.get("enable_gqa") and k.shape[1] != q.shape[1]:
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
                v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
            out = varlen_attn(q, k, v, q_cu.to(torch.int32), k_cu.to(torch.int32), max(q_lengths), max(k_lengths),
                              scale=self.scale, **self._varlen_kw)  # fmt: skip
            return out
        out = torch.empty_like(q)
        qs, ks = 0, 0
        masks: dict[tuple[int, int], Any] = {}
        for n_q, n_k in zip(q_lengths, k_lengths, strict=True):
            qi = q[qs : qs + n_q].transpose(0, 1)
            ki = k[ks : ks + n_k].transpose(0, 1)
            vi = v[ks : ks + n_k].transpose(0, 1)
            if n_q == n_k:
                o = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=self.scale, enable_gqa=True)
            else:
                # Query i (of n_q) sees the keys up to n_k - n_q + i: the bottom-right causal mask.
                mask = masks.get((n_q, n_k))
                if mask is None:
                    mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(diagonal=n_k - n_q)
                    masks[n_q, n_k] = mask
                o = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, scale=self.scale, enable_gqa=True)
            out[qs : qs + n_q] = o.transpose(0, 1)
            qs, ks = qs + n_q, ks + n_k
        return out


def _cumulative(lengths: Sequence[int]) -> Any:
    import torch

    cu = torch.zeros(len(lengths) + 1, dtype=torch.long)
    cu[1:] = torch.as_tensor(lengths, dtype=torch.long).cumsum(0)
    return cu


def _varlen_keywords() -> dict[str, Any]:
    """Causal, and GQA where supported, in the keyword names of the installed ``varlen_attn``.

    torch 2.10 takes ``is_causal``; later releases take ``window_size=(-1, 0)`` and ``enable_gqa``.
    """
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kw: dict[str, Any] = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    if "enable_gqa" in params:
        kw["enable_gqa"] = True
    return kw
