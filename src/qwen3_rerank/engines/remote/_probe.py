"""Finding the API a server offers, and proving that a text API is a reranker's."""

from __future__ import annotations

import logging
from typing import Any

from ..._exceptions import ConfigurationError, InvalidScoreError, RemoteError
from . import _apis as apis
from . import _protocol as proto
from ._apis import ApiShape, Parsed
from ._requester import Plan, Requester

__all__ = ["prove_reranker", "resolve_plan"]

logger = logging.getLogger("qwen3_rerank.engines.remote")

ANY_ERROR = frozenset(range(300, 600))


def resolve_plan(
    requester: Requester, names: tuple[str, ...], model: str | None, deadline: float, verify_template: bool
) -> Plan:
    """Probe ``names`` in order; returns ``(shape, path)`` of the first that scores (one-token probes)."""
    tried: list[str] = []
    malformed: list[str] = []
    request = requester.request
    for api in map(apis.shape_of, names):
        for path in api.paths:
            url, answer = yield from request(
                "POST", path, apis.probe_payload(api, model), deadline, soft=proto.UNAVAILABLE
            )
            tried.append(f"{path} -> HTTP {answer.status}")
            if answer.status == 404 and proto.is_model_missing(answer.text):
                _u, listing = yield from request("GET", "/v1/models", None, deadline, soft=ANY_ERROR)
                served = proto.served_models(listing.json) if listing.status < 300 else []
                raise RemoteError(
                    f"{url} does not serve the model {model!r} (HTTP 404); it serves "
                    f"{served or 'models it did not list'}. Pass served_model_name= with one of "
                    "those names (or model= for the model the server runs).",
                    status_code=404,
                    url=url,
                    body=proto.excerpt(answer.text),
                )
            if answer.status < 300:
                parsed, why = _probe_answer(api, answer)
                if parsed is not None:
                    if api.sends_text:
                        yield from prove_reranker(requester, api, path, parsed, deadline, names, model, verify_template)
                    logger.info("remote engine: using %s %s", api.name, path)
                    return api, path
                if why is not None:
                    malformed.append(f"{path}: {why}")
            if answer.status in (404, 405):
                continue  # this path is not here; the next path of the same protocol may be
            break  # the path exists but refuses this protocol: try the next protocol
    shown = requester.shown_urls[0]
    if malformed:
        raise RemoteError(
            f"{shown} sent a malformed answer to the probe ({'; '.join(malformed)}); is base_url a "
            "vLLM server, and not a proxy or gateway that rewrites its answers?",
            url=shown,
        )
    raise RemoteError(
        f"{shown} offers none of the reranking endpoints tried ({'; '.join(tried)}). "
        "Serve the model with `vllm serve MODEL --runner pooling --hf-overrides '{...}'` (see "
        "the README), or pass api= for the endpoint your server has.",
        url=shown,
    )


def prove_reranker(
    requester: Requester,
    api: ApiShape,
    path: str,
    one: Parsed,
    deadline: float,
    names: tuple[str, ...],
    model: str | None,
    verify_template: bool,
) -> Plan:
    """Refuse a text endpoint unless its answers prove a reranker, not an embedding model.

    ``vllm serve`` without the reranker's overrides serves the checkpoint as an embedding
    model whose ``/score`` and ``/rerank`` answer cosine similarities, a valid-looking
    probability. The proof is the answers' own token count (see
    :func:`~._apis.cross_encoder_proof`): a second probe with the document twice. Without
    counts, a one-label ``/classify`` head on the same server proves it; with neither, the
    server is refused unless ``verify_template=False``.
    """
    request = requester.request
    shown = requester.shown_urls[0]
    _u, answer = yield from request("POST", path, apis.probe_payload(api, model, 2), deadline)
    two, why = _probe_answer(api, answer, 2)
    if two is None:
        raise RemoteError(f"{shown}{path} sent a malformed answer to the probe: {why}", url=shown)
    proof = apis.cross_encoder_proof(one, two)
    if proof is False:
        raise ConfigurationError(
            f"{shown} serves the model as an embedding model: its {path} counted {two.prompt_tokens} "
            f"prompt tokens for one query and two documents, where a reranker counts "
            f"{2 * (one.prompt_tokens or 0)} (the query once per document), so its scores are cosine "
            f"similarities, not Qwen3-Reranker relevance. Restart `vllm serve` and {proto.HF_OVERRIDES_HINT}."
        )
    if proof is None and "classify" not in names:
        classify = apis.shape_of("classify")
        _u, head = yield from request(
            "POST", classify.paths[0], apis.probe_payload(classify, model), deadline, soft=ANY_ERROR
        )
        proof = head.status < 300 and _probe_answer(classify, head)[0] is not None
    if not proof and verify_template:
        raise ConfigurationError(
            f"nothing {shown} answers proves that it serves a reranker and not an embedding model "
            f"(whose {path} answers cosine similarities that look like scores): its answers carry no "
            "usage.prompt_tokens and it offers no one-label /classify head. Serve the model with "
            f"`vllm serve` (which reports the counts) and {proto.HF_OVERRIDES_HINT}; or pass "
            "verify_template=False to use this server unproven."
        )
    if not proof:
        logger.warning("remote engine: %s%s is used unproven (verify_template=False)", shown, path)


def _probe_answer(api: ApiShape, answer: Any, n: int = 1) -> tuple[Parsed | None, str | None]:
    """A probe's scores, or why not: ``(None, reason)`` for a malformed answer (not JSON, too
    deep, a number that is no score), ``(None, None)`` for another shape (another API)."""
    if answer.json_error is not None:
        return None, f"not JSON ({answer.json_error})"
    try:
        return apis.parse_response(api, answer.json, n, "probe"), None
    except InvalidScoreError as exc:
        return None, proto.short(exc)
    except RemoteError:
        return None, None
