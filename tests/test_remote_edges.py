"""RemoteEngine at its edges (issue 13, "trust at the edges"): deadlines, answer sizes, secrets,
``Retry-After``, odd base URLs, malformed answers, misleading diagnoses, event loops, single-flight
probes, and a server that serves the reranker as an embedding model.

MockTransport where the behaviour is HTTP-level; raw sockets on 127.0.0.1 where it is socket-level
(a server dripping its headers or body a byte at a time).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwen3_rerank import (
    ConfigurationError,
    EngineError,
    InvalidScoreError,
    MissingDependencyError,
    Qwen3Tokenizer,
    RemoteError,
    RemoteTimeoutError,
    Reranker,
)
from qwen3_rerank.engines.remote import MAX_RETRY_AFTER, RemoteEngine, parse_retry_after, redact_url
from qwen3_rerank.engines.remote._apis import parse_response as _parse
from qwen3_rerank.engines.remote._apis import shape_of
from qwen3_rerank.engines.remote._transport import join_url
from tests.test_remote_unit import DOCS, FakeVLLM, by_index, engine_for, expected, resolved


def parse_response(api: str, *args: Any) -> Any:
    return _parse(shape_of(api), *args)


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Qwen3Tokenizer:
    return Qwen3Tokenizer.from_pretrained(tiny_model)


def pairs_for(tok: Qwen3Tokenizer, docs: list[str]) -> Any:
    from qwen3_rerank import PairEncoder

    enc = PairEncoder(tok)
    return enc.build(enc.encode_queries(["q"], None)[0], enc.encode_documents(docs), max_length=512)[0]


# -- 1. the deadline bounds the whole call, body included ---------------------------------------
class Dripping:
    """A raw HTTP server on 127.0.0.1 that answers a byte at a time, forever."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "body": chunked body dripping; "headers": header lines dripping
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            if self.mode == "body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                conn.sendall(b"1\r\n{\r\n")
                while not self.stop.wait(0.3):
                    conn.sendall(b"1\r\n \r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self.stop.wait(0.3):
                    conn.sendall(b"X-Slow: a\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        self.sock.close()


@pytest.fixture(params=["body", "headers"])
def dripping(request: pytest.FixtureRequest) -> Iterator[Dripping]:
    server = Dripping(request.param)
    yield server
    server.close()


def test_a_dripping_server_cannot_outlast_total_timeout(tok: Qwen3Tokenizer, dripping: Dripping) -> None:
    engine = RemoteEngine(dripping.url, tokenizer=tok, api="classify", max_model_len=512, total_timeout=1.5)
    engine._resolved = (shape_of("classify"), "/classify")
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError):
        engine.score(pairs_for(tok, ["a"]))
    assert time.monotonic() - start < 3.0
    engine.close()


async def test_a_dripping_server_cannot_outlast_total_timeout_async(tok: Qwen3Tokenizer, dripping: Dripping) -> None:
    engine = RemoteEngine(dripping.url, tokenizer=tok, api="classify", max_model_len=512, total_timeout=1.5)
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError):
        await engine.ascore(pairs_for(tok, ["a"]))  # the probe drips too
    assert time.monotonic() - start < 3.0
    await engine.aclose()


def test_ctrl_c_during_a_sync_call_in_several_requests_returns_at_once(tok: Qwen3Tokenizer) -> None:
    """Issue 13 item 7: KeyboardInterrupt while chunks are in flight does not wait for them."""
    import os
    import signal

    server = Dripping("body")
    engine = RemoteEngine(server.url, tokenizer=tok, api="classify", max_model_len=512, total_timeout=30,
                          max_batch_size=1, max_concurrency=4)  # fmt: skip
    engine._resolved = (shape_of("classify"), "/classify")
    timer = threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGINT))  # a real Ctrl-C
    try:
        timer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            engine.score(pairs_for(tok, ["a", "b", "c", "d"]))
        assert time.monotonic() - start < 3.0
        engine.close()  # does not wait for the requests in flight either
        assert time.monotonic() - start < 4.0
    finally:
        timer.cancel()
        server.close()


def test_discovery_and_server_tokenizer_are_bounded_too(dripping: Dripping) -> None:
    engine = RemoteEngine(dripping.url, tokenizer="server", total_timeout=1.0)
    start = time.monotonic()
    assert engine.max_model_len is None  # /v1/models timed out: unknown, with a warning
    with pytest.raises(RemoteTimeoutError):
        _ = engine.tokenizer  # /tokenize
    assert time.monotonic() - start < 4.0
    engine.close()


