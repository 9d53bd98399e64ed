"""Where a TransformersEngine call spends its time on the GPU: a torch.profiler breakdown.

Usage:
    python benchmarks/profile_tf.py --shape 0.6B --model DIR --out results.jsonl [--workload W1]

For each mode (padded: transformers' decoder; packed: uncompiled; compiled: packed +
torch.compile; default: the engine's defaults, on CUDA packed and compiled) one
``rerank_many`` call of the workload is profiled after a warm-up. Recorded per mode: the call's
wall time, the core's tokenization and planning time, the GPU kernel time summed by kind (matrix
products, attention, everything else: norms, rotary, activations, copies), and the GPU busy share
(kernel time over wall time). The kinds come from kernel names (cuBLAS / CUTLASS GEMMs, flash /
fmha / SDPA attention kernels).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import workloads as W
from _common import Recorder, log, machine

from qwen3_rerank import Reranker
from qwen3_rerank.engines.transformers_engine import TransformersEngine

MODES = {"padded": {"packed": False}, "packed": {"packed": True, "compile": False},
         "compiled": {"packed": True, "compile": True}, "default": {}}  # fmt: skip
GEMM = ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul", "sm90_", "sm80_")
ATTENTION = ("flash", "fmha", "attention", "attn")


def kind(name: str) -> str:
    low = name.lower()
    if any(k in low for k in ATTENTION):
        return "attention"
    if any(k in low for k in GEMM):
        return "gemm"
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workload", default="W1")
    ap.add_argument("--modes", default="padded,packed,default")
    ap.add_argument("--budget", type=float, default=120)
    args = ap.parse_args()
    deadline = time.monotonic() + args.budget
    rec = Recorder(args.out, suite="profile-transformers", shape=args.shape, machine=machine(),
                   command=" ".join(sys.argv))  # fmt: skip
    wl = W.WORKLOADS[args.workload]
    from torch.profiler import ProfilerActivity, profile

    for mode in args.modes.split(","):
        if time.monotonic() > deadline:
            rec.add(workload=wl.name, engine=mode, note="skipped: time budget")
            continue
        log(mode)
        engine = TransformersEngine(args.model, device="cuda", dtype=torch.bfloat16, **MODES[mode])
        reranker = Reranker(engine)
        try:
            warm = W.Workload(wl.name, 2, 16, wl.doc_words, wl.query_words)
            reranker.rerank_many(*W.make_inputs(warm, 30_000))
            queries, docs = W.make_inputs(wl, 31_000)
            t0 = time.perf_counter()
            plan = reranker.plan(queries, docs)
            plan_s = time.perf_counter() - t0
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                t0 = time.perf_counter()
                reranker.rerank_many(queries, docs)
                torch.cuda.synchronize()
                wall = time.perf_counter() - t0
            by_kind: dict[str, float] = defaultdict(float)
            top: dict[str, float] = defaultdict(float)
            for event in prof.events():  # GPU kernels (and copies) only: no CPU op is counted twice
                if event.device_type != torch.autograd.DeviceType.CUDA:
                    continue
                seconds = event.time_range.elapsed_us() / 1e6
                by_kind[kind(event.name)] += seconds
                top[event.name] += seconds
            kernels = sum(by_kind.values())
            pairs = len(plan.pairs)
            rec.add(
                workload=wl.name,
                engine=f"TransformersEngine {mode}",
                pairs=pairs,
                wall_s=round(wall, 4),
                pairs_per_s=round(pairs / wall, 1),
                plan_s=round(plan_s, 4),
                gpu_kernel_s=round(kernels, 4),
                gpu_busy_share=round(kernels / wall, 3),
                kernel_s_by_kind={k: round(v, 4) for k, v in sorted(by_kind.items())},
                top_kernels=[(k[:90], round(v, 4)) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:12]],
            )
        except Exception as exc:  # noqa: BLE001 - a failure is a result; go on with the next mode
            rec.add(workload=wl.name, engine=f"TransformersEngine {mode}", note=f"failed: {type(exc).__name__}: {exc}")
        finally:
            engine.close()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
