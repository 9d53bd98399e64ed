"""Ray Data over an engine vs the in-process ``Reranker.rerank_many`` on the same pairs.

Both sides score the same (query, document) pairs in the same calls: ``--batch-size`` rows per
``rerank_many`` (one pair a row, ``--docs-per-query`` rows share a query, the rows in query order).
In-process: one engine, the chunks one after another, the engine loaded before the clock starts
(with ``--engine transformers``, torch given the Ray side's CPU budget: ``workers`` x the whole
CPUs of a worker, as Ray sets ``OMP_NUM_THREADS`` in its actors).
Ray: ``qwen3_rerank.ray.rerank_dataset`` with ``--workers`` actors (``--num-gpus-per-worker``
each) over ``ray.data.from_items(rows)``; the clock runs from the first request for rows to the
last row back, so it includes the actors' start (process, imports, engine load); the steady
rate counts the rows after the first block over the time after it (``steady_ratio`` = that rate
over the in-process rate: the Ray overhead once the engines run).
The scores of both sides are compared (``max_abs_diff``).

CPU (the tiny model, this repository's test checkpoint)::

    TINY=$(python -c 'from qwen3_rerank.testing import cached_test_model as c; print(c())')
    python benchmarks/bench_ray.py --model "$TINY" \\
        --engine transformers -o dtype=float32 -o device=cpu --pairs 2000 --workers 1 --batch-size 64

One H200, vLLM, 100,000 pairs (the lead's command)::

    python benchmarks/bench_ray.py --model MODEL_DIR --engine vllm --pairs 100000 --workers 1 \\
        --num-gpus-per-worker 1 --batch-size 4096 -o dtype=bfloat16 -o gpu_memory_utilization=0.85 \\
        --out benchmarks/results/ray-h200.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Recorder, log, machine  # noqa: E402
from workloads import words  # noqa: E402


def _option(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def make_rows(pairs: int, docs_per_query: int, doc_words: int, seed: int = 7) -> list[dict]:
    vocab = words()
    rng = random.Random(f"{seed}:{pairs}:{docs_per_query}:{doc_words}")
    rows = []
    query = ""
    for i in range(pairs):
        if i % docs_per_query == 0:
            query = " ".join(rng.choices(vocab, k=12)) + "?"
        rows.append({"id": i, "query": query, "document": " ".join(rng.choices(vocab, k=doc_words)) + "."})
    return rows


def in_process(args: argparse.Namespace, rows: list[dict], options: dict) -> tuple[float, float, list[float]]:
    from qwen3_rerank.batch import BatchScorer

    if args.engine == "transformers":
        import torch

        # The CPU budget of the Ray side: Ray sets OMP_NUM_THREADS to an actor's whole CPUs
        # (floor, at least 1); torch in this process would otherwise take every core.
        torch.set_num_threads(in_process_threads(args))
    started = time.perf_counter()
    scorer = BatchScorer(args.engine, model=args.model, engine_options=options)
    scorer.score_lists([rows[0]["query"]], [rows[0]["document"]], "pairs")  # first call: warm-up, not timed
    load = time.perf_counter() - started
    started = time.perf_counter()
    scores: list[float] = []
    for lo in range(0, len(rows), args.batch_size):
        chunk = rows[lo : lo + args.batch_size]
        s, _ = scorer.score_lists([r["query"] for r in chunk], [r["document"] for r in chunk], "pairs")
        scores.extend(s)
    seconds = time.perf_counter() - started
    scorer.close()
    return load, seconds, scores


def in_process_threads(args: argparse.Namespace) -> int:
    return max(1, int(args.workers * max(1, int(args.cpus_per_worker))))


def on_ray(args: argparse.Namespace, rows: list[dict], options: dict) -> tuple[float, float, list[float]]:
    import ray

    from qwen3_rerank.ray import rerank_dataset

    cpus = max(os.cpu_count() or 1, args.workers * args.cpus_per_worker + 1)
    ray.init(num_cpus=int(cpus + 0.999), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ds = ray.data.from_items(rows, override_num_blocks=max(args.workers * 4, len(rows) // args.batch_size // 4, 1))
        scored = rerank_dataset(
            ds,
            model=args.model,
            engine=args.engine,
            engine_options=options,
            concurrency=args.workers,
            num_gpus=args.num_gpus_per_worker,
            num_cpus=args.cpus_per_worker,
            batch_size=args.batch_size,
        ).select_columns(["id", "score"])
        started = time.perf_counter()
        got: dict[int, float] = {}
        first: tuple[float, int] | None = None  # when the first block came back, and its rows
        for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            got.update(zip(batch.column("id").to_pylist(), batch.column("score").to_pylist(), strict=True))
            if first is None:
                first = (time.perf_counter(), len(got))
        end = time.perf_counter()
    finally:
        ray.shutdown()
    assert len(got) == len(rows), f"{len(got)} of {len(rows)} rows came back"
    assert first is not None
    # Steady state: the rows after the first block over the time after it (the actors' start,
    # engine load included, is before it).
    steady = (len(rows) - first[1]) / (end - first[0]) if end > first[0] else float("nan")
    return end - started, steady, [got[i] for i in range(len(rows))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--engine", default="transformers", choices=("transformers", "vllm"))
    p.add_argument("-o", "--engine-option", action="append", type=_option, default=[], metavar="KEY=VALUE")
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--docs-per-query", type=int, default=100)
    p.add_argument("--doc-words", type=int, default=250, help="words (~tokens) a document: 250 is W1 (~335 a pair)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per rerank_many, both sides")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--num-gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--skip-in-process", action="store_true")
    p.add_argument("--out", default="benchmarks/results/ray.jsonl")
    args = p.parse_args()
    options = dict(args.engine_option)
    rows = make_rows(args.pairs, args.docs_per_query, args.doc_words)
    rec = Recorder(args.out, bench="bench_ray", machine=machine(), argv=sys.argv[1:])

    load = inproc = None
    ref: list[float] = []
    if not args.skip_in_process:
        log("in-process", args.engine)
        load, inproc, ref = in_process(args, rows, options)
        log(f"in-process: load {load:.1f} s, {inproc:.2f} s, {len(rows) / inproc:.1f} pairs/s")
    log("ray", args.workers, "workers")
    ray_s, steady, got = on_ray(args, rows, options)
    log(f"ray: {ray_s:.2f} s, {len(rows) / ray_s:.1f} pairs/s; after the first block {steady:.1f} pairs/s")
    record = dict(
        engine=f"ray-{args.engine}",
        pairs=len(rows),
        workers=args.workers,
        batch_size=args.batch_size,
        ray_s=round(ray_s, 3),
        pairs_per_s=round(len(rows) / ray_s, 1),
        steady_pairs_per_s=round(steady, 1),
    )
    if inproc is not None and load is not None:
        record.update(
            in_process_s=round(inproc, 3),
            in_process_threads=in_process_threads(args) if args.engine == "transformers" else None,
            in_process_pairs_per_s=round(len(rows) / inproc, 1),
            load_s=round(load, 2),
            ratio=round(inproc / ray_s, 3),
            steady_ratio=round(steady / (len(rows) / inproc), 3),
            max_abs_diff=max(abs(a - b) for a, b in zip(got, ref, strict=True)),
        )
    rec.add(**record)


if __name__ == "__main__":
    main()
