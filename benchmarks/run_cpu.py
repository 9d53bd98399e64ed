"""CPU benchmarks (tiny model, real vLLM CPU build): what ``make bench`` runs.

Parts (each in its own process; ``python benchmarks/run_cpu.py`` runs all of them in order):

``imports``       ``import qwen3_rerank`` / ``langchain_qwen3_rerank`` /
                  ``llama_index.postprocessor.qwen3_rerank`` in a fresh interpreter, median of 7,
                  and which heavy modules each one loaded.
``stack-raw``     raw ``vllm.LLM.score`` on pre-formatted strings, 1 query x 100 documents.
``stack-engine``  LangChain ``Qwen3Rerank.compress_documents`` -> ``Reranker`` -> ``VLLMEngine``
                  on the same kind of input (raw text in, LangChain documents out).
``remote``        one local ``vllm serve``: ``RemoteEngine`` through ``Reranker.arerank`` with
                  1 / 4 / 16 / 64 queries in flight vs a naive ``requests.post`` loop over
                  ``/score`` (one query at a time, the vLLM-Ascend tutorial's request).
``cold-start``    fresh interpreters, median of ``--reps``: ``tokenizers.Tokenizer.from_file`` of
                  the tiny model's tokenizer.json vs ``Qwen3Tokenizer.from_pretrained`` of its
                  directory (and their ratio); process start to the first ``RemoteEngine`` rerank
                  result against a fake server in this process (``/classify`` with fixed logits,
                  tokenizer from the local directory); process start to the first
                  ``TransformersEngine`` score on the tiny model (CPU, float32).
``st``            ``bench_st.py`` on the CPU (not in ``all``: needs ``pip install
                  sentence-transformers==6.0.1``, which is not a dependency of qwen3-rerank):
                  sentence-transformers' ``CrossEncoder`` (its prompts, the card's prompt) vs
                  ``TransformersEngine`` defaults, random-init ``--shape`` checkpoint (default 0.6B,
                  float32, built once into the cache), small counts (``--counts``). Appends to
                  ``results/st-cpu.jsonl``.

Results: ``benchmarks/results/cpu.jsonl`` (appended) and a summary on stdout. CPU numbers move
with whatever else runs on the machine: the runner records the load average with each result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads as W
from _common import Recorder, machine

HERE = Path(__file__).resolve().parent

OUT = HERE / "results" / "cpu.jsonl"
STACK = W.Workload("stack", 1, 100, 250)  # W1-sized pairs (~335 tokens), 1 query x 100 documents
REMOTE = W.Workload("remote", 64, 16, 25)  # W2-sized pairs (~110 tokens), 64 queries x 16 documents
VLLM_CPU = {"dtype": "float32", "max_model_len": 2048, "enforce_eager": True}
HEAVY = ("torch", "vllm", "transformers", "httpx")


def recorder(part: str) -> Recorder:
    return Recorder(OUT, suite="cpu", part=part, machine=machine(), load=os.getloadavg(), command=" ".join(sys.argv))


def tiny_model() -> str:
    from qwen3_rerank.testing import cached_test_model

    return str(cached_test_model())


# -- import cost ---------------------------------------------------------------------------------
def part_imports() -> None:
    rec = recorder("imports")
    # The framework modules each integration imports, alone: the part of its cost that any
    # LangChain / LlamaIndex integration pays.
    frameworks = {
        "langchain_core (the integration's own import lines)": "; ".join(  # noqa: FLY002
            [
                "from langchain_core.callbacks import Callbacks, adispatch_custom_event, dispatch_custom_event",
                "from langchain_core.callbacks.manager import "
                "AsyncCallbackManagerForChainRun, CallbackManagerForChainRun",
                "from langchain_core.documents import BaseDocumentCompressor, Document",
                "from langchain_core.runnables import RunnableConfig, RunnableSerializable",
                "from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config",
                "from langchain_core.utils import secret_from_env",
                "from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator",
            ]
        ),
        "llama_index.core (the integration's own import lines)": "; ".join(  # noqa: FLY002
            [
                "from llama_index.core.bridge.pydantic import "
                "ConfigDict, Field, PrivateAttr, SecretStr, model_validator",
                "from llama_index.core.callbacks import CBEventType, EventPayload",
                "from llama_index.core.instrumentation import get_dispatcher",
                "from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent",
                "from llama_index.core.postprocessor.types import BaseNodePostprocessor",
                "from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle",
            ]
        ),
    }
    statements = {
        m: f"import {m}" for m in ("qwen3_rerank", "langchain_qwen3_rerank", "llama_index.postprocessor.qwen3_rerank")
    }
    for module, statement in {**statements, **frameworks}.items():
        code = (
            "import sys, time, json; t = time.perf_counter(); " + statement + "; dt = time.perf_counter() - t; "
            f"print(json.dumps([dt, [m for m in {HEAVY!r} if m in sys.modules]]))"
        )
        times, heavy = [], []
        for _ in range(7):
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            dt, heavy = json.loads(res.stdout.strip().splitlines()[-1])
            times.append(dt)
        rec.add(
            engine="import",
            workload=module,
            seconds=round(statistics.median(times), 4),
            seconds_all=[round(t, 4) for t in times],
            heavy_modules_loaded=heavy,
        )


# -- whole stack vs raw LLM.score ------------------------------------------------------------------
def part_stack_raw(reps: int) -> None:
    from bench_vllm import OVERRIDES
    from vllm import LLM

    from qwen3_rerank import prompts

    rec = recorder("stack-raw")
    llm = LLM(model=tiny_model(), runner="pooling", hf_overrides=OVERRIDES, gpu_memory_utilization=0.1, **VLLM_CPU)
    times = []
    for rep in range(-1, reps):  # rep -1: warm-up
        (query,), (docs,) = W.make_inputs(STACK, rep + 100)
        q = prompts.SYSTEM_PREFIX + prompts.format_query(query, None)
        d = [prompts.format_document(x) + prompts.ASSISTANT_SUFFIX for x in docs]
        t0 = time.perf_counter()
        llm.score(q, d, use_tqdm=False)
        if rep >= 0:
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    rec.add(
        engine="vllm-LLM.score",
        workload="1x100 (~335 tok/pair)",
        seconds=round(t, 4),
        seconds_all=[round(x, 4) for x in times],
        pairs_per_s=round(100 / t, 1),
    )


def part_stack_engine(reps: int, max_num_batched_tokens: int | None = None) -> None:
    from langchain_core.documents import Document

    from langchain_qwen3_rerank import Qwen3Rerank
    from qwen3_rerank import Reranker
    from qwen3_rerank.engines.vllm_engine import VLLMEngine

    rec = recorder("stack-engine")
    extra = {"max_num_batched_tokens": max_num_batched_tokens} if max_num_batched_tokens else {}
    engine = VLLMEngine(tiny_model(), gpu_memory_utilization=0.1, **VLLM_CPU, **extra)
    compressor = Qwen3Rerank(reranker=Reranker(engine), top_n=100)
    times = []
    for rep in range(-1, reps):
        (query,), (docs,) = W.make_inputs(STACK, rep + 100)
        documents = [Document(page_content=x, metadata={"i": i}) for i, x in enumerate(docs)]
        t0 = time.perf_counter()
        out = compressor.compress_documents(documents, query)
        if rep >= 0:
            times.append(time.perf_counter() - t0)
        assert len(out) == 100
    t = statistics.median(times)
    label = "LangChain->Reranker->VLLMEngine"
    if extra:
        label += f" (max_num_batched_tokens={max_num_batched_tokens})"
    rec.add(
        engine=label,
        workload="1x100 (~335 tok/pair)",
        seconds=round(t, 4),
        seconds_all=[round(x, 4) for x in times],
        pairs_per_s=round(100 / t, 1),
    )
    engine.close()


# -- remote engine vs naive loop ----------------------------------------------------------------
def part_remote(reps: int) -> None:
    import requests

    from qwen3_rerank import Reranker, prompts
    from qwen3_rerank.engines.remote import RemoteEngine
    from tests_support.vllm_server import start_vllm_server

    rec = recorder("remote")
    model = tiny_model()
    server = start_vllm_server(model, extra_args=("--max-num-seqs", "256"))
    try:
        pairs = REMOTE.queries * REMOTE.docs_per_query

        def naive(queries, docs):
            for q, ds in zip(queries, docs, strict=True):
                r = requests.post(
                    server.base_url + "/score",
                    json={
                        "model": model,
                        "text_1": prompts.SYSTEM_PREFIX + prompts.format_query(q, None),
                        "text_2": [prompts.format_document(x) + prompts.ASSISTANT_SUFFIX for x in ds],
                    },
                    timeout=120,
                )
                r.raise_for_status()

        def timed(fn, name, **extra):
            times = []
            for rep in range(-1, reps):
                q, d = W.make_inputs(REMOTE, rep + 200 + 50 * len(rec_names))
                t0 = time.perf_counter()
                fn(q, d)
                if rep >= 0:
                    times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            rec_names.append(name)
            rec.add(
                engine=name,
                workload=f"{REMOTE.queries}x{REMOTE.docs_per_query} (~110 tok/pair)",
                seconds=round(t, 4),
                seconds_all=[round(x, 4) for x in times],
                pairs_per_s=round(pairs / t, 1),
                **extra,
            )

        rec_names: list[str] = []
        timed(naive, "naive requests.post /score loop", in_flight=1)
        engine = RemoteEngine(server.base_url, model=model)
        reranker = Reranker(engine)
        for in_flight in (1, 4, 16, 64):

            async def run_all(queries, docs, n=in_flight):
                gate = asyncio.Semaphore(n)

                async def one(q, ds):
                    async with gate:
                        return await reranker.arerank(q, ds)

                await asyncio.gather(*(one(q, ds) for q, ds in zip(queries, docs, strict=True)))

            timed(
                lambda q, d: asyncio.run(run_all(q, d)),
                f"RemoteEngine async, {in_flight} in flight",
                in_flight=in_flight,
            )
        rec.add(engine="RemoteEngine", kind="api", api=str(getattr(engine, "resolved_api", None)))
        engine.close()
    finally:
        server.stop()


# -- cold start -------------------------------------------------------------------------------
_CHILD_PRELUDE = """
import json, sys, time
counts = {"tokenizers_built": 0}
from qwen3_rerank import Qwen3Tokenizer
_orig = Qwen3Tokenizer.from_pretrained.__func__
def _counted(cls, *a, **k):
    counts["tokenizers_built"] += 1
    return _orig(cls, *a, **k)
