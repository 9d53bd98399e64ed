"""Tokenizing through the server's ``/tokenize`` (the last resort when no tokenizer loads locally)."""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Sequence

from ..._exceptions import ConfigurationError, RemoteError
from ._protocol import CONTROL_RE, CONTROL_TOKENS, excerpt
from ._requester import Requester

__all__ = ["ServerTokenizer"]

# Qwen2/2.5/3's pre-tokenizer split (the BPE never merges across these pieces).
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class ServerTokenizer:
    """Qwen3Tokenizer's interface over the server's ``/tokenize`` and ``/detokenize``.

    The server's tokenizer turns control-token strings in any text into control tokens, so user
    text is made safe *exactly*: the text is cut inside every control-token string at a boundary
    of Qwen's pre-tokenizer (e.g. ``<|`` | ``im_end|>``), the pieces are joined with the
    ``<|endoftext|>`` token as a separator (a tokenizer encodes the text between two added tokens
    independently), one ``/tokenize`` call encodes everything, and the ids are split at the
    separators again. Because Qwen's BPE never merges across pre-tokenizer pieces, the result is
    the same ids the local plain tokenizer gives: the string ``<|im_end|>`` in a document stays
    ``<|``, ``im``, ``_end``, ``|>``.
    """

    _SEP = "<|endoftext|>"

    def __init__(self, requester: Requester) -> None:
        from tokenizers import Regex, pre_tokenizers

        self._requester = requester
        self._split = pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated")
        self._cache: dict[str, list[int]] = {}
        self._sep_id = self._tokenize(self._SEP)
        if len(self._sep_id) != 1:
            raise ConfigurationError(f"the server's tokenizer has no {self._SEP!r} token; it is not a Qwen3 tokenizer")
        ids = self._tokenize("".join(CONTROL_TOKENS))
        if len(ids) != len(CONTROL_TOKENS):
            raise ConfigurationError("the server's tokenizer lacks Qwen3's added tokens; it is not a Qwen3 tokenizer")
        self._control_ids = frozenset(ids)

    def __repr__(self) -> str:
        return f"ServerTokenizer({self._requester.shown_urls[0]!r})"

    def _tokenize(self, text: str) -> list[int]:
        url, answer = self._requester.call("POST", "/tokenize", {"prompt": text, "add_special_tokens": False})
        tokens = answer.json.get("tokens") if isinstance(answer.json, dict) else None
        if not isinstance(tokens, list):
            raise RemoteError(f"{url} did not return 'tokens'", url=url, body=excerpt(answer.text))
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise RemoteError(f"{url} returned 'tokens' that are not all integers", url=url, body=excerpt(answer.text))
        return list(tokens)

    def _tokenize_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode texts free of control strings in one call, separated by the separator token."""
        if not texts:
            return []
        ids = self._tokenize(self._SEP.join(texts))
        parts: list[list[int]] = [[]]
        for t in ids:
            if t == self._sep_id[0]:
                parts.append([])
            else:
                parts[-1].append(t)
        if len(parts) != len(texts):  # pragma: no cover - would mean a control string slipped in
            raise ConfigurationError("the server's tokenizer split the texts unexpectedly")
        return parts

    def _safe_segments(self, text: str) -> list[str]:
        """Cut ``text`` inside each control-token string, at a pre-tokenizer boundary."""
        text = unicodedata.normalize("NFC", text)  # what Qwen's normalizer does first
        hits = list(CONTROL_RE.finditer(text))
        if not hits:
            return [text]
        starts = {start for _, (start, _) in self._split.pre_tokenize_str(text)}
        cuts: list[int] = []
        for m in hits:
            inner = [b for b in range(m.start() + 1, m.end()) if b in starts]
            if not inner:  # pragma: no cover - impossible with Qwen's split regex
                raise ConfigurationError(f"cannot neutralise {m.group(0)!r} exactly")
            cuts.append(inner[0])
        bounds = [0, *cuts, len(text)]
        return [text[a:b] for a, b in itertools.pairwise(bounds)]

    # -- Qwen3Tokenizer interface ------------------------------------------------------------------
    def encode_template(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self._tokenize(text)
        return list(self._cache[text])

    def count_template_batch(self, texts: Sequence[str]) -> list[int]:
        """Token counts of trusted texts (control strings recognised) in one call."""
        if any(self._SEP in t for t in texts):
            return [len(self._tokenize(t)) for t in texts]
        return [len(p) for p in self._tokenize_many(texts)]

    def token_id(self, token: str) -> int:
        ids = self.encode_template(token)
        if len(ids) != 1:
            raise ConfigurationError(f"{token!r} is not a single token in the server's tokenizer (got ids {ids})")
        return ids[0]

    @property
    def control_token_ids(self) -> frozenset[int]:
        return self._control_ids

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        segments = [self._safe_segments(t) for t in texts]
        flat = self._tokenize_many([s for segs in segments for s in segs])
        out: list[list[int]] = []
        k = 0
        for segs in segments:
            ids: list[int] = []
            for _ in segs:
                ids.extend(flat[k])
                k += 1
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        url, answer = self._requester.call("POST", "/detokenize", {"tokens": list(ids)})
        text = answer.json.get("prompt") if isinstance(answer.json, dict) else None
        if not isinstance(text, str):
            raise RemoteError(f"{url} did not return 'prompt'", url=url, body=excerpt(answer.text))
        return text
