"""What OTHER clients of a vLLM server get (part of ``qwen3-rerank check --engine remote``).

This library's remote engine sends token ids to ``/classify``: whatever prompt template the
server has, its scores are the model card's. Cohere/Jina-style clients (and applications built
on them) send the raw query and documents to the server's own ``/rerank`` or ``/score``, and the
server decides the prompt: without ``--chat-template`` vLLM scores the bare query and document;
with vLLM's example ``qwen3_reranker.jinja`` it scores the model card's prompt except its end,
``</think>\\n`` (token 198) instead of ``</think>\\n\\n`` (token 271), because Jinja drops a
template's final newline. The token count is the same, so no ``usage.prompt_tokens`` check sees it.

:func:`check_other_clients` sends :data:`CLIENT_CASES` raw to ``/rerank``, ``/v1/rerank`` and
``/score``, compares the answers with the model card's scores (the reference, on the same
weights), and explains them: the reference re-scores each rendering in :data:`RENDERINGS` and the
one that reproduces the server's scores is named. ``/tokenize`` of the pair as chat messages
shows the exact tokens where the server renders with the template it scores with (same count as
``/score`` reported). Endpoints a server does not offer are reported as such.

Example:
    >>> from qwen3_rerank.diagnosis.clients import explain_scores
    >>> explain_scores([0.5, 0.7], {"model_card": [0.5, 0.7], "bare": [0.4, 0.6]}, 1e-4)
    'model_card'
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import prompts
from .._exceptions import EngineError
from .._scores import probability
from ._cases import CHECK_CASES
from ._cases import max_abs as _max_abs

__all__ = [
    "CAUSES",
    "CLIENTS_TIME_LIMIT",
    "CLIENT_CASES",
    "ENDPOINTS",
    "RENDERINGS",
    "ClientsReport",
    "EndpointResult",
    "check_other_clients",
    "explain_scores",
    "format_clients",
    "render",
]

CLIENT_CASES = ("relevant", "irrelevant", "explain", "instruction", "unicode")
"""Names of the check cases sent raw (their queries and documents; a raw client has no instruction)."""

ENDPOINTS = ("/rerank", "/v1/rerank", "/score")

RENDERINGS = {
    "model_card": "the model card's prompt",
    "one_newline": "the model card's prompt ending '</think>\\n' (token 198) instead of '</think>\\n\\n' (token 271)",
    "bare": "the bare query and document (no prompt template)",
}
"""How a server may turn a raw (query, document) into a prompt; :func:`render` writes each."""

CAUSES = {
    "bare": (
        "the server applies no prompt template to raw text (it was started without --chat-template): "
        "it scores the bare query and document",
        "start vllm serve with a --chat-template that renders the model card's prompt exactly (the section on "
        "vLLM's template warning in docs/engines.md shows one)",
    ),
    "one_newline": (
        "the server's --chat-template ends the prompt with '</think>\\n' (token 198) where the model card has "
        "'</think>\\n\\n' (token 271): vLLM's example qwen3_reranker.jinja renders this, because Jinja drops a "
        "template's final newline; the token count is the same, so no usage.prompt_tokens check can see it",
        "add one more newline at the end of the template file (it must end '</think>' and three newlines), "
        "restart the server and run this check again",
    ),
    None: (
        "the server turns raw text into a prompt that none of the known renderings explains (another "
        "template, instruction or model)",
        "compare the server's --chat-template with the model card's prompt (qwen3_rerank.prompts.format_pair)",
    ),
}
"""Cause and fix, per rendering that explains the server's scores (``None``: none does)."""

_SAME_FOR_THIS_CLIENT = (
    "this library's remote engine is exact either way: it sends token ids to /classify, which no template touches"
)


def render(kind: str, query: str, document: str) -> str:
    """The prompt text a server scores for a raw (query, document) under rendering ``kind``."""
    card = prompts.format_pair(query, document)
    if kind == "model_card":
        return card
    if kind == "one_newline":
        return card.removesuffix("\n")
    if kind == "bare":
        return query + document  # vLLM 0.32's /score without a template: text_1 + text_2, nothing between
    raise ValueError(f"unknown rendering {kind!r}; choose one of {sorted(RENDERINGS)}")


