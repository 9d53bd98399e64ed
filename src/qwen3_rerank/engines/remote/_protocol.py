"""The wire protocol of a vLLM reranking server, without I/O: payloads, parsing, probes, error
mapping, ``Retry-After``, redaction of URLs, and the neutralisation of control-token strings.

Everything here is a pure function of its arguments, shared by the sync and async paths.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ... import prompts
from ..._exceptions import (
    AuthenticationError,
    ConfigurationError,
    InvalidScoreError,
    RemoteError,
    TemplateMismatchError,
)
from ..._scores import log_odds
from ..._types import EncodedPair

Api = Literal["auto", "classify", "score", "rerank"]
APIS = ("auto", "classify", "score", "rerank")
# Paths tried in order for each protocol (a 404/405 moves to the next one). vLLM's own paths come
# first: it logs the /v1/ aliases as deprecated.
PATHS: dict[str, tuple[str, ...]] = {
    "classify": ("/classify",),
    "score": ("/score", "/v1/score"),
    "rerank": ("/rerank", "/v1/rerank"),
}
AUTO_ORDER = ("classify", "score", "rerank")

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
"""Statuses worth another attempt (the server is busy, restarting or behind a proxy that is)."""
# Answers that mean "this endpoint is not offered here" while probing.
UNAVAILABLE = frozenset({400, 404, 405, 422, 500, 501})

MAX_RETRY_AFTER = 30.0
"""The longest ``Retry-After`` honoured (seconds): for the wait before a retry and for how long a
replica is left alone. A longer value is read as this one."""

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
        user_q = self._tokenizer.decode(ids[p : pair.query_length])
        user_d = self._tokenizer.decode(ids[pair.query_length : len(ids) - s])
        return prompts.SYSTEM_PREFIX + neutralise(user_q), neutralise(user_d) + prompts.ASSISTANT_SUFFIX


def build_payload(
    api: str, pairs: Sequence[EncodedPair], model: str | None, renderer: TextRenderer | None = None
) -> dict[str, Any]:
    """The JSON body for one chunk of ``pairs`` (the one place request shapes live).

    ``"rerank"`` chunks must share one query (the chunker guarantees it).
    """
    body: dict[str, Any] = {} if model is None else {"model": model}
    if api == "classify":
        # use_activation=false: the raw W_yes - W_no logit, exact even where P(yes) rounds to 1.
        body.update(input=[list(p.input_ids) for p in pairs], add_special_tokens=False, use_activation=False)
        return body
    if renderer is None:
        raise ValueError(f"api {api!r} sends text: pass a TextRenderer")
    texts = [renderer.texts(p) for p in pairs]
    firsts = [t[0] for t in texts]
    seconds = [t[1] for t in texts]
    if api == "score":
        same = all(f == firsts[0] for f in firsts)
        body.update(text_1=firsts[0] if same else firsts, text_2=seconds)
        return body
    if api == "rerank":
        if any(f != firsts[0] for f in firsts):  # pragma: no cover - guarded by the chunker
            raise ValueError("a rerank request holds one query")
        body.update(query=firsts[0], documents=seconds, top_n=len(seconds))
        return body
    raise ValueError(f"unknown api {api!r}")


def expected_tokens(api: str, pairs: Sequence[EncodedPair], tokenizer: Any, renderer: TextRenderer | None) -> int:
    """Tokens a correct server counts for the chunk: exactly ours for ids, a re-count for text."""
    if api == "classify" or renderer is None:
        return sum(len(p.input_ids) for p in pairs)
    texts = [a + b for a, b in (renderer.texts(p) for p in pairs)]
    batch = getattr(tokenizer, "count_template_batch", None)
    if batch is not None:
        return sum(batch(texts))
    return sum(len(tokenizer.encode_template(t)) for t in texts)


def encode_body(payload: Any) -> bytes:
    """The request body as sent (compact UTF-8 JSON; NaN refused)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def answer_budget(request_bytes: int, results: int = 0) -> int:
    """The most bytes read of an answer: generous for what was asked, never unbounded.

    1 MiB of slack, 4 KiB per result, and 16 bytes per byte sent (``/rerank`` echoes documents,
    JSON may escape each character as ``\\uXXXX``; ``/tokenize`` lists a token per few bytes).
    """
    return (1 << 20) + 4096 * results + 16 * request_bytes


@dataclass(frozen=True, slots=True)
class Parsed:
    logits: list[float]
    prompt_tokens: int | None


def excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "…"


def redact_url(url: str) -> str:
    """``url`` with its password and query values replaced by ``***`` (for messages and logs).

    Example:
        >>> redact_url("http://me:pw@gw:80/x?token=abc&v=1")
        'http://me:***@gw:80/x?token=***&v=***'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a URL that cannot be shown>"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, sep, _password = user.partition(":")
        netloc = f"{name}{':***' if sep else ''}@{host}"
    query = parts.query
    if query:
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(f"{k}=***" if sep else "***" for k, sep, _ in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_float(value: Any) -> float | None:
    """A JSON number as a float, ``inf`` for an integer too large for one; ``None`` if not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # a 400-digit integer
        return math.inf if value > 0 else -math.inf


