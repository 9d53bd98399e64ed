"""The server's refusals: auth, limits, malformed and mistyped bodies, ids, routes, readiness,
a full queue, each in its dialect's error shape (real uvicorn on 127.0.0.1, the tiny model)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

from qwen3_rerank import Reranker
from qwen3_rerank.engines import Engine

pytest.importorskip("fastapi", reason="the server extra: pip install 'qwen3-rerank[server]'")

from qwen3_rerank.server import BatchingConfig, ServerLimits, create_app, load_api_keys  # noqa: E402
from tests_support.rerank_server import ThreadServer  # noqa: E402

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def keyed(transformers_engine):
    server = ThreadServer(create_app(Reranker(transformers_engine), api_keys=[KEY, "second-key"]))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small(transformers_engine):
    limits = ServerLimits(max_body_bytes=2000, max_documents=3, max_document_chars=50)
    server = ThreadServer(create_app(Reranker(transformers_engine), api_keys=(), limits=limits))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(rerank_server):
    with httpx.Client(base_url=rerank_server.base_url, timeout=60) as client:
        yield client


# -- auth ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/rerank", {"query": "q", "documents": ["d"]}, "cohere"),
        ("/v2/rerank", {"query": "q", "documents": ["d"]}, "cohere"),
        ("/rerank", {"query": "q", "texts": ["d"]}, "either"),
        ("/score", {"text_1": "q", "text_2": ["d"]}, "openai"),
        ("/classify", {"input": [[1, 2]]}, "openai"),
    ],
)
def test_a_key_is_required_on_every_route_but_health(keyed, path, body, shape, caplog):
    with httpx.Client(base_url=keyed.base_url, timeout=60) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Basic x"}):
            r = c.post(path, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            error = r.json()
            if shape == "cohere":
                assert "API key" in error["message"]
            elif shape == "openai":
                assert error["error"]["code"] == 401 and "API key" in error["error"]["message"]
            else:
                assert "API key" in error["message"] and error["error_type"] == "unauthorized"
        for key in (KEY, "second-key"):
            assert c.post(path, json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        for get in ("/v1/models", "/metrics", "/info", "/version"):
            assert c.get(get).status_code == 401
            assert c.get(get, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/health").status_code == 200  # probes carry no key
    assert KEY not in caplog.text


def test_cohere_sdk_reads_the_401(keyed):
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key="wrong", base_url=keyed.base_url)
    with pytest.raises(cohere.errors.UnauthorizedError) as info:
        client.rerank(model="m", query="q", documents=["d"])
    assert "API key" in str(info.value.body)
    good = cohere.ClientV2(api_key=KEY, base_url=keyed.base_url)
    assert len(good.rerank(model="m", query="q", documents=["d", "e"]).results) == 2


def test_keys_from_env_and_file(tmp_path):
    file = tmp_path / "keys"
    file.write_text("# server keys\nfrom-file\n\n")
    keys = load_api_keys(file, environ={"QWEN3_RERANK_SERVER_API_KEY": "a,b"})
    assert keys.check("Bearer a") and keys.check("Bearer b") and keys.check("Bearer from-file")
    assert not keys.check("Bearer c") and not keys.check(None) and not keys.check("Bearer ")
    assert "from-file" not in repr(keys)
    none = load_api_keys(environ={})
    assert not none.required and none.check(None) and none.check("Bearer ")
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no key"):
        load_api_keys(tmp_path / "empty", environ={})
    with pytest.raises(ValueError, match="cannot read"):
        load_api_keys(tmp_path / "missing", environ={})


# -- limits -------------------------------------------------------------------------------------------
def test_limits_name_the_limit_and_its_setting(small):
    with httpx.Client(base_url=small.base_url, timeout=60) as c:
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["x" * 40] * 60})
        assert r.status_code == 413 and "max_body_bytes" in r.json()["message"] and "--max-body-bytes" in r.text
        # A body without Content-Length (chunked) is cut off while it is read.
        big = c.post(
            "/rerank", content=(b"[" + b" " * 1000 for _ in range(4)), headers={"Content-Type": "application/json"}
        )
        assert big.status_code == 413, big.text
        r = c.post("/v2/rerank", json={"query": "q", "documents": ["a", "b", "c", "d"]})
        assert r.status_code == 422 and "max_documents" in r.json()["message"] and "--max-documents" in r.text
        r = c.post("/rerank", json={"query": "q", "texts": ["a" * 51]})
        assert r.status_code == 422 and r.json()["error_type"] == "validation" and "max_document_chars" in r.text
        r = c.post("/score", json={"text_1": "q" * 51, "text_2": ["a"]})
        assert r.status_code == 422 and "max_document_chars" in r.json()["error"]["message"]
        r = c.post("/score", json={"text_1": "q", "text_2": ["a"] * 4})
        assert r.status_code == 422 and "max_documents" in r.json()["error"]["message"]
        assert c.post("/v2/rerank", json={"query": "q", "documents": ["a", "b", "c"]}).status_code == 200


# -- malformed and mistyped bodies ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "content", "status", "field"),
    [
        ("/v1/rerank", b"{not json", 400, "not valid JSON"),
        ("/v1/rerank", b"", 400, "no body"),
        ("/v1/rerank", b'{"query": "\xff"}', 400, "UTF-8"),
        ("/v1/rerank", b"[1, 2]", 422, "JSON object"),
        ("/v1/rerank", b'{"query": 5, "documents": ["d"]}', 422, "query"),
        ("/v1/rerank", b'{"query": "q"}', 422, "documents"),
        ("/v1/rerank", b'{"query": "q", "documents": [1]}', 422, "documents[0]"),
        ("/v1/rerank", b'{"query": "q", "documents": [{"title": "x"}]}', 422, "'text'"),
        ("/v1/rerank", b'{"query": "q", "documents": ["d"], "top_n": "2"}', 422, "top_n"),
        ("/v1/rerank", b'{"query": "q", "documents": ["d"], "top_n": -1}', 422, "top_n"),
        ("/v2/rerank", b'{"query": "q", "documents": ["d"], "instruction": 3}', 422, "instruction"),
        ("/v2/rerank", b'{"query": "q\\ud800", "documents": ["d"]}', 422, "lone surrogate"),
        ("/rerank", b'{"query": "q", "texts": "not a list"}', 422, "texts"),
        ("/rerank", b'{"query": "q", "texts": ["a"], "raw_scores": "yes"}', 422, "raw_scores"),
        ("/score", b'{"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}', 400, "text_1 has 2 items"),
        ("/score", b'{"text_1": "a", "text_2": ["b"], "truncate_prompt_tokens": 20}', 400, "truncate_prompt_tokens"),
        ("/score", b'{"text_1": 1, "text_2": ["b"]}', 422, "text_1"),
        ("/classify", b'{"input": [[]]}', 400, "input[0] is empty"),
        ("/classify", b'{"input": [[1, -3]]}', 400, "-3"),
        ("/classify", b'{"input": [[1, 999999999]]}', 400, "outside the vocabulary"),
        ("/classify", b'{"input": [[1, 2.5]]}', 422, "input"),
        ("/classify", b'{"input": "some text"}', 400, "token ids"),
        ("/classify", b'{"input": []}', 400, "empty"),
        ("/tokenize", b'{"prompt": 3}', 422, "prompt"),
    ],
)
def test_bad_bodies(http, path, content, status, field):
    r = http.post(path, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    body = r.json()
    message = (
        body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("message", body.get("error"))
    )
    assert field in message, message
    if path == "/rerank" and b"texts" in content:
        assert body["error_type"] == "validation" and "message" not in body
    if path.startswith(("/score", "/classify", "/tokenize")):
        assert body["error"]["code"] == status


def test_classify_length_limit_and_tokenize(http, rerank_server):
    limit = http.get("/v1/models").json()["data"][0]["max_model_len"]
    r = http.post("/classify", json={"input": [[1] * (limit + 1)]})
    assert r.status_code == 400 and str(limit) in r.json()["error"]["message"]
    tokens = http.post("/tokenize", json={"prompt": "<|im_start|>system\nJudge whether"}).json()["tokens"]
    assert tokens == [151644, 8948, 198, 60256, 3425]  # control tokens recognised, as vLLM's /tokenize
    assert http.post("/detokenize", json={"tokens": tokens}).json()["prompt"] == "<|im_start|>system\nJudge whether"
    one = http.post("/classify", json={"input": [tokens], "use_activation": False}).json()
    prob = http.post("/classify", json={"input": [tokens]}).json()
    import math

    assert abs(1 / (1 + math.exp(-one["data"][0]["probs"][0])) - prob["data"][0]["probs"][0]) < 1e-9
    assert one["usage"]["prompt_tokens"] == 5


def test_unknown_route_and_method(http):
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and "/v1/rerank" in r.json()["error"]["message"]
    r = http.get("/v1/rerank")
    assert r.status_code == 405 and r.json() == {"message": "GET is not allowed on /v1/rerank"}


# -- readiness, a full queue, a client that leaves ----------------------------------------------------
class GatedEngine(Engine):
    """The tiny engine, but each call waits until the test opens the gate; records the calls."""

    name = "gated"

    def __init__(self, inner):
        self.inner = inner
        self.max_model_len = inner.max_model_len
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    def score(self, pairs):
        raise AssertionError("the server uses the async path")

    async def ascore(self, pairs):
        self.calls.append(len(pairs))
        self.entered.set()
        await asyncio.to_thread(self.gate.wait, 60)
        return await self.inner.ascore(pairs)


def test_health_is_503_until_the_engine_is_loaded(transformers_engine):
    loaded = threading.Event()

    def factory():
        loaded.wait(60)
        return Reranker(transformers_engine)

    server = ThreadServer(create_app(factory, api_keys=()), wait_ready=False)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            r = c.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"] == "1"
            r = c.post("/v2/rerank", json={"query": "q", "documents": ["d"]})
            assert r.status_code == 503 and "loading" in r.json()["message"]
            loaded.set()
            deadline = time.monotonic() + 30
            while c.get("/health").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert c.post("/v2/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200
    finally:
        loaded.set()
        server.stop()


def test_a_factory_that_fails_is_reported(transformers_engine):
    def factory():
        raise ValueError("no such model: /nowhere")

    server = ThreadServer(create_app(factory, api_keys=()), wait_ready=False)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            deadline = time.monotonic() + 30
            while c.get("/health").json()["status"] == "loading":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            health = c.get("/health")
            assert health.status_code == 503 and "no such model" in health.json()["error"]
            assert "no such model" in c.post("/score", json={"text_1": "q", "text_2": "d"}).json()["error"]["message"]
    finally:
        server.stop()


async def test_full_queue_answers_429_and_a_client_that_left_costs_nothing(transformers_engine):
    engine = GatedEngine(transformers_engine)
    batching = BatchingConfig(max_queued_requests=1, max_wait_ms=0, retry_after_s=2)
    server = ThreadServer(create_app(Reranker(engine), api_keys=(), batching=batching))
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            first = asyncio.ensure_future(c.post("/v2/rerank", json={"query": "q", "documents": ["a", "b"]}))
            await asyncio.to_thread(engine.entered.wait, 30)  # the first batch runs (and waits at the gate)
            # The second request waits in the queue; then its client leaves.
            host, port = server.base_url.removeprefix("http://").split(":")
            body = b'{"query": "left", "documents": ["x", "y", "z"]}'
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            await _until(lambda: _metric(server, "qwen3_rerank_queue_depth") == 1.0)
            busy = await c.post("/v1/rerank", json={"query": "q", "documents": ["c"]})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
            assert "max_queued_requests" in busy.json()["message"]
            sock.close()
            await asyncio.sleep(0.3)  # the server sees the disconnect
            engine.gate.set()
            assert (await first).status_code == 200
            await _until(lambda: _metric(server, "qwen3_rerank_dropped_requests_total") == 1.0)
            after = await c.post("/v2/rerank", json={"query": "q", "documents": ["d"]})
            assert after.status_code == 200
            assert engine.calls == [2, 1], "the request whose client left was never scored"
    finally:
        engine.gate.set()
        server.stop()


async def _until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _metric(server, name: str) -> float | None:
    for line in server.app.state.qwen3_rerank.metrics.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_mounted_in_another_app(transformers_engine):
    from fastapi import FastAPI

    outer = FastAPI()  # Starlette runs no lifespan of a mounted app: the first request starts the engine
    outer.mount("/svc", create_app(Reranker(transformers_engine), api_keys=()))
    server = ThreadServer(outer, wait_ready=False)
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            r = c.post("/svc/v2/rerank", json={"query": "q", "documents": ["a", "b"]})
            assert r.status_code == 200 and len(r.json()["results"]) == 2
            assert c.get("/svc/health").json() == {"status": "ok"}
            bad = c.post("/svc/v1/rerank", json={"query": 1, "documents": []})
            assert bad.status_code == 422 and "message" in bad.json()  # the Cohere shape, by the inner path
            assert 'route="/v2/rerank"' in c.get("/svc/metrics").text
    finally:
        server.stop()
