"""What every API of a reranking server shares, without I/O: rendering ids as text, the
neutralisation of control-token strings, error mapping, ``Retry-After``, redaction of URLs.
The API shapes themselves (payloads, parsers, probes) are in :mod:`._apis`.

Everything here is a pure function of its arguments, shared by the sync and async paths.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from ... import prompts
from ..._config import ENV_API_KEY
from ..._config import redact_url as redact_url  # re-exported: one definition, in the ground floor
from ..._exceptions import (
    AuthenticationError,
    ConfigurationError,
    RemoteError,
)
from ..._types import EncodedPair

API_KEY_ENV = ENV_API_KEY  # the one definition is in the ground floor, qwen3_rerank._config
"""Environment variable read for the API key when ``api_key`` is not passed."""

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
"""Statuses worth another attempt (the server is busy, restarting or behind a proxy that is)."""
# Answers that mean "this endpoint is not offered here" while probing.
UNAVAILABLE = frozenset({400, 404, 405, 422, 500, 501})

MAX_RETRY_AFTER = 30.0
"""The longest ``Retry-After`` honoured (seconds): for the wait before a retry and for how long a
replica is left alone. A longer value is treated as absent (the normal backoff applies): a proxy
answering ``Retry-After: 1000000000`` must not end a call a retry would finish (openai-python
likewise ignores values over 60 s)."""

HF_OVERRIDES_HINT = (
    "serve the model with the Qwen3-Reranker --hf-overrides shown in the README (the vLLM-Ascend "
    """tutorial's): --hf-overrides '{"architectures": ["Qwen3ForSequenceClassification"], """
    """"classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}'"""
)

# Qwen3's added tokens (ids 151643-151668): every one must stay plain text inside user text.
CONTROL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
CONTROL_RE = re.compile("|".join(re.escape(t) for t in sorted(CONTROL_TOKENS, key=len, reverse=True)))
NEUTRALISER = "\u200b"
"""ZERO WIDTH SPACE, inserted after the first character of a control-token string in user text."""


def neutralise(text: str) -> str:
    """Make every control-token string in user text plain text for a text endpoint.

    Inserts :data:`NEUTRALISER` after the first character of each occurrence, repeating until
    none is left (an insertion can never create a new one, the loop is a safety net).

    Example:
        >>> neutralise("a <|im_end|> b") == "a <\\u200b|im_end|> b"
        True
    """
    while True:
        new = CONTROL_RE.sub(lambda m: m.group(0)[0] + NEUTRALISER + m.group(0)[1:], text)
        if new == text or not CONTROL_RE.search(new):
            return new
        text = new


class TextRenderer:
    """Renders a pair's token ids as the (text_1, text_2) a text endpoint takes.

    Only token ids cross the engine boundary; this engine alone sends text. The ids are
    ``prefix + query part + document part + suffix`` (see :class:`~qwen3_rerank.PairEncoder`):
    the template parts are written as the model card writes them, the user parts are decoded
    from their (plain-tokenized) ids and neutralised, so that a server re-tokenizing the text gets
    the same ids and no control token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._prefix = tokenizer.encode_template(prompts.SYSTEM_PREFIX)
        self._suffix = tokenizer.encode_template(prompts.ASSISTANT_SUFFIX)

    def texts(self, pair: EncodedPair) -> tuple[str, str]:
        """(text_1, text_2) of a pair with its user parts neutralised; the template intact."""
        ids, p, s = pair.input_ids, len(self._prefix), len(self._suffix)
        if not (
            list(ids[:p]) == self._prefix
            and list(ids[len(ids) - s :]) == self._suffix
            and p <= pair.query_length <= len(ids) - s
        ):
            raise ConfigurationError(
                "a text endpoint can only send sequences built by Reranker/PairEncoder (Qwen3-Reranker "
                "prefix, query part, document part, suffix); these ids do not have that shape"
            )
        user_q = self._whole_characters(ids[p : pair.query_length])
        user_d = self._whole_characters(ids[pair.query_length : len(ids) - s])
        return prompts.SYSTEM_PREFIX + neutralise(user_q), neutralise(user_d) + prompts.ASSISTANT_SUFFIX

    def _whole_characters(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` without a character cut in two at either end.

        Truncation (or a window's start) may cut inside a character of several byte tokens; its
        bytes decode to U+FFFD, which a text endpoint would score, with the same token count, so
        the count guard would miss it. Such a broken end (its U+FFFD does not re-encode to the
        same ids: a real U+FFFD does) is dropped, at most 3 tokens (a character is <= 4 bytes).
        """
        decode = self._tokenizer.decode
        text: str = decode(ids)
        if "\ufffd" not in text[:1] + text[-1:] or self._tokenizer.encode_plain([text])[0] == list(ids):
            return text
        start, stop = 0, len(ids)
        while stop - start > 0 and stop > len(ids) - 3 and decode(ids[start:stop]).endswith("\ufffd"):
            stop -= 1
        while stop - start > 0 and start < 3 and decode(ids[start:stop]).startswith("\ufffd"):
            start += 1
        return str(decode(ids[start:stop])) if stop > start else ""


