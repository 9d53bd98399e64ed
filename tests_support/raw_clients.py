"""What a Cohere/Jina-style client of a real ``vllm serve`` gets, measured without the diagnosis code.

:func:`raw_client_diff` POSTs the check's raw queries and documents to the server's ``/rerank`` and
compares the answers with the model card's formula (:func:`qwen3_rerank.testing.reference_scores`)
on the model card's prompt: the tests of ``qwen3-rerank check`` hold its report to this number.
"""

from __future__ import annotations

import os

__all__ = ["raw_client_diff"]


def raw_client_diff(
    base_url: str, model_dir: str | os.PathLike[str], api_key: str | None = None
) -> tuple[float, int, int]:
    """(max |server - model card|, the server's prompt tokens, the model card's prompt tokens)."""
    import httpx

    from qwen3_rerank import Qwen3Tokenizer, prompts
    from qwen3_rerank.diagnosis import CHECK_CASES
    from qwen3_rerank.diagnosis.clients import CLIENT_CASES
    from qwen3_rerank.testing import reference_scores

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    cases = [c for c in CHECK_CASES if c.name in CLIENT_CASES]
    got: list[float] = []
    used = 0
    for c in cases:
        payload = {"model": str(model_dir), "query": c.query, "documents": [c.document]}
        answer = httpx.post(f"{base_url}/rerank", json=payload, headers=headers, timeout=120).json()
        got.append(float(answer["results"][0]["relevance_score"]))
        used += int(answer["usage"]["prompt_tokens"])
    tokenizer = Qwen3Tokenizer.from_pretrained(model_dir)
    card_ids = [tokenizer.encode_template(prompts.format_pair(c.query, c.document)) for c in cases]
    card = reference_scores(model_dir, card_ids)
    return max(abs(a - b) for a, b in zip(got, card, strict=True)), used, sum(len(s) for s in card_ids)
