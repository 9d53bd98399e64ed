"""Dynamic batching on the real server: 100 concurrent requests get exactly their sequential
answers, the metrics show that they were coalesced, and one bad request fails alone."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

pytest.importorskip("fastapi", reason="the server extra: pip install 'qwen3-rerank[server]'")

TOL = 1e-6
N = 100


def _bodies():
    bodies = []
    for i in range(N):
        docs = [f"document {i}-{j}: BM25 ranks passages by term frequency {j * i}" for j in range(1 + i % 5)]
        body = {"query": f"query number {i % 37}", "documents": docs}
        if i % 4 == 0:
            body["instruction"] = f"instruction {i % 3}"  # several instructions in one batch
        bodies.append(("/v2/rerank" if i % 2 else "/v1/rerank", body))
    return bodies


def _scores(answer):
    return {x["index"]: x["relevance_score"] for x in answer["results"]}


def _histogram(text: str, name: str) -> tuple[float, float]:
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))
    return count, total


async def test_concurrent_requests_equal_sequential_and_are_coalesced(rerank_server):
    bodies = _bodies()
    async with httpx.AsyncClient(base_url=rerank_server.base_url, timeout=120) as c:
        sequential = []
        for path, body in bodies:
            r = await c.post(path, json=body)
            assert r.status_code == 200, r.text
            sequential.append(_scores(r.json()))
        before = _histogram((await c.get("/metrics")).text, "qwen3_rerank_batch_requests")
        limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
        async with httpx.AsyncClient(base_url=rerank_server.base_url, timeout=120, limits=limits) as many:
            answers = await asyncio.gather(*(many.post(path, json=body) for path, body in bodies))
        after = _histogram((await c.get("/metrics")).text, "qwen3_rerank_batch_requests")
    for answer, want in zip(answers, sequential, strict=True):
        assert answer.status_code == 200, answer.text
        got = _scores(answer.json())
        assert set(got) == set(want)
        assert max(abs(got[i] - want[i]) for i in want) <= TOL
    batches, requests = after[0] - before[0], after[1] - before[1]
    assert requests >= N  # every request went through the batcher (several instructions: several calls)
    assert batches < N / 2, f"{N} concurrent requests ran in {batches} engine calls: not coalesced"


async def test_one_bad_request_fails_alone(rerank_server):
    good = {"query": "q", "documents": ["a", "b"]}
    bad = {"query": "q\ud800", "documents": ["a"]}  # a lone surrogate: 422 before it is queued
    async with httpx.AsyncClient(base_url=rerank_server.base_url, timeout=120) as c:
        answers = await asyncio.gather(
            *(c.post("/v2/rerank", content=_json(bad if i % 3 == 0 else good)) for i in range(12))
        )
    for i, r in enumerate(answers):
        assert r.status_code == (422 if i % 3 == 0 else 200), r.text


def _json(body) -> bytes:
    import json

    return json.dumps(body).encode()  # json escapes the surrogate as \ud800; httpx's json= refuses it


async def test_metrics_count_routes_pairs_and_tokens(rerank_server):
    async with httpx.AsyncClient(base_url=rerank_server.base_url, timeout=60) as c:
        await c.post("/v2/rerank", json={"query": "q", "documents": ["a", "b", "c"]})
        await c.post("/v2/rerank", json={"query": 1})
        text = (await c.get("/metrics")).text
    assert re.search(r'^qwen3_rerank_requests_total\{route="/v2/rerank",status="200"\} [1-9]', text, re.M)
    assert re.search(r'^qwen3_rerank_requests_total\{route="/v2/rerank",status="422"\} [1-9]', text, re.M)
    assert re.search(r"^qwen3_rerank_pairs_total [1-9]", text, re.M)
    assert re.search(r"^qwen3_rerank_tokens_total [1-9]", text, re.M)
    assert re.search(r'^qwen3_rerank_request_seconds_bucket\{le="\+Inf",route="/v2/rerank"\}', text, re.M)
    assert "qwen3_rerank_batch_pairs_bucket" in text and "qwen3_rerank_queue_depth 0.0" in text