def test_a_slow_body_through_any_transport_is_cut_at_the_deadline(tok: Qwen3Tokenizer) -> None:
    def drip() -> Iterator[bytes]:
        yield b"{"
        while True:
            time.sleep(0.2)
            yield b" "

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=drip()))
    engine = RemoteEngine(
        "http://a", tokenizer=tok, api="classify", max_model_len=512, total_timeout=1.0, transport=transport
    )
    engine._resolved = (shape_of("classify"), "/classify")
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match="whole answer"):
        engine.score(pairs_for(tok, ["a"]))
    assert time.monotonic() - start < 2.0


# -- 2. answers are read up to a size derived from the request --------------------------------
def test_a_huge_answer_is_not_read_whole(tok: Qwen3Tokenizer) -> None:
    sent = [0]

    def huge() -> Iterator[bytes]:
        block = b" " * (1 << 20)
        for _ in range(300):  # 300 MB if read whole
            sent[0] += len(block)
            yield block

    server = FakeVLLM(tok)
    server.script = [lambda request: httpx.Response(200, content=huge())]
    engine = resolved(server, tok)
    with pytest.raises(RemoteError, match="too large") as info:
        engine.score(pairs_for(tok, ["a"]))
    assert sent[0] <= 4 << 20 and not isinstance(info.value, RemoteTimeoutError)
    assert len(server.requests) == 1  # not retried


