"""``qwen3-rerank serve`` as a process: it refuses a misconfiguration in one line, prints where it
listens, and on SIGTERM finishes every accepted request before it closes the engine and exits."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from qwen3_rerank.cli import main

pytest.importorskip("fastapi", reason="the server extra: pip install 'qwen3-rerank[server]'")

ROOT = Path(__file__).resolve().parents[1]


def _fails(capsys, argv, *, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_misconfigurations_refuse_to_start_in_one_line(capsys, tmp_path, tiny_model):
    err = _fails(capsys, ["serve", "--model", str(tmp_path / "missing")])
    assert "no such directory" in err
    err = _fails(capsys, ["serve", "--model", str(tiny_model), "--api-key-file", str(tmp_path / "keys")])
    assert "cannot read the API key file" in err
    err = _fails(capsys, ["serve", "--model", str(tiny_model), "--port", "-1"])
    assert "--port" in err
    err = _fails(capsys, ["serve", "--model", str(tiny_model), "--base-url", "http://x"])
    assert "--base-url applies to --engine remote" in err
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        err = _fails(capsys, ["serve", "--model", str(tiny_model), "--port", str(port)])
        assert f"cannot listen on 127.0.0.1:{port}" in err
    finally:
        taken.close()


def test_importing_the_package_and_cli_loads_no_server_framework():
    code = (
        "import sys, qwen3_rerank, qwen3_rerank.cli, qwen3_rerank.settings;"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'prometheus_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.server
def test_sigterm_finishes_requests_in_flight_then_exits(tiny_model):
    env = {**os.environ, "QWEN3_RERANK_SERVER_API_KEY": "k-123"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwen3_rerank", "serve", "--model", str(tiny_model), "--dtype", "float32",
         "--device", "cpu", "--port", "0", "--batch-wait-ms", "0", "--max-batch-pairs", "16"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 180
        while url is None:
            assert time.monotonic() < deadline, "".join(lines)
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            m = re.search(r" on (http://127\.0\.0\.1:\d+)$", line.strip())
            url = m.group(1) if m else None
        assert "API key required" in lines[-1] and "k-123" not in "".join(lines)
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        headers = {"Authorization": "Bearer k-123"}
        docs = [f"passage {i} about ranking functions and BM25 " * 8 for i in range(64)]
        results: list[httpx.Response | BaseException] = []

        def call(i: int) -> None:
            try:
                results.append(httpx.post(f"{url}/v2/rerank", json={"query": f"q{i}", "documents": docs},
                                          headers=headers, timeout=120))  # fmt: skip
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                results.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        # All six requests are accepted before the signal (a connection the server has not accepted yet
        # is refused on SIGTERM, rightly): each is either waiting in the batcher or was taken into an
        # engine call (the batch_requests histogram counts them when the call starts), and at least two
        # are still waiting, so the signal lands while work is queued.
        deadline = time.monotonic() + 60
        while True:
            metrics = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
            queued = float(re.search(r"^qwen3_rerank_queue_depth (\S+)$", metrics, re.M).group(1))
            taken = float(re.search(r"^qwen3_rerank_batch_requests_sum (\S+)$", metrics, re.M).group(1))
            if queued + taken == 6 and queued >= 2:
                break
            assert time.monotonic() < deadline, f"{queued} waiting, {taken} taken: {results}"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert proc.wait(120) == 0
        reader.join(10)
        assert len(results) == 6
        for r in results:
            assert isinstance(r, httpx.Response) and r.status_code == 200, r
            assert len(r.json()["results"]) == 64
        assert any("stopped (SIGTERM)" in line for line in lines), "".join(lines)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_the_server_package_exports_a_small_api():
    import qwen3_rerank.server as server

    assert server.__all__ == [
        "ENV_SERVER_API_KEY", "ROUTES", "ApiKeys", "BatchingConfig", "ServerLimits", "create_app", "load_api_keys",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="max_documents"):
        server.ServerLimits(max_documents=0)
    with pytest.raises(TypeError, match="Reranker or a function"):
        server.create_app("transformers")  # type: ignore[arg-type]


def test_preformatted_prompts_are_recognised_only_when_complete():
    from qwen3_rerank import prompts
    from qwen3_rerank.server._inputs import unwrap_document, unwrap_query

    text = prompts.SYSTEM_PREFIX + prompts.format_query("a query\nover two lines", "Find <think> it")
    assert unwrap_query(text) == ("a query\nover two lines", "Find <think> it")
    neutralised = prompts.SYSTEM_PREFIX + prompts.format_query("q <\u200b|im_end|>", None)
    assert unwrap_query(neutralised) == ("q <|im_end|>", prompts.DEFAULT_INSTRUCTION)
    assert unwrap_query(prompts.SYSTEM_PREFIX + "no labels here\n") is None
    assert unwrap_query("<Instruct>: i\n<Query>: q\n") is None  # no system prefix: a plain query
    assert unwrap_document(prompts.format_document("d\r\n") + prompts.ASSISTANT_SUFFIX) == "d\r\n"
    assert unwrap_document(prompts.format_document("d")) is None  # no suffix: scored as written
