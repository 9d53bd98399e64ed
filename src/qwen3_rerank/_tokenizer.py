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

Building is cheap: the file is parsed once (``Tokenizer.from_file``), and the plain half is a new
``tokenizers.Tokenizer`` around the *same* model object (vocabulary and merges are shared, not
copied) with the same normalizer, pre-tokenizer, post-processor and decoder, and no added
vocabulary. A loaded file is kept per path, modification time and size, so several engines or
tokenizers of one process share it.

:class:`Tokenizer` is the protocol the core and the engines use; :class:`Qwen3Tokenizer` and the
remote engine's server-side tokenizer implement it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ._exceptions import ConfigurationError, missing_dependency

__all__ = ["Qwen3Tokenizer", "Tokenizer", "find_invalid_text", "invalid_text_message"]


@runtime_checkable
class Tokenizer(Protocol):
    """What the core (:class:`~qwen3_rerank.PairEncoder`, :class:`~qwen3_rerank.Reranker`) and
    the engines call on a tokenizer.

    Implementations must keep the safety contract: :meth:`encode_plain` never yields an id in
    :attr:`control_token_ids`, whatever the text.
    """

    def encode_template(self, text: str) -> list[int]:
        """Encode trusted template text, control-token strings recognised."""
        ...

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode untrusted user texts (one list of ids per text); never a control token."""
        ...

    def token_id(self, token: str) -> int:
        """The id of a single vocabulary token (``"yes"``, ``"no"``)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids, control tokens kept as their strings."""
        ...

    @property
    def control_token_ids(self) -> frozenset[int]:
        """Ids of every added token: the ids user text must never produce."""
        ...


def find_invalid_text(texts: Iterable[str]) -> tuple[int, int] | None:
    """``(index, position)`` of the first text holding a character UTF-8 cannot encode, or ``None``.

    Such a character is a lone surrogate (``"\\ud800"``), which a broken ``\\uXXXX`` escape in
    JSON can produce; no tokenizer can encode it. ``position`` is the character's index in
    ``texts[index]``. Items that are not ``str`` are skipped.
    """
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return i, exc.start
    return None


def invalid_text_message(what: str, text: str, position: int) -> str:
    """The error message for ``text`` with an unencodable character at ``position``."""
    return (
        f"{what} contains a lone surrogate {text[position]!r} at character {position} (invalid "
        "Unicode, often from a broken \\u escape in JSON); clean it first, e.g. with "
        "text.encode('utf-8', 'replace').decode()"
    )


# One loaded tokenizer.json per (real path, mtime, size): engines and tokenizers of one process
# share it. Tokenizer objects are only read after they are built, so sharing them is safe.
_CACHE: dict[tuple[str, int, int], tuple[Any, Any]] = {}
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def _tokenizer_class() -> Any:
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
        raise missing_dependency("tokenizers", "all", exc) from exc
    return HFTokenizer


def _plain_half(full: Any) -> Any:
    """A tokenizer with ``full``'s model and pipeline but no added tokens (the model is shared)."""
    plain = _tokenizer_class()(full.model)
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        value = getattr(full, part)
        if value is not None:
            setattr(plain, part, value)
    return plain


def _halves(full: Any) -> tuple[Any, Any]:
    """(template, plain) halves from a tokenizer this module owns (it is modified)."""
    # Template text is encoded exactly as written: no truncation or padding settings that a saved
    # tokenizer.json might carry.
    full.no_truncation()
    full.no_padding()
    return full, _plain_half(full)


def _load_file(file: str | os.PathLike[str]) -> tuple[Any, Any]:
    st = os.stat(file)
    key = (os.path.realpath(file), st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:  # held while loading: two engines starting together load the file once
        halves = _CACHE.get(key)
        if halves is None:
            halves = _halves(_tokenizer_class().from_file(str(file)))
            _CACHE[key] = halves
            while len(_CACHE) > _CACHE_SIZE:
                del _CACHE[next(iter(_CACHE))]
        return halves


class Qwen3Tokenizer:
    """A fast tokenizer split into a template half and a plain-text half.

    Build one with :meth:`from_pretrained` (a hub id or a local directory holding
    ``tokenizer.json``) or :meth:`from_tokenizer` (an existing ``tokenizers.Tokenizer`` or a
    transformers fast tokenizer). The tokenizer passed in is copied, never modified.
    """

    def __init__(self, tokenizer: Any) -> None:
        cls = _tokenizer_class()
        if not isinstance(tokenizer, cls):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        self._set(*_halves(cls.from_str(tokenizer.to_str())))

    def _set(self, full: Any, plain: Any) -> None:
        self._full = full
        self._plain = plain
        self._control_ids = frozenset(int(i) for i in full.get_added_tokens_decoder())
        self._encode_batch = getattr(plain, "encode_batch_fast", plain.encode_batch)

    @classmethod
    def _from_file(cls, file: str | os.PathLike[str]) -> Qwen3Tokenizer:
        self = cls.__new__(cls)
        self._set(*_load_file(file))
        return self

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
        path = Path(model)
        if path.is_dir():
            file = path / "tokenizer.json"
            if not file.is_file():
                raise ConfigurationError(
                    f"{str(path)!r} has no tokenizer.json; point `model` at a directory that holds "
                    "the model's fast tokenizer (save it with tokenizer.save_pretrained(dir))."
                )
            return cls._from_file(file)
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise missing_dependency("huggingface_hub", "all", exc) from exc
        try:
            downloaded = hf_hub_download(str(model), "tokenizer.json", revision=revision)
        except Exception as exc:
            raise ConfigurationError(
                f"could not load the tokenizer of {str(model)!r}: {exc}. Pass a local directory "
                "that holds tokenizer.json, or check the model id and your network/HF_TOKEN."
            ) from exc
        return cls._from_file(downloaded)

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
        """Encode untrusted user text in one batch call; never yields a control token.

        Raises:
            ValueError: A text holds a lone surrogate (not valid Unicode); the message names
                which text of the batch and where.
        """
        if not texts:
            return []
        texts = list(texts)
        try:
            encodings = self._encode_batch(texts, add_special_tokens=False)
        except TypeError:
            bad = find_invalid_text(texts)
            if bad is None:
                raise
            index, position = bad
            what = f"text {index} (of the {len(texts)} encoded in this call)"
            raise ValueError(invalid_text_message(what, texts[index], position)) from None
        return [list(e.ids) for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids back to text (control tokens are kept as their strings)."""
        text: str = self._full.decode(list(ids), skip_special_tokens=False)
        return text
