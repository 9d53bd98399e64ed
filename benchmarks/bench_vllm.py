"""VLLMEngine through the core Reranker vs raw ``vllm.LLM.score`` on pre-formatted strings.

Usage (each mode in its own process: one vLLM engine per process, started once):
    python benchmarks/bench_vllm.py --mode raw    --shape 0.6B --model DIR --out results.jsonl
    python benchmarks/bench_vllm.py --mode engine --shape 0.6B --model DIR --out results.jsonl

``raw``    ``LLM(runner="pooling", hf_overrides=<vLLM's Qwen3-Reranker recipe>)``; the timed call
           is ``llm.score(query_strings, document_strings)`` on strings formatted as in vLLM's
           ``examples/pooling/score/qwen3_reranker_offline.py`` (formatting not timed). Also
           ``classify-ids``: the core's bulk tokenization + ``llm.classify(TokensPrompt)`` on the
           same LLM (where the token-id design started).
``engine`` ``Reranker(VLLMEngine(...)).rerank_many(queries, documents)``: raw text in, results
           out; tokenization, truncation checks and result building are all timed.

Both use the same vLLM options (dtype, max_model_len, gpu_memory_utilization, vLLM's defaults
otherwise: prefix caching on, CUDA graphs on).

``--sweep``: how cost grows (``workloads.growth_points``: 1 query x 1 / 10 / 100 / 1,000
documents of ~500 tokens, and documents of ~50 / 500 / 2,000 / 8,000 tokens; the longest pair,
~8,080 tokens with the template, fits the default ``--max-model-len 8192``). Records carry
``sweep``, ``x`` and ``doc_tokens`` (measured mean). The sweep alone: ``--workloads "" --sweep``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as W
from _common import GpuBusy, Recorder, log, machine, timing

from qwen3_rerank import prompts

OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["raw", "engine"], required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--budget", type=float, default=300)
    ap.add_argument(
        "--engine-kw",
        action="append",
        default=[],
        help="engine mode: KEY=VALUE passed to VLLMEngine (int, float, true/false or text; repeatable)",
    )
    ap.add_argument("--scores", default="", help="json file: rep-0 scores written by raw, compared by engine")
    args = ap.parse_args()
    deadline = time.monotonic() + args.budget
    rec = Recorder(args.out, suite="vllm", shape=args.shape, command=" ".join(sys.argv), dtype=args.dtype)

    from qwen3_rerank import Reranker
    from qwen3_rerank._encoding import PairEncoder
    from qwen3_rerank._tokenizer import Qwen3Tokenizer

    tokenizer = Qwen3Tokenizer.from_pretrained(args.model)
    encoder = PairEncoder(tokenizer)
    t_start = time.perf_counter()
    if args.mode == "raw":
        from vllm import LLM
        from vllm.inputs import TokensPrompt

        kw = {}
        if args.enforce_eager:
            kw["enforce_eager"] = True
        llm = LLM(
            model=args.model,
            runner="pooling",
            hf_overrides=OVERRIDES,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
            **kw,
        )

        def fmt(queries, docs):
            q_strs, d_strs = [], []
            for q, ds in zip(queries, docs, strict=True):
                qs = prompts.SYSTEM_PREFIX + prompts.format_query(q, None)
                for d in ds:
                    q_strs.append(qs)
                    d_strs.append(prompts.format_document(d) + prompts.ASSISTANT_SUFFIX)
            return q_strs, d_strs

        def score_strings(pre):
            outs = llm.score(pre[0], pre[1], use_tqdm=False)
            return [o.outputs.score for o in outs]

        def classify_ids(queries, docs):
            pairs = plan(encoder, queries, docs)
            outs = llm.classify([TokensPrompt(prompt_token_ids=p) for p in pairs], use_tqdm=False)
            return [float(o.outputs.probs[0]) for o in outs]

        runners = [("vllm-LLM.score", score_strings, fmt), ("vllm-classify-ids", classify_ids, None)]
    else:
        from qwen3_rerank.engines.vllm_engine import VLLMEngine

        engine_kw = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.engine_kw)}
        engine = VLLMEngine(
            args.model,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
            enforce_eager=args.enforce_eager,
            **engine_kw,
        )
        reranker = Reranker(engine)

        def rerank(queries, docs):
            return [r.score for rk in reranker.rerank_many(queries, docs) for r in sorted(rk, key=lambda r: r.index)]

        label = "VLLMEngine+Reranker" + "".join(f" {k}={v}" for k, v in engine_kw.items())
        runners = [(label, rerank, None)]
    rec.context["machine"] = machine()
    rec.add(kind="startup", engine=args.mode, seconds=round(time.perf_counter() - t_start, 1))
    deadline = time.monotonic() + args.budget  # the measuring budget starts after vLLM's start

    saved: dict[str, list[float]] = {}
    if args.mode == "engine" and args.scores and os.path.exists(args.scores):
        with open(args.scores) as f:
            saved = json.load(f)

    def measure(name, fn, prep, wl, reps, offset=0, **extra):
        # ``offset``: runners sharing one LLM get disjoint inputs, so a later runner never hits the
        # prefix cache that an earlier one filled with the same documents.
        if time.monotonic() > deadline:
            rec.add(workload=wl.name, engine=name, note="skipped: time budget", **extra)
            return
        try:
            _measure(name, fn, prep, wl, reps, offset, **extra)
        except Exception as exc:  # noqa: BLE001 - a failure is a result; go on with the next
            rec.add(workload=wl.name, engine=name, note=f"failed: {type(exc).__name__}: {str(exc)[:300]}", **extra)

    def _measure(name, fn, prep, wl, reps, offset=0, **extra):
        warm = W.Workload(wl.name, min(2, wl.queries), min(16, wl.docs_per_query), wl.doc_words, wl.query_words)
        q, d = W.make_inputs(warm, 10_000 + offset)
        fn(prep(q, d)) if prep else fn(q, d)
        times, lengths, busy, host = [], [], [], []
        for rep in range(reps):
            q, d = W.make_inputs(wl, rep + offset)
            t0 = time.perf_counter()
            lengths = [len(p) for p in plan(encoder, q, d)]
            host.append(time.perf_counter() - t0)  # the core's tokenization and planning alone
            with GpuBusy() as gpu:
                if prep:
                    pre = prep(q, d)
                    t0 = time.perf_counter()
                    scores = fn(pre)
                else:
                    t0 = time.perf_counter()
                    scores = fn(q, d)
                times.append(time.perf_counter() - t0)
            busy.append(gpu.mean)
            if rep == 0 and offset == 0:
                key = f"{wl.name}"
                if args.mode == "raw" and name == "vllm-LLM.score":
                    saved[key] = scores
                elif key in saved:
                    extra["max_score_diff_vs_LLM.score"] = max(
                        abs(a - b) for a, b in zip(saved[key], scores, strict=True)
                    )
            if time.monotonic() > deadline:
                break
        if "sweep" in extra:
            doc_tokens = sum(map(len, tokenizer.encode_plain([x for g in d for x in g])))
            extra["doc_tokens"] = round(doc_tokens / len(lengths), 1)
        busy_known = [b for b in busy if b is not None]
        rec.add(workload=wl.name, engine=name, **timing(args.shape, lengths, times),
                gpu_busy_pct=round(sum(busy_known) / len(busy_known), 1) if busy_known else None,
                plan_us_per_pair=round(1e6 * min(host) / max(len(lengths), 1), 1), **extra)  # fmt: skip

    for wname in filter(None, args.workloads.split(",")):
        wl = W.WORKLOADS[wname]
        for k, (name, fn, prep) in enumerate(runners):
            measure(name, fn, prep, wl, 1 if wname == "W3" else args.reps, offset=1000 * k)
    if args.sweep:
        for sweep, x, wl in W.growth_points():
            for k, (name, fn, prep) in enumerate(runners):
                measure(name, fn, prep, wl, W.growth_reps(wl), offset=1000 * k, sweep=sweep, x=x)
    if args.mode == "raw" and args.scores:
        with open(args.scores, "w") as f:
            json.dump(saved, f)
    if args.mode == "engine":
        engine.close()
    log("done")


def _value(text: str):
    """An --engine-kw value: int, float, true/false, or the text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def plan(encoder, queries, docs, max_length=8192) -> list[list[int]]:
    p = encoder.plan(queries, docs, max_length=max_length)
    # Every (query, document) sequence, repeats included: the workload without deduplication.
    return [p.pairs[k].input_ids for q in p.queries for d in q.planned for k in d.sequences]


if __name__ == "__main__":
    main()