def explain_scores(scores: Sequence[float], hypotheses: Mapping[str, Sequence[float]], tolerance: float) -> str | None:
    """The rendering whose scores reproduce ``scores``, or ``None``.

    The closest rendering counts only when it is within ``tolerance`` and clearly closer than
    the next one (4 times), so that reduced-precision noise never picks one by chance.
    """
    ranked = sorted((_max_abs(scores, probs), kind) for kind, probs in hypotheses.items())
    if not ranked:
        return None
    best, kind = ranked[0]
    second = ranked[1][0] if len(ranked) > 1 else float("inf")
    return kind if best <= tolerance and best * 4 < second else None


@dataclass
class EndpointResult:
    """One endpoint's answers to the raw cases."""

    endpoint: str
    offered: bool
    status: int | None = None
    note: str | None = None
    scores: list[float] | None = None
    prompt_tokens: int | None = None
    model_card_tokens: int | None = None
    max_diff: float | None = None
    renders_as: str | None = None


@dataclass
class ClientsReport:
    """What raw clients of the server get, compared with the model card."""

    verdict: str
    max_diff: float | None = None
    cause: str | None = None
    fix: str | None = None
    endpoints: list[EndpointResult] = field(default_factory=list)
    tokenize: dict[str, Any] | None = None
    cases: list[str] = field(default_factory=list)
    model_card: list[float] = field(default_factory=list)
    timed_out: bool = False
    """The time limit was spent before every request was made (the rest are reported as not asked)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CLIENTS_TIME_LIMIT = 120.0
"""Default overall limit, in seconds, of :func:`check_other_clients` (all its requests together)."""


def check_other_clients(
    engine: Any, reference: Any, *, tolerance: float, time_limit: float = CLIENTS_TIME_LIMIT
) -> ClientsReport | None:
    """Compare what the server's own text endpoints answer raw clients with the model card.

    ``engine`` must offer ``request_json`` (the remote engine does; ``None`` is returned for any
    other engine); ``reference`` scores token ids on the same weights (``.tokenizer``, ``.logits``).
    All its requests together get ``time_limit`` seconds: a request is not started once they are
    spent, and each gets only what is left when ``request_json`` takes a ``seconds`` keyword. What
    was not asked in time is reported as such (:attr:`ClientsReport.timed_out`).
    """
    raw_ask = getattr(engine, "request_json", None)
    if not callable(raw_ask):
        return None
    cases = [c for c in CHECK_CASES if c.name in CLIENT_CASES]
    tokenizer = reference.tokenizer
    ids = {k: [tokenizer.encode_template(render(k, c.query, c.document)) for c in cases] for k in RENDERINGS}
    hyps = {k: [probability(v) for v in reference.logits(seqs)] for k, seqs in ids.items()}
    card, card_counts = hyps["model_card"], [len(s) for s in ids["model_card"]]
    model = getattr(engine, "model_name", "") or None
    report = ClientsReport(verdict="", cases=[c.name for c in cases], model_card=card)
    ask = _Bounded(raw_ask, time_limit)  # the clock starts with the first request
    per_pair: list[int | None] = []
    for path in ENDPOINTS:
        if path == "/score":
            result, per_pair = _ask_score(ask, cases, model)
        else:
            result = _ask_rerank(ask, path, cases, model)
        if result.scores is not None:
            result.max_diff = _max_abs(result.scores, card)
            result.renders_as = explain_scores(result.scores, hyps, tolerance)
            result.model_card_tokens = sum(card_counts)
        report.endpoints.append(result)
    report.tokenize = _tokenize_evidence(ask, cases[0], model, ids, tokenizer, per_pair[0] if per_pair else None)
    report.timed_out = ask.ran_out
    _verdict(report)
    return report


class _OutOfTime(EngineError):
    """The other-clients part spent its time limit before this request."""


class _Bounded:
    """``request_json`` under one overall deadline (issue: 991 s against endpoints that never answer)."""

    def __init__(self, ask: Any, seconds: float) -> None:
        self.ask, self.seconds = ask, seconds
        self.deadline = time.monotonic() + seconds
        try:
            self.per_request = "seconds" in inspect.signature(ask).parameters
        except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
            self.per_request = False
        self.ran_out = False

    def __call__(self, method: str, path: str, payload: Any) -> tuple[int, Any, str]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.ran_out = True
            raise _OutOfTime(f"not asked: the other-clients check spent its {self.seconds:g} s limit")
        if self.per_request:
            result: tuple[int, Any, str] = self.ask(method, path, payload, seconds=left)
        else:
            result = self.ask(method, path, payload)
        return result


class _Malformed(ValueError):
    """An answer of the right shape holding a value no honest server sends."""


def _index(value: Any, count: int) -> int:
    """A document position from an answer: an ``int`` (not a bool, float or string) in ``[0, count)``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"index {value!r} is not an integer")
    if not 0 <= value < count:
        raise _Malformed(f"index {value} is not a position among the {count} documents sent")
    return value