def parse_response(api: str, payload: Any, n: int, url: str) -> Parsed:
    """Scores in input order from one decoded JSON answer (pure).

    Raises:
        RemoteError: the body is not the expected shape.
        InvalidScoreError: a score is missing, repeated, non-finite or not a probability.
    """

    def bad(why: str) -> RemoteError:
        return RemoteError(
            f"unexpected answer from {url}: {why}. Is this a vLLM pooling server running a "
            f"Qwen3-Reranker (api={api!r})?",
            status_code=200,
            url=url,
            body=excerpt(repr(payload)),
        )

    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object, got {type(payload).__name__}")
    key = "results" if api == "rerank" else "data"
    items = payload.get(key)
    if not isinstance(items, list):
        raise bad(f"no {key!r} list")
    values: list[float | None] = [None] * n
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int):
            raise bad(f"an item of {key!r} has no integer 'index'")
        if not 0 <= index < n:
            raise InvalidScoreError(f"{url} returned a result for index {index}, but only {n} sequences were sent")
        if values[index] is not None:
            raise InvalidScoreError(f"{url} returned two results for index {index}")
        if api == "classify":
            probs = item.get("probs")
            if not isinstance(probs, list) or len(probs) != 1:
                raise bad(
                    f"'probs' should hold one value (a one-label reranker head), got {probs!r}; {HF_OVERRIDES_HINT}"
                )
            raw = probs[0]
        else:
            raw = item.get("relevance_score" if api == "rerank" else "score")
        value = parse_float(raw)
        if value is None:
            raise bad(f"the score of index {index} is {raw!r}, not a number")
        if not math.isfinite(value):
            raise InvalidScoreError(
                f"{url} returned the non-finite score {value!r} for sequence {index}; nothing was "
                "ranked. The server's numerics failed (fp16 overflow: serve with --dtype bfloat16 "
                "or float32)."
            )
        values[index] = value
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise InvalidScoreError(
            f"{url} returned {n - len(missing)} results for {n} sequences (missing indices "
            f"{missing[:10]}); nothing was ranked rather than rank a partial result"
        )
    usage = payload.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    prompt_tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None
    vals = [float(v) for v in values if v is not None]  # none is missing (checked above)
    if api == "classify":
        return Parsed(vals, prompt_tokens)
    for i, v in enumerate(vals):
        if not 0.0 <= v <= 1.0:
            raise InvalidScoreError(
                f"{url} returned score {v!r} for sequence {i}, not a probability in [0, 1]; is the "
                f"server a Qwen3-Reranker? If not: {HF_OVERRIDES_HINT}"
            )
    return Parsed([log_odds(v) for v in vals], prompt_tokens)


def check_tokens(parsed: Parsed, expected: int, url: str, api: str) -> None:
    """The "200 OK but meaningless scores" guard (a missing count is the caller's to report)."""
    if parsed.prompt_tokens is None or parsed.prompt_tokens == expected:
        return
    if api == "classify":
        fix = (
            "The server scored other token ids than were sent; check that it serves the model "
            "this client tokenizes for (pass tokenizer=/model= matching the served model)."
        )
    else:
        fix = (
            "The server does not score the prompt this client built: it applies a template of its "
            "own (restart `vllm serve` without --chat-template: this client sends the complete "
            "Qwen3-Reranker prompt itself), or it tokenizes with another tokenizer (pass "
            "tokenizer=/model= matching the served model). api='classify' sends token ids and "
            "avoids both."
        )
    raise TemplateMismatchError(
        f"{url} counted {parsed.prompt_tokens} prompt tokens for a request this client counts as "
        f"{expected} (api={api!r}); its scores would be meaningless. {fix} "
        "(verify_template=False skips this check.)",
        status_code=200,
        url=url,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER`."""
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
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def status_error(status: int, text: str, url: str, headers: dict[str, str] | None = None) -> RemoteError:
    """The typed error for an HTTP error status (``url`` already redacted)."""
    from ._requester import API_KEY_ENV

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


def probe_payload(api: str, model: str | None) -> dict[str, Any]:
    """A one-token request: cheap, and it proves the endpoint scores with this model."""
    if api == "classify":
        body: dict[str, Any] = {"input": [[0]], "add_special_tokens": False, "use_activation": False}
    elif api == "score":
        body = {"text_1": "a", "text_2": ["b"]}
    else:
        body = {"query": "a", "documents": ["b"], "top_n": 1}
    if model is not None:
        body["model"] = model
    return body


def probe_ok(api: str, payload: Any) -> bool:
    try:
        parse_response(api, payload, 1, "probe")
    except (RemoteError, InvalidScoreError):
        return False
    return True


def embedding_probe(model: str | None) -> dict[str, Any]:
    """``POST /v1/embeddings``: only a checkpoint served as an embedding model answers it."""
    body: dict[str, Any] = {"input": "a"}
    if model is not None:
        body["model"] = model
    return body


def is_embedding_answer(payload: Any) -> bool:
    """An answer of ``/v1/embeddings`` holding a vector: the server is an embedding model."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return False
    vector = data[0].get("embedding")
    return isinstance(vector, list) and len(vector) > 1


def served_models(payload: Any) -> list[str]:
    """The model ids of a ``GET /v1/models`` answer."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
