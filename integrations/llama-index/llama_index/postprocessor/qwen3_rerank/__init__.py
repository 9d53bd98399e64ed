"""LlamaIndex integration of qwen3-rerank.

Example:
    >>> from llama_index.postprocessor.qwen3_rerank import Qwen3Rerank
    >>> rerank = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)  # doctest: +SKIP
    >>> index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])  # doctest: +SKIP
"""

from llama_index.postprocessor.qwen3_rerank.base import RETRIEVAL_SCORE_KEY, STATS_PAYLOAD_KEY, Qwen3Rerank

__all__ = ["Qwen3Rerank", "RETRIEVAL_SCORE_KEY", "STATS_PAYLOAD_KEY"]
