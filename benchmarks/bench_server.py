"""``qwen3-rerank serve`` under load vs the same engine in-process, and optionally vs ``vllm serve``.

Per concurrency level (default 1, 8, 64 clients), each client sends requests of one query and
``--docs`` documents (20) back to back; pairs/s over the whole round and p50 / p99 latency per
request. Rows, measured in one run on one machine:

* ``inprocess``: the same engine's ``Reranker.rerank_many`` on all the round's pairs at once
  (throughput only: the ceiling the server's batching is measured against);
* ``server``: our server (uvicorn in this process, over that same engine), the clients in a
  separate process (``httpx``, ``POST /v2/rerank``), so that client work does not share our GIL;
* ``vllm-serve`` (with ``--vllm-url``): the same clients against a running ``vllm serve``'s
  ``/rerank`` with the plain query and documents (vLLM's own prompt handling: not exact).

Fresh documents every round (no prefix cache hits across rounds); one warm-up round first.

CPU (tiny model)::

    python benchmarks/bench_server.py --engine transformers --model ~/.cache/qwen3-rerank/tiny-causal-0.1.0 \
        --dtype float32 --device cpu --doc-words 60

GPU (VLLMEngine, and ``vllm serve`` on the same GPU for the third row)::

    python benchmarks/bench_server.py --engine vllm --model MODEL_DIR -o gpu_memory_utilization=0.4 \
        --vllm-url http://127.0.0.1:8001 --vllm-model MODEL_DIR

Appends JSON lines to ``--out`` (default ``results/server.jsonl``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests_support (the in-thread server) lives at the repository root


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[k]


# -- the load generator (a subprocess) --------------------------------------------------------------
async def _clients(url: str, path: str, model: str | None, bodies: list[dict[str, Any]], concurrency: int) -> dict:
    import httpx

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                if model:
                    body = {**body, "model": model}
                t = time.perf_counter()
                r = await client.post(path, json=body)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"wall": wall, "latencies": latencies, "errors": errors}


def client_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--path", default="/v2/rerank")
    p.add_argument("--model", default=None)
    p.add_argument("--concurrency", type=int, required=True)
    args = p.parse_args(argv)
    bodies = json.load(sys.stdin)
    print(json.dumps(asyncio.run(_clients(args.url, args.path, args.model, bodies, args.concurrency))))


def _run_clients(url: str, bodies: list[dict[str, Any]], concurrency: int, path: str, model: str | None) -> dict:
    cmd = [sys.executable, __file__, "client", "--url", url, "--path", path, "--concurrency", str(concurrency)]
    if model:
        cmd += ["--model", model]
    out = subprocess.run(cmd, input=json.dumps(bodies), capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmark -----------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="transformers", choices=("transformers", "vllm"))
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--engine-option", action="append", default=[], metavar="KEY=JSON")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--docs", type=int, default=20, help="documents per request (default 20)")
    p.add_argument("--doc-words", type=int, default=100, help="words per document (default 100)")
    p.add_argument("--requests", type=int, default=0, help="requests per round (default: 4 per client, >= 16)")
    p.add_argument("--vllm-url", default=None, help="a running `vllm serve` to compare (its /rerank)")
    p.add_argument("--vllm-model", default=None, help="the model name that server serves")
    p.add_argument("--out", default=str(HERE / "results" / "server.jsonl"))
    p.add_argument("--label", default="")
    args = p.parse_args()

    from _common import Recorder, log, machine
    from workloads import Workload, make_inputs

    from qwen3_rerank import Reranker
    from qwen3_rerank.server import create_app
    from qwen3_rerank.settings import build_engine
    from tests_support.rerank_server import ThreadServer

    options: dict[str, Any] = {}
    for item in args.engine_option:
        key, _, raw = item.partition("=")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    if args.dtype:
        options["dtype"] = args.dtype
    if args.device:
        options["device"] = args.device
    started = time.perf_counter()
    engine = build_engine(args.engine, model=os.path.expanduser(args.model), **options)
    log(f"engine {args.engine} ready in {time.perf_counter() - started:.1f}s")
    reranker = Reranker(engine)
    server = ThreadServer(create_app(reranker, api_keys=()))
    rec = Recorder(args.out, machine=machine(), engine=args.engine, model=args.model, label=args.label,
                   command=" ".join(sys.argv), docs=args.docs, doc_words=args.doc_words)  # fmt: skip
    levels = [int(c) for c in args.concurrency.split(",")]
    rep = 0

    def inputs(requests: int) -> tuple[list[str], list[list[str]]]:
        nonlocal rep
        rep += 1
        return make_inputs(Workload("S", requests, args.docs, args.doc_words), rep)

    try:
        warm_q, warm_d = inputs(16)
        reranker.rerank_many(warm_q, warm_d)
        _run_clients(server.base_url, [{"query": q, "documents": d} for q, d in zip(warm_q, warm_d, strict=True)], 8,
                     "/v2/rerank", None)  # fmt: skip
        for c in levels:
            n = args.requests or max(16, 4 * c)
            q, d = inputs(n)
            t = time.perf_counter()
            reranker.rerank_many(q, d)
            wall = time.perf_counter() - t
            pairs = n * args.docs
            rec.add(row="inprocess", concurrency=c, requests=n, pairs=pairs, seconds=round(wall, 4),
                    pairs_per_s=round(pairs / wall, 1))  # fmt: skip
            targets = [("server", server.base_url, "/v2/rerank", None)]
            if args.vllm_url:
                targets.append(("vllm-serve", args.vllm_url, "/rerank", args.vllm_model or args.model))
            for row, url, path, model in targets:
                q, d = inputs(n)
                bodies = [{"query": qq, "documents": dd} for qq, dd in zip(q, d, strict=True)]
                out = _run_clients(url, bodies, c, path, model)
                if out["errors"]:
                    log(f"{row}: {len(out['errors'])} errors, first: {out['errors'][0]}")
                lat = out["latencies"]
                rec.add(row=row, concurrency=c, requests=n, pairs=pairs, seconds=round(out["wall"], 4),
                        pairs_per_s=round(pairs / out["wall"], 1), p50_ms=round(1000 * _percentile(lat, 0.5), 1),
                        p99_ms=round(1000 * _percentile(lat, 0.99), 1), errors=len(out["errors"]))  # fmt: skip
        metrics = server.app.state.qwen3_rerank.metrics.render().decode()
        batches = [ln for ln in metrics.splitlines() if ln.startswith("qwen3_rerank_batch_requests_")]
        log("batching: " + "; ".join(b for b in batches if "_sum" in b or "_count" in b))
    finally:
        server.stop()
        engine.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
    else:
        main()
