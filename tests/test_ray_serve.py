"""The server's app on Ray Serve (two replicas on the session's local Ray): the bodies of the single
server exactly, the real cohere SDK, and a replica SIGKILLed under load.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import pytest

from tests_support.vllm_server import free_port

pytestmark = pytest.mark.ray

TOL = 1e-6
QUERY = "What is the capital of China?"
DOCS = [
    "The capital of China is Beijing.",
    "Photosynthesis turns light into chemical energy.",
    "Paris is the capital of France.",
    "Beijing hosted the 2008 Summer Olympics.",
]


@pytest.fixture(scope="module")
def serve_url(ray_cluster, tiny_model):
    pytest.importorskip("fastapi", reason="the server extra: pip install 'qwen3-rerank[server]'")
    from ray import serve

    from qwen3_rerank.ray import rerank_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = rerank_app(model=str(tiny_model), engine_options={"dtype": "float32", "device": "cpu"},
                     served_model_name="qwen3-test", num_replicas=2, num_cpus=0.25)  # fmt: skip
    serve.run(app, name="rerank", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def _post(url, path, body, timeout=60.0):
    import httpx

    return httpx.post(url + path, json=body, timeout=timeout)


def _same(got, want):
    """Equal JSON, floats within TOL (each replica has its own engine; batches may differ)."""
    if isinstance(want, float):
        return abs(got - want) <= TOL
    if isinstance(want, dict):
        return set(got) == set(want) and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    return got == want


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/rerank", {"model": "qwen3-test", "query": QUERY, "documents": DOCS, "top_n": 3}),
        ("/v1/rerank", {"model": "m", "query": QUERY, "documents": DOCS, "return_documents": True}),
        ("/rerank", {"query": QUERY, "texts": DOCS, "return_text": True}),  # text-embeddings-inference
        ("/v2/rerank", {"query": QUERY}),  # a 422 in Cohere's error shape
    ],
)
def test_serve_answers_the_bodies_of_the_single_server(serve_url, rerank_server, path, body):
    got, want = _post(serve_url, path, body), _post(rerank_server.base_url, path, body)
    assert got.status_code == want.status_code
    g, w = got.json(), want.json()
    if isinstance(w, dict):
        for key in ("id", "created"):  # a fresh id and the second of each answer
            g.pop(key, None), w.pop(key, None)
    assert _same(g, w), (g, w)


def test_serve_with_the_cohere_sdk(serve_url, rerank_server):
    cohere = pytest.importorskip("cohere")
    answer = cohere.ClientV2(api_key="unused", base_url=serve_url).rerank(model="m", query=QUERY, documents=DOCS)
    want = cohere.ClientV2(api_key="unused", base_url=rerank_server.base_url).rerank(
        model="m", query=QUERY, documents=DOCS
    )
    assert [r.index for r in answer.results] == [r.index for r in want.results]
    assert all(
        abs(a.relevance_score - b.relevance_score) <= TOL for a, b in zip(answer.results, want.results, strict=True)
    )


def _replicas():
    import psutil

    name = "ray::ServeReplica:rerank:qwen3-rerank"  # not the engine-less "...qwen3-rerank-front"
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        title = (p.info["cmdline"] or [""])[0].strip()
        if title == name or title.startswith(name + "."):
            found.append(p)
    return found


def test_a_replica_killed_under_load_answers_or_fails_cleanly(serve_url, rerank_server):
    """SIGKILL one of the two replicas while 48 requests are in flight: each gets the right answer
    or a clean 503, none hangs, and Serve brings the replica back."""
    body = {"query": QUERY, "documents": DOCS * 4}
    want = _post(rerank_server.base_url, "/v2/rerank", body).json()["results"]
    replicas = _replicas()
    assert len(replicas) == 2

    def call(i):
        started = time.monotonic()
        try:
            r = _post(serve_url, "/v2/rerank", body, timeout=90)
        except Exception as exc:  # a hang would end here, as a timeout
            return type(exc).__name__, None, time.monotonic() - started
        return r.status_code, r.json() if r.status_code == 200 else r.text, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(call, i) for i in range(48)]
        time.sleep(0.3)
        os.kill(replicas[0].pid, signal.SIGKILL)
        results = [f.result() for f in futures]
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 24  # the other replica kept answering
    for status, answer, seconds in results:
        if status == 200:
            assert _same(answer["results"], want)
        assert seconds < 90
    deadline = time.monotonic() + 120
    while len(_replicas()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(_replicas()) == 2, "Serve did not restart the killed replica"


def test_app_builder_for_serve_run_checks_its_arguments(ray_cluster, tiny_model):
    from ray.serve import Application

    from qwen3_rerank import ConfigurationError
    from qwen3_rerank.ray import app_builder

    app = app_builder({"model": str(tiny_model), "num_replicas": "2", "num_cpus": "0.25", "dtype": "float32"})
    assert isinstance(app, Application)
    with pytest.raises(ConfigurationError, match="did you mean 'dtype'"):
        app_builder({"model": str(tiny_model), "dtyp": "float32"})