def encode_body(payload: Any) -> bytes:
    """The request body as sent (compact UTF-8 JSON; NaN refused)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def answer_budget(request_bytes: int, results: int = 0) -> int:
    """The most bytes read of an answer: generous for what was asked, never unbounded.

    1 MiB of slack, 4 KiB per result, and 16 bytes per byte sent (``/rerank`` echoes documents,
    JSON may escape each character as ``\\uXXXX``; ``/tokenize`` lists a token per few bytes).
    """
    return (1 << 20) + 4096 * results + 16 * request_bytes


def excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "…"


def parse_float(value: Any) -> float | None:
    """A JSON number as a float, ``inf`` for an integer too large for one; ``None`` if not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # a 400-digit integer
        return math.inf if value > 0 else -math.inf


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None``
    when absent, unreadable or above :data:`MAX_RETRY_AFTER` (then the normal backoff applies)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:  # pragma: no cover - older Pythons
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or seconds > MAX_RETRY_AFTER:
        return None
    return max(0.0, seconds)


def status_error(status: int, text: str, url: str, headers: dict[str, str] | None = None) -> RemoteError:
    """The typed error for an HTTP error status (``url`` already redacted)."""
    body = excerpt(text)
    if status in (401, 403):
        return AuthenticationError(
            f"{url} refused the request with HTTP {status}: set the API key (api_key=... or the "
            f"{API_KEY_ENV} environment variable) to the key `vllm serve --api-key` was started "
            f"with. Body: {body}",
            status_code=status,
            url=url,
            body=body,
        )
    if 300 <= status < 400:
        location = (headers or {}).get("location")
        where = f"to {redact_url(location)}" if location else "without a Location"
        return RemoteError(
            f"{url} answered HTTP {status}, a redirect {where}; redirects are not followed (a POST "
            "would be replayed elsewhere, with the API key): pass the final address as base_url.",
            status_code=status,
            url=url,
            body=body,
        )
    hint = ""
    if status == 404 and is_model_missing(text):
        hint = (
            " The server does not serve this model name: pass served_model_name= (or model=) with the name it serves."
        )
    elif status == 400 and ("max_model_len" in text or "maximum context length" in text or "too long" in text):
        hint = " Lower Reranker(max_length=...) to the server's --max-model-len."
    return RemoteError(f"{url} answered HTTP {status}.{hint} Body: {body}", status_code=status, url=url, body=body)


def is_model_missing(text: str) -> bool:
    """vLLM's 404 for a model name it does not serve: "The model `x` does not exist."."""
    low = text.lower()
    return "model" in low and "does not exist" in low


def served_models(payload: Any) -> list[str]:
    """The model ids of a ``GET /v1/models`` answer."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
