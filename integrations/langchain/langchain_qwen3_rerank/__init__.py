"""LangChain integration of qwen3-rerank.

Example:
    >>> from langchain_qwen3_rerank import Qwen3Reranker
    >>> reranker = Qwen3Reranker(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)  # doctest: +SKIP
    >>> reranker.compress_documents(docs, "what is BM25?")  # doctest: +SKIP
"""

from __future__ import annotations

from .rerank import STATS_EVENT, Qwen3Reranker, RerankInput

__all__ = ["Qwen3Reranker", "RerankInput", "STATS_EVENT"]
