"""Rerank a handful of passages for two queries with the embedded engine (what `make demo` runs).

    python examples/demo.py                                    # offline: the tiny random test model
    python examples/demo.py --model Qwen/Qwen3-Reranker-0.6B   # the real model (downloads ~1.2 GB)
    python examples/demo.py --model /path/to/Qwen3-Reranker-0.6B

With no ``--model`` it builds the tiny offline test model (the real Qwen3 tokenizer, random
weights): the whole pipeline runs, but the order it prints is meaningless.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from qwen3_rerank import Reranker

QUERIES = [
    "What is the capital of China?",
    "How do plants make their food?",
]

PASSAGES = [
    "Beijing is the capital of the People's Republic of China and its political centre.",
    "Shanghai is China's largest city and a global financial hub.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into glucose and oxygen.",
    "The Great Wall of China stretches for thousands of kilometres across northern China.",
    "Chlorophyll in the leaves absorbs light, which powers the production of sugars.",
    "Paris is the capital of France, famous for the Eiffel Tower.",
    "Roots take up water and minerals from the soil, but the food is made in the leaves.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="hub id or local path (default: the tiny offline test model)")
    parser.add_argument("--top-n", type=int, default=None, help="show only the best N passages per query")
    args = parser.parse_args()

    random_weights = False
    if args.model is None:
        from qwen3_rerank.testing import cached_test_model

        print("No --model given: using the tiny offline test model (built once, then cached).")
        model = str(cached_test_model())
        random_weights = True
    else:
        model = args.model
        # Checkpoints written by `qwen3-rerank make-test-model` carry this marker file.
        random_weights = (Path(model) / "qwen3_rerank_test_model.json").is_file()
    if random_weights:
        print(
            "NOTE: this model has RANDOM weights, so the scores (all near 0.5) and the order below are "
            "meaningless; it only shows that the pipeline runs. For real rankings use "
            "`make demo MODEL=Qwen/Qwen3-Reranker-0.6B` (or --model with a local copy)."
        )

    started = time.perf_counter()
    with Reranker("transformers", model=model) as reranker:
        print(f"Model: {model} on {reranker.engine!r} (loaded in {time.perf_counter() - started:.1f} s)\n")
        # Both queries go to the engine in one call.
        rankings = reranker.rerank_many(QUERIES, [PASSAGES, PASSAGES], top_n=args.top_n)

    for query, ranking in zip(QUERIES, rankings, strict=True):
        print(f"Query: {query}")
        print(f"{'rank':>4}  {'score':>7}  passage")
        for rank, result in enumerate(ranking, 1):
            print(f"{rank:>4}  {result.score:>7.4f}  {result.document}")
        stats = ranking.stats
        print(f"      ({stats.pairs} pairs, {stats.tokens} tokens, {stats.seconds:.2f} s)\n")
    print('score = P("yes"): the model\'s probability that the passage meets the query, in [0, 1].')


if __name__ == "__main__":
    main()