Qwen3Tokenizer.from_pretrained = classmethod(_counted)
DOCS = ["BM25 is a ranking function used by search engines.", "Paris is the capital of France.",
        "A reranker scores a query against each candidate passage.", "The weather is nice today."]
"""
_COLD = {
    "tokenizers.Tokenizer.from_file": """
import json, time
from tokenizers import Tokenizer
t = time.perf_counter(); Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
print(json.dumps({"seconds": time.perf_counter() - t}))
""",
    "Qwen3Tokenizer.from_pretrained": _CHILD_PRELUDE
    + """
t = time.perf_counter(); Qwen3Tokenizer.from_pretrained(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t, **counts}))
""",
    "RemoteEngine first rerank": _CHILD_PRELUDE
    + """
from qwen3_rerank import Reranker
from qwen3_rerank.engines.remote import RemoteEngine
t = time.perf_counter()
with Reranker(RemoteEngine(sys.argv[2], model=sys.argv[1])) as r:
    ranking = r.rerank("what is BM25?", DOCS)
print(json.dumps({"done": time.time(), "rerank_call_s": time.perf_counter() - t, **counts}))
""",
    "TransformersEngine first score": _CHILD_PRELUDE
    + """
from qwen3_rerank import Reranker
t = time.perf_counter()
r = Reranker("transformers", model=sys.argv[1], device="cpu", dtype="float32")
ranking = r.rerank("what is BM25?", DOCS)
print(json.dumps({"done": time.time(), "rerank_call_s": time.perf_counter() - t, **counts}))
""",
}


def _fake_classify_server() -> Any:
    """A tiny vLLM stand-in on 127.0.0.1: ``/v1/models`` and ``/classify`` with fixed logits."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/v1/models":
                self._answer(200, {"data": [{"id": "tiny", "max_model_len": 2048}]})
            else:
                self._answer(404, {"detail": "Not Found"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            if self.path != "/classify":
                self._answer(404, {"detail": "Not Found"})
                return
            seqs = body["input"]
            data = [{"index": i, "probs": [0.5 - 0.1 * i]} for i in range(len(seqs))]
            self._answer(200, {"data": data, "usage": {"prompt_tokens": sum(map(len, seqs))}})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def part_cold_start(reps: int, label: str | None) -> None:
    rec = recorder("cold-start")
    model = tiny_model()
    server = _fake_classify_server()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    medians: dict[str, float] = {}
    try:
        for name, code in _COLD.items():
            runs = []
            for _ in range(reps):
                started = time.time()
                res = subprocess.run(
                    [sys.executable, "-c", "import sys\n" + code, model, url],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if res.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{res.stderr[-3000:]}")
                out = json.loads(res.stdout.strip().splitlines()[-1])
                if "done" in out:  # from process start to the result
                    out["seconds"] = out.pop("done") - started
                runs.append(out)
            times = [r["seconds"] for r in runs]
            medians[name] = statistics.median(times)
            extra = {k: v for k, v in runs[-1].items() if k not in ("seconds", "rerank_call_s")}
            if "rerank_call_s" in runs[-1]:
                extra["rerank_call_s_median"] = round(statistics.median(r["rerank_call_s"] for r in runs), 4)
            rec.add(
                engine=name,
                workload="from process start" if "first" in name else "build, in a fresh process",
                seconds=round(medians[name], 4),
                seconds_all=[round(t, 4) for t in times],
                label=label,
                **extra,
            )
    finally:
        server.shutdown()
    ratio = medians["Qwen3Tokenizer.from_pretrained"] / medians["tokenizers.Tokenizer.from_file"]
    rec.add(
        engine="Qwen3Tokenizer / Tokenizer.from_file",
        workload="build, in a fresh process",
        ratio=round(ratio, 2),
        label=label,
    )


# -- sentence-transformers CrossEncoder vs TransformersEngine (bench_st.py) ------------------------
ST_OUT = HERE / "results" / "st-cpu.jsonl"


def bench_model(shape: str) -> str:
    """The random-init ``shape`` checkpoint in float32, built once into the test-model cache."""
    if shape == "tiny":
        return tiny_model()
    from qwen3_rerank.testing import make_test_model

    root = Path(os.environ.get("QWEN3_RERANK_CACHE") or Path.home() / ".cache" / "qwen3-rerank")
    path = root / f"bench-{shape}-float32"
    if not (path / "qwen3_rerank_test_model.json").is_file():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        make_test_model(tmp, shape=shape, dtype="float32", device="cpu")
        tmp.rename(path)
    return str(path)


def part_st(shape: str, counts: str, reps: int, budget: float) -> None:
    import importlib.util

    from bench_st import INSTALL_HINT

    if importlib.util.find_spec("sentence_transformers") is None:
        raise SystemExit(INSTALL_HINT)
    cmd = [sys.executable, str(HERE / "bench_st.py"), "--shape", shape, "--model", bench_model(shape)]
    cmd += ["--out", str(ST_OUT), "--device", "cpu", "--dtype", "float32", "--counts", counts]
    cmd += ["--reps", str(reps), "--budget", str(budget)]
    subprocess.run(cmd, check=True)  # noqa: S603


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--part", choices=["all", "imports", "stack-raw", "stack-engine", "remote", "cold-start", "st"], default="all"
    )
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5; st: 1)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=None, help="stack-engine: passed to VLLMEngine")
    ap.add_argument("--label", default=None, help="cold-start: a note saved with each record (e.g. the code measured)")
    ap.add_argument("--shape", default="0.6B", help="st: the checkpoint's shape (tiny, 0.6B, 4B, 8B)")
    ap.add_argument("--counts", default="W1=2x8,W2=2x8,W3=1x2", help="st: queries x documents per workload")
    ap.add_argument("--budget", type=float, default=3600, help="st: seconds for the whole part")
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 1 if args.part == "st" else 5
    if args.part == "all":
        env = dict(os.environ, PYTHONPATH=f"{HERE.parent}:{os.environ.get('PYTHONPATH', '')}")
        for part in ("imports", "cold-start", "stack-raw", "stack-engine", "remote"):
            print(f"== {part}", flush=True)
            subprocess.run(
                [sys.executable, __file__, "--part", part, "--reps", str(args.reps)],
                check=True,
                env=env,
                cwd=HERE.parent,
            )
        subprocess.run([sys.executable, str(HERE / "summarize.py"), str(OUT)], check=False)
        return
    {
        "imports": part_imports,
        "stack-raw": lambda: part_stack_raw(args.reps),
        "stack-engine": lambda: part_stack_engine(args.reps, args.max_num_batched_tokens),
        "remote": lambda: part_remote(args.reps),
        "cold-start": lambda: part_cold_start(args.reps, args.label),
        "st": lambda: part_st(args.shape, args.counts, args.reps, args.budget),
    }[args.part]()


if __name__ == "__main__":
    main()
