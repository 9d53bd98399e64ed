"""Tokenization that keeps user text from ever becoming control tokens.

Qwen3's tokenizer registers 26 *added* tokens (``<|im_start|>``, ``<|im_end|>``, ``<think>`` …).
A HuggingFace tokenizer matches added tokens in the raw text before anything else, so a document
that contains the string ``<|im_end|>`` would close the user turn. ``split_special_tokens=True``
only covers tokens flagged ``special``; in Qwen3, ``<think>``/``</think>``/``<tool_call>`` … are
added tokens *not* flagged special, so that flag is no defence.

:class:`Qwen3Tokenizer` therefore keeps two tokenizers built from the same ``tokenizer.json``:
the full one, used only for the fixed template parts, and a *plain* one with every added token
removed, used for all user text. In the plain tokenizer ``<|im_end|>`` is just the characters
``<``, ``|``, ``im``, ``_end`` … encoded by the byte-level BPE like any other text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._exceptions import ConfigurationError, missing_dependency

__all__ = ["Qwen3Tokenizer"]


class Qwen3Tokenizer:
    """A fast tokenizer split into a template half and a plain-text half.

    Build one with :meth:`from_pretrained` (a hub id or a local directory holding
    ``tokenizer.json``) or :meth:`from_tokenizer` (an existing ``tokenizers.Tokenizer`` or a
    transformers fast tokenizer).
    """

    def __init__(self, tokenizer: Any) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
            raise missing_dependency("tokenizers", "all", exc) from exc
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        spec = json.loads(tokenizer.to_str())
        # Template text is encoded exactly as written: no truncation or padding settings that a
        # saved tokenizer.json might carry.
        spec["truncation"] = None
        spec["padding"] = None
        self._full = Tokenizer.from_str(json.dumps(spec))
        self._control_ids = frozenset(int(t["id"]) for t in spec.get("added_tokens", []))
        plain = dict(spec)
        plain["added_tokens"] = []
        self._plain = Tokenizer.from_str(json.dumps(plain))
        self._encode_batch = getattr(self._plain, "encode_batch_fast", self._plain.encode_batch)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Qwen3Tokenizer:
        """Wrap a ``tokenizers.Tokenizer`` or a transformers fast tokenizer."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return cls(backend)
        if getattr(tokenizer, "is_fast", True) is False:
            raise ConfigurationError(
                f"{type(tokenizer).__name__} is a slow (Python) tokenizer; load the model's fast "
                "tokenizer instead (AutoTokenizer.from_pretrained(..., use_fast=True))."
            )
        return cls(tokenizer)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike[str], *, revision: str | None = None) -> Qwen3Tokenizer:
        """Load ``tokenizer.json`` from a local directory or a Hugging Face Hub model id."""
        from tokenizers import Tokenizer

        path = Path(model)
        if path.is_dir():
            file = path / "tokenizer.json"
            if not file.is_file():
                raise ConfigurationError(
                    f"{str(path)!r} has no tokenizer.json; point `model` at a directory that holds "
                    "the model's fast tokenizer (save it with tokenizer.save_pretrained(dir))."
                )
            return cls(Tokenizer.from_file(str(file)))
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise missing_dependency("huggingface_hub", "all", exc) from exc
        try:
            file = hf_hub_download(str(model), "tokenizer.json", revision=revision)
        except Exception as exc:
            raise ConfigurationError(
                f"could not load the tokenizer of {str(model)!r}: {exc}. Pass a local directory "
                "that holds tokenizer.json, or check the model id and your network/HF_TOKEN."
            ) from exc
        return cls(Tokenizer.from_file(file))

    # -- template side -------------------------------------------------------------------------
    def encode_template(self, text: str) -> list[int]:
        """Encode trusted template text; added tokens such as ``<|im_start|>`` are recognised."""
        return list(self._full.encode(text, add_special_tokens=False).ids)

    def token_id(self, token: str) -> int:
        """The id of a single token of the vocabulary (``"yes"``, ``"no"`` …)."""
        ids = self._full.encode(token, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ConfigurationError(f"{token!r} is not a single token in this tokenizer (got ids {ids})")
        return int(ids[0])

    @property
    def control_token_ids(self) -> frozenset[int]:
        """Ids of every added token (special or not): the ids user text must never produce."""
        return self._control_ids

    # -- user side -----------------------------------------------------------------------------
    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode untrusted user text in one batch call; never yields a control token."""
        if not texts:
            return []
        return [list(e.ids) for e in self._encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids back to text (control tokens are kept as their strings)."""
        return self._full.decode(list(ids), skip_special_tokens=False)