def test_a_declared_huge_answer_is_refused_unread(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    server.script = [httpx.Response(200, headers={"Content-Length": str(300 << 20)}, content=b"")]
    with pytest.raises(RemoteError, match="too large"):
        resolved(server, tok).score(pairs_for(tok, ["a"]))


# -- 3. secrets --------------------------------------------------------------------------------
def test_an_api_key_read_from_a_file_is_stripped(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = resolved(server, tok, api_key="  k3y-from-file\n")
    engine.score(pairs_for(tok, ["a"]))
    assert server.requests[-1].headers["authorization"] == "Bearer k3y-from-file"


@pytest.mark.parametrize("key", ["ab\ncd-secret", "ab\x00cd-secret", "sécret-key"])
def test_a_key_no_header_can_carry_is_refused_without_showing_it(key: str) -> None:
    with pytest.raises(ConfigurationError, match="API key") as info:
        RemoteEngine("http://a", api_key=key)
    assert "secret" not in str(info.value) and "cret" not in str(info.value)


def test_no_secret_in_repr_errors_urls_or_logs(tok: Qwen3Tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = FakeVLLM(tok)
    server.script = [httpx.Response(503, text="busy"), httpx.Response(400, text="bad")]
    engine = resolved(server, tok, urls="http://me:pa55word@gw:1/x?token=t0ken-value", api_key="api-k3y")
    with pytest.raises(RemoteError) as info:
        engine.score(pairs_for(tok, ["a"]))
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("qwen3_rerank"))
    shown = {"error": str(info.value), "url": info.value.url or "", "repr": repr(engine), "logs": ours}
    for secret in ("pa55word", "t0ken-value", "api-k3y"):
        assert [k for k, v in shown.items() if secret in v] == [], secret
    assert info.value.url == "http://me:***@gw:1/x/classify?token=***"
    assert redact_url("http://gw/?a=1&b") == "http://gw/?a=***&***"


def test_local_protocol_errors_are_not_retried_and_hide_secrets(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    server.script = [httpx.LocalProtocolError("Illegal header value b'Bearer api-k3y'")] * 5
    engine = resolved(server, tok, urls=["http://a:1", "http://b:2"], api_key="api-k3y")
    with pytest.raises(RemoteError, match="not retried") as info:
        engine.score(pairs_for(tok, ["a"]))
    assert "api-k3y" not in str(info.value) and info.value.__cause__ is None
    assert len(server.requests) == 1 and not engine._requester._health.down_until


def test_tls_certificate_failures_are_not_retried(tok: Qwen3Tokenizer) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        server.requests.append(request)
        try:
            raise ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError(str(exc)) from exc

    server = FakeVLLM(tok)
    engine = RemoteEngine(
        "https://a", tokenizer=tok, api="classify", max_model_len=512, transport=httpx.MockTransport(refuse)
    )
    engine._resolved = (shape_of("classify"), "/classify")
    with pytest.raises(RemoteError, match="TLS certificate"):
        engine.score(pairs_for(tok, ["a"]))
    assert len(server.requests) == 1


# -- 4. Retry-After is capped: a value above the cap is treated as absent (issue 25.22) ----------
def test_retry_after_is_capped() -> None:
    assert MAX_RETRY_AFTER == 30.0 and parse_retry_after("30") == 30.0
    assert parse_retry_after("100000") is None and parse_retry_after("1000000000") is None
    assert parse_retry_after("Wed, 21 Oct 2099 07:28:10 GMT") is None
    assert parse_retry_after("nan") is None and parse_retry_after("-5") == 0.0


def test_an_unreasonable_retry_after_gets_the_normal_backoff(tok: Qwen3Tokenizer) -> None:
    # A proxy answering `Retry-After: 1000000000` used to end the call at once (RemoteTimeoutError);
    # like openai-python, such a value is ignored and the retry, after the normal backoff, succeeds.
    server = FakeVLLM(tok)
    server.script = [httpx.Response(503, headers={"Retry-After": "1000000000"}, text="busy")]
    start = time.monotonic()
    engine = resolved(server, tok, backoff=0.05, total_timeout=5.0)
    assert len(engine.score(pairs_for(tok, ["a"])).logits) == 1
    assert time.monotonic() - start < 1.0 and len(server.requests) == 2


def test_a_busy_replica_comes_back(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    server.script = [httpx.Response(503, headers={"Retry-After": "100000"}, text="busy")]
    engine = resolved(server, tok, urls=["http://a:1", "http://b:2"], max_concurrency=1)
    engine.score(pairs_for(tok, ["a"]))
    (until,) = engine._requester._health.down_until.values()
    assert until - time.monotonic() <= MAX_RETRY_AFTER


# -- 5. a base URL with a query string -----------------------------------------------------------
def test_a_base_url_with_a_query_keeps_it_on_every_request(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = RemoteEngine("http://gw/v1/?token=abc", tokenizer=tok, transport=httpx.MockTransport(server), backoff=0.01)
    assert engine.max_model_len == 1024
    assert by_index(Reranker(engine).rerank("q", DOCS[:2])) == pytest.approx(expected(tok, "q", DOCS[:2]))
    assert {(r.url.path, r.url.query) for r in server.requests} == {
        ("/v1/models", b"token=abc"),
        ("/classify", b"token=abc"),
    }
    assert join_url("http://gw/prefix?token=abc", "/classify") == "http://gw/prefix/classify?token=abc"


# -- 6. malformed answers are typed errors -------------------------------------------------------
@pytest.mark.parametrize(
    "body, error",
    [
        (b'{"data": [{"index": 0, "probs": [' + b"9" * 400 + b"]}]}", InvalidScoreError),
        (b"[" * 100_000 + b"]" * 100_000, RemoteError),
        (b'{"data": [{"index": true, "probs": [0.5]}]}', RemoteError),
        (b'{"data": [{"index": 0, "probs": [0.5]}], "usage": {"prompt_tokens": 1e999}}', None),
    ],
)
def test_malformed_answers_are_typed_errors(tok: Qwen3Tokenizer, body: bytes, error: Any) -> None:
    server = FakeVLLM(tok)
    server.script = [httpx.Response(200, content=body)]
    engine = resolved(server, tok)
    if error is None:
        assert len(engine.score(pairs_for(tok, ["a"])).logits) == 1
    else:
        with pytest.raises(error):
            engine.score(pairs_for(tok, ["a"]))


def test_a_redirect_is_reported_with_its_location_not_followed(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    server.script = [
        httpx.Response(307, headers={"Location": "http://elsewhere/classify?sig=s3cret"}, json={"data": []})
    ]
    with pytest.raises(RemoteError, match=r"redirect to http://elsewhere/classify\?sig=\*\*\*") as info:
        resolved(server, tok).score(pairs_for(tok, ["a"]))
    assert info.value.status_code == 307 and "s3cret" not in str(info.value) and len(server.requests) == 1


def test_a_missing_token_count_is_warned_about_once(tok: Qwen3Tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    server = FakeVLLM(tok)
    answer = {"data": [{"index": 0, "probs": [0.5]}], "usage": {"prompt_tokens": "many"}}
    server.script = [
        httpx.Response(200, json=answer),
        httpx.Response(200, json={"data": [{"index": 0, "probs": [0.5]}]}),
    ]
    engine = resolved(server, tok)
    with caplog.at_level(logging.WARNING):
        engine.score(pairs_for(tok, ["a"]))
        engine.score(pairs_for(tok, ["a"]))
    assert caplog.text.count("template check could not run") == 1


def test_parse_refuses_bool_index_and_overflow() -> None:
    with pytest.raises(RemoteError, match="integer 'index'"):
        parse_response("score", {"data": [{"index": False, "score": 0.5}]}, 1, "u")
    with pytest.raises(InvalidScoreError, match="non-finite"):
        parse_response("score", {"data": [{"index": 0, "score": 10**400}]}, 1, "u")


# -- 7. diagnoses that name the real problem ------------------------------------------------------
def test_a_model_name_mismatch_names_the_served_models(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)

    def vllm_404(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content).get("model")
        return httpx.Response(404, json={"error": {"message": f"The model `{model}` does not exist.", "code": 404}})

    server.script = [vllm_404]
    engine = engine_for(server, tok, served_model_name="wrong-name")
    with pytest.raises(RemoteError, match=r"does not serve the model 'wrong-name'.*\['served'\]") as info:
        engine.score(pairs_for(tok, ["a"]))
    assert "none of the reranking endpoints" not in str(info.value)


# -- 8. one AsyncClient per event loop, closed with it -------------------------------------------
def test_asyncio_run_per_call_leaves_no_client_open(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = resolved(server, tok)
    reranker = Reranker(engine)
    clients = []
    gc.collect()  # what earlier tests left for the collector warns there, not in this test's record
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        async def call() -> None:
            await reranker.arerank("q", ["a"])
            clients.append(engine._requester._get_async_client())

        for _ in range(3):
            asyncio.run(call())
        gc.collect()
    assert len({id(c) for c in clients}) == 3 and all(c.is_closed for c in clients)
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    engine.close()


def test_close_releases_the_async_client_of_a_loop_that_is_not_running(tok: Qwen3Tokenizer) -> None:
    engine = resolved(FakeVLLM(tok), tok)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(engine.ascore(pairs_for(tok, ["a"])))
        (client, _keeper) = engine._requester._clients._async_clients[loop]
        engine.close()
        assert client.is_closed
    finally:
        loop.close()


# -- 9. one probe however many calls start together ----------------------------------------------
async def test_concurrent_first_calls_probe_once(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = engine_for(server, tok)
    reranker = Reranker(engine)
    await asyncio.gather(*(reranker.arerank("q", [f"d{i}"]) for i in range(100)))
    assert len(server.bodies("/classify")) == 101  # one probe + 100 calls
    await engine.aclose()


def test_concurrent_first_calls_probe_once_sync(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = engine_for(server, tok)
    threads = [threading.Thread(target=engine.score, args=(pairs_for(tok, [f"d{i}"]),)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.bodies("/classify")) == 21


# -- 11. a reranker served as an embedding model --------------------------------------------------
class EmbeddingServed(FakeVLLM):
    """``vllm serve`` without the reranker's --hf-overrides: no /classify, /score gives cosine."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in ("/v1/embeddings", "/pooling"):
            self.requests.append(request)
            return httpx.Response(
                200, json={"data": [{"index": 0, "embedding": [0.1] * 64}], "usage": {"prompt_tokens": 1}}
            )
        if path in ("/score", "/v1/score", "/rerank", "/v1/rerank"):
            self.requests.append(request)
            body = json.loads(request.content)
            docs = body.get("text_2") or body.get("documents")
            key, name = ("data", "score") if "score" in path else ("results", "relevance_score")
            return httpx.Response(
                200, json={key: [{"index": i, name: 0.93} for i in range(len(docs))], "usage": {"prompt_tokens": 3}}
            )
        return super().__call__(request)


@pytest.mark.parametrize("api", ["auto", "score", "rerank"])
def test_a_reranker_served_as_an_embedding_model_is_refused(tok: Qwen3Tokenizer, api: str) -> None:
    server = EmbeddingServed(tok, endpoints=())
    engine = engine_for(server, tok, api=api, verify_template=False)
    with pytest.raises(ConfigurationError, match="embedding model.*--hf-overrides.*is_original_qwen3_reranker"):
        engine.score(pairs_for(tok, ["a"]))
    assert engine.resolved_api is None


# -- construction and the closed engine -----------------------------------------------------------
def test_construction_contacts_no_server(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = RemoteEngine("http://a", transport=httpx.MockTransport(server))
    assert (engine.model_name, engine.dtype, engine.name) == ("", None, "remote")
    assert RemoteEngine("http://a", model="m", served_model_name="s").model_name == "s"
    assert server.requests == []


async def test_a_closed_engine_refuses_calls(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = resolved(server, tok)
    engine.score(pairs_for(tok, ["a"]))
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        engine.score(pairs_for(tok, ["a"]))
    with pytest.raises(EngineError, match="closed"):
        await engine.ascore(pairs_for(tok, ["a"]))
    assert len(server.requests) == 1


# -- issue 23.3: API shapes as objects -------------------------------------------------------------
def test_the_api_lists_derive_from_the_shape_objects() -> None:
    from qwen3_rerank import settings
    from qwen3_rerank.engines.remote import _apis

    names = tuple(s.name for s in _apis.SHAPES)
    assert names == _apis.AUTO_ORDER and ("auto", *names) == _apis.APIS
    assert {s.name: s.paths for s in _apis.SHAPES} == _apis.PATHS
    from qwen3_rerank.engines import RemoteEngine

    assert RemoteEngine.option_choices["api"] is _apis.APIS  # what the factory checks api= against
    from qwen3_rerank.engines.remote import API_KEY_ENV

    assert API_KEY_ENV == settings.ENV_API_KEY  # defined in the engine without importing settings
    # No branch on an API's name is left anywhere in the library.
    src = Path(__file__).resolve().parents[1] / "src"
    branches = [
        f"{p.relative_to(src)}:{n}"
        for p in src.rglob("*.py")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bapi\s*[!=]=\s*['\"](classify|score|rerank)", line)
    ]
    assert not branches


def test_a_fourth_api_shape_is_one_object(tok: Qwen3Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen3_rerank.engines.remote import _apis

    class Pooling(_apis.ApiShape):  # e.g. a server's own dialect: token ids, "logit" per item
        name = "mine"
        paths = ("/v2/mine",)
        sends_text = False
        items_key = "items"
        score_key = "logit"
        scores_are_logits = True

        def body(self, pairs: Any, renderer: Any) -> dict[str, Any]:
            return {"sequences": [list(p.input_ids) for p in pairs]}

        def probe_body(self, documents: int = 1) -> dict[str, Any]:
            return {"sequences": [[0]] * documents}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v2/mine":
            return httpx.Response(404, json={"detail": "Not Found"})
        seqs = json.loads(request.content)["sequences"]
        items = [{"index": i, "logit": 0.25 * i} for i in range(len(seqs))]
        return httpx.Response(200, json={"items": items, "usage": {"prompt_tokens": sum(map(len, seqs))}})

    by_name, order, names = _apis.derive((*_apis.SHAPES, Pooling()))
    monkeypatch.setattr(_apis, "_BY_NAME", by_name)
    monkeypatch.setattr(_apis, "AUTO_ORDER", order)
    monkeypatch.setattr(_apis, "APIS", names)
    for api in ("mine", "auto"):
        engine = RemoteEngine(
            "http://a", tokenizer=tok, api=api, max_model_len=512, transport=httpx.MockTransport(handler)
        )
        out = engine.score(pairs_for(tok, ["a", "b", "c"]))
        assert out.logits == [0.0, 0.25, 0.5] and engine.resolved_api == "mine"
        engine.close()


# -- issue 25.2: the embedding-server guard decides from the scoring answers themselves -------------
class BiEncoderBehindGateway(FakeVLLM):
    """An embedding model's /score and /rerank (as vLLM's bi-encoder counts: the query once, each
    document once), behind a gateway that answers 401/403/404 for every other path."""

    def __init__(self, tok: Qwen3Tokenizer, other_status: int = 404, usage: bool = True) -> None:
        super().__init__(tok)
        self.other_status, self.usage = other_status, usage

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path not in ("/score", "/rerank"):
            return httpx.Response(self.other_status, json={"detail": "blocked by the gateway"})
        self.requests.append(request)
        body = json.loads(request.content)
        first = body.get("text_1", body.get("query"))
        docs = body.get("text_2") or body.get("documents")
        firsts = [first] if isinstance(first, str) else first
        tokens = sum(len(self.tok.encode_template(t)) for t in [*firsts, *docs])
        key, name = ("data", "score") if path == "/score" else ("results", "relevance_score")
        answer: dict[str, Any] = {key: [{"index": i, name: 0.93} for i in range(len(docs))]}
        if self.usage:
            answer["usage"] = {"prompt_tokens": tokens}
        return httpx.Response(200, json=answer)


@pytest.mark.parametrize(
    ("api", "status"),
    # (api="auto" first probes /classify, where a 401/403 is an AuthenticationError of its own.)
    [("auto", 404), *((api, status) for api in ("score", "rerank") for status in (401, 403, 404))],
)
def test_an_embedding_model_behind_a_gateway_is_refused(tok: Qwen3Tokenizer, api: str, status: int) -> None:
    # Before: /v1/embeddings answering 401/403/404 let cosine similarities through as P(yes).
    server = BiEncoderBehindGateway(tok, other_status=status)
    for verify in (True, False):
        engine = engine_for(server, tok, api=api, verify_template=verify)
        with pytest.raises(ConfigurationError, match="embedding model.*query once per document.*--hf-overrides"):
            engine.score(pairs_for(tok, ["a"]))
        assert engine.resolved_api is None


def test_a_text_server_whose_answers_prove_nothing_is_refused_unless_asked(tok: Qwen3Tokenizer) -> None:
    server = BiEncoderBehindGateway(tok, usage=False)
    engine = engine_for(server, tok, api="score")
    with pytest.raises(ConfigurationError, match="nothing .* proves .* verify_template=False"):
        engine.score(pairs_for(tok, ["a"]))
    assert [r.url.path for r in server.requests] == ["/score", "/score"]
    unproven = engine_for(server, tok, api="score", verify_template=False)
    assert len(unproven.score(pairs_for(tok, ["a"])).logits) == 1


def test_a_real_reranker_behind_a_gateway_is_accepted(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok, endpoints=("/score",))  # /v1/embeddings and /classify: 404
    engine = engine_for(server, tok)
    assert by_index(Reranker(engine).rerank("q", DOCS[:2])) == pytest.approx(expected(tok, "q", DOCS[:2]))
    probes = server.bodies("/score")[:2]
    assert [p["text_2"] for p in probes] == [["b"], ["b", "b"]]
    assert "/v1/embeddings" not in [r.url.path for r in server.requests]


# -- issue 25.23: a malformed probe answer is reported as malformed --------------------------------
@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"data": [{"index": 0, "probs": [NaN]}], "usage": {"prompt_tokens": 1}}', "non-finite"),
        (b'{"data": [{"index": 0, "probs": [1' + b"0" * 400 + b"]}]}", "non-finite"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON.*RecursionError"),
    ],
    ids=["nan", "400-digits", "deep"],
)
def test_a_malformed_probe_answer_is_called_malformed(tok: Qwen3Tokenizer, raw: bytes, words: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/classify":
            return httpx.Response(200, content=raw, headers={"content-type": "application/json"})
        return httpx.Response(404, json={"detail": "Not Found"})

    engine = RemoteEngine("http://a", tokenizer=tok, max_model_len=512, transport=httpx.MockTransport(handler))
    with pytest.raises(RemoteError, match=f"malformed answer to the probe.*{words}") as info:
        engine.score(pairs_for(tok, ["a"]))
    assert "offers none" not in str(info.value) and "--hf-overrides" not in str(info.value)


# -- a small real HTTP server for the socket-level items of issue 25 -----------------------------
class Recorder:
    """A stdlib HTTP server on 127.0.0.1 answering /classify like vLLM; it records each request
    line (a proxy gets the absolute form, ``POST http://host:port/classify``) and its headers."""

    def __init__(self) -> None:
        import http.server

        self.lines: list[str] = []
        self.auth: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                outer.lines.append(self.requestline)
                outer.auth.append(self.headers.get("authorization"))
                seqs = json.loads(self.rfile.read(int(self.headers["content-length"])))["input"]
                body = json.dumps(
                    {
                        "data": [{"index": i, "probs": [0.5], "num_classes": 1} for i in range(len(seqs))],
                        "usage": {"prompt_tokens": sum(map(len, seqs))},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# -- 25.5: one proxy rule for the sync and the async path ------------------------------------------
def test_proxy_variables_apply_to_sync_and_async_alike(tok: Qwen3Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    server, proxy = Recorder(), Recorder()
    try:
        _clear_proxies(monkeypatch)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        engine = RemoteEngine(server.url, tokenizer=tok, api="classify", max_model_len=512, api_key="k-123")
        engine.score(pairs_for(tok, ["a"]))
        asyncio.run(engine.ascore(pairs_for(tok, ["b"])))
        engine.close()
        # Both went through the proxy (absolute-form request lines), none direct.
        assert [line.split()[1] for line in proxy.lines] == [f"{server.url}/classify"] * 3  # probe + 2 calls
        assert server.lines == [] and proxy.auth == ["Bearer k-123"] * 3
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        engine = RemoteEngine(server.url, tokenizer=tok, api="classify", max_model_len=512)
        engine.score(pairs_for(tok, ["a"]))
        asyncio.run(engine.ascore(pairs_for(tok, ["b"])))
        engine.close()
        assert len(server.lines) == 3 and len(proxy.lines) == 3  # NO_PROXY: both direct
    finally:
        server.close()
        proxy.close()


def test_a_socks_proxy_without_socksio_names_the_extra(tok: Qwen3Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    if importlib.util.find_spec("socksio") is not None:  # pragma: no cover - not in the test venv
        pytest.skip("socksio is installed here")
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1")
    engine = RemoteEngine("http://127.0.0.1:9", tokenizer=tok, api="classify", max_model_len=512)
    with pytest.raises(MissingDependencyError, match=r"socksio.*pip install 'qwen3-rerank\[socks\]'"):
        engine.score(pairs_for(tok, ["a"]))
    with pytest.raises(MissingDependencyError, match=r"qwen3-rerank\[socks\]"):
        asyncio.run(engine.ascore(pairs_for(tok, ["a"])))
    engine.close()


# -- 25.18: URLs and incomplete bodies --------------------------------------------------------------
def test_an_uppercase_scheme_is_accepted(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = RemoteEngine("HTTP://a:8000", tokenizer=tok, max_model_len=512, transport=httpx.MockTransport(server))
    assert len(engine.score(pairs_for(tok, ["a"])).logits) == 1
    assert {str(r.url) for r in server.requests} <= {"http://a:8000/classify"}
    assert "HTTP" not in repr(engine)


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://me:s3cret@[::1", "http://h:notaport", "ftp://me:s3cret@h", "http://"]
)
def test_a_broken_url_is_a_configuration_error_that_hides_it(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url") as info:
        RemoteEngine(url)
    assert "s3cret" not in str(info.value) and not isinstance(info.value.__cause__, ValueError)


def test_a_body_shorter_than_its_content_length_is_not_an_unreachable_replica(tok: Qwen3Tokenizer) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                # Read the whole request body first: closing with unread bytes would send a reset
                # (a "could not reach" on the client's side) instead of the short answer under test.
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(v)
                        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                        if k.strip().lower() == b"content-length"
                    ),
                    0,
                )
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"data"')
                conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=serve, daemon=True).start()
    good = Recorder()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        engine = RemoteEngine(url, tokenizer=tok, api="classify", max_model_len=512, max_retries=1, backoff=0.01)
        engine._resolved = (shape_of("classify"), "/classify")
        with pytest.raises(RemoteError, match="incomplete answer") as info:
            engine.score(pairs_for(tok, ["a"]))
        assert "could not reach" not in str(info.value)
        engine.close()
        both = RemoteEngine([url, good.url], tokenizer=tok, api="classify", max_model_len=512, backoff=0.01)
        both._resolved = (shape_of("classify"), "/classify")
        assert len(both.score(pairs_for(tok, ["a"])).logits) == 1
        assert both._requester._health.down_until == {}  # the short answer did not mark it down
        both.close()
    finally:
        stop.set()
        sock.close()
        good.close()


# -- 25.14: RemoteError.body is scrubbed on every path ----------------------------------------------
@pytest.mark.parametrize("shape", ["html", "json"])
def test_an_echoed_key_is_scrubbed_from_every_error(tok: Qwen3Tokenizer, shape: str) -> None:
    key = "sk-live-0123456789"

    def echo(request: httpx.Request) -> httpx.Response:  # a proxy page echoing the request headers
        auth = request.headers["authorization"]
        if shape == "html":
            return httpx.Response(200, text=f"<html>you sent Authorization: {auth}</html>")
        return httpx.Response(200, json={"echo": {"authorization": auth}})

    engine = RemoteEngine("http://gw?token=qtoken-777", tokenizer=tok, api="classify", max_model_len=512,
                          api_key=key, transport=httpx.MockTransport(echo))  # fmt: skip
    engine._resolved = (shape_of("classify"), "/classify")
    with pytest.raises(RemoteError) as info:
        engine.score(pairs_for(tok, ["a"]))
    shown = f"{info.value} {info.value.body} {info.value.url}"
    assert info.value.body and key not in shown and "qtoken-777" not in shown and "***" in info.value.body


# -- 25.16: close() from another thread during a sync call ------------------------------------------
def test_close_from_another_thread_during_a_call_is_an_engine_error(tok: Qwen3Tokenizer) -> None:
    server = Dripping("body")
    engine = RemoteEngine(server.url, tokenizer=tok, api="classify", max_model_len=512, total_timeout=20, backoff=0.01)
    engine._resolved = (shape_of("classify"), "/classify")
    timer = threading.Timer(0.4, engine.close)
    try:
        timer.start()
        start = time.monotonic()
        with pytest.raises(EngineError, match="closed") as info:
            engine.score(pairs_for(tok, ["a"]))
        assert type(info.value) is EngineError and time.monotonic() - start < 5.0
    finally:
        timer.cancel()
        server.close()


# -- 25.4: one engine, two live event loops ----------------------------------------------------------
def test_one_engine_from_two_live_event_loops(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    engine = resolved(server, tok)
    errors: list[BaseException] = []

    async def many() -> None:
        for i in range(60):
            await engine.ascore(pairs_for(tok, [f"d{i}"]))
            await asyncio.sleep(0)

    def thread() -> None:
        try:
            asyncio.run(many())
        except BaseException as exc:  # recorded: the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=thread) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and engine._requester.async_clients_made == 2  # one per loop, no churn
    engine.close()


# -- 25.6: arerank never blocks the caller's loop on HTTP -------------------------------------------
@pytest.mark.parametrize("case", ["discovery", "server-tokenizer"])
async def test_arerank_does_not_block_the_event_loop(tok: Qwen3Tokenizer, case: str) -> None:
    server = FakeVLLM(tok, endpoints=("/score",))
    slow = {"/v1/models"} if case == "discovery" else {"/detokenize"}
    inner = server.__call__

    slowed: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path in slow and not slowed:
            slowed.append(request.url.path)
            time.sleep(0.3)  # a sync request on the loop would freeze it this long
        return inner(request)

    kw: dict[str, Any] = {"tokenizer": tok} if case == "discovery" else {"tokenizer": "server", "max_model_len": 1024}
    engine = RemoteEngine("http://a", api="score", transport=httpx.MockTransport(handler), **kw)
    reranker = Reranker(engine, max_length=256)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)  # the ticker runs before the call starts
    try:
        await reranker.arerank("q", ["a", "b", "c"])
    finally:
        tick.cancel()
    assert slowed  # the slow request was made (during this call)
    assert max(gaps) < 0.2, f"the loop was blocked for {max(gaps):.2f}s"
    await engine.aclose()


# -- 25.17: a server whose context is too small for the template ------------------------------------
def test_a_server_context_too_small_for_the_template_says_so(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok)
    inner = server.__call__

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "served", "max_model_len": 50}]})
        return inner(request)

    engine = RemoteEngine("http://a", tokenizer=tok, transport=httpx.MockTransport(handler))
    with pytest.raises(ConfigurationError, match=r"max_model_len=50\) is too small.*--max-model-len") as info:
        Reranker(engine).rerank("q", ["a"])
    assert "Use max_length" not in str(info.value)


# -- 25.9: text APIs cut on a character boundary ----------------------------------------------------
def test_text_apis_never_send_a_broken_character(tok: Qwen3Tokenizer) -> None:
    server = FakeVLLM(tok, endpoints=("/score",))
    engine = engine_for(server, tok, api="score")
    reranker = Reranker(engine, max_length=200)
    base = reranker.encoder.min_max_length()
    for max_length in range(base, base + 12):
        # 𠜎 and 🫠 are three byte tokens each: most cuts fall inside one.
        Reranker(engine, max_length=max_length).rerank("𠜎 q", ["🫠𠜎🧬" * 40])
    sent = [t for b in server.bodies("/score") for t in b["text_2"]] + [b["text_1"] for b in server.bodies("/score")]
    assert sent and not [t for t in sent if "\ufffd" in t]


# -- 25.20: Ctrl-C during a sync call of several requests: the process exits at once ---------------
_CTRL_C_SCRIPT = """
import os, signal, socket, threading, time
from qwen3_rerank import EncodedPair
from qwen3_rerank.engines.remote import RemoteEngine
from qwen3_rerank.engines.remote._apis import shape_of

sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(16)
held = []
def accept():
    while True:
        conn, _ = sock.accept(); held.append(conn)  # read nothing, answer nothing
threading.Thread(target=accept, daemon=True).start()
engine = RemoteEngine(f"http://127.0.0.1:{sock.getsockname()[1]}", api="classify", max_model_len=512,
                      total_timeout=30, max_batch_size=1, max_concurrency=4, verify_template=False)
engine._resolved = (shape_of("classify"), "/classify")
threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGINT)).start()
print("start", flush=True)
engine.score([EncodedPair(input_ids=[1, 2, 3], query_length=1) for _ in range(4)])
"""


def test_ctrl_c_during_a_sync_call_lets_the_process_exit_at_once() -> None:
    import os
    import subprocess
    import sys

    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_SCRIPT], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    took = time.monotonic() - start
    assert "KeyboardInterrupt" in done.stderr, done.stderr[-2000:]
    assert took < 10.0, f"the process took {took:.1f}s to exit after Ctrl-C (requests in flight were waited for)"


def test_request_json_takes_a_caller_time_limit():
    # Issue 25 item 7: `check`'s overall limit reaches a request in flight (RemoteEngine.request_json(seconds=)).
    import socket
    import time as _time

    from qwen3_rerank import RemoteTimeoutError
    from qwen3_rerank.engines import RemoteEngine

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        engine = RemoteEngine(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=60, total_timeout=300)
        try:
            started = _time.monotonic()
            with pytest.raises(RemoteTimeoutError):
                engine.request_json("GET", "/v1/models", seconds=0.5)
            assert _time.monotonic() - started < 5
        finally:
            engine.close()