def _score(value: Any) -> float:
    """A score from an answer: a finite JSON number (not a string, a bool, NaN or an infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(f"score {value!r} is not a number")
    if not math.isfinite(value):
        raise _Malformed(f"score {value!r} is not a finite number")
    return float(value)


def _post(ask: Any, path: str, payload: dict[str, Any]) -> tuple[int | None, Any, str | None]:
    """(status, JSON, note); a failure to reach the server is a note, never an exception."""
    try:
        status, body, text = ask("POST", path, payload)
    except _OutOfTime as exc:
        return None, None, str(exc)
    except EngineError as exc:
        return None, None, f"no answer: {' '.join(str(exc).split())[:300]}"
    return status, body, None if status < 300 else f"HTTP {status}: {text[:200]}"


def _not_offered(path: str, status: int | None, note: str | None) -> EndpointResult:
    offered = status is not None and status not in (404, 405, 501)
    return EndpointResult(path, offered=offered, status=status, note=note or "not offered")


def _ask_rerank(ask: Any, path: str, cases: Sequence[Any], model: str | None) -> EndpointResult:
    by_query: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        by_query.setdefault(c.query, []).append(i)
    scores: list[float | None] = [None] * len(cases)
    tokens: int | None = 0
    status: int | None = None
    for query, indices in by_query.items():
        payload = {"query": query, "documents": [cases[i].document for i in indices]}
        status, body, note = _post(ask, path, {"model": model, **payload} if model else payload)
        if note is not None:
            return _not_offered(path, status, note)
        try:
            for item in body["results"]:
                position = _index(item["index"], len(indices))
                if scores[indices[position]] is not None:
                    raise _Malformed(f"index {position} twice")
                scores[indices[position]] = _score(item["relevance_score"])
            used = (body.get("usage") or {}).get("prompt_tokens")
        except _Malformed as exc:
            return EndpointResult(path, True, status, f"a malformed rerank answer: {exc}")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return EndpointResult(path, True, status, "an answer that is not a Cohere/Jina rerank answer")
        tokens = tokens + used if isinstance(tokens, int) and isinstance(used, int) else None
    if any(s is None for s in scores):
        return EndpointResult(path, True, status, "the answer left out some documents")
    return EndpointResult(path, True, status, scores=[float(s) for s in scores if s is not None], prompt_tokens=tokens)


def _ask_score(ask: Any, cases: Sequence[Any], model: str | None) -> tuple[EndpointResult, list[int | None]]:
    scores: list[float] = []
    counts: list[int | None] = []
    status: int | None = None
    for c in cases:
        payload = {"text_1": c.query, "text_2": [c.document]}
        status, body, note = _post(ask, "/score", {"model": model, **payload} if model else payload)
        if note is not None:
            return _not_offered("/score", status, note), []
        try:
            item = body["data"][0]
            if "index" in item:
                _index(item["index"], 1)
            scores.append(_score(item["score"]))
            used = (body.get("usage") or {}).get("prompt_tokens")
        except _Malformed as exc:
            return EndpointResult("/score", True, status, f"a malformed /score answer: {exc}"), []
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return EndpointResult("/score", True, status, "an answer that is not a vLLM /score answer"), []
        counts.append(used if isinstance(used, int) else None)
    total = sum(n for n in counts if n is not None) if all(n is not None for n in counts) else None
    return EndpointResult("/score", True, status, scores=scores, prompt_tokens=total), counts


def _tokenize_evidence(
    ask: Any, case: Any, model: str | None, ids: dict[str, list[list[int]]], tokenizer: Any, scored: int | None
) -> dict[str, Any]:
    """The server's own rendering of one pair as chat messages (roles ``query``/``document``, as
    vLLM's score path builds them), compared with each known rendering's tokens.

    ``/tokenize`` renders with the server's --chat-template, or the tokenizer's own chat template
    when the server has none (which /score does not use): the rendering is evidence only when its
    token count equals what ``/score`` counted for the same pair (``used``).
    """
    messages = [{"role": "query", "content": case.query}, {"role": "document", "content": case.document}]
    payload: dict[str, Any] = {"messages": messages, "add_generation_prompt": False}
    status, body, note = _post(ask, "/tokenize", {"model": model, **payload} if model else payload)
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if note is not None or not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        return {"case": case.name, "status": status, "used": False, "note": note or "no token list in the answer"}
    card = ids["model_card"][0]
    matches = next((k for k in RENDERINGS if ids[k][0] == tokens), None)
    used = scored is not None and scored == len(tokens)
    return {
        "case": case.name,
        "status": status,
        "tokens": len(tokens),
        "score_tokens": scored,
        "used": used,
        "matches": matches,
        "tail": tokens[-3:],
        "tail_text": tokenizer.decode(tokens[-3:]),
        "model_card_tail": card[-3:],
        "model_card_tail_text": tokenizer.decode(card[-3:]),
        "note": None if used else "the server's /score counted another number of tokens: not its scoring prompt",
    }


def _verdict(report: ClientsReport) -> None:
    offered = [e for e in report.endpoints if e.scores is not None]
    if not offered:
        if report.timed_out:
            report.verdict = "other clients: not known, the server did not answer within the check's time limit"
            return
        report.verdict = "other clients: the server offers none of " + ", ".join(ENDPOINTS) + " for raw text"
        return
    report.max_diff = max(e.max_diff or 0.0 for e in offered)
    kinds = {e.renders_as for e in offered}
    names = ", ".join(e.endpoint for e in offered)
    if kinds == {"model_card"}:
        report.verdict = (
            f"Cohere/Jina-style clients of this server (raw query and documents to {names}) get the model "
            f"card's scores (max |diff| {report.max_diff:.1e})"
        )
        return
    causes = []
    for kind in sorted(kinds, key=str):
        where = ", ".join(e.endpoint for e in offered if e.renders_as == kind)
        text = CAUSES[kind][0] if kind != "model_card" else "the model card's prompt"
        causes.append(text if len(kinds) == 1 else f"{where}: {text}")
    tok = report.tokenize or {}
    if tok.get("used") and tok.get("matches") in kinds:
        causes.append(
            f"measured with the server's /tokenize: its prompt for the {tok['case']!r} pair ends "
            f"{tok['tail_text']!r} {tok['tail']}, the model card's "
            f"{tok['model_card_tail_text']!r} {tok['model_card_tail']}"
        )
    report.verdict = (
        f"Cohere/Jina-style clients of this server (raw query and documents to {names}) get scores off by up "
        f"to {report.max_diff:.3g} from the model card"
    )
    report.cause = "; ".join(causes)
    fixes = [CAUSES[k][1] for k in sorted(kinds, key=str) if k != "model_card"]
    report.fix = "; ".join(fixes) + "; " + _SAME_FOR_THIS_CLIENT


def format_clients(report: ClientsReport) -> list[str]:
    """The report's lines for people (indented, for :func:`qwen3_rerank.diagnosis.format_check_report`)."""
    lines = ["other clients of this server (raw query/documents, no client-side template):"]
    for e in report.endpoints:
        if e.scores is None:
            lines.append(f"  {e.endpoint:<11} {e.note}")
            continue
        shown = RENDERINGS[e.renders_as] if e.renders_as else "a rendering none of the known ones explains"
        tokens = f"{e.prompt_tokens} tokens (model card {e.model_card_tokens})" if e.prompt_tokens else "no token count"
        lines.append(f"  {e.endpoint:<11} max |diff| {e.max_diff:.2e}, {tokens}: scores {shown}")
    lines.append(f"  verdict: {report.verdict}")
    if report.cause:
        lines.append(f"  cause: {report.cause}")
    if report.fix:
        lines.append(f"  fix for those clients: {report.fix}")
    return lines
