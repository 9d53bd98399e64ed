"""Haystack integration of qwen3-rerank: :class:`Qwen3Ranker`, a ranker component.

Example:
    >>> from haystack import Document
    >>> from haystack_qwen3_rerank import Qwen3Ranker
    >>> ranker = Qwen3Ranker(model="Qwen/Qwen3-Reranker-0.6B", top_k=3)  # doctest: +SKIP
    >>> docs = [Document(content="BM25 ranks by term frequency."), Document(content="Paris")]
    >>> ranker.run(query="what is BM25?", documents=docs)["documents"][0].score  # doctest: +SKIP
"""

from .ranker import Qwen3Ranker

__all__ = ["Qwen3Ranker"]
