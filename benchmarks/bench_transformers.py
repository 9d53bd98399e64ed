"""TransformersEngine (through the core Reranker) vs the model card's transformers code.

Usage (one model size per process; results appended as JSON lines):
    python benchmarks/bench_transformers.py --shape 0.6B --model DIR --out results.jsonl [--budget 240]

Each measurement: one small warm-up, then ``--reps`` timed repetitions on fresh documents; the
median is reported. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed
repetitions, weights included (each engine is loaded alone).

``--sweep``: how cost grows (``workloads.growth_points``: 1 query x 1 / 10 / 100 / 1,000
documents of ~500 tokens, and documents of ~50 / 500 / 2,000 / 8,000 tokens) with a fresh
``TransformersEngine`` at its defaults, labelled ``engine-defaults``; records carry ``sweep``
("docs" / "tokens"), ``x`` (documents, or words per document), ``doc_tokens`` (measured mean) and,
on CUDA, ``peak_gib``: ``max_memory_allocated`` after a reset minus the weights' memory
(``weights_gib``, allocated by loading the engine). The sweep alone:
``--official-batch "" --engine-configs "" --workloads "" --sweep``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import workloads as W
from _common import Recorder, log, machine, timing
from official import OfficialReranker

from qwen3_rerank import Reranker
from qwen3_rerank._encoding import PairEncoder
from qwen3_rerank._tokenizer import Qwen3Tokenizer
from qwen3_rerank.engines.transformers_engine import TransformersEngine


def pair_lengths(encoder: PairEncoder, queries, docs, max_length=8192) -> list[int]:
    plan = encoder.plan(queries, docs, max_length=max_length)
    # Every (query, document) sequence, repeats included: the workload as the engine would see it
    # without the core's deduplication.
    return [len(plan.pairs[k].input_ids) for q in plan.queries for d in q.planned for k in d.sequences]


class Bench:
    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.budget
        self.rec = Recorder(
            args.out,
            suite="transformers",
            shape=args.shape,
            machine=machine(),
            command=" ".join(sys.argv),
            device=args.device,
            dtype=args.dtype,
        )
        self.tokenizer = Qwen3Tokenizer.from_pretrained(args.model)
        self.encoder = PairEncoder(self.tokenizer)
        self.weights: float | None = None  # bytes allocated by the engine's weights (the sweep's)
        self.cuda = args.device.startswith("cuda")
        self.scores: dict[tuple[str, str], list[float]] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def measure(self, engine: str, wl: W.Workload, call, reps: int, **extra):
        if self.left() < 5:
            self.rec.add(workload=wl.name, engine=engine, note="skipped: time budget", **extra)
            return None
        try:
            return self._measure(engine, wl, call, reps, **extra)
        except Exception as exc:  # noqa: BLE001 - an OOM or a failure is a result; go on
            self.rec.add(
                workload=wl.name, engine=engine, note=f"failed: {type(exc).__name__}: {str(exc)[:300]}", **extra
            )
            free()
            return None

    def _measure(self, engine: str, wl: W.Workload, call, reps: int, **extra):
        warm = W.Workload(wl.name, min(2, wl.queries), min(16, wl.docs_per_query), wl.doc_words, wl.query_words)
        call(*W.make_inputs(warm, 10_000))
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        times, lengths = [], []
        for rep in range(reps):
            queries, docs = W.make_inputs(wl, rep)
            lengths = pair_lengths(self.encoder, queries, docs)
            t0 = time.perf_counter()
            scores = call(queries, docs)
            self.sync()
            times.append(time.perf_counter() - t0)
            if rep == 0:
                self.scores[(engine, wl.name)] = [s for group in scores for s in group]
            if self.left() < 0:
                break
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        if "sweep" in extra:
            doc_tokens = sum(map(len, self.tokenizer.encode_plain([d for group in docs for d in group])))
            extra["doc_tokens"] = round(doc_tokens / len(lengths), 1)
            if peak is not None and self.weights is not None:
                extra["peak_gib"] = round(peak - self.weights / 2**30, 3)
                extra["weights_gib"] = round(self.weights / 2**30, 3)
        return self.rec.add(
            workload=wl.name,
            engine=engine,
            **timing(self.args.shape, lengths, times),
            peak_mem_gib=round(peak, 2) if peak is not None else None,
            **extra,
        )


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def official_name(bs: int) -> str:
    return "official-card" if bs == 0 else f"official-bs{bs}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--budget", type=float, default=240)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--official-batch", default="0,16,32", help="0 = one call per query (the card's usage)")
    ap.add_argument("--official-workloads", default="", help="workloads for the official code (default: --workloads)")
    ap.add_argument(
        "--engine-configs",
        default="16:off,64:off,16:on,64:on,64:auto",
        help="batch_size:reuse_prefix[:mode[:max_batch_tokens]] (batch_size a number or 'none'; reuse_prefix "
        "on/off/auto; mode auto/packed/padded/compiled), comma-separated; none:auto = the engine's defaults",
    )
    ap.add_argument("--counts", default="", help='queries x documents: "2x8" for all, or "W1=2x8,W3=1x2" (CPU runs)')
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-config", default="16:off")
    args = ap.parse_args()
    b = Bench(args)
    dtype = getattr(torch, args.dtype)
    wls = W.with_counts(args.workloads, args.counts)
    official_wls = W.with_counts(args.official_workloads or args.workloads, args.counts)
    results: dict[tuple[str, str], dict] = {}

    for bs in [int(x) for x in args.official_batch.split(",") if x]:
        name = official_name(bs)
        log(name)
        try:
            off = OfficialReranker(args.model, dtype=dtype, device=args.device, batch_size=bs)
        except Exception as exc:  # noqa: BLE001
            b.rec.add(engine=name, note=f"failed to load: {type(exc).__name__}: {exc}")
            continue
        for wl in official_wls:
            reps = 1 if wl.name == "W3" else args.reps
            r = b.measure(name, wl, off.rerank_many, reps, batch_size=bs)
            if r and "pairs_per_s" in r:
                results[(name, wl.name)] = r
        off.close()
        del off
        free()

    # batch_size:reuse_prefix[:mode[:max_batch_tokens]]; batch_size "none" = the engine's default
    # (64 padded, the token budget alone packed); mode = auto (the engine's default: packed and
    # compiled on CUDA in half precision), packed (packed, compile=False), padded (packed=False) or
    # compiled (packed + compile=True). One engine per mode, loaded alone (peak memory counts only
    # it), in the order the modes first appear.
    configs = [(*c.split(":"), "auto", "")[:4] if c.count(":") == 1 else (*c.split(":"), "")[:4]
               for c in args.engine_configs.split(",") if c]  # fmt: skip
    modes = {"auto": {}, "packed": {"packed": True, "compile": False}, "padded": {"packed": False},
             "compiled": {"packed": True, "compile": True}}  # fmt: skip
    eng = reranker = None

    def run(queries, docs):
        return [[r.score for r in sorted(rk, key=lambda r: r.index)] for rk in reranker.rerank_many(queries, docs)]

    for mode in dict.fromkeys(m for _, _, m, _ in configs):
        log(f"engine ({mode})")
        if eng is not None:
            eng.close()
            eng = reranker = None
            free()
        t0 = time.perf_counter()
        eng = TransformersEngine(args.model, device=args.device, dtype=dtype, **modes[mode])
        reranker = Reranker(eng)
        compiled = bool(eng._packed is not None and eng._packed.compiled)
        b.rec.add(kind="startup", engine=f"TransformersEngine {mode}", seconds=round(time.perf_counter() - t0, 1),
                  packed=eng.packed, compiled=compiled)  # fmt: skip
        warmed = False
        for bs_text, reuse_text, m, tokens_text in configs:
            if m != mode:
                continue
            bs = None if bs_text == "none" else int(bs_text)
            reuse = {"on": True, "off": False, "auto": "auto"}[reuse_text]
            eng.batch_size, eng.reuse_prefix = bs, reuse
            eng.max_batch_tokens = int(tokens_text) if tokens_text else 16384
            name = f"engine-bs{bs_text}-prefix{reuse_text}" + ("" if mode == "auto" else f"-{mode}")
            name += f"-tokens{tokens_text}" if tokens_text else ""
            if compiled and not warmed:  # the first calls compile: timed once, outside the measurement
                warmed = True
                t0 = time.perf_counter()
                for wl in wls:
                    warm = W.Workload(wl.name, 2, 16, wl.doc_words, wl.query_words)
                    run(*W.make_inputs(warm, 20_000))
                b.rec.add(kind="compile-warmup", engine=name, seconds=round(time.perf_counter() - t0, 1))
            for wl in wls:
                reps = 1 if wl.name == "W3" else args.reps
                r = b.measure(name, wl, run, reps, batch_size=bs, reuse_prefix=reuse, packed=eng.packed,
                              compiled=compiled, max_batch_tokens=eng.max_batch_tokens)  # fmt: skip
                if r and "pairs_per_s" in r:
                    results[(name, wl.name)] = r

    # Score agreement (bf16: batch composition and padding change rounding) and ratios, against
    # every official variant measured on the same workload.
    for (name, wl), r in list(results.items()):
        if not name.startswith("engine"):
            continue
        for (oname, owl), o in results.items():
            if not oname.startswith("official") or owl != wl:
                continue
            ref = b.scores.get((oname, wl))
            mine = b.scores.get((name, wl))
            diff = max(abs(x - y) for x, y in zip(ref, mine, strict=True)) if ref and mine else None
            b.rec.add(
                workload=wl,
                engine=name,
                kind="ratio",
                vs=oname,
                ratio=round(r["pairs_per_s"] / o["pairs_per_s"], 3),
                mem_ratio=round(r["peak_mem_gib"] / o["peak_mem_gib"], 3) if r.get("peak_mem_gib") else None,
                max_score_diff=diff,
            )

    if args.sweep:
        # The engine as a user gets it: a fresh one with its defaults (the configs above set
        # attributes on theirs), and its weights' memory, which the sweep's peak_gib leaves out.
        if eng is not None:
            eng.close()
            eng = reranker = None
            free()
        before = torch.cuda.memory_allocated() if b.cuda else 0
        eng = TransformersEngine(args.model, device=args.device, dtype=dtype)
        reranker = Reranker(eng)
        if b.cuda:
            torch.cuda.synchronize()
            b.weights = torch.cuda.memory_allocated() - before
        for sweep, x, wl in W.growth_points():
            b.measure("engine-defaults", wl, run, W.growth_reps(wl), sweep=sweep, x=x)
    if eng is not None:
        eng.close()


if __name__ == "__main__":
    main()
