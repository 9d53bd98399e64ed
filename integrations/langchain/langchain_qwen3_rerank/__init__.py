"""LangChain integration of qwen3-rerank.

Example:
    >>> from langchain_qwen3_rerank import Qwen3Rerank
    >>> reranker = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)  # doctest: +SKIP
    >>> reranker.compress_documents(docs, "what is BM25?")  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Any

from .rerank import STATS_EVENT, Qwen3Rerank, RerankInput

__all__ = ["Qwen3Rerank", "RerankInput", "STATS_EVENT"]


def __getattr__(name: str) -> Any:
    # The first release called the class Qwen3Reranker; the partner packages name theirs
    # `<Provider>Rerank` (CohereRerank, VoyageAIRerank, NVIDIARerank), and so does LlamaIndex's.
    if name == "Qwen3Reranker":
        warnings.warn(
            "Qwen3Reranker is deprecated: import Qwen3Rerank instead (the same class); the old name "
            "will be removed in a later release",
            DeprecationWarning,
            stacklevel=2,
        )
        return Qwen3Rerank
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
