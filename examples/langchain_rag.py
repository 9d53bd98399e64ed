"""Retrieve, then rerank with Qwen3-Reranker, in a LangChain (LCEL) pipeline.

Builds an in-memory vector store over a few dozen passages, retrieves candidates for each query
and reranks them with ``Qwen3Rerank``; all queries go through ``chain.batch``, so the reranker
scores every (query, passage) pair in one engine call.

Runs offline: by default the model is the tiny test model (real Qwen3 tokenizer, RANDOM weights,
built once on this machine), and the embeddings are a small word-hashing function, so retrieval is
lexical. Random weights give scores near 0.5 and a meaningless order; pass a real checkpoint
(``--model Qwen/Qwen3-Reranker-0.6B``) for real rankings.

    python examples/langchain_rag.py                                   # tiny model, embedded engine
    python examples/langchain_rag.py --engine vllm                     # in-process vLLM
    python examples/langchain_rag.py --engine remote --base-url http://127.0.0.1:8000 --model DIR_OR_ID
    python examples/langchain_rag.py --model Qwen/Qwen3-Reranker-0.6B --query "what is BM25?"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

PASSAGES = [
    "BM25 is a bag-of-words ranking function that scores documents by term frequency and inverse document frequency.",
    "Dense retrieval embeds queries and passages into one vector space and ranks passages by cosine similarity.",
    "A cross-encoder reranker reads the query and a document together and outputs one relevance score.",
    "Qwen3-Reranker judges whether a document meets the requirements of a query and answers yes or no.",
    "Reranking the top retrieved passages with a cross-encoder usually improves answer quality in RAG.",
    "vLLM is a high-throughput inference engine for large language models with paged attention.",
    "Prefix caching lets an inference engine reuse the key-value cache of a shared prompt prefix.",
    "Retrieval-augmented generation gives a language model passages retrieved from a document collection.",
    "Paris is the capital and most populous city of France, on the river Seine.",
    "Berlin is the capital of Germany and its largest city.",
    "Madrid is the capital of Spain, located in the centre of the Iberian Peninsula.",
    "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Mitochondria produce most of the chemical energy a cell needs, as ATP.",
    "DNA carries the genetic instructions of living organisms in a double helix.",
    "The speed of light in vacuum is about 299,792 kilometres per second.",
    "Jupiter is the largest planet in the Solar System, a gas giant with a great red spot.",
    "Mount Everest is the highest mountain above sea level, on the border of Nepal and China.",
    "The Pacific is the largest and deepest of Earth's oceans.",
    "The Great Wall of China was built over centuries to protect against invasions from the north.",
    "Python is a programming language known for readable syntax and a large standard library.",
    "Rust guarantees memory safety without a garbage collector through ownership and borrowing.",
    "A hash table maps keys to values and finds an entry in constant expected time.",
    "Binary search finds an item in a sorted list by halving the search interval each step.",
    "Transformers use self-attention to relate every token of a sequence to every other token.",
    "Tokenizers split text into subword units such as byte-pair encoding tokens.",
    "Softmax turns a vector of logits into probabilities that sum to one.",
    "Coffee is brewed from roasted beans of the Coffea plant.",
    "The violin is a string instrument played with a bow.",
    "Marathon runners cover 42.195 kilometres in a race.",
    "Sourdough bread is leavened by wild yeast and lactic acid bacteria.",
    "The Nile is one of the longest rivers in the world, flowing north into the Mediterranean.",
]

QUERIES = [
    "How does a reranker score a document for a query?",
    "What is the capital of France?",
    "How do cells get their energy?",
]


class HashingEmbeddings(Embeddings):
    """Offline stand-in for an embedding model: hashed bag of words, L2-normalised."""

    def __init__(self, size: int = 512) -> None:
        self.size = size

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * self.size
        for word in re.findall(r"\w+", text.lower()):
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.size] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


class StatsPrinter(BaseCallbackHandler):
    """Receives the reranker's stats event (one per query)."""

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        print(
            f"  [{name}] {data['pairs']} pairs, {data['tokens']} tokens, {data['truncated']} truncated, "
            f"{data['seconds']:.3f} s on {data['engine']}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["transformers", "vllm", "remote"], default="transformers")
    parser.add_argument(
        "--model", help="hub id or local directory (default: the offline tiny test model, random weights)"
    )
    parser.add_argument("--base-url", help="vLLM server for --engine remote, e.g. http://127.0.0.1:8000")
    parser.add_argument("--query", action="append", help="a query (repeatable; default: three built-in queries)")
    parser.add_argument("--k", type=int, default=8, help="candidates to retrieve per query")
    parser.add_argument("--top-n", type=int, default=3, help="passages to keep after reranking")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='engine option, VALUE parsed as JSON when it can be (repeatable), e.g. dtype="bfloat16"',
    )
    return parser.parse_args()


def engine_options(args: argparse.Namespace, tiny: bool) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if tiny and args.engine == "transformers":
        options.update(dtype="float32")
    if tiny and args.engine == "vllm":
        # Small and quick on a CPU box (vLLM's CPU build reads gpu_memory_utilization as a share of RAM).
        options.update(dtype="float32", max_model_len=2048, gpu_memory_utilization=0.15, enforce_eager=True)
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def main() -> None:
    args = parse_args()
    from langchain_qwen3_rerank import Qwen3Rerank

    model = args.model
    if model is None:
        from qwen3_rerank.testing import cached_test_model

        print("No --model given: using the tiny offline test model (built once, then cached).")
        model = str(cached_test_model())
    # Checkpoints written by `qwen3-rerank make-test-model` carry this marker file.
    tiny = (Path(model) / "qwen3_rerank_test_model.json").is_file()
    if tiny:
        print(
            "NOTE: this model has RANDOM weights (with the real Qwen3 tokenizer), so the scores (all near "
            "0.5) and the order below are meaningless; it only shows that the pipeline runs. For real "
            "rankings pass --model Qwen/Qwen3-Reranker-0.6B (or a local copy)."
        )

    store = InMemoryVectorStore(HashingEmbeddings())
    store.add_documents([Document(page_content=p, metadata={"passage": i}) for i, p in enumerate(PASSAGES)])
    retriever = store.as_retriever(search_kwargs={"k": args.k})

    reranker = Qwen3Rerank(
        engine=args.engine,
        model=model,
        base_url=args.base_url,
        top_n=args.top_n,
        engine_options=engine_options(args, tiny),
    )
    chain = {"query": RunnablePassthrough(), "documents": retriever} | reranker
    queries = args.query or QUERIES
    try:
        # One engine call scores the candidates of every query.
        results = chain.batch(queries, config={"callbacks": [StatsPrinter()]})
    finally:
        reranker.close()
    for query, docs in zip(queries, results, strict=True):
        print(f"\nquery: {query}")
        for rank, doc in enumerate(docs, 1):
            print(
                f"  {rank}. relevance_score={doc.metadata['relevance_score']:.4f} "
                f"(log-odds {doc.metadata['rerank_logit']:+.3f})  passage {doc.metadata['passage']}: {doc.page_content}"
            )


if __name__ == "__main__":  # vLLM spawns its engine process: keep the entry point guarded
    main()
