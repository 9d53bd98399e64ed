"""qwen3-rerank: exact, fast Qwen3-Reranker scoring for RAG pipelines.

Importing this package imports no engine: torch, transformers, vllm and httpx load only when an
engine that needs them is created.

Example:
    >>> from qwen3_rerank import Reranker
    >>> reranker = Reranker("transformers", model="Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> for r in reranker.rerank("what is BM25?", ["BM25 is a ranking function.", "Paris"]):  # doctest: +SKIP
    ...     print(r.index, round(r.score, 3))
"""

from __future__ import annotations

from ._defaults import USE_DEFAULT
from ._encoding import PairEncoder, RerankPlan
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    EngineError,
    InvalidScoreError,
    MissingDependencyError,
    Qwen3RerankError,
    RemoteError,
    RemoteTimeoutError,
    TemplateMismatchError,
)
from ._reranker import Reranker
from ._tokenizer import Qwen3Tokenizer, Tokenizer
from ._types import EncodedPair, EngineOutput, Ranking, RerankResult, RerankStats
from ._version import __version__

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "EncodedPair",
    "EngineError",
    "EngineOutput",
    "InvalidScoreError",
    "MissingDependencyError",
    "PairEncoder",
    "Qwen3RerankError",
    "Qwen3Tokenizer",
    "Ranking",
    "RemoteError",
    "RemoteTimeoutError",
    "RerankPlan",
    "RerankResult",
    "RerankStats",
    "Reranker",
    "TemplateMismatchError",
    "Tokenizer",
    "USE_DEFAULT",
    "__version__",
]
