"""The marker of a per-call option left out, and the one check of ``top_n``."""

from __future__ import annotations

from typing import Any

__all__ = ["USE_DEFAULT", "UseDefault", "check_top_n"]


class UseDefault:
    """The type of :data:`USE_DEFAULT`: "this option was not given for the call"."""

    _instance: UseDefault | None = None

    def __new__(cls) -> UseDefault:  # one instance, also after copy and pickle
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:
        return "USE_DEFAULT"

    def __repr__(self) -> str:
        return "USE_DEFAULT"


USE_DEFAULT: Any = UseDefault()
"""The default of a per-call option: use the value the object was configured with.

Distinct from ``None``, which means "no limit" for ``top_n`` (every result), in the style of
httpx's ``USE_CLIENT_DEFAULT``: ``reranker.rerank(q, docs)`` keeps the reranker's ``top_n``,
``reranker.rerank(q, docs, top_n=None)`` returns every document. The integrations use the same
marker for their own per-call defaults.
"""


def check_top_n(top_n: Any) -> int | None:
    """``top_n`` if it is a positive int or ``None`` (all results); anything else is a ValueError.

    ``0`` is refused: some rerank APIs (NVIDIA's, vLLM's ``/rerank``) read it as "all", others as
    "none", so it cannot mean either silently here.
    """
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n <= 0):
        raise ValueError(f"top_n must be a positive int, or None for all results; got {top_n!r} (use None for all)")
    return top_n
